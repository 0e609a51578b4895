"""`scrapesink ingest`: stream a file into the raw-event store with a live progress bar."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from scrapesink.adapters.readers import (
    Format,
    InputFile,
    detect_format,
    open_input,
    read_records,
)
from scrapesink.application.outcomes import SinkReport
from scrapesink.application.runs import JobRun, NoRun
from scrapesink.application.summary import IngestSummary, ModelSummary, WriteSummary
from scrapesink.bootstrap import App
from scrapesink.domain.declarations import load_models
from scrapesink.domain.events import EventRules
from scrapesink.entrypoints.cli.common import (
    EXIT_OK,
    EXIT_PENDING,
    EXIT_REJECTED,
    err,
    escape,
    fail,
    handle_errors,
    open_app,
    out,
    report_replay,
    settings,
)
from scrapesink.errors import RecordError

SHOWN_REJECTIONS = 20  # rejected records listed on the terminal; --rejects FILE keeps all


@handle_errors
def ingest(
    path: str = typer.Argument(..., help="Input file (.gz is decompressed), or - for stdin."),
    fmt: str | None = typer.Option(
        None, "--format", "-f", help="jsonl, json or csv (default: from the file name)."
    ),
    source: str | None = typer.Option(
        None, "--source", "-s", help="Source name for flat records (wins over their own field)."
    ),
    id_field: str = typer.Option("id", help="Field holding the record id in flat records."),
    time_field: str = typer.Option(
        "timestamp", help="Field holding the event time in flat records."
    ),
    time_format: str | None = typer.Option(
        None,
        "--time-format",
        metavar="PATTERN|auto",
        help="How the time field is written when it is not ISO 8601: a strftime pattern"
        " ('%d/%m/%Y %H:%M'), or auto (RFC 2822, YYYY/MM/DD, 'Mon D YYYY', epoch s/ms as text)."
        " A time without an offset is read as UTC.",
    ),
    model: str | None = typer.Option(
        None,
        "--model",
        "-m",
        help="Ingest records of this declared model (movies, workflows, ...) instead of events.",
    ),
    models: list[Path] = typer.Option([], "--models", help="Another declaration file."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as one JSON object."),
    quiet: bool = typer.Option(
        False, "--quiet", "-q", help="One summary line; no rejected records, no tables."
    ),
    rejects: Path | None = typer.Option(
        None,
        "--rejects",
        help="Write every rejected record's location, path and reason to FILE (JSON lines);"
        f" the terminal shows the first {SHOWN_REJECTIONS}.",
    ),
    job: str | None = typer.Option(
        None,
        "--job",
        help="Record this ingest as a run of the job (made when new); see `scrapesink jobs`.",
    ),
) -> None:
    """Ingest raw events (or, with --model, model records) from FILE or - (stdin).

    With --model NAME each record is an entity of that model, upserted on its natural key:
    a new or changed record is stored, an unchanged one only counted; children and links are
    replaced to match it. `scrapesink models list` shows the declared models.

    Records are either canonical {source, source_id, occurred_at, payload} objects or flat
    scraped objects (the whole object becomes the payload). Re-running the same input is safe:
    a key (source, source_id) is stored once, later copies are counted as duplicates.

    Every record is first written to a local journal, then to PostgreSQL and the CSV files
    under the data directory. A store that is down gets its records later (`scrapesink replay`).

    Exit codes: 0 all stored or duplicate, 3 some records rejected, 4 some records pending
    for a store that was unavailable (safe in the journal), 1 fatal error.
    """
    if fmt is None:
        chosen: Format = "jsonl" if path == "-" else detect_format(path)
        if path == "-" and _looks_like_csv(sys.stdin.buffer):
            fail("standard input looks like CSV: pass --format csv")
    elif fmt in ("jsonl", "json", "csv"):
        chosen = fmt  # type: ignore[assignment]
    else:
        raise typer.BadParameter(
            f"unknown format {fmt!r}: use jsonl, json or csv", param_hint="--format"
        )
    if rejects is not None and path != "-" and _same_file(Path(path), rejects):
        # opened for writing, it would be emptied before a line of it was read
        fail(f"--rejects {rejects} is the input file: name another file")
    if model is not None and time_format is not None:
        raise typer.BadParameter(
            "model records are checked against their declared field types; --time-format is"
            " for raw events",
            param_hint="--time-format",
        )
    if model is not None:
        declaration = load_models([*settings().models, *models])
        declaration.model(model)  # an unknown name fails before any database starts
        infile = open_input(path)
        reported = Rejections(quiet, rejects)
        try:
            with open_app(offline_ok=True, announce=not quiet) as app:
                app.use_declaration(declaration)
                report_replay(app.start_writing())
                with _job_run(app, job, source) as run:
                    result = _run_model(app, model, infile, chosen, reported)
                    run.add(result)
        finally:
            infile.close()
            reported.close()
        _print_model_summary(result, name=infile.name, as_json=as_json, quiet=quiet)
        code = EXIT_PENDING if result.pending else EXIT_OK if result.ok else EXIT_REJECTED
        raise typer.Exit(code)
    required = () if chosen != "csv" else _csv_columns(id_field, time_field, source)
    infile = open_input(path)  # a missing or empty file fails before any database starts
    reported = Rejections(quiet, rejects)
    try:
        with open_app(offline_ok=True, announce=not quiet) as app:
            report_replay(app.start_writing())
            rules = app.rules(
                id_field=id_field,
                time_field=time_field,
                default_source=source,
                time_format=time_format,
            )
            with _job_run(app, job, source) as run:
                summary = _run(app, rules, infile, chosen, required, reported)
                run.add(summary)
    finally:
        infile.close()
        reported.close()
    _print_summary(summary, name=infile.name, as_json=as_json, quiet=quiet)
    raise typer.Exit(exit_code(summary))


@contextmanager
def _job_run(app: App, job: str | None, source: str | None) -> Iterator[JobRun | NoRun]:
    if job is None:
        yield NoRun()
        return
    with app.job_run(job, origin="cli", source=source) as run:
        yield run
    if run.run is not None:
        err.print(f"run {run.run.id} of job {escape(job)}: {run.run.status}")


def _csv_columns(id_field: str, time_field: str, source: str | None) -> tuple[str, ...]:
    # Only a flat CSV is checked against these; a canonical one (with a payload column) must
    # have source_id, occurred_at and, without --source, source.
    return (id_field, time_field) if source else (id_field, time_field, "source")


def _run(
    app: App,
    rules: EventRules,
    infile: InputFile,
    fmt: Format,
    required: tuple[str, ...],
    on_reject: Rejections,
) -> IngestSummary:
    service = app.ingest_service(rules)
    records = read_records(
        infile, fmt, max_record_bytes=app.settings.max_payload_bytes, required_columns=required
    )
    if not err.is_terminal or on_reject.quiet:
        return service.ingest(records, on_reject=on_reject)
    columns = [
        TextColumn("[bold]ingest[/]"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TextColumn("{task.fields[counts]}"),
        TimeElapsedColumn(),
    ]
    with Progress(*columns, console=err, transient=True) as progress:
        task = progress.add_task("ingest", total=infile.size, counts="")

        def on_batch(s: IngestSummary) -> None:
            progress.update(
                task,
                completed=infile.position(),
                counts=f"{s.inserted:,} new · {s.duplicates:,} dup · {s.rejected:,} rejected",
            )

        return service.ingest(records, on_reject=on_reject, on_batch=on_batch)


def _run_model(
    app: App, model: str, infile: InputFile, fmt: Format, on_reject: Rejections
) -> ModelSummary:
    service = app.models()
    records = read_records(infile, fmt, max_record_bytes=app.settings.max_payload_bytes)
    return service.save(model, records, on_reject=on_reject)


class Rejections:
    """What the terminal shows of rejected records (the first 20, then how many more), and
    ``--rejects FILE``, which keeps them all as JSON lines."""

    def __init__(self, quiet: bool, path: Path | None) -> None:
        self.quiet = quiet
        self.path = path
        self.count = 0
        try:
            self._file = path.open("w", encoding="utf-8") if path is not None else None
        except OSError as exc:
            fail(f"--rejects {path}: cannot write: {exc.strerror}")

    def __call__(self, error: RecordError) -> None:
        self.count += 1
        if self._file is not None:
            line = {"location": error.location, "path": error.path or None, "reason": error.message}
            self._file.write(json.dumps(line, ensure_ascii=False) + "\n")
        if not self.quiet and self.count <= SHOWN_REJECTIONS:
            err.print(f"[yellow]rejected[/] {escape(str(error))}", highlight=False)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
        hidden = self.count - SHOWN_REJECTIONS
        if self.quiet or hidden <= 0:
            return
        where = f"all in {self.path}" if self.path else "see --rejects FILE"
        err.print(f"[yellow]and {hidden:,} more rejected[/] — {escape(where)}", highlight=False)


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and a.samefile(b)
    except OSError:
        return False


def _looks_like_csv(stream: Any) -> bool:
    """The first line of standard input is not JSON but has commas (without consuming it)."""
    try:
        head = stream.peek(4096)[:4096]
    except (AttributeError, OSError, ValueError):
        return False
    line = head.lstrip().split(b"\n", 1)[0].strip()
    return bool(line) and line[:1] not in (b"{", b"[") and b"," in line


def _one_line(summary: WriteSummary, name: str) -> None:
    parts = [f"{name}: read {summary.read:,}"]
    if not summary.sinks:  # a shared journal: published, workers deliver
        parts.append(f"published {summary.accepted:,}, rejected {summary.rejected:,}")
        out.print(", ".join(parts), highlight=False)
        return
    if summary.model is None:
        parts.append(f"inserted {summary.inserted:,}, duplicates {summary.duplicates:,}")
    else:
        parts.append(f"stored {summary.stored:,}, unchanged {summary.unchanged:,}")
    parts.append(
        f"rejected {summary.rejected:,}, pending {summary.pending:,},"
        f" dead letters {summary.dead_letters:,}"
    )
    out.print(", ".join(parts), highlight=False)


def _print_model_summary(
    summary: ModelSummary, *, name: str, as_json: bool, quiet: bool = False
) -> None:
    if as_json:
        out.print_json(json.dumps({"file": name, **summary.as_dict()}))
        return
    if quiet:
        _one_line(summary, escape(name))
        return
    table = Table(title=f"ingested {escape(name)} as {summary.model}", show_header=False)
    table.add_column(style="bold")
    table.add_column(justify="right")
    table.add_row("read", f"{summary.read:,}")
    if _published(table, summary):
        return
    table.add_row("new or changed", f"[green]{summary.stored:,}[/]")
    table.add_row("unchanged", f"{summary.unchanged:,}")
    if summary.input_duplicates:
        table.add_row("same key again in the input (last kept)", f"{summary.input_duplicates:,}")
    table.add_row("rejected", f"[red]{summary.rejected:,}[/]" if summary.rejected else "0")
    out.print(table)
    _print_sinks(summary.sinks)


def _print_summary(
    summary: IngestSummary, *, name: str, as_json: bool, quiet: bool = False
) -> None:
    if as_json:
        out.print_json(json.dumps({"file": name, **summary.as_dict()}))
        return
    if quiet:
        _one_line(summary, escape(name))
        return
    table = Table(title=f"ingested {escape(name)}", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column(justify="right")
    table.add_row("read", f"{summary.read:,}")
    if _published(table, summary):
        return
    table.add_row("inserted", f"[green]{summary.inserted:,}[/]")
    table.add_row("duplicates", f"{summary.duplicates:,}")
    if summary.input_duplicates:
        # the sinks' duplicates count keys they held already; these never reached them
        table.add_row("  of which repeated in this input", f"{summary.input_duplicates:,}")
    table.add_row("rejected", f"[red]{summary.rejected:,}[/]" if summary.rejected else "0")
    if summary.naive_timestamps:
        table.add_row("naive timestamps read as UTC", f"{summary.naive_timestamps:,}")
    if summary.nul_cleaned:
        table.add_row("records with NUL removed", f"{summary.nul_cleaned:,}")
    out.print(table)
    _print_sinks(summary.sinks)


def _published(table: Table, summary: IngestSummary | ModelSummary) -> bool:
    """With a shared journal no store is written here: say what was published, and who
    delivers it. False when this process delivered (the usual table follows)."""
    if summary.sinks:
        return False
    table.add_row("published (acknowledged)", f"[green]{summary.accepted:,}[/]")
    table.add_row("rejected", f"[red]{summary.rejected:,}[/]" if summary.rejected else "0")
    out.print(table)
    out.print("published to the shared journal: `scrapesink worker` delivers to the stores")
    return True


def _print_sinks(reports: dict[str, SinkReport]) -> None:
    sinks = Table("sink", "stored", "duplicates", "pending", "dead letters", title_justify="left")
    for sink, report in reports.items():
        pending = f"[yellow]{report.pending:,}[/]" if report.pending else "0"
        dead = f"[red]{report.dead_letters:,}[/]" if report.dead_letters else "0"
        sinks.add_row(sink, f"{report.stored:,}", f"{report.duplicates:,}", pending, dead)
    out.print(sinks)
    for sink, report in reports.items():
        if report.pending:
            err.print(
                f"[yellow]pending[/] {report.pending:,} record(s) for {sink}: "
                f"{escape(report.error or 'not delivered')}; they are safe in the journal, "
                "`scrapesink replay` delivers them",
                highlight=False,
            )
        if report.dead_letters:
            err.print(
                f"[red]dead letters[/] {report.dead_letters:,} record(s) refused by {sink}: "
                "see `scrapesink deadletters list`",
                highlight=False,
            )


def exit_code(summary: IngestSummary) -> int:
    """4 when something is pending (a cron job must notice), 3 for rejections, else 0."""
    if summary.pending:
        return EXIT_PENDING
    return EXIT_OK if summary.ok else EXIT_REJECTED

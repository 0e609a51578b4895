"""Operator commands: status, replay, dead letters, and the spreadsheet export."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.table import Table

from scrapesink.adapters.deadletters import DeadLetter
from scrapesink.adapters.export import export_excel
from scrapesink.application.kinds import kind_named
from scrapesink.application.replay import republish_dead_letters, retry_dead_letters
from scrapesink.bootstrap import (
    bootstrap,
    csv_files,
    dead_letter_store,
    offline_status,
    shared_journal,
)
from scrapesink.config import Settings
from scrapesink.entrypoints.cli.common import (
    EXIT_FATAL,
    EXIT_OK,
    EXIT_PENDING,
    EXIT_USAGE,
    err,
    escape,
    handle_errors,
    open_app,
    out,
    settings,
)
from scrapesink.errors import ConfigError, StorageError, TransientStorageError

if TYPE_CHECKING:
    from scrapesink.adapters.redis_streams import GroupInfo

deadletters_app = typer.Typer(
    help="Records a store refused permanently: list, show, retry, purge.", no_args_is_help=True
)


def _age(moment: datetime | None) -> str:
    if moment is None:
        return "-"
    seconds = max(0, int((datetime.now(UTC) - moment).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{seconds}s ago"


@handle_errors
def status(as_json: bool = typer.Option(False, "--json", help="One JSON object.")) -> None:
    """Per store: records pending in journals and the oldest one's age; dead letters; journals.

    Works while PostgreSQL is down (its pending count then covers every journaled record).
    Exit code 4 when anything is pending.
    """
    config = settings()
    try:
        app = bootstrap(config)
    except TransientStorageError as exc:
        database = f"unreachable ({exc.message})"
        report = offline_status(config, database)
    else:
        database = app.database_label
        try:
            report = app.status()
        finally:
            app.close()
    groups, groups_error = _groups(config)
    behind = any((g.lag or 0) + g.pending for g in groups)
    if as_json:
        whole = report.as_dict()
        if config.journal_url is not None:
            whole["groups"] = [asdict(g) for g in groups]
            whole["groups_error"] = groups_error
        print(json.dumps(whole))
    else:
        out.print(f"database: {escape(database)}", highlight=False)
        if config.journal_url is not None:
            _print_groups(groups, groups_error)
        table = Table("sink", "pending", "oldest pending", "dead letters")
        for name, sink in report.sinks.items():
            shown = f"[yellow]{sink.pending:,}[/]" if sink.pending else "0"
            table.add_row(name, shown, _age(sink.oldest_pending), f"{sink.dead_letters:,}")
        out.print(table)
        out.print(
            f"journals: {report.journals} ({report.journals_in_use} in use),"
            f" {report.journal_bytes / 1e6:.1f} MB"
        )
        for problem in report.csv_problems:
            out.print(f"[yellow]CSV file not checked at start-up:[/] {escape(problem)}")
    raise typer.Exit(EXIT_PENDING if report.pending or behind else EXIT_OK)


def _groups(config: Settings) -> tuple[list[GroupInfo], str | None]:
    """The shared journal's consumer groups (none without SCRAPESINK_JOURNAL_URL), or why
    they could not be read."""
    if config.journal_url is None:
        return [], None
    try:
        streams = shared_journal(config)
    except ConfigError as exc:
        return [], exc.message
    try:
        return streams.groups(), None
    except StorageError as exc:
        return [], exc.message
    finally:
        streams.close()


def _print_groups(groups: list[GroupInfo], error: str | None) -> None:
    if error is not None:
        err.print(f"[yellow]shared journal unreadable:[/] {escape(error)}", highlight=False)
        return
    table = Table(
        "stream",
        "group (sink)",
        "lag",
        "pending",
        "consumers",
        "idle",
        title="shared journal (lag and pending count entries: batches of records)",
    )
    for g in groups:
        idle = "-" if g.idle_ms is None else f"{g.idle_ms / 1000:.1f} s"
        lag = "?" if g.lag is None else f"{g.lag:,}"
        table.add_row(g.kind, g.group, lag, f"{g.pending:,}", str(g.consumers), idle)
    out.print(table)


@handle_errors
def replay() -> None:
    """Deliver everything journals still hold for a store (also done when ingest starts).

    Exit code 4 when something could still not be delivered.
    """
    with open_app(offline_ok=True) as app:
        result = app.replay()
    if result.busy:
        out.print(f"{result.busy} journal(s) in use by running processes were left to them")
    table = Table("sink", "stored", "duplicates", "pending", "dead letters")
    for name, report in result.reports.items():
        table.add_row(
            name,
            f"{report.stored:,}",
            f"{report.duplicates:,}",
            f"{report.pending:,}",
            f"{report.dead_letters:,}",
        )
    out.print(f"replayed {result.journals} journal(s), {result.removed} drained and removed")
    out.print(table)
    pending = sum(r.pending for r in result.reports.values())
    for name, report in result.reports.items():
        if report.pending:
            err.print(f"[yellow]pending[/] {name}: {escape(report.error or 'unavailable')}")
    raise typer.Exit(EXIT_PENDING if pending else EXIT_OK)


@deadletters_app.command("list")
@handle_errors
def dl_list(
    sink: str | None = typer.Option(None, help="Only this store (postgres, csv)."),
    limit: int = typer.Option(100, min=1, max=100_000),
    as_json: bool = typer.Option(False, "--json", help="JSON lines instead of a table."),
) -> None:
    """Dead letters, oldest first."""
    store = dead_letter_store(settings())
    letters = store.list(sink=sink, limit=limit)
    if as_json:
        for letter in letters:
            print(json.dumps(letter.as_dict(), ensure_ascii=False))
        return
    table = Table("id", "sink", "source", "source_id", "error", "attempts", "last failed")
    for letter in letters:
        source, source_id = _letter_names(letter)
        table.add_row(
            str(letter.id),
            letter.sink,
            escape(source),
            escape(source_id),
            escape(f"{letter.error_type}: {letter.message}"[:80]),
            str(letter.attempts),
            _age(letter.last_failed_at),
        )
    out.print(table)
    out.print(f"{len(letters)} dead letter(s)")


@deadletters_app.command("show")
@handle_errors
def dl_show(letter_id: int) -> None:
    """One dead letter with its record, as JSON."""
    letter = dead_letter_store(settings()).get(letter_id)
    out.print_json(json.dumps(letter.as_dict(), ensure_ascii=False))


def _letter_names(letter: DeadLetter) -> tuple[str, str]:
    """Source and id columns: an event's key, or a model record's kind and operation."""
    kept = kind_named(letter.kind).letter(letter.record)
    return kept.source, kept.source_id


@deadletters_app.command("retry")
@handle_errors
def dl_retry(
    ids: list[int] = typer.Argument(None, help="Dead letter ids (default: all)."),
    sink: str | None = typer.Option(None, help="Only this store."),
) -> None:
    """Send dead letters to their store again (after fixing the cause); stored ones are removed."""
    with open_app() as app:
        store = app.dead_letters
        letters = [store.get(i) for i in ids] if ids else store.list(sink=sink, limit=1_000_000)
        if app.streams is not None:
            published = republish_dead_letters(letters, app.streams.republish, store)
            out.print(
                f"{published} published to the shared journal again: workers deliver them"
                " (a record refused again comes back as a dead letter)"
            )
            raise typer.Exit(EXIT_OK)
        result = retry_dead_letters(letters, app.sinks_for, store)
    for letter_id, message in result.refused.items():
        err.print(f"[red]still refused[/] {letter_id}: {escape(message)}")
    out.print(f"{len(result.stored)} stored and removed, {len(result.refused)} still refused")
    raise typer.Exit(EXIT_FATAL if result.refused else EXIT_OK)


@deadletters_app.command("purge")
@handle_errors
def dl_purge(
    sink: str | None = typer.Option(None, help="Only this store."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask."),
) -> None:
    """Delete dead letters for good."""
    store = dead_letter_store(settings())
    if not yes and not typer.confirm(f"delete every dead letter{f' of {sink}' if sink else ''}?"):
        raise typer.Exit(EXIT_FATAL)
    out.print(f"{store.purge(sink=sink)} dead letter(s) deleted")


@handle_errors
def export(
    excel: bool = typer.Option(False, "--excel", help="Spreadsheet-safe copy (required)."),
    out_dir: Path | None = typer.Option(
        None, "--out", help="Target directory (default: <data dir>/export/excel)."
    ),
) -> None:
    """Write a spreadsheet-safe copy of the CSV files: UTF-8 BOM, formulas neutralised.

    Raw events keep their layout (SOURCE/DAY.csv); model files go under models/. Cells
    starting with = + - @ (or a tab or carriage return) get a leading apostrophe, so a
    spreadsheet shows them as text instead of running them. The machine-readable files under
    the data directory are never changed.
    """
    config = settings()
    events, models = csv_files(config)
    event_files = [(f, f.relative_to(events.root)) for f in events.files()]
    model_files = [(f, Path("models") / f.name) for f in models.files()]
    if not excel:
        err.print(
            "scrapesink export --excel [--out DIR] writes spreadsheet-safe copies (UTF-8 BOM,"
            f" formulas neutralised) of the CSV files under {escape(str(config.data_dir))}:"
            f" {len(event_files):,} raw-event file(s) and {len(model_files):,} model file(s)."
            " --excel is the only format so far.",
            highlight=False,
        )
        raise typer.Exit(EXIT_USAGE)
    target = out_dir or config.paths.excel_export
    written = export_excel([*event_files, *model_files], target)
    out.print(
        f"{len(written)} file(s) written to {target}"
        f" ({len(event_files)} of raw events, {len(model_files)} of models)"
    )


@handle_errors
def metrics(
    textfile: Path | None = typer.Option(
        None,
        "--textfile",
        help="Write to this file (for node-exporter's textfile collector) instead of printing.",
    ),
) -> None:
    """Prometheus metrics of the pipeline: pending records and their age per sink, dead
    letters, partitions, pool (the REST API serves the same at /metrics, with its counters)."""
    from prometheus_client import CollectorRegistry

    from scrapesink.adapters import metrics as prometheus

    registry = CollectorRegistry()
    with open_app(announce=False, offline_ok=True) as app:
        registry.register(app.gauges())
        if textfile is not None:
            prometheus.write_textfile(textfile, registry)
            err.print(f"metrics written to {textfile}")
        else:
            sys.stdout.write(prometheus.render(registry).decode())


@handle_errors
def maintain() -> None:
    """Upkeep, safe to run from cron: premake partitions (SCRAPESINK_PARTITION_PREMAKE_DAYS),
    drop those past SCRAPESINK_RETENTION (when set), VACUUM (ANALYZE) partitions whose day
    ended more than SCRAPESINK_WRITE_WINDOW ago and were not vacuumed since, ANALYZE."""
    with open_app(announce=False) as app:
        result = app.operations.maintain()
    out.print(f"partitions created: {len(result.created)} {' '.join(result.created)}".rstrip())
    if result.retention is None:
        out.print("retention: not set (SCRAPESINK_RETENTION), nothing dropped")
    else:
        out.print(f"partitions dropped: {len(result.dropped)} {' '.join(result.dropped)}".rstrip())
    out.print(f"partitions vacuumed: {len(result.vacuumed)} {' '.join(result.vacuumed)}".rstrip())
    out.print("analyzed")


@handle_errors
def health(as_json: bool = typer.Option(False, "--json", help="One JSON object.")) -> None:
    """Is this installation healthy? Database reachable, migrations at head, partitions
    premade, nothing pending longer than SCRAPESINK_HEALTH_MAX_PENDING_AGE, at least
    SCRAPESINK_HEALTH_MIN_FREE_BYTES free in the data directory. Exit code 1 when not."""
    with open_app(announce=False, offline_ok=True, schema="skip") as app:
        report = app.health()
    if as_json:
        print(json.dumps(report.as_dict()))
    else:
        table = Table("check", "", "detail")
        for check in report.checks:
            table.add_row(
                check.name, "[green]ok[/]" if check.ok else "[red]FAIL[/]", escape(check.detail)
            )
        out.print(table)
    raise typer.Exit(EXIT_OK if report.ok else EXIT_FATAL)


def installation_stats(as_json: bool) -> None:
    """`scrapesink stats` without a model."""
    with open_app(announce=False) as app:
        sizes = app.upkeep.table_sizes()
        days = app.event_reader.stats()
        runs = app.jobs.run_stats()
        pool = app.database.stats()
    if as_json:
        print(
            json.dumps(
                {
                    "tables": [
                        {"name": t.name, "rows": t.rows, "bytes": t.total_bytes} for t in sizes
                    ],
                    "events": [
                        {
                            "source": d.source,
                            "day": d.day.isoformat(),
                            "events": d.events,
                            "processed": d.processed,
                        }
                        for d in days
                    ],
                    "jobs": runs,
                    "pool": pool,
                }
            )
        )
        return
    table = Table("table", "rows (est.)", "size")
    for size in sizes:
        table.add_row(size.name, f"{size.rows:,}", f"{size.total_bytes / 1e6:.1f} MB")
    out.print(table)
    per_day = Table("source", "day", "events", "processed")
    for d in days:
        per_day.add_row(escape(d.source), d.day.isoformat(), f"{d.events:,}", f"{d.processed:,}")
    out.print(per_day)
    jobs = Table("job", "runs", "succeeded", "partial", "failed", "success rate")
    for name, r in runs.items():
        rate = f"{r['success_rate']:.0%}" if r["success_rate"] is not None else "-"
        jobs.add_row(
            escape(name),
            str(r["runs"]),
            str(r["succeeded"]),
            str(r["partial"]),
            str(r["failed"]),
            rate,
        )
    out.print(jobs)
    out.print("pool: " + ", ".join(f"{k} {v}" for k, v in sorted(pool.items())))

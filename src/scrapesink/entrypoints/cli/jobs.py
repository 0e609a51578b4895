"""`scrapesink jobs ...`: ETL job definitions, their components, and their runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from scrapesink.application.job_specs import check_job
from scrapesink.domain.jobs import Run
from scrapesink.entrypoints.cli.common import escape, fitted_table, handle_errors, open_app, out
from scrapesink.errors import InputError

app = typer.Typer(
    help="ETL jobs: definitions (config checked against the job kind), components, runs.",
    no_args_is_help=True,
)


def _json_arg(text: str, what: str) -> Any:
    """JSON given inline, or @FILE."""
    if text.startswith("@"):
        try:
            text = Path(text[1:]).read_text(encoding="utf-8")
        except OSError as exc:
            raise InputError(f"{what}: cannot read {text[1:]}: {exc.strerror}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{what} is not valid JSON: {exc.msg} (line {exc.lineno})") from None


@app.command("create")
@handle_errors
def create(
    name: str = typer.Argument(..., help="Job name (letters, digits, _ . : -)."),
    kind: str = typer.Option("ingest", help="ingest, scrape or export."),
    source: str | None = typer.Option(None, help="The source its records carry."),
    config: str = typer.Option("{}", help="Config JSON (or @FILE), checked against the kind."),
    component: list[str] = typer.Option(
        [],
        "--component",
        "-c",
        help="NAME=KIND or NAME=KIND:{json config}; repeatable, in order. "
        "KIND: reader, transform, writer, scraper, custom.",
    ),
    replace: bool = typer.Option(False, "--replace", help="Redefine an existing job."),
    disabled: bool = typer.Option(False, "--disabled", help="Create it disabled."),
) -> None:
    """Define a job. Its config must fit its kind (an unknown key is an error, not ignored)."""
    components = []
    for text in component:
        part_name, found, rest = text.partition("=")
        if not found or not rest:
            raise InputError(f"--component {text!r}: use NAME=KIND or NAME=KIND:JSON")
        part_kind, _, part_config = rest.partition(":")
        components.append(
            {
                "name": part_name,
                "kind": part_kind,
                "config": _json_arg(part_config, f"component {part_name}") if part_config else {},
            }
        )
    spec = check_job(
        {
            "name": name,
            "kind": kind,
            "source": source,
            "config": _json_arg(config, "--config"),
            "enabled": not disabled,
            "components": components,
        }
    )
    with open_app(announce=False) as application:
        job = application.jobs.create(spec, replace=replace)
    out.print(f"job {escape(job.name)} ({job.kind}) {'replaced' if replace else 'created'}")


@app.command("list")
@handle_errors
def list_() -> None:
    """Every job with its last run."""
    with open_app(announce=False) as application:
        jobs = application.jobs.list()
        last = {job.name: application.jobs.runs(job.name, limit=1) for job in jobs}
    table = Table("job", "kind", "source", "enabled", "last run", "status", "stored")
    for job in jobs:
        run = last[job.name][0] if last[job.name] else None
        table.add_row(
            escape(job.name),
            job.kind,
            escape(job.source or ""),
            "yes" if job.enabled else "[yellow]no[/]",
            run.started_at.strftime("%Y-%m-%d %H:%M") if run else "-",
            _status(run.status) if run else "-",
            f"{run.counts.stored:,}" if run else "-",
        )
    out.print(table)


@app.command("show")
@handle_errors
def show(name: str = typer.Argument(...)) -> None:
    """A job's definition and components, as JSON."""
    with open_app(announce=False) as application:
        job = application.jobs.get(name)
    out.print_json(json.dumps(job.as_dict()))


@app.command("runs")
@handle_errors
def runs(
    name: str | None = typer.Argument(None, help="Only this job's runs."),
    limit: int = typer.Option(20, min=1, max=10_000),
    as_json: bool = typer.Option(False, "--json", help="JSON lines."),
) -> None:
    """Runs, newest first: status, counts, duration, error summary."""
    with open_app(announce=False) as application:
        found = application.jobs.runs(name, limit=limit)
    if as_json:
        for run in found:
            print(json.dumps(run.as_dict()))
        return
    columns = (
        "run", "job", "status", "started", "seconds", "read", "stored", "dup", "unch", "rej",
        "pend", "error",
    )  # fmt: skip
    rows = []
    for run in found:
        c = run.counts
        numbers = (c.read, c.stored, c.duplicate, c.unchanged, c.rejected, c.pending)
        rows.append(
            [
                str(run.id),
                escape(run.job),
                _status(run.status),
                run.started_at.strftime("%Y-%m-%d %H:%M:%S"),
                _seconds(run),
                *(f"{v:,}" for v in numbers),
                escape((run.error_summary or "")[:60]),
            ]
        )
    # at 80 columns: the error (see `jobs runs --json`), then the rarer counts, go first
    drop = ("error", "unch", "pend", "dup", "seconds", "read")
    numeric = {"seconds", "read", "stored", "dup", "unch", "rej", "pend"}
    out.print(
        fitted_table(columns, rows, keep={"run", "job", "status"}, drop_first=drop, right=numeric)
    )


@app.command("disable")
@handle_errors
def disable(name: str = typer.Argument(...)) -> None:
    """Disable a job: `ingest --job NAME` (and the API, and sink.run) refuse to run it."""
    _set_enabled(name, False)


@app.command("enable")
@handle_errors
def enable(name: str = typer.Argument(...)) -> None:
    """Enable a disabled job again."""
    _set_enabled(name, True)


def _set_enabled(name: str, enabled: bool) -> None:
    with open_app(announce=False) as application:
        job = application.jobs.set_enabled(name, enabled)
    out.print(f"job {escape(job.name)} {'enabled' if job.enabled else 'disabled'}")


def _status(status: str) -> str:
    colour = {"succeeded": "green", "failed": "red", "partial": "yellow"}.get(status)
    return f"[{colour}]{status}[/]" if colour else status


def _seconds(run: Run) -> str:
    seconds = run.duration_seconds
    return "-" if seconds is None else f"{seconds:.1f}"

"""The `scrapesink` command line."""

from __future__ import annotations

import logging
import sys
from importlib import resources
from pathlib import Path
from typing import Any

import typer

from scrapesink import __version__, logs
from scrapesink.entrypoints.cli import (
    backup,
    db,
    events,
    jobs,
    models,
    ops,
    partitions,
    records,
    serve,
    verify,
    worker,
)
from scrapesink.entrypoints.cli.common import (
    EXIT_FATAL,
    EXIT_OK,
    err,
    fail,
    handle_errors,
    open_app,
    out,
    set_overrides,
    settings,
)
from scrapesink.entrypoints.cli.help import install as _readable_help
from scrapesink.entrypoints.cli.help import reflow_commands
from scrapesink.entrypoints.cli.ingest import ingest
from scrapesink.errors import ConfigError

_readable_help()
app = typer.Typer(
    name="scrapesink",
    help=(
        "Store scraped records in PostgreSQL, deduplicated, partitioned by day.\n\n"
        "With no database configured an embedded PostgreSQL starts in <data dir>/pgdata; set "
        "SCRAPESINK_DATABASE_URL (or PG_HOST, PG_PORT, PG_DB, PG_USER, PG_PASSWORD) to use a "
        "server."
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(events.app, name="events")
app.add_typer(partitions.app, name="partitions")
app.add_typer(db.app, name="db")
app.add_typer(models.app, name="models")
app.add_typer(jobs.app, name="jobs")
app.add_typer(backup.app, name="backup")
app.command()(ingest)
app.command()(records.get)
app.command("list")(records.list_)
app.command()(records.search)
app.command()(records.update)
app.command()(records.delete)
app.command()(records.stats)
app.command()(records.compact)
app.command()(ops.status)
app.command()(ops.replay)
app.command()(ops.export)
app.command()(ops.metrics)
app.command()(ops.maintain)
app.command()(ops.health)
app.command()(verify.verify)
app.add_typer(ops.deadletters_app, name="deadletters")
app.command()(serve.serve)
app.command()(worker.worker)
app.add_typer(serve.keys_app, name="keys")
app.command()(serve.audit)
app.command()(backup.restore)


def _version(value: bool) -> None:
    if value:
        out.print(f"scrapesink {__version__}")
        raise typer.Exit(EXIT_OK)


@app.callback()
def root(
    ctx: typer.Context,
    data_dir: Path | None = typer.Option(
        None, "--data-dir", help="Data directory (default SCRAPESINK_DATA_DIR or ./data)."
    ),
    database_url: str | None = typer.Option(
        None,
        "--database-url",
        help="PostgreSQL URL (default SCRAPESINK_DATABASE_URL).",
        show_default=False,
    ),
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Show the version and exit."
    ),
) -> None:
    set_overrides(data_dir=data_dir, database_url=database_url)
    try:
        config = settings()
    except ConfigError:
        return  # the command itself reports the bad setting, in one line
    logs.configure(config.log_level, config.log_format)
    if config.log_level == "WARNING" and ctx.invoked_subcommand != "serve":
        # A command reports an outage once, in its own words, at the end (pending N for
        # postgres: why; safe in the journal): the pool's connection errors and the delivery
        # lanes' warnings would say it three more times. `serve` keeps them: it has no end.
        for noisy in ("psycopg.pool", "scrapesink.application.delivery"):
            logging.getLogger(noisy).setLevel(logging.ERROR)


DEMO_MOVIES: list[dict[str, Any]] = [
    {
        "url": "https://example.com/heat",
        "title": "Heat",
        "year": 1995,
        "genres": ["Crime", "Drama"],
        "actors": [
            {"name": "Al Pacino", "role": "Vincent Hanna", "billing_order": 1},
            {"name": "Robert De Niro", "role": "Neil McCauley", "billing_order": 2},
        ],
    },
    {
        "url": "https://example.com/the-irishman",
        "title": "The Irishman",
        "year": 2019,
        "genres": ["Crime", "Drama"],
        "actors": [
            {"name": "Robert De Niro", "role": "Frank Sheeran", "billing_order": 1},
            {"name": "Al Pacino", "role": "Jimmy Hoffa", "billing_order": 2},
        ],
    },
    {
        "url": "https://example.com/ronin",
        "title": "Ronin",
        "year": 1998,
        "genres": ["Action", "Thriller"],
        "actors": [{"name": "Robert De Niro", "role": "Sam", "billing_order": 1}],
    },
]
DEMO_WORKFLOW: dict[str, Any] = {
    "workflow_id": "demo-1",
    "url": "https://n8n.io/workflows/demo-1",
    "quality_score": 0.92,
    "layer1_success": True,
    "metadata": {"title": "Post new leads to Slack", "categories": ["sales"], "tags": ["slack"]},
}


@app.command()
@handle_errors
def demo() -> None:
    """Ingest the bundled sample events, save a few movies (with actors they share) and a
    workflow, and show what to look at next."""
    sample = resources.files("scrapesink") / "data" / "sample_events.jsonl.gz"
    with resources.as_file(sample) as path, open_app() as application:
        from scrapesink.adapters.readers import open_input, read_records

        infile = open_input(path)
        try:
            records = read_records(
                infile, "jsonl", max_record_bytes=application.settings.max_payload_bytes
            )
            application.start_writing()
            summary = application.ingest_service().ingest(records)
        finally:
            infile.close()
        saved = application.models()
        movies = saved.save("movies", [(None, m) for m in DEMO_MOVIES])
        flows = saved.save("workflows", [(None, DEMO_WORKFLOW)])
        days = application.partitions.existing()
        stats = application.event_reader.stats()
        data_dir = application.settings.data_dir
    out.print(
        f"[bold]sample ingested:[/] read {summary.read:,}, inserted {summary.inserted:,}, "
        f"duplicates {summary.duplicates:,}, rejected {summary.rejected:,}"
    )
    sources = sorted({row.source for row in stats})
    out.print(
        f"{sum(r.events for r in stats):,} events from {len(sources)} sources "
        f"({', '.join(sources)}) in {len(days)} day partitions"
    )
    out.print(
        f"[bold]models saved:[/] {movies.read} movies ({movies.stored} new or changed) sharing"
        f" {len({a['name'] for m in DEMO_MOVIES for a in m['actors']})} actors, and"
        f" {flows.read} workflow ({flows.stored} new or changed)"
    )
    csv_report = summary.sinks.get("csv")
    if csv_report is not None:
        out.print(f"CSV mirror: {csv_report.stored:,} new rows under {data_dir}/raw_events")
    hints = [
        ("scrapesink events stats", "events per source and day"),
        ("scrapesink events list --source shop --limit 5", ""),
        ("scrapesink partitions list", "partitions, rows, sizes"),
        ("scrapesink status", "pending per store, dead letters"),
        ("scrapesink get movies https://example.com/heat", "a movie with its actors"),
        ("scrapesink search movies pacino", "movies by their actors' names too"),
        ("scrapesink list workflows --json", "a model's records"),
        ("scrapesink demo", "again: everything is a duplicate now"),
        ("scrapesink db shell", "psql on it: the tables raw_events, raw_event_keys"),
        (f"ls {data_dir}/raw_events/shop", "the CSV mirror, one file per UTC day"),
    ]
    out.print("\n[bold]next:[/]")
    for command, what in hints:
        out.print(f"  {command.ljust(46)} {what}".rstrip(), highlight=False)


def main() -> None:
    """Console-script entry point."""
    # scrapesink's own log lines go to stderr (configured in `root`, once settings are known)
    logs.configure()
    try:
        app()
    except ConfigError as exc:
        err.print(f"error: {exc.message}", highlight=False, markup=False)
        sys.exit(EXIT_FATAL)


__all__ = ["app", "fail", "main"]


reflow_commands(app)  # last: every command above is registered

"""`scrapesink partitions ...`: list, premake and prune the day partitions of raw_events."""

from __future__ import annotations

from datetime import timedelta

import typer

from scrapesink.config import parse_duration
from scrapesink.entrypoints.cli.common import fitted_table, handle_errors, open_app, out

app = typer.Typer(help="Day partitions of the raw_events table.", no_args_is_help=True)


def _size(num: int) -> str:
    value = float(num)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TB"


@app.command("list")
@handle_errors
def list_() -> None:
    """Every partition: name, UTC range, exact row count, size on disk."""
    with open_app() as application:
        infos = application.partitions.details()
    # a day partition is one UTC day: its day, not its two bounds
    rows = [
        [info.name, info.start.strftime("%Y-%m-%d"), f"{info.rows:,}", _size(info.size_bytes)]
        for info in infos
    ]
    columns = ("partition", "day (UTC)", "rows", "size")
    out.print(fitted_table(columns, rows, keep={"partition"}, right={"rows", "size"}))
    out.print(f"{len(infos)} partition(s)")


@app.command()
@handle_errors
def ensure(
    days: int | None = typer.Option(
        None, min=0, max=3650, help="Days ahead (default SCRAPESINK_PARTITION_PREMAKE_DAYS, 7)."
    ),
) -> None:
    """Create today's partition and the next DAYS (UTC); existing ones are left alone."""
    with open_app() as application:
        ahead = application.settings.partition_premake_days if days is None else days
        created = application.partitions.premake(ahead)
    for part in created:
        out.print(f"created {part.name}")
    out.print(f"{len(created)} partition(s) created, today + {ahead} day(s) ahead present")


@app.command()
@handle_errors
def prune(
    older_than: str = typer.Option(
        ..., help="Drop days that ended longer ago than this: 30d, 12h."
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="Only show what would be dropped."),
) -> None:
    """Drop whole partitions older than --older-than, with their deduplication keys."""
    try:
        age = parse_duration(older_than)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--older-than") from None
    if age < timedelta(days=1):
        raise typer.BadParameter("must be at least 1d", param_hint="--older-than")
    with open_app() as application:
        dropped = application.partitions.prune(age, dry_run=dry_run)
    verb = "would drop" if dry_run else "dropped"
    for info in dropped:
        out.print(f"{verb} {info.name} ({info.rows:,} rows)")
    out.print(f"{len(dropped)} partition(s) {verb}")

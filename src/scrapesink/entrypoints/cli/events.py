"""`scrapesink events ...`: read what was stored, and mark events processed."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

import typer
from rich.table import Table

from scrapesink.application.ports import EventQuery
from scrapesink.config import parse_duration
from scrapesink.domain.events import StoredEvent
from scrapesink.entrypoints.cli.common import (
    EXIT_FATAL,
    err,
    escape,
    fail,
    handle_errors,
    open_app,
    out,
)

app = typer.Typer(help="Query raw events and mark them processed.", no_args_is_help=True)


_AGO = re.compile(r"\d+(\.\d+)?[smhdw]")


def _when(value: str | None, option: str) -> datetime | None:
    """An ISO 8601 date or time (naive: UTC), or a duration ago: ``7d``, ``12h``, ``30m``."""
    if value is None:
        return None
    if _AGO.fullmatch(value.strip().lower()):
        return datetime.now(UTC) - parse_duration(value)
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(
            f"{value!r} is neither an ISO 8601 date or time nor a duration such as 7d or 12h",
            param_hint=option,
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def event_json(event: StoredEvent) -> dict[str, Any]:
    return {
        "id": event.id,
        "source": event.source,
        "source_id": event.source_id,
        "occurred_at": event.occurred_at.astimezone(UTC).isoformat(),
        "created_at": event.created_at.astimezone(UTC).isoformat(),
        "processed": event.processed,
        "payload": event.payload,
    }


@app.command()
@handle_errors
def get(source: str, source_id: str) -> None:
    """Print one event as JSON (exit 1 if there is none)."""
    with open_app(announce=False) as application:
        event = application.event_reader.get(source, source_id)
    if event is None:
        fail(f"no event with source {source!r} and source_id {source_id!r}", EXIT_FATAL)
    out.print_json(json.dumps(event_json(event), ensure_ascii=False))


@app.command("list")
@handle_errors
def list_(
    source: str | None = typer.Option(None, help="Only this source."),
    since: str | None = typer.Option(
        None, help="occurred_at >= this: ISO 8601 (naive = UTC), or a duration ago (7d, 12h)."
    ),
    until: str | None = typer.Option(None, help="occurred_at < this (as --since)."),
    processed: bool | None = typer.Option(
        None, "--processed/--unprocessed", help="Only processed or only unprocessed events."
    ),
    contains: str | None = typer.Option(
        None, help='Payload contains this JSON object, e.g. \'{"lang": "en"}\'.'
    ),
    limit: int = typer.Option(100, min=1, max=10_000, help="Events per page."),
    after: str | None = typer.Option(None, help="Cursor printed by the previous page."),
) -> None:
    """Print events as JSON lines, oldest first; the next page's cursor goes to stderr."""
    filter_ = None
    if contains is not None:
        try:
            filter_ = json.loads(contains)
        except ValueError as exc:
            raise typer.BadParameter(f"not JSON: {exc}", param_hint="--contains") from None
        if not isinstance(filter_, dict):
            raise typer.BadParameter("must be a JSON object", param_hint="--contains")
    query = EventQuery(
        source, _when(since, "--since"), _when(until, "--until"), processed, filter_, limit, after
    )
    with open_app(announce=False) as application:
        page = application.event_reader.query(query)
    for event in page.events:
        print(json.dumps(event_json(event), ensure_ascii=False))
    if page.next_cursor:
        err.print(f"next page: --after {page.next_cursor}", highlight=False)


@app.command()
@handle_errors
def stats(
    source: str | None = typer.Option(None, help="Only this source."),
    since: str | None = typer.Option(
        None, help="occurred_at >= this: ISO 8601, or a duration ago (7d, 12h)."
    ),
    until: str | None = typer.Option(None, help="occurred_at < this (as --since)."),
    as_json: bool = typer.Option(False, "--json", help="JSON lines instead of a table."),
) -> None:
    """Events per source and UTC day, with how many are processed."""
    with open_app(announce=False) as application:
        rows = application.event_reader.stats(
            source=source, since=_when(since, "--since"), until=_when(until, "--until")
        )
    if as_json:
        for row in rows:
            print(
                json.dumps(
                    {
                        "source": row.source,
                        "day": row.day.isoformat(),
                        "events": row.events,
                        "processed": row.processed,
                    }
                )
            )
        return
    table = Table("source", "day (UTC)", "events", "processed")
    for row in rows:
        table.add_row(row.source, row.day.isoformat(), f"{row.events:,}", f"{row.processed:,}")
    out.print(table)


@app.command("mark-processed")
@handle_errors
def mark_processed(
    source: str,
    source_ids: list[str] = typer.Argument(..., help="One or more source_ids."),
    undo: bool = typer.Option(False, "--undo", help="Clear the flag instead of setting it."),
) -> None:
    """Mark events of SOURCE as processed (downstream consumers record what they handled).

    Exit code 1 when some SOURCE_ID is not stored (each is named); the others are marked."""
    wanted = list(dict.fromkeys(source_ids))
    with open_app(announce=False) as application:
        events = application.event_reader
        changed = events.mark_processed([(source, sid) for sid in wanted], processed=not undo)
        missing = [sid for sid in wanted if events.get(source, sid) is None]
    state = "unprocessed" if undo else "processed"
    already = len(wanted) - len(missing) - changed
    out.print(
        f"{changed} event(s) marked {state}" + (f", {already} already {state}" if already else "")
    )
    for sid in missing:
        err.print(f"[red]not found[/] {escape(source)}/{escape(sid)}")
    if missing:
        raise typer.Exit(EXIT_FATAL)

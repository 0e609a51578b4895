"""The PostgreSQL event store: COPY into staging, one set-based insert through the key registry."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from psycopg.types.json import Jsonb
from tenacity import (
    retry,
    retry_if_exception,
    stop_after_attempt,
    wait_random_exponential,
)

from scrapesink.adapters.postgres.database import Database
from scrapesink.adapters.postgres.partitions import PartitionManager
from scrapesink.application.ports import DayStats, EventPage, EventQuery, WriteOutcome
from scrapesink.domain.events import RawEvent, StoredEvent
from scrapesink.errors import ConstraintError, InputError, TransientStorageError

# The staging table lives per connection; ON COMMIT DELETE ROWS empties it after every batch.
_STAGE_DDL = """
CREATE TEMP TABLE IF NOT EXISTS scrapesink_stage (
    source text NOT NULL, source_id text NOT NULL, occurred_at timestamptz NOT NULL,
    payload jsonb NOT NULL
) ON COMMIT DELETE ROWS
"""
_COPY = "COPY scrapesink_stage (source, source_id, occurred_at, payload) FROM STDIN"
# Keys are claimed in key order (a consistent lock order between concurrent writers); only rows
# whose key this statement claimed go into raw_events: first write wins, duplicates are skipped.
_INSERT = """
WITH claimed AS (
    INSERT INTO raw_event_keys (source, source_id, occurred_at)
    SELECT source, source_id, occurred_at FROM scrapesink_stage ORDER BY source, source_id
    ON CONFLICT (source, source_id) DO NOTHING
    RETURNING source, source_id
)
INSERT INTO raw_events (source, source_id, occurred_at, payload)
SELECT s.source, s.source_id, s.occurred_at, s.payload
FROM scrapesink_stage s JOIN claimed c ON c.source = s.source AND c.source_id = s.source_id
ORDER BY s.occurred_at
RETURNING source, source_id
"""
_NO_PARTITION = "23514"  # "no partition of relation ... found for row": pruned under our feet
_RETRIED_STATES = {"40001", "40P01"}
_COLUMNS = "e.id, e.source, e.source_id, e.occurred_at, e.payload, e.created_at, e.processed"


def _worth_retrying(exc: BaseException) -> bool:
    return isinstance(exc, TransientStorageError) and exc.sqlstate in _RETRIED_STATES


class PostgresEventStore:
    """Raw events in the day-partitioned ``raw_events`` table."""

    def __init__(
        self, database: Database, partitions: PartitionManager, *, premake_days: int = 7
    ) -> None:
        self.database = database
        self.partitions = partitions
        self.premake_days = premake_days

    def prepare(self) -> None:
        self.partitions.premake(self.premake_days)

    def write(self, events: Sequence[RawEvent]) -> WriteOutcome:
        if not events:
            return WriteOutcome()
        ordered = sorted(events, key=lambda e: e.occurred_at)
        self.partitions.ensure_days({e.occurred_at.date() for e in ordered})
        try:
            return self._write(ordered)
        except ConstraintError as exc:
            if exc.sqlstate != _NO_PARTITION:
                raise
            # Another process pruned a partition we believed in: re-check and go again once.
            self.partitions.forget()
            self.partitions.ensure_days({e.occurred_at.date() for e in ordered})
            return self._write(ordered)

    @retry(
        retry=retry_if_exception(_worth_retrying),
        stop=stop_after_attempt(5),
        wait=wait_random_exponential(multiplier=0.05, max=2.0),
        reraise=True,
    )
    def _write(self, events: Sequence[RawEvent]) -> WriteOutcome:
        with self.database.connection() as conn, conn.transaction(), conn.cursor() as cur:
            cur.execute(_STAGE_DDL)
            with cur.copy(_COPY) as copy:
                for e in events:
                    copy.write_row((e.source, e.source_id, e.occurred_at, e.payload_json))
            cur.execute(_INSERT)
            stored = frozenset((row[0], row[1]) for row in cur.fetchall())
        return WriteOutcome(stored)

    # -- queries ------------------------------------------------------------------------------
    def get(self, source: str, source_id: str) -> StoredEvent | None:
        with self.database.connection() as conn:
            row = conn.execute(
                f"SELECT {_COLUMNS} FROM raw_event_keys k JOIN raw_events e"  # noqa: S608 - constant
                " ON e.occurred_at = k.occurred_at AND e.source = k.source"
                " AND e.source_id = k.source_id"
                " WHERE k.source = %s AND k.source_id = %s",
                (source, source_id),
            ).fetchone()
        return _stored(row) if row else None

    def query(self, query: EventQuery) -> EventPage:
        clauses: list[str] = []
        params: list[Any] = []
        if query.source is not None:
            clauses.append("e.source = %s")
            params.append(query.source)
        if query.since is not None:
            clauses.append("e.occurred_at >= %s")
            params.append(query.since)
        if query.until is not None:
            clauses.append("e.occurred_at < %s")
            params.append(query.until)
        if query.processed is not None:
            clauses.append("e.processed = %s")
            params.append(query.processed)
        if query.contains is not None:
            clauses.append("e.payload @> %s")
            params.append(Jsonb(query.contains))
        if query.after is not None:
            at, last_id = decode_cursor(query.after)
            clauses.append("(e.occurred_at, e.id) > (%s, %s)")
            params.extend([at, last_id])
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        sql = (
            f"SELECT {_COLUMNS} FROM raw_events e {where}"  # noqa: S608 - clauses are constants
            " ORDER BY e.occurred_at, e.id LIMIT %s"
        )
        with self.database.connection() as conn:
            rows = conn.execute(sql, [*params, query.limit + 1]).fetchall()
        events = [_stored(row) for row in rows[: query.limit]]
        more = len(rows) > query.limit
        cursor = encode_cursor(events[-1].occurred_at, events[-1].id) if more and events else None
        return EventPage(events, cursor)

    def stats(
        self,
        *,
        source: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[DayStats]:
        sql = """
            SELECT source, (occurred_at AT TIME ZONE 'UTC')::date AS day,
                   count(*), count(*) FILTER (WHERE processed)
            FROM raw_events
            WHERE (%(source)s::text IS NULL OR source = %(source)s)
              AND (%(since)s::timestamptz IS NULL OR occurred_at >= %(since)s)
              AND (%(until)s::timestamptz IS NULL OR occurred_at < %(until)s)
            GROUP BY 1, 2 ORDER BY 1, 2
        """
        with self.database.connection() as conn:
            rows = conn.execute(sql, {"source": source, "since": since, "until": until}).fetchall()
        return [DayStats(*row) for row in rows]

    def mark_processed(self, keys: Sequence[tuple[str, str]], processed: bool = True) -> int:
        if not keys:
            return 0
        sql = """
            UPDATE raw_events e SET processed = %(flag)s
            FROM raw_event_keys k,
                 unnest(%(sources)s::text[], %(ids)s::text[]) AS t(source, source_id)
            WHERE k.source = t.source AND k.source_id = t.source_id
              AND e.occurred_at = k.occurred_at AND e.source = k.source
              AND e.source_id = k.source_id AND e.processed <> %(flag)s
        """
        params = {
            "flag": processed,
            "sources": [k[0] for k in keys],
            "ids": [k[1] for k in keys],
        }
        with self.database.connection() as conn:
            return conn.execute(sql, params).rowcount


def _stored(row: tuple[Any, ...]) -> StoredEvent:
    return StoredEvent(*row)


def encode_cursor(occurred_at: datetime, event_id: int) -> str:
    raw = f"{occurred_at.isoformat()}|{event_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, int]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        at, _, event_id = base64.urlsafe_b64decode(padded).decode().partition("|")
        return datetime.fromisoformat(at), int(event_id)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise InputError(
            f"invalid cursor {cursor!r}: pass the value a previous page returned"
        ) from None

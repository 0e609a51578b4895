"""Day partitions of ``raw_events``: list, create on demand, premake, prune.

Every change happens under one transaction-level advisory lock, and re-reads the catalog inside
it, so concurrent writers never see "relation already exists" (or the pg_type unique violation
that a racing ``CREATE TABLE IF NOT EXISTS`` raises). Bounds are written as explicit UTC literals,
so the session ``TimeZone`` cannot shift a day. There is no DEFAULT partition: a row whose day is
missing fails loudly instead of hiding.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import psycopg
from psycopg import sql

from scrapesink.adapters.postgres.database import Database
from scrapesink.domain.partitions import PARENT_TABLE, DayPartition, days_ahead, expired

PARTITION_LOCK = 0x5C5A_0002
log = logging.getLogger(__name__)

_LIST_SQL = """
SELECT c.relname
FROM pg_inherits i
JOIN pg_class c ON c.oid = i.inhrelid
JOIN pg_class p ON p.oid = i.inhparent
WHERE p.relname = %s AND p.relnamespace = to_regnamespace(current_schema())::oid
"""


@dataclass(frozen=True, slots=True)
class PartitionInfo:
    name: str
    start: datetime
    end: datetime
    rows: int
    size_bytes: int


class PartitionManager:
    """Creates and drops day partitions; caches which days exist to keep the hot path cheap."""

    def __init__(self, database: Database) -> None:
        self.database = database
        self._known: set[date] = set()
        self._lock = threading.Lock()

    # -- reading ----------------------------------------------------------------------------
    def existing(self, conn: psycopg.Connection[Any] | None = None) -> list[DayPartition]:
        if conn is None:
            with self.database.connection() as own:
                return self.existing(own)
        rows = conn.execute(_LIST_SQL, (PARENT_TABLE,)).fetchall()
        found = [p for p in (DayPartition.from_name(r[0]) for r in rows) if p is not None]
        return sorted(found, key=lambda p: p.day)

    def details(self) -> list[PartitionInfo]:
        """Every partition with its range, exact row count and on-disk size."""
        infos = []
        with self.database.connection() as conn:
            for part in self.existing(conn):
                query = sql.SQL(
                    "SELECT count(*), pg_total_relation_size({regclass}::regclass) FROM {table}"
                ).format(regclass=sql.Literal(part.name), table=sql.Identifier(part.name))
                rows, size = conn.execute(query).fetchone() or (0, 0)
                infos.append(PartitionInfo(part.name, part.start, part.end, rows, size))
        return infos

    # -- creating ---------------------------------------------------------------------------
    def ensure_days(self, days: Iterable[date]) -> list[DayPartition]:
        """Make sure a partition exists for each day; returns the ones this call created."""
        wanted = set(days)
        with self._lock:
            missing = wanted - self._known
        if not missing:
            return []
        created: list[DayPartition] = []
        with self.database.connection() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (PARTITION_LOCK,))
            present = {p.day for p in self.existing(conn)}
            for day in sorted(missing - present):
                part = DayPartition(day)
                conn.execute(_create_sql(part))
                created.append(part)
                log.info("created partition %s", part.name)
        with self._lock:
            self._known |= present | missing
        return created

    def premake(self, days: int, *, today: date | None = None) -> list[DayPartition]:
        """Today's partition and ``days`` ahead (UTC)."""
        today = today or datetime.now(UTC).date()
        return self.ensure_days(p.day for p in days_ahead(today, days))

    def forget(self) -> None:
        """Drop the cache (after another process may have pruned)."""
        with self._lock:
            self._known.clear()

    # -- pruning ----------------------------------------------------------------------------
    def prune(
        self, older_than: timedelta, *, now: datetime | None = None, dry_run: bool = False
    ) -> list[PartitionInfo]:
        """Drop partitions whose whole day is older than ``older_than``, with their keys."""
        now = now or datetime.now(UTC)
        dropped: list[PartitionInfo] = []
        with self.database.connection() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (PARTITION_LOCK,))
            for part in expired(self.existing(conn), now=now, older_than=older_than):
                count = conn.execute(
                    sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(part.name))
                ).fetchone()
                dropped.append(
                    PartitionInfo(part.name, part.start, part.end, count[0] if count else 0, 0)
                )
                if dry_run:
                    continue
                # The keys of exactly the rows being dropped, found through the primary key.
                conn.execute(
                    sql.SQL(
                        "DELETE FROM raw_event_keys k USING {} p WHERE k.source = p.source"
                        " AND k.source_id = p.source_id AND k.occurred_at = p.occurred_at"
                    ).format(sql.Identifier(part.name))
                )
                conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(part.name)))
                log.info("dropped partition %s (%d rows)", part.name, dropped[-1].rows)
        if dropped and not dry_run:
            self.forget()
        return dropped


def _create_sql(part: DayPartition) -> sql.Composed:
    # Explicit "+00" literals: the bounds are UTC midnights whatever the session TimeZone says.
    return sql.SQL(
        "CREATE TABLE {part} PARTITION OF {parent} FOR VALUES FROM ({lo}) TO ({hi})"
    ).format(
        part=sql.Identifier(part.name),
        parent=sql.Identifier(PARENT_TABLE),
        lo=sql.Literal(f"{part.day.isoformat()} 00:00:00+00"),
        hi=sql.Literal(f"{part.end.date().isoformat()} 00:00:00+00"),
    )

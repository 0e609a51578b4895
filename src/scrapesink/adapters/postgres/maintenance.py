"""Database upkeep: ANALYZE, VACUUM of day partitions past the write window, table sizes."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from psycopg import sql

from scrapesink.adapters.postgres.database import Database
from scrapesink.adapters.postgres.partitions import PartitionManager


@dataclass(frozen=True, slots=True)
class TableSize:
    name: str
    rows: int  # the planner's estimate (reltuples): exact counts of big tables are slow
    total_bytes: int


class Maintenance:
    def __init__(self, database: Database, partitions: PartitionManager) -> None:
        self.database = database
        self.partitions = partitions

    def is_empty(self) -> bool:
        """No table at all in the current schema (what a restore without --force needs)."""
        with self.database.connection() as conn:
            row = conn.execute(
                "SELECT count(*) FROM pg_tables WHERE schemaname = current_schema()"
            ).fetchone()
        return row is not None and row[0] == 0

    def analyze(self) -> None:
        with self.database.direct(autocommit=True) as conn:
            conn.execute("ANALYZE")

    def vacuum_closed_partitions(
        self, write_window: timedelta, *, now: datetime | None = None
    ) -> list[str]:
        """VACUUM (ANALYZE) each day partition whose day ended longer ago than
        ``write_window`` and that was not vacuumed since: late writes have stopped, so one
        pass leaves it compact with fresh statistics and an all-visible map."""
        now = now or datetime.now(UTC)
        done = []
        with self.database.direct(autocommit=True) as conn:
            for part in self.partitions.existing(conn):
                if part.end + write_window > now:
                    continue
                row = conn.execute(
                    "SELECT greatest(last_vacuum, last_autovacuum) FROM pg_stat_user_tables"
                    " WHERE relname = %s",
                    (part.name,),
                ).fetchone()
                last = row[0] if row else None
                if last is not None and last >= part.end + write_window:
                    continue
                conn.execute(sql.SQL("VACUUM (ANALYZE) {}").format(sql.Identifier(part.name)))
                done.append(part.name)
        return done

    def table_sizes(self) -> list[TableSize]:
        """Every table of the current schema but the partitions, which count into their
        parent (raw_events)."""
        query = """
            SELECT c.relname,
                   -- a partitioned table: its partitions' rows; any other: its own (GREATEST
                   -- ignores NULL, so the partitions' sum is taken only where there are some)
                   CASE WHEN c.relkind = 'p' THEN coalesce(sum(greatest(k.reltuples, 0)), 0)
                        ELSE greatest(c.reltuples, 0) END::bigint,
                   (pg_total_relation_size(c.oid)
                    + coalesce(sum(pg_total_relation_size(k.oid)), 0))::bigint
            FROM pg_class c
            LEFT JOIN pg_inherits i ON i.inhparent = c.oid
            LEFT JOIN pg_class k ON k.oid = i.inhrelid
            WHERE c.relnamespace = to_regnamespace(current_schema())::oid
              AND c.relkind IN ('r', 'p') AND NOT c.relispartition
            GROUP BY c.oid, c.relname, c.reltuples, c.relkind
            ORDER BY 3 DESC
        """
        with self.database.connection() as conn:
            rows = conn.execute(query).fetchall()
        return [TableSize(r[0], int(r[1]), int(r[2])) for r in rows]

"""Which journal ranges PostgreSQL holds: journal_progress, written in each batch's transaction."""

from __future__ import annotations

from scrapesink.adapters.postgres.database import Database

RECORD_PROGRESS = (
    "INSERT INTO journal_progress (journal_id, first_seq, last_seq) VALUES (%s, %s, %s)"
    " ON CONFLICT DO NOTHING"
)


class JournalProgress:
    """The bookkeeping half of a PostgreSQL sink (a ``RecordSink``), shared by every kind."""

    database: Database

    def _verify_schema(self) -> None:
        """Hook: raise when the schema cannot take writes yet."""

    def delivered(self, journal_id: str) -> list[tuple[int, int]]:
        self._verify_schema()
        with self.database.connection() as conn:
            rows = conn.execute(
                "SELECT first_seq, last_seq FROM journal_progress WHERE journal_id = %s"
                " ORDER BY first_seq",
                (journal_id,),
            ).fetchall()
        return [(int(a), int(b)) for a, b in rows]

    def skip(self, journal_id: str, first: int, last: int) -> None:
        with self.database.connection() as conn:
            conn.execute(RECORD_PROGRESS, (journal_id, first, last))

    def forget(self, journal_id: str) -> None:
        with self.database.connection() as conn:
            conn.execute("DELETE FROM journal_progress WHERE journal_id = %s", (journal_id,))

    def forget_below(self, journal_id: str, seq: int) -> int:
        """Drop the ranges ending before ``seq`` (a shared journal's entries no consumer can
        be handed again: every one of them is acknowledged)."""
        with self.database.connection() as conn:
            cur = conn.execute(
                "DELETE FROM journal_progress WHERE journal_id = %s AND last_seq < %s",
                (journal_id, seq),
            )
        return cur.rowcount

    def repair(self) -> None:
        """Nothing to repair: every batch is one transaction."""

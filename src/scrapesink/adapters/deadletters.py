"""Dead letters: records a sink refused permanently, kept locally with why, until retried or purged.

Local SQLite (``<data dir>/deadletters.sqlite``) on purpose: it must work while PostgreSQL is the
sink that refuses, or is down.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from scrapesink.domain.events import RawEvent
from scrapesink.errors import NotFound, ScrapesinkError, TransientStorageError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS dead_letters (
    id INTEGER PRIMARY KEY,
    sink TEXT NOT NULL,
    journal_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    source TEXT NOT NULL,
    source_id TEXT NOT NULL,
    occurred_at TEXT NOT NULL,
    payload TEXT NOT NULL,
    error_type TEXT NOT NULL,
    message TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    first_failed_at REAL NOT NULL,
    last_failed_at REAL NOT NULL,
    UNIQUE (sink, journal_id, seq)
)
"""


@dataclass(frozen=True, slots=True)
class DeadLetter:
    id: int
    sink: str
    journal_id: str
    seq: int
    event: RawEvent
    error_type: str
    message: str
    attempts: int
    first_failed_at: datetime
    last_failed_at: datetime


class DeadLetterStore:
    def __init__(self, path: Path) -> None:
        self.path = path

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, isolation_level=None, timeout=60)
        except (OSError, sqlite3.Error) as exc:
            raise TransientStorageError(f"cannot open dead letters {self.path}: {exc}") from exc
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.execute(_SCHEMA)
            yield db
        except sqlite3.Error as exc:
            raise TransientStorageError(f"dead letters {self.path}: {exc}") from exc
        finally:
            db.close()

    def add(
        self, sink: str, journal_id: str, seq: int, event: RawEvent, error: ScrapesinkError
    ) -> None:
        """Keep one refused record; the same record refused again counts one more attempt."""
        now = datetime.now(UTC).timestamp()
        with self._db() as db:
            db.execute(
                "INSERT INTO dead_letters (sink, journal_id, seq, source, source_id, occurred_at,"
                " payload, error_type, message, attempts, first_failed_at, last_failed_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 1, ?, ?)"
                " ON CONFLICT (sink, journal_id, seq) DO UPDATE SET attempts = attempts + 1,"
                " last_failed_at = excluded.last_failed_at, message = excluded.message,"
                " error_type = excluded.error_type",
                (
                    sink,
                    journal_id,
                    seq,
                    event.source,
                    event.source_id,
                    event.occurred_at.isoformat(),
                    event.payload_json,
                    error.error_type,
                    error.message,
                    now,
                    now,
                ),
            )

    def failed_again(self, letter_id: int, error: ScrapesinkError) -> None:
        with self._db() as db:
            db.execute(
                "UPDATE dead_letters SET attempts = attempts + 1, last_failed_at = ?,"
                " message = ?, error_type = ? WHERE id = ?",
                (datetime.now(UTC).timestamp(), error.message, error.error_type, letter_id),
            )

    def list(self, *, sink: str | None = None, limit: int = 100) -> list[DeadLetter]:
        with self._db() as db:
            rows = db.execute(
                "SELECT * FROM dead_letters WHERE (? IS NULL OR sink = ?) ORDER BY id LIMIT ?",
                (sink, sink, limit),
            ).fetchall()
        return [_letter(row) for row in rows]

    def get(self, letter_id: int) -> DeadLetter:
        with self._db() as db:
            row = db.execute("SELECT * FROM dead_letters WHERE id = ?", (letter_id,)).fetchone()
        if row is None:
            raise NotFound(f"no dead letter {letter_id}")
        return _letter(row)

    def remove(self, ids: Sequence[int]) -> int:
        with self._db() as db:
            return sum(
                db.execute("DELETE FROM dead_letters WHERE id = ?", (i,)).rowcount for i in ids
            )

    def purge(self, *, sink: str | None = None) -> int:
        with self._db() as db:
            return db.execute(
                "DELETE FROM dead_letters WHERE (? IS NULL OR sink = ?)", (sink, sink)
            ).rowcount

    def counts(self) -> dict[str, int]:
        if not self.path.exists():
            return {}
        with self._db() as db:
            return dict(db.execute("SELECT sink, count(*) FROM dead_letters GROUP BY sink"))


def _letter(row: tuple[object, ...]) -> DeadLetter:
    id_, sink, journal_id, seq, source, source_id, at, payload, etype, msg, attempts, f, last = row
    return DeadLetter(
        int(id_),  # type: ignore[call-overload]
        str(sink),
        str(journal_id),
        int(seq),  # type: ignore[call-overload]
        RawEvent(str(source), str(source_id), datetime.fromisoformat(str(at)), str(payload)),
        str(etype),
        str(msg),
        int(attempts),  # type: ignore[call-overload]
        datetime.fromtimestamp(float(f), UTC),  # type: ignore[arg-type]
        datetime.fromtimestamp(float(last), UTC),  # type: ignore[arg-type]
    )

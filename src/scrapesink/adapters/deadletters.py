"""Dead letters: records a sink refused permanently, kept locally with why, until retried or purged.

Local SQLite (``<data dir>/deadletters.sqlite``) on purpose: it must work while PostgreSQL is the
sink that refuses, or is down. A raw event keeps its columns; a model record (``kind``
``model:<name>``) is kept as its operation (in ``source_id``) and its JSON (in ``payload``).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from scrapesink.application.kinds import Letter, kind_named
from scrapesink.domain.events import RawEvent
from scrapesink.domain.records import RecordOp
from scrapesink.errors import NotFound, ScrapesinkError, TransientStorageError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS dead_letters (
    id INTEGER PRIMARY KEY,
    sink TEXT NOT NULL,
    kind TEXT NOT NULL DEFAULT 'events',
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
    accepted_us INTEGER,
    UNIQUE (sink, journal_id, seq)
)
"""


@dataclass(frozen=True, slots=True)
class DeadLetter:
    id: int
    sink: str
    kind: str
    journal_id: str
    seq: int
    record: RawEvent | RecordOp
    error_type: str
    message: str
    attempts: int
    first_failed_at: datetime
    last_failed_at: datetime
    accepted_us: int | None = None  # its acceptance time: a retry keeps the record's stamp

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, with the record as it was refused."""
        record = kind_named(self.kind).document(self.record)
        return {
            "id": self.id,
            "sink": self.sink,
            "kind": self.kind,
            "error_type": self.error_type,
            "message": self.message,
            "attempts": self.attempts,
            "first_failed_at": self.first_failed_at.isoformat(),
            "last_failed_at": self.last_failed_at.isoformat(),
            "record": record,
        }


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
            columns = {row[1] for row in db.execute("PRAGMA table_info(dead_letters)")}
            if "kind" not in columns:  # a store written before model records existed
                db.execute(
                    "ALTER TABLE dead_letters ADD COLUMN kind TEXT NOT NULL DEFAULT 'events'"
                )
            if "accepted_us" not in columns:  # written before acceptance stamps existed
                db.execute("ALTER TABLE dead_letters ADD COLUMN accepted_us INTEGER")
            yield db
        except sqlite3.Error as exc:
            raise TransientStorageError(f"dead letters {self.path}: {exc}") from exc
        finally:
            db.close()

    def add(
        self,
        sink: str,
        kind: str,
        journal_id: str,
        seq: int,
        record: RawEvent | RecordOp,
        error: ScrapesinkError,
        accepted_us: int | None = None,
    ) -> None:
        """Keep one refused record; the same record refused again counts one more attempt."""
        now = datetime.now(UTC).timestamp()
        source, source_id, at, payload = kind_named(kind).letter(record)
        with self._db() as db:
            db.execute(
                "INSERT INTO dead_letters (sink, kind, journal_id, seq, source, source_id,"
                " occurred_at, payload, error_type, message, attempts, first_failed_at,"
                " last_failed_at, accepted_us) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1, ?, ?, ?)"
                " ON CONFLICT (sink, journal_id, seq) DO UPDATE SET attempts = attempts + 1,"
                " last_failed_at = excluded.last_failed_at, message = excluded.message,"
                " error_type = excluded.error_type",
                (
                    sink,
                    kind,
                    journal_id,
                    seq,
                    source,
                    source_id,
                    at,
                    payload,
                    error.error_type,
                    error.message,
                    now,
                    now,
                    accepted_us,
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
                f"SELECT {_COLUMNS} FROM dead_letters WHERE (? IS NULL OR sink = ?)"  # noqa: S608
                " ORDER BY id LIMIT ?",
                (sink, sink, limit),
            ).fetchall()
        return [_letter(row) for row in rows]

    def get(self, letter_id: int) -> DeadLetter:
        with self._db() as db:
            sql = f"SELECT {_COLUMNS} FROM dead_letters WHERE id = ?"  # noqa: S608 - constant
            row = db.execute(sql, (letter_id,)).fetchone()
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


_COLUMNS = (
    "id, sink, kind, journal_id, seq, source, source_id, occurred_at, payload, error_type,"
    " message, attempts, first_failed_at, last_failed_at, accepted_us"
)


def _letter(row: tuple[object, ...]) -> DeadLetter:
    id_, sink, kind, journal_id, seq, source, source_id, at, payload, etype, msg, attempts = row[
        :12
    ]
    f, last, accepted = row[12:]
    record = kind_named(str(kind)).from_letter(
        Letter(str(source), str(source_id), str(at), str(payload))
    )
    return DeadLetter(
        int(id_),  # type: ignore[call-overload]
        str(sink),
        str(kind),
        str(journal_id),
        int(seq),  # type: ignore[call-overload]
        record,
        str(etype),
        str(msg),
        int(attempts),  # type: ignore[call-overload]
        datetime.fromtimestamp(float(f), UTC),  # type: ignore[arg-type]
        datetime.fromtimestamp(float(last), UTC),  # type: ignore[arg-type]
        None if accepted is None else int(accepted),  # type: ignore[call-overload]
    )

"""The local journal: every accepted record is appended here, durably, before it is acknowledged.

One SQLite file per writing process (``<data dir>/journal/<id>.sqlite``, WAL mode,
``synchronous=FULL``): concurrent processes never contend for one journal, and a journal left
behind by a crashed process is found and drained by the next ``replay`` or start-up. A process
holds an exclusive ``flock`` on its journal while it lives, so replay never touches a journal in
use. Entries delivered to every sink are deleted; an empty journal is removed on close.

Sinks record which journal ranges they have stored *in their own stores*, atomically with the
data (see ``ports.EventSink``); the journal only keeps the records.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from scrapesink.domain.events import RawEvent
from scrapesink.errors import StorageError, TransientStorageError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    seq INTEGER PRIMARY KEY,
    source TEXT NOT NULL,
    source_id TEXT NOT NULL,
    occurred_at TEXT NOT NULL,
    payload TEXT NOT NULL,
    journaled_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


@dataclass(frozen=True, slots=True)
class Entry:
    seq: int
    event: RawEvent


class Journal:
    """One journal file, owned (flock) by this object until :meth:`close`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock_fd = -1
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._lock_fd = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT, 0o600)
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            raise JournalBusy(f"journal {path.name} is in use by another process") from None
        except OSError as exc:
            if self._lock_fd >= 0:
                os.close(self._lock_fd)
            raise TransientStorageError(f"cannot open the journal in {path.parent}: {exc}") from exc
        try:
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            # FULL: a commit is on disk before append() returns, i.e. before anything is acked.
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
            row = self._db.execute("SELECT value FROM meta WHERE key = 'id'").fetchone()
            if row is None:
                self.id = path.stem
                self._db.execute("INSERT INTO meta VALUES ('id', ?)", (self.id,))
            else:
                self.id = row[0]
            last = self._db.execute("SELECT max(seq) FROM entries").fetchone()[0]
            stored = self._db.execute("SELECT value FROM meta WHERE key = 'last_seq'").fetchone()
            self._last_seq = max(last or 0, int(stored[0]) if stored else 0)
        except sqlite3.Error as exc:
            self._release()
            raise StorageError(f"journal {path} is unreadable: {exc}") from exc

    @classmethod
    def create(cls, directory: Path) -> Journal:
        return cls(directory / f"{uuid.uuid4().hex}.sqlite")

    @staticmethod
    def files(directory: Path) -> list[Path]:
        return sorted(directory.glob("*.sqlite")) if directory.is_dir() else []

    # -- writing ----------------------------------------------------------------------------
    def append(self, events: Sequence[RawEvent]) -> tuple[int, int]:
        """Append durably; returns the (first, last) sequence numbers given to ``events``."""
        if not events:
            return (self._last_seq + 1, self._last_seq)
        first = self._last_seq + 1
        now = datetime.now(UTC).timestamp()
        rows = [
            (first + i, e.source, e.source_id, e.occurred_at.isoformat(), e.payload_json, now)
            for i, e in enumerate(events)
        ]
        try:
            self._db.execute("BEGIN")
            self._db.executemany("INSERT INTO entries VALUES (?, ?, ?, ?, ?, ?)", rows)
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            self._db.execute("ROLLBACK") if self._db.in_transaction else None
            raise TransientStorageError(f"cannot write the journal {self.path}: {exc}") from exc
        self._last_seq = first + len(events) - 1
        return first, self._last_seq

    # -- reading ----------------------------------------------------------------------------
    def read(self, first: int, last: int, *, chunk: int = 5000) -> Iterator[list[Entry]]:
        """The entries with ``first <= seq <= last``, in order, ``chunk`` at a time."""
        low = first
        while low <= last:
            rows = self._db.execute(
                "SELECT seq, source, source_id, occurred_at, payload FROM entries"
                " WHERE seq >= ? AND seq <= ? ORDER BY seq LIMIT ?",
                (low, last, chunk),
            ).fetchall()
            if not rows:
                return
            yield [
                Entry(seq, RawEvent(src, sid, datetime.fromisoformat(at), payload))
                for seq, src, sid, at, payload in rows
            ]
            low = rows[-1][0] + 1

    @property
    def last_seq(self) -> int:
        return self._last_seq

    def first_seq(self) -> int | None:
        row = self._db.execute("SELECT min(seq) FROM entries").fetchone()
        return row[0] if row and row[0] is not None else None

    def count_between(self, first: int, last: int) -> int:
        row = self._db.execute(
            "SELECT count(*) FROM entries WHERE seq >= ? AND seq <= ?", (first, last)
        ).fetchone()
        return int(row[0])

    def oldest_time(self, seqs_after: int) -> datetime | None:
        row = self._db.execute(
            "SELECT min(journaled_at) FROM entries WHERE seq > ?", (seqs_after,)
        ).fetchone()
        return datetime.fromtimestamp(row[0], UTC) if row and row[0] is not None else None

    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in (self.path, Path(f"{self.path}-wal")) if p.exists())

    # -- compaction -------------------------------------------------------------------------
    def compact(self, upto: int) -> int:
        """Delete entries with seq <= ``upto`` (every sink has them); one atomic statement."""
        if upto <= 0:
            return 0
        self._db.execute("BEGIN")
        # Remember the highest sequence number, so a compacted-empty journal never reuses one.
        self._db.execute(
            "INSERT INTO meta VALUES ('last_seq', ?) ON CONFLICT(key) DO UPDATE SET value = ?",
            (str(self._last_seq), str(self._last_seq)),
        )
        removed = self._db.execute("DELETE FROM entries WHERE seq <= ?", (upto,)).rowcount
        self._db.execute("COMMIT")
        return removed

    def is_empty(self) -> bool:
        return self._db.execute("SELECT 1 FROM entries LIMIT 1").fetchone() is None

    def close(self, *, remove_if_empty: bool = True) -> bool:
        """Close; an empty journal's files are removed. Returns True when removed."""
        removed = False
        try:
            empty = self.is_empty()
            self._db.close()
            if empty and remove_if_empty:
                for suffix in ("", "-wal", "-shm"):
                    Path(f"{self.path}{suffix}").unlink(missing_ok=True)
                removed = True
        finally:
            self._release(unlink_lock=removed)
        return removed

    def _release(self, *, unlink_lock: bool = False) -> None:
        if self._lock_fd >= 0:
            if unlink_lock:
                Path(f"{self.path}.lock").unlink(missing_ok=True)
            os.close(self._lock_fd)
            self._lock_fd = -1


class JournalBusy(StorageError):
    """The journal is held by another live process."""


@dataclass(frozen=True, slots=True)
class JournalInfo:
    """A journal seen from outside, without taking it over (for `scrapesink status`)."""

    path: Path
    id: str
    entries: int
    first_seq: int | None
    last_seq: int | None
    size_bytes: int
    in_use: bool

    def pending(self, delivered: Sequence[tuple[int, int]]) -> tuple[int, datetime | None]:
        """How many entries ``delivered`` lacks, and when the oldest of them was journaled."""
        if self.first_seq is None or self.last_seq is None:
            return 0, None
        from scrapesink.application.delivery import missing

        gaps = missing(self.first_seq, self.last_seq, delivered)
        if not gaps:
            return 0, None
        with _read_only(self.path) as db:
            count, oldest = 0, None
            for first, last in gaps:
                n, t = db.execute(
                    "SELECT count(*), min(journaled_at) FROM entries WHERE seq BETWEEN ? AND ?",
                    (first, last),
                ).fetchone()
                count += n
                if t is not None:
                    oldest = t if oldest is None else min(oldest, t)
        return count, datetime.fromtimestamp(oldest, UTC) if oldest is not None else None


def inspect(path: Path) -> JournalInfo:
    lock_path = f"{path}.lock"
    in_use = False
    if os.path.exists(lock_path):
        fd = os.open(lock_path, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            in_use = True
        finally:
            os.close(fd)
    with _read_only(path) as db:
        row = db.execute("SELECT value FROM meta WHERE key = 'id'").fetchone()
        count, first, last = db.execute(
            "SELECT count(*), min(seq), max(seq) FROM entries"
        ).fetchone()
    size = sum(p.stat().st_size for p in (path, Path(f"{path}-wal")) if p.exists())
    return JournalInfo(path, row[0] if row else path.stem, count, first, last, size, in_use)


@contextmanager
def _read_only(path: Path) -> Iterator[sqlite3.Connection]:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    try:
        yield db
    except sqlite3.Error as exc:
        raise StorageError(f"journal {path} is unreadable: {exc}") from exc
    finally:
        db.close()

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
import functools
import logging
import os
import sqlite3
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec

from scrapesink.application.delivery import missing
from scrapesink.application.kinds import EVENTS, kind_named
from scrapesink.application.ports import now_us
from scrapesink.errors import StorageError, TransientStorageError, UnencodableRecords

# One row per appended batch: its records packed with msgpack. A row per record cost more than
# the rest of the write path's Python work together (measured); a batch is what gets acked.
_SCHEMA = """
CREATE TABLE IF NOT EXISTS batches (
    first_seq INTEGER PRIMARY KEY,
    last_seq INTEGER NOT NULL,
    journaled_at REAL NOT NULL,
    records BLOB NOT NULL,
    accepted_us INTEGER
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
PACK = msgspec.msgpack.Encoder()

log = logging.getLogger(__name__)


@functools.lru_cache(maxsize=256)
def records_decoder(kind: str) -> msgspec.msgpack.Decoder[list[Any]]:
    """Unpacks a batch of one kind's records (RawEvent and RecordOp are NamedTuples: msgspec
    unpacks them in C, datetime included)."""
    record_type = kind_named(kind).record_type
    return msgspec.msgpack.Decoder(list[record_type])  # type: ignore[valid-type]


@dataclass(frozen=True, slots=True)
class Entry:
    seq: int
    record: Any
    accepted_us: int  # when it was journaled: its acceptance stamp's time


class Journal:
    """One journal file of one kind of record, owned (flock) by this object until :meth:`close`.

    ``kind`` is ``events`` (raw events) or ``model:<name>`` (one model's record operations),
    kept in the file so that replay knows which sinks its records belong to.

    Each record gets an acceptance time: the batch's journaling time for its first record and
    the next microseconds for the others, never earlier than the record before it (``clock`` may
    step back: NTP, a VM resumed). Times thus increase along the journal as seqs do, and with
    the journal id they are the records' stamps (``ports.stamp``).
    """

    def __init__(
        self, path: Path, kind: str = EVENTS, *, clock: Callable[[], int] = now_us
    ) -> None:
        self.path = path
        self._clock = clock
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
            columns = {row[1] for row in self._db.execute("PRAGMA table_info(batches)")}
            if "accepted_us" not in columns:  # a journal written before stamps existed
                self._db.execute("ALTER TABLE batches ADD COLUMN accepted_us INTEGER")
            row = self._db.execute("SELECT value FROM meta WHERE key = 'id'").fetchone()
            if row is None:
                self.id = path.stem
                self._db.execute("INSERT INTO meta VALUES ('id', ?)", (self.id,))
                self._db.execute("INSERT INTO meta VALUES ('kind', ?)", (kind,))
            else:
                self.id = row[0]
            row = self._db.execute("SELECT value FROM meta WHERE key = 'kind'").fetchone()
            self.kind: str = row[0] if row else EVENTS
            self._unpack = records_decoder(self.kind)
            high = self._db.execute("SELECT coalesce(max(last_seq), 0) FROM batches").fetchone()
            self._last_seq: int = max(int(high[0]), self._meta_int("last_seq"))
            self._compacted = self._meta_int("compacted_upto")
            latest = self._db.execute(
                f"SELECT max({_ACCEPTED} + last_seq - first_seq) FROM batches"  # noqa: S608
            ).fetchone()
            self._next_us: int = int(latest[0] or 0) + 1  # the earliest time the next may have
            self._batch_us = 0
        except sqlite3.Error as exc:
            self._release()
            raise StorageError(f"journal {path} is unreadable: {exc}") from exc

    def _meta_int(self, key: str) -> int:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return int(row[0]) if row else 0

    def _set_meta(self, key: str, value: int) -> None:
        self._db.execute(
            "INSERT INTO meta VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (key, str(value)),
        )

    @classmethod
    def create(
        cls, directory: Path, kind: str = EVENTS, *, clock: Callable[[], int] = now_us
    ) -> Journal:
        return cls(directory / f"{uuid.uuid4().hex}.sqlite", kind, clock=clock)

    @classmethod
    def open_if_free(cls, path: Path) -> Journal | None:
        """Take over a journal no live process holds; None when one does."""
        try:
            return cls(path)
        except JournalBusy:
            return None

    @staticmethod
    def files(directory: Path) -> list[Path]:
        return sorted(directory.glob("*.sqlite")) if directory.is_dir() else []

    # -- writing ----------------------------------------------------------------------------
    def append(self, records: Sequence[Any]) -> tuple[int, int]:
        """Append durably; returns the (first, last) sequence numbers given to ``records``."""
        if not records:
            return (self._last_seq + 1, self._last_seq)
        first = self._last_seq + 1
        last = first + len(records) - 1
        try:
            packed = PACK.encode(records)
        except (TypeError, ValueError, OverflowError):
            raise UnencodableRecords(unencodable(records)) from None
        accepted = max(self._clock(), self._next_us)  # monotonic whatever the wall clock does
        try:
            self._db.execute(
                "INSERT INTO batches VALUES (?, ?, ?, ?, ?)",
                (first, last, datetime.now(UTC).timestamp(), packed, accepted),
            )
        except sqlite3.Error as exc:
            raise TransientStorageError(f"cannot write the journal {self.path}: {exc}") from exc
        self._last_seq = last
        self._batch_us = accepted
        self._next_us = accepted + len(records)
        return first, last

    @property
    def last_accepted_us(self) -> int:
        """The acceptance time of the last batch's first record (the others: the next
        microseconds)."""
        return self._batch_us

    # -- reading ----------------------------------------------------------------------------
    def read(self, first: int, last: int, *, chunk: int = 5000) -> Iterator[list[Entry]]:
        """The entries with ``first <= seq <= last``, in order, about ``chunk`` at a time."""
        first = max(first, self._compacted + 1)
        rows = self._db.execute(
            f"SELECT first_seq, records, {_ACCEPTED} FROM batches"  # noqa: S608 - a constant
            " WHERE last_seq >= ? AND first_seq <= ? ORDER BY first_seq",
            (first, last),
        )
        for batch_first, blob, accepted in rows:
            entries = [
                Entry(batch_first + i, record, accepted + i)
                for i, record in enumerate(self._unpack.decode(blob))
                if first <= batch_first + i <= last
            ]
            for start in range(0, len(entries), chunk):
                yield entries[start : start + chunk]

    @property
    def last_seq(self) -> int:
        return self._last_seq

    def first_seq(self) -> int | None:
        row = self._db.execute("SELECT min(first_seq) FROM batches").fetchone()
        return max(int(row[0]), self._compacted + 1) if row and row[0] is not None else None

    def count_between(self, first: int, last: int) -> int:
        return _count_between(self._db, max(first, self._compacted + 1), last)

    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in (self.path, Path(f"{self.path}-wal")) if p.exists())

    # -- compaction -------------------------------------------------------------------------
    def compact(self, upto: int) -> int:
        """Forget entries with seq <= ``upto`` (every sink has them); crash-safe (one
        transaction). A batch only partly covered stays, its covered part marked gone."""
        if upto <= self._compacted:
            return 0
        self._db.execute("BEGIN")
        # Remember the highest sequence number, so a compacted-empty journal never reuses one.
        self._set_meta("last_seq", self._last_seq)
        self._set_meta("compacted_upto", upto)
        removed = self._db.execute("DELETE FROM batches WHERE last_seq <= ?", (upto,)).rowcount
        self._db.execute("COMMIT")
        self._compacted = upto
        return removed

    def is_empty(self) -> bool:
        return (
            self._db.execute(
                "SELECT 1 FROM batches WHERE last_seq > ? LIMIT 1", (self._compacted,)
            ).fetchone()
            is None
        )

    def close(self, *, remove_if_empty: bool = True) -> bool:
        """Close; an empty journal's files are removed. Returns True when removed."""
        removed = False
        try:
            empty = self.is_empty()
            self._db.close()
            if empty and remove_if_empty:
                try:
                    for suffix in ("", "-wal", "-shm"):
                        Path(f"{self.path}{suffix}").unlink(missing_ok=True)
                    removed = True
                except OSError as exc:  # kept: empty, it costs nothing; a later close removes it
                    log.warning("journal %s not removed: %s", self.path, exc)
        finally:
            self._release(unlink_lock=removed)
        return removed

    def _release(self, *, unlink_lock: bool = False) -> None:
        if self._lock_fd >= 0:
            if unlink_lock:
                Path(f"{self.path}.lock").unlink(missing_ok=True)
            os.close(self._lock_fd)
            self._lock_fd = -1


def unencodable(records: Sequence[Any]) -> dict[int, tuple[str, str]]:
    """Which records the journal cannot encode: index -> (the field, why). Found one by one:
    the rare path."""
    reasons = {}
    for index, record in enumerate(records):
        try:
            PACK.encode(record)
        except (TypeError, ValueError, OverflowError) as exc:
            fields = getattr(record, "record", None)  # a model record's fields
            path = ""
            if isinstance(fields, dict):
                path = next((k for k, v in fields.items() if not _encodes(v)), "")
            reasons[index] = (path, f"a value the journal cannot store: {exc}")
    return reasons


def _encodes(value: Any) -> bool:
    try:
        PACK.encode(value)
    except (TypeError, ValueError, OverflowError):
        return False
    return True


# Journals written before stamps existed: a record's seq stands in for its time, so their
# records are ordered as journaled and older than any stamped one (times from the journaling
# time plus one microsecond a record could overlap between close batches).
_ACCEPTED = "coalesce(accepted_us, first_seq)"


class JournalBusy(StorageError):
    """The journal is held by another live process."""


@dataclass(frozen=True, slots=True)
class JournalInfo:
    """A journal seen from outside, without taking it over (for `scrapesink status`)."""

    path: Path
    id: str
    kind: str
    entries: int
    first_seq: int | None
    last_seq: int | None
    size_bytes: int
    in_use: bool

    def pending(self, delivered: Sequence[tuple[int, int]]) -> tuple[int, datetime | None]:
        """How many entries ``delivered`` lacks, and when the oldest of them was journaled."""
        if self.first_seq is None or self.last_seq is None:
            return 0, None
        gaps = missing(self.first_seq, self.last_seq, delivered)
        if not gaps:
            return 0, None
        count, oldest = 0, None
        with _read_only(self.path) as db:
            for first, last in gaps:
                count += _count_between(db, first, last)
                row = db.execute(
                    "SELECT min(journaled_at) FROM batches WHERE last_seq >= ? AND first_seq <= ?",
                    (first, last),
                ).fetchone()
                if row[0] is not None:
                    oldest = row[0] if oldest is None else min(oldest, row[0])
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
        meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        compacted = int(meta.get("compacted_upto", 0))
        low, high = db.execute("SELECT min(first_seq), max(last_seq) FROM batches").fetchone()
        first = max(low, compacted + 1) if low is not None else None
        count = _count_between(db, first, high) if first is not None else 0
    size = sum(p.stat().st_size for p in (path, Path(f"{path}-wal")) if p.exists())
    kind = meta.get("kind", EVENTS)
    return JournalInfo(path, meta.get("id", path.stem), kind, count, first, high, size, in_use)


def _count_between(db: sqlite3.Connection, first: int, last: int) -> int:
    """Entries with first <= seq <= last (batches hold contiguous runs)."""
    row = db.execute(
        "SELECT coalesce(sum(min(last_seq, ?) - max(first_seq, ?) + 1), 0) FROM batches"
        " WHERE last_seq >= ? AND first_seq <= ?",
        (last, first, first, last),
    ).fetchone()
    return int(row[0])


@contextmanager
def _read_only(path: Path) -> Iterator[sqlite3.Connection]:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    try:
        yield db
    except sqlite3.Error as exc:
        raise StorageError(f"journal {path} is unreadable: {exc}") from exc
    finally:
        db.close()

"""The CSV mirror: ``<data dir>/raw_events/<source>/<YYYY-MM-DD>.csv``, exactly once, multi-process.

Files are RFC 4180 CSV in UTF-8 (``newline=''`` quoting: embedded newlines, quotes and commas are
quoted), header ``source,source_id,occurred_at,payload`` exactly once per file, one row per event
key ever seen (first write wins, like PostgreSQL).

How exactly-once survives crashes and concurrent processes. A small SQLite database beside the
files (``csv_state.sqlite``) holds, per file, its *committed* length; the keys already written;
and which journal ranges the CSV files hold. Each batch is delivered under that database's write
lock (``BEGIN IMMEDIATE``) and each file's ``flock``:

1. a file longer than its committed length holds a torn or uncommitted tail from a crash: it is
   truncated back (no other writer can be mid-append: we hold the locks);
2. the header is written if, after that, the file is empty — decided under the lock, from its
   size, never from an existence check before it;
3. the batch's new rows for a file are appended with one ``os.write`` on an ``O_APPEND``
   descriptor, and fsynced;
4. the new lengths, keys and the journal range are committed in one SQLite transaction.

A crash before 4 leaves files longer than committed (repaired by 1, at start-up or by the next
writer) and the journal range undelivered (delivered again by replay).
"""

from __future__ import annotations

import csv
import errno
import fcntl
import logging
import os
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import msgspec

from scrapesink.adapters.csv_format import (
    HEADER,
    dir_of,
    file_of,
    format_fields,
    format_rows,
    header_line,
)
from scrapesink.application.kinds import EVENTS
from scrapesink.application.ports import Batch, WriteOutcome
from scrapesink.domain.events import MAX_NAME_BYTES, RawEvent
from scrapesink.errors import ConstraintError, TransientStorageError
from scrapesink.layout import DataDir

log = logging.getLogger(__name__)
HeaderOf = Callable[[str], str]  # a file (relative path) -> its header line

_FILES_SCHEMA = """
CREATE TABLE IF NOT EXISTS files (path TEXT PRIMARY KEY, length INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS progress (journal_id TEXT NOT NULL, first_seq INTEGER NOT NULL,
                                     last_seq INTEGER NOT NULL,
                                     PRIMARY KEY (journal_id, first_seq));
CREATE TABLE IF NOT EXISTS renames (path TEXT PRIMARY KEY, temp TEXT NOT NULL);
"""
# Per key: the acceptance stamp of the copy the files hold (NULL: written before stamps
# existed, older than any) and its day, which names its file.
_KEYS_SCHEMA = """
CREATE TABLE IF NOT EXISTS keys (source TEXT NOT NULL, source_id TEXT NOT NULL, stamp BLOB,
                                 day TEXT, PRIMARY KEY (source, source_id)) WITHOUT ROWID;
"""
_KEYS_COLUMNS = {"stamp": "BLOB", "day": "TEXT"}


class CsvFiles:
    """CSV files under ``root`` with their committed lengths and delivered journal ranges in a
    SQLite state file: the exactly-once machinery shared by the raw-event and model mirrors."""

    name = "csv"

    def __init__(self, root: Path, state_path: Path, schema: str = "") -> None:
        self.root = root
        self.state_path = state_path
        self._schema = _FILES_SCHEMA + schema
        self._initialized = False
        self._known_files: set[str] = set()  # registered in the state already
        self.unrepaired: list[str] = []  # state entries start-up repair could not check

    def files(self) -> list[Path]:
        raise NotImplementedError

    def _upgrade(self, db: sqlite3.Connection) -> None:
        """Hook: bring state written by an earlier version to this one's columns."""

    def _initialize(self, db: sqlite3.Connection) -> None:
        db.execute("BEGIN IMMEDIATE")
        fresh = db.execute("SELECT 1 FROM sqlite_master WHERE name = 'files'").fetchone() is None
        for statement in self._schema.split(";"):
            if statement.strip():
                db.execute(statement)
        self._upgrade(db)
        if fresh:
            # No state yet but files on disk (state deleted, or files from elsewhere): adopt
            # them as they are rather than treat them as uncommitted and cut them.
            for path in self.files():
                db.execute(
                    "INSERT OR IGNORE INTO files VALUES (?, ?)",
                    (path.relative_to(self.root).as_posix(), path.stat().st_size),
                )
        db.execute("COMMIT")
        self._initialized = True

    # -- state ------------------------------------------------------------------------------
    @contextmanager
    def _state(self, *, write: bool) -> Iterator[sqlite3.Connection]:
        try:
            self.state_path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.state_path, isolation_level=None, timeout=60)
        except (OSError, sqlite3.Error) as exc:
            raise _unavailable(exc, self.state_path) from exc
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            if not self._initialized:
                self._initialize(db)
            if write:
                db.execute("BEGIN IMMEDIATE")  # the cross-process CSV write lock
            yield db
            if write:
                db.execute("COMMIT")
        except sqlite3.Error as exc:
            raise _unavailable(exc, self.state_path) from exc
        finally:
            db.close()

    def delivered(self, journal_id: str) -> list[tuple[int, int]]:
        with self._state(write=False) as db:
            rows = db.execute(
                "SELECT first_seq, last_seq FROM progress WHERE journal_id = ? ORDER BY first_seq",
                (journal_id,),
            ).fetchall()
        return [(int(a), int(b)) for a, b in rows]

    def skip(self, journal_id: str, first: int, last: int) -> None:
        with self._state(write=True) as db:
            db.execute("INSERT OR IGNORE INTO progress VALUES (?, ?, ?)", (journal_id, first, last))

    def forget(self, journal_id: str) -> None:
        with self._state(write=True) as db:
            db.execute("DELETE FROM progress WHERE journal_id = ?", (journal_id,))

    def _register(self, files: set[str]) -> None:
        """Register new files with length 0 *before* writing them: a crash right after the
        write leaves a file longer than committed, which repair cuts back."""
        new_files = sorted(files - self._known_files)
        if new_files:
            with self._state(write=True) as db:
                db.executemany(
                    "INSERT OR IGNORE INTO files VALUES (?, 0)", [(r,) for r in new_files]
                )
            self._known_files.update(new_files)

    @staticmethod
    def _seen(db: sqlite3.Connection, batch: Batch[Any]) -> bool:
        """Whether this journal range was delivered before (replayed after a crash)."""
        return bool(
            batch.journal_id
            and db.execute(
                "SELECT 1 FROM progress WHERE journal_id = ? AND first_seq = ?",
                (batch.journal_id, batch.first),
            ).fetchone()
        )

    def _commit(
        self, db: sqlite3.Connection, batch: Batch[Any], texts: dict[str, str], header: HeaderOf
    ) -> None:
        """Append ``texts`` (file -> rows) and record the new lengths and the journal range."""
        self.finish_renames(db)
        committed = dict(
            db.execute(
                "SELECT path, length FROM files WHERE path IN (SELECT value FROM json_each(?))",
                (_KEYS_JSON.encode(sorted(texts)),),
            ).fetchall()
        )
        lengths = self._append(texts, committed, header)
        db.executemany(
            "INSERT INTO files VALUES (?, ?) ON CONFLICT(path) DO UPDATE SET length = ?",
            [(rel, n, n) for rel, n in lengths.items()],
        )
        if batch.journal_id:
            db.execute(
                "INSERT OR IGNORE INTO progress VALUES (?, ?, ?)",
                (batch.journal_id, batch.first, batch.last),
            )

    def _append(
        self, texts: dict[str, str], committed: dict[str, int], header: HeaderOf
    ) -> dict[str, int]:
        """Append each file's text under its flock; returns the new lengths (after fsync)."""
        lengths: dict[str, int] = {}
        fds: list[int] = []
        try:
            for rel in sorted(texts):  # one lock order for every writer
                path = self.root / rel
                created = _ensure_dir(path.parent)
                fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
                fds.append(fd)
                fcntl.flock(fd, fcntl.LOCK_EX)
                size = _repair(fd, committed.get(rel))
                data = texts[rel]
                if size == 0:
                    data = header(rel) + data
                payload = data.encode("utf-8")
                written = os.write(fd, payload)  # one write: no other appender can interleave
                if written != len(payload):
                    raise OSError(errno.EIO, f"short write to {path}: {written} of {len(payload)}")
                os.fsync(fd)
                if created or size == 0:
                    _fsync_dir(path.parent)
                lengths[rel] = size + written
        except OSError as exc:
            if exc.errno in _NAMED_BY_A_RECORD:
                # The path is made of a record's value (its source): that record is to blame,
                # not the disk. Refused as a value is, so delivery isolates it in dead letters
                # and its neighbours are stored.
                raise ConstraintError(
                    f"CSV file {exc.filename or self.root} cannot exist: {exc.strerror}"
                ) from exc
            raise _unavailable(exc, self.root) from exc
        finally:
            for fd in fds:
                os.close(fd)  # closing releases the flock
        return lengths

    def replace_files(self, db: sqlite3.Connection, temps: dict[str, Path]) -> None:
        """Make whole temporary files (fsynced) the files ``temps`` names, crash-safely: their
        lengths and the renames are committed first, in the caller's transaction; the renames
        are made by :meth:`finish_renames` — right after, or by whoever takes the lock next
        (a writer, start-up repair) if this process dies in between."""
        for rel, temp in temps.items():
            size = temp.stat().st_size
            db.execute(
                "INSERT INTO files VALUES (?, ?) ON CONFLICT(path) DO UPDATE"
                " SET length = excluded.length",
                (rel, size),
            )
            db.execute(
                "INSERT OR REPLACE INTO renames VALUES (?, ?)",
                (rel, temp.relative_to(self.root).as_posix()),
            )

    def finish_renames(self, db: sqlite3.Connection) -> None:
        """The renames a committed :meth:`replace_files` has not made yet (the caller holds the
        write lock): without them a file would be cut back to a length it never had."""
        pending = db.execute("SELECT path, temp FROM renames").fetchall()
        if not pending:
            return
        directories = set()
        try:
            for rel, temp in pending:
                if (self.root / temp).exists():
                    os.replace(self.root / temp, self.root / rel)
                directories.add((self.root / rel).parent)
            for directory in directories:
                _fsync_dir(directory)
        except OSError as exc:
            raise _unavailable(exc, self.root) from exc
        db.execute("DELETE FROM renames")

    def unreadable(self) -> list[str]:
        """State entries whose file cannot even be looked at (a name the filesystem refuses, a
        directory made unreadable): start-up repair skips them; ``health`` names them."""
        try:
            with self._state(write=False) as db:
                paths = [rel for (rel,) in db.execute("SELECT path FROM files")]
        except TransientStorageError as exc:
            return [exc.message]
        problems = []
        for rel in paths:
            try:
                (self.root / rel).stat()
            except FileNotFoundError:
                continue  # registered, not written yet: nothing wrong
            except OSError as exc:
                problems.append(f"{rel[:60]}: {exc.strerror or exc}")
        return problems

    def repair(self) -> None:
        """Truncate every file back to its committed length (a torn line, an uncommitted tail)."""
        with self._state(write=True) as db:
            self.finish_renames(db)
            for rel, length in db.execute("SELECT path, length FROM files").fetchall():
                path = self.root / rel
                try:
                    if not path.exists():
                        continue
                    fd = os.open(path, os.O_WRONLY)
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX)
                        size = os.fstat(fd).st_size
                        _repair(fd, length)
                    finally:
                        os.close(fd)
                    if size > length:  # never silently: it may be lines a person added
                        log.warning(
                            "%s: cut %d bytes past what scrapesink committed (a line torn by a"
                            " crash, or lines added behind its back)",
                            path,
                            size - length,
                        )
                except OSError as exc:
                    # One bad entry (a name the filesystem refuses, a file made unreadable)
                    # never stops a start-up: it is reported, and the other files repaired.
                    log.warning("%s not repaired: %s", path, exc.strerror or exc)
                    self.unrepaired.append(f"{rel}: {exc.strerror or exc}")


class CsvEventSink(CsvFiles):
    """Raw events mirrored into ``raw_events/<source>/<day>.csv``.

    The oldest acceptance stamp of a key wins, as in PostgreSQL: a copy older than the one the
    files hold (it arrived later: the CSV lane caught up after an outage, or another process's
    journal was delivered late) takes its place. The held copy's line is removed by rewriting
    its day file (temp file, fsync, rename, directory fsync) in a transaction of its own, which
    also forgets the key; the next pass appends the older copy like a new one. A crash between
    the two leaves the key absent and the batch undelivered, so replay appends it. The rewrite
    costs a read and write of one day file: it happens only when copies of a key really arrived
    out of order, never on the common path.
    """

    kind = EVENTS
    parallelism = 1  # appends happen in journal order

    def __init__(self, data_dir: Path) -> None:
        paths = DataDir(data_dir)
        super().__init__(paths.event_csv, paths.event_csv_state, _KEYS_SCHEMA)
        self._header = header_line(HEADER)

    def files(self) -> list[Path]:
        return sorted(self.root.rglob("*.csv")) if self.root.is_dir() else []

    def _upgrade(self, db: sqlite3.Connection) -> None:
        have = {row[1] for row in db.execute("PRAGMA table_info(keys)")}
        for column, kind in _KEYS_COLUMNS.items():
            if column not in have:
                db.execute(f"ALTER TABLE keys ADD COLUMN {column} {kind}")

    def stage(self, batch: Batch[RawEvent]) -> Callable[[], WriteOutcome]:
        # Nothing to encode ahead: which rows are written is known only under the lock.
        return lambda: self._deliver(batch)

    def _deliver(self, batch: Batch[RawEvent]) -> WriteOutcome:
        files = [file_of(e) for e in batch.records]
        names = set(files)
        for rel in names:  # validation refuses such sources; a journal of older versions may not
            if len(rel.encode()) > MAX_NAME_BYTES + 15:  # "<dir>/YYYY-MM-DD.csv"
                raise ConstraintError(f"CSV file {rel[:40]}... cannot exist: name too long")
        self._register(names)
        keys = [e.key for e in batch.records]
        stamps = batch.stamps()
        while True:
            with self._state(write=True) as db:
                if self._seen(db, batch):  # delivered before
                    return WriteOutcome(0, frozenset(range(batch.first, batch.last + 1)))
                known = _known_keys(db, keys)
                by_file: dict[str, list[RawEvent]] = {}
                fresh: list[tuple[str, str, bytes, str]] = []
                old: list[int] = []  # seqs whose key is held already
                newer: dict[str, set[tuple[str, str]]] = {}  # file -> keys held by newer copies
                for seq, event, key, rel, stamp in zip(
                    range(batch.first, batch.last + 1),
                    batch.records,
                    keys,
                    files,
                    stamps,
                    strict=True,
                ):
                    held = known.get(key, _ABSENT)
                    if held is not _ABSENT:
                        if held is not None and stamp < held[0]:
                            newer.setdefault(held[1], set()).add(key)
                        old.append(seq)
                        continue
                    known[key] = None  # the same key twice in one batch: the first (older) wins
                    fresh.append((*key, stamp, rel))
                    by_file.setdefault(rel, []).append(event)
                if newer:
                    self._remove(db, newer)
                    continue  # committed: those keys are free now, and the next pass takes them
                texts = {rel: format_rows(events) for rel, events in by_file.items()}
                self._commit(db, batch, texts, lambda rel: self._header)
                _add_keys(db, fresh)
            return WriteOutcome(len(fresh), frozenset(old))

    def _remove(self, db: sqlite3.Connection, lines: dict[str, set[tuple[str, str]]]) -> None:
        """Rewrite each file without the lines of the given keys, and forget those keys.

        The file is first cut back to its committed length, as an append would: a tail a
        crashed writer left uncommitted must not become committed by the rewrite. A file that
        is gone (removed by hand) holds no line to remove."""
        for rel, keys in sorted(lines.items()):
            path = self.root / rel
            temp = path.with_name(f".{path.name}.rewrite")
            forget = (_KEYS_JSON.encode(sorted(keys)),)
            if not path.exists():
                db.execute(_FORGET_KEYS, forget)
                continue
            row = db.execute("SELECT length FROM files WHERE path = ?", (rel,)).fetchone()
            try:
                fd = os.open(path, os.O_WRONLY)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX)
                    _repair(fd, row[0] if row else None)
                finally:
                    os.close(fd)
                with (
                    path.open("r", encoding="utf-8", newline="") as source,
                    temp.open("w", encoding="utf-8", newline="") as target,
                ):
                    rows = csv.reader(source)
                    other = csv.writer(target, lineterminator="\r\n")  # rows not ours: as read
                    target.write(self._header)
                    next(rows, None)
                    for row in rows:
                        if len(row) != len(HEADER):
                            other.writerow(row)
                        elif (row[0], row[1]) not in keys:
                            target.write(format_fields(*row))
                    target.flush()
                    os.fsync(target.fileno())
                os.replace(temp, path)
                _fsync_dir(path.parent)
            except OSError as exc:
                temp.unlink(missing_ok=True)
                raise _unavailable(exc, path) from exc
            size = path.stat().st_size
            db.execute("UPDATE files SET length = ? WHERE path = ?", (size, rel))
            db.execute(_FORGET_KEYS, forget)


_ABSENT: Any = object()
# errno values that a path made of a record's value causes (a name the filesystem refuses)
_NAMED_BY_A_RECORD = {errno.ENAMETOOLONG, errno.EILSEQ}
_FORGET_KEYS = (
    "DELETE FROM keys WHERE (source, source_id) IN"
    " (SELECT value ->> 0, value ->> 1 FROM json_each(?))"
)
# Payloads may be as large as SCRAPESINK_MAX_PAYLOAD_BYTES (1 MiB by default): the csv module's
# default field limit (128 KiB) would refuse the files this module writes.
csv.field_size_limit(2**31 - 1)


def _known_keys(
    db: sqlite3.Connection, keys: list[tuple[str, str]]
) -> dict[tuple[str, str], tuple[bytes, str] | None]:
    """Which of ``keys`` the CSV files hold already, each with its copy's stamp and file (None
    when written before stamps existed): one indexed join over the batch's keys."""
    # One statement over a JSON array (SQLite's json_each) instead of a statement per key:
    # every statement step releases and re-takes the GIL, which stalled the other threads.
    rows = db.execute(
        "SELECT k.source, k.source_id, k.stamp, k.day FROM json_each(?) AS j JOIN keys AS k"
        " ON k.source = j.value ->> 0 AND k.source_id = j.value ->> 1",
        (_KEYS_JSON.encode(keys),),
    ).fetchall()
    return {
        (source, source_id): None if stamp is None else (stamp, f"{dir_of(source)}/{day}.csv")
        for source, source_id, stamp, day in rows
    }


def _add_keys(db: sqlite3.Connection, keys: list[tuple[str, str, bytes, str]]) -> None:
    db.executemany(
        "INSERT INTO keys VALUES (?, ?, ?, ?)",
        [(source, source_id, stamp, rel[-14:-4]) for source, source_id, stamp, rel in keys],
    )


_KEYS_JSON = msgspec.json.Encoder()


def _repair(fd: int, committed: int | None) -> int:
    """Cut a file back to its committed length; returns the length to append at."""
    size = os.fstat(fd).st_size
    if committed is None:  # a file we hold no state for (state lost): keep what is there
        return size
    if size > committed:
        os.ftruncate(fd, committed)
        os.fsync(fd)
        return committed
    return size


def _ensure_dir(path: Path) -> bool:
    if path.is_dir():
        return False
    path.mkdir(parents=True, exist_ok=True)
    _fsync_dir(path.parent)
    return True


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _unavailable(exc: BaseException, where: Path) -> TransientStorageError:
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    return TransientStorageError(f"CSV files in {where} are not writable: {reason}")

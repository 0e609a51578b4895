"""CSV files written exactly once by many processes: the committed-length state every CSV sink
keeps (raw events: ``csv_sink.py``; model records: ``csv_models.py``).

Files are RFC 4180 CSV in UTF-8 (``newline=''`` quoting: embedded newlines, quotes and commas are
quoted), their header exactly once per file.

How exactly-once survives crashes and concurrent processes. A small SQLite database beside the
files holds, per file, its *committed* length; what the sink needs to know of the records (the
keys already written, for raw events); and which journal ranges the CSV files hold. Each batch
is delivered under that database's write lock (``BEGIN IMMEDIATE``) and each file's ``flock``:

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

from scrapesink.application.ports import Batch
from scrapesink.errors import ConstraintError, TransientStorageError

log = logging.getLogger(__name__)
HeaderOf = Callable[[str], str]  # a file (relative path) -> its header line
_JSON = msgspec.json.Encoder()
# errors of a path made of a record's value (its source): that record is to blame, not the disk
_NAMED_BY_A_RECORD = {errno.ENAMETOOLONG, errno.EILSEQ}

_FILES_SCHEMA = """
CREATE TABLE IF NOT EXISTS files (path TEXT PRIMARY KEY, length INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS progress (journal_id TEXT NOT NULL, first_seq INTEGER NOT NULL,
                                     last_seq INTEGER NOT NULL,
                                     PRIMARY KEY (journal_id, first_seq));
CREATE TABLE IF NOT EXISTS renames (path TEXT PRIMARY KEY, temp TEXT NOT NULL);
"""


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
            raise unavailable(exc, self.state_path) from exc
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
            raise unavailable(exc, self.state_path) from exc
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

    def forget_below(self, journal_id: str, seq: int) -> int:
        """Drop the ranges ending before ``seq`` (a shared journal's entries no consumer can
        be handed again: every one of them is acknowledged)."""
        with self._state(write=True) as db:
            return db.execute(
                "DELETE FROM progress WHERE journal_id = ? AND last_seq < ?", (journal_id, seq)
            ).rowcount

    @staticmethod
    def _seen(db: sqlite3.Connection, batch: Batch[Any]) -> bool:
        """Whether this journal range was delivered before (replayed after a crash).

        Checked under the write lock, so two writers handed the same range (a worker that
        took over a silent one's entries) append it once. A range that only partly overlaps
        one held is refused as transient: the caller plans again from ``delivered``."""
        if not batch.journal_id:
            return False
        row = db.execute(
            "SELECT first_seq, last_seq FROM progress WHERE journal_id = ? AND first_seq <= ?"
            " ORDER BY first_seq DESC LIMIT 1",
            (batch.journal_id, batch.last),
        ).fetchone()
        if row is None or row[1] < batch.first:
            return False
        if row[0] <= batch.first and row[1] >= batch.last:
            return True
        raise TransientStorageError(
            f"journal {batch.journal_id} seqs {batch.first}..{batch.last} are partly in the CSV"
            f" files already ({row[0]}..{row[1]}): delivery must be planned again"
        )

    def _commit(
        self, db: sqlite3.Connection, batch: Batch[Any], texts: dict[str, str], header: HeaderOf
    ) -> None:
        """Append ``texts`` (file -> rows) and record the new lengths and the journal range."""
        self.finish_renames(db)
        committed = dict(
            db.execute(
                "SELECT path, length FROM files WHERE path IN (SELECT value FROM json_each(?))",
                (_JSON.encode(sorted(texts)),),
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
                created = ensure_dir(path.parent)
                fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
                fds.append(fd)
                fcntl.flock(fd, fcntl.LOCK_EX)
                size = repair_tail(fd, committed.get(rel))
                data = texts[rel]
                if size == 0:
                    data = header(rel) + data
                payload = data.encode("utf-8")
                written = os.write(fd, payload)  # one write: no other appender can interleave
                if written != len(payload):
                    raise OSError(errno.EIO, f"short write to {path}: {written} of {len(payload)}")
                os.fsync(fd)
                if created or size == 0:
                    fsync_dir(path.parent)
                lengths[rel] = size + written
        except OSError as exc:
            if exc.errno in _NAMED_BY_A_RECORD:
                # The path is made of a record's value (its source): that record is to blame,
                # not the disk. Refused as a value is, so delivery isolates it in dead letters
                # and its neighbours are stored.
                raise ConstraintError(
                    f"CSV file {exc.filename or self.root} cannot exist: {exc.strerror}"
                ) from exc
            raise unavailable(exc, self.root) from exc
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
                fsync_dir(directory)
        except OSError as exc:
            raise unavailable(exc, self.root) from exc
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
                        repair_tail(fd, length)
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


def repair_tail(fd: int, committed: int | None) -> int:
    """Cut a file back to its committed length; returns the length to append at."""
    size = os.fstat(fd).st_size
    if committed is None:  # a file we hold no state for (state lost): keep what is there
        return size
    if size > committed:
        os.ftruncate(fd, committed)
        os.fsync(fd)
        return committed
    return size


def ensure_dir(path: Path) -> bool:
    if path.is_dir():
        return False
    path.mkdir(parents=True, exist_ok=True)
    fsync_dir(path.parent)
    return True


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def unavailable(exc: BaseException, where: Path) -> TransientStorageError:
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    return TransientStorageError(f"CSV files in {where} are not writable: {reason}")

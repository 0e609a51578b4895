"""The CSV mirror of raw events: ``<data dir>/raw_events/<source>/<YYYY-MM-DD>.csv``.

Header ``source,source_id,occurred_at,payload`` exactly once per file, one row per event key
ever seen: the oldest acceptance stamp of a key wins, as in PostgreSQL. Exactly once across
crashes and processes as every CSV sink is (``csv_files.py``): the keys written, with their
stamps, are committed in the transaction that commits the files' new lengths
(``csv_state.sqlite``).
"""

from __future__ import annotations

import csv
import fcntl
import logging
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

from scrapesink.adapters.csv_files import CsvFiles, fsync_dir, repair_tail, unavailable
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
from scrapesink.domain.events import RawEvent
from scrapesink.domain.values import MAX_NAME_BYTES
from scrapesink.errors import ConstraintError
from scrapesink.layout import DataDir

log = logging.getLogger(__name__)
HeaderOf = Callable[[str], str]  # a file (relative path) -> its header line

# Per key: the acceptance stamp of the copy the files hold (NULL: written before stamps
# existed, older than any) and its day, which names its file.
_KEYS_SCHEMA = """
CREATE TABLE IF NOT EXISTS keys (source TEXT NOT NULL, source_id TEXT NOT NULL, stamp BLOB,
                                 day TEXT, PRIMARY KEY (source, source_id)) WITHOUT ROWID;
"""
_KEYS_COLUMNS = {"stamp": "BLOB", "day": "TEXT"}


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
                    repair_tail(fd, row[0] if row else None)
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
                fsync_dir(path.parent)
            except OSError as exc:
                temp.unlink(missing_ok=True)
                raise unavailable(exc, path) from exc
            size = path.stat().st_size
            db.execute("UPDATE files SET length = ? WHERE path = ?", (size, rel))
            db.execute(_FORGET_KEYS, forget)


_ABSENT: Any = object()
# errno values that a path made of a record's value causes (a name the filesystem refuses)
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

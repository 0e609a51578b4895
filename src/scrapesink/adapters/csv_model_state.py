"""What the model CSV files hold now, record by record: the state their change detection reads.

``csv_models.sqlite`` keeps one row per record of any model, shared entities included:
``records(file, identity, digest, rows)`` — the record's CSV file and natural key, a digest of the
rows last written for it (NULL when not known), and those rows (its own first, then its
children's and link rows) with their cells; ``stamps(file, identity, stamp)``, the newest
acceptance stamp seen for it (none: written before stamps existed). A version whose stamp is not
newer than that changes nothing and is not written at all: the files hold each record's versions
in stamp order, so the last row of an identity is its newest version. The stamps have a narrow
table of their own because an unchanged record re-sent moves its stamp, and rewriting its rows
for that cost a quarter of a re-save. A batch reads the digests of its records in one query
and the rows of only the records that changed (or are deleted, or are shared entities); an
unchanged record costs one digest comparison, a new one nothing more.

Earlier versions kept a ``versions`` row per CSV row; :func:`adopt_versions` moves those into
``records`` the first time a process writes, so an existing installation goes on without
appending its rows again.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import msgspec

from scrapesink.domain.records import DELETE

SCHEMA = """
CREATE TABLE IF NOT EXISTS records (file TEXT NOT NULL, identity TEXT NOT NULL, digest BLOB,
                                    rows TEXT NOT NULL,
                                    PRIMARY KEY (file, identity)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS stamps (file TEXT NOT NULL, identity TEXT NOT NULL,
                                   stamp BLOB NOT NULL,
                                   PRIMARY KEY (file, identity)) WITHOUT ROWID;
"""
# Cells are tuples: tuples of strings leave the garbage collector's lists, lists of the same
# never do (their scanning was a third of this lane's time with a large heap).
Cells = tuple[str, ...]
Row = tuple[str, str, Cells]  # file, identity, cells
Key = tuple[str, str]  # file, identity
_JSON = msgspec.json.Encoder()
_ROWS = msgspec.json.Decoder(list[tuple[str, str, tuple[str, ...]]])
_CELLS = msgspec.json.Decoder(tuple[str, ...])


@dataclass(frozen=True, slots=True)
class Prepared:
    """One entity as the rows it stands for (worked out when its batch is handed over)."""

    op: str
    root: str  # the record's identity
    stamp: bytes  # its acceptance stamp
    rows: tuple[Row, ...] = ()  # the record's own row first, then its children and link rows
    shared: tuple[Row, ...] = ()  # linked entities, as the link items describe them
    digest: bytes | None = None  # of ``rows``; None where links make records depend on others


@dataclass(slots=True)
class _Stored:
    digest: bytes | None
    rows: dict[Key, Cells] | None  # None: not loaded (the digest matched)
    stamp: bytes | None = None


class Plan:
    """The rows one batch appends to each file, and the state it leaves."""

    def __init__(
        self, db: sqlite3.Connection, root_file: str, files: Iterable[str], batch: list[Prepared]
    ) -> None:
        self.root_file = root_file
        self.output: dict[str, list[Cells]] = {file: [] for file in files}
        self.changed = 0
        self.unchanged = 0
        self.same: list[int] = []  # positions of the unchanged records
        self.now = datetime.now(UTC).isoformat()
        self.current: dict[Key, _Stored | None] = {}
        self.dirty: set[Key] = set()
        self.touched: set[Key] = set()  # unchanged records whose stamp moved forward
        self._load(db, batch)
        for position, entry in enumerate(batch):
            stored = self.current.get((self.root_file, entry.root))
            if stored is not None and stored.stamp is not None and stored.stamp >= entry.stamp:
                # An older version than the one held, arriving late: it changes nothing.
                self.unchanged += 1
                self.same.append(position)
            elif entry.op == DELETE:
                if not self._delete(entry.root):  # nothing to delete: unchanged, no tombstone
                    self.unchanged += 1
                    self.same.append(position)
            elif not self._upsert(entry):
                self.same.append(position)
            if stored is not None and (stored.stamp is None or stored.stamp < entry.stamp):
                stored.stamp = entry.stamp
                self.touched.add((self.root_file, entry.root))

    def _load(self, db: sqlite3.Connection, batch: list[Prepared]) -> None:
        roots = {(self.root_file, p.root) for p in batch}
        shared = {(file, identity) for p in batch for file, identity, _ in p.shared}
        digests = {
            (file, identity): digest
            for file, identity, digest in _select(
                db, "file, identity, digest", sorted(roots | shared)
            )
        }
        stamps = {
            (file, identity): stamp
            for file, identity, stamp in _select(
                db, "file, identity, stamp", sorted(roots), table="stamps"
            )
        }
        # Rows are needed unless every entry of a record matches the digest it has stored.
        needed = shared | {
            (self.root_file, p.root)
            for p in batch
            if p.digest is None or digests.get((self.root_file, p.root)) != p.digest
        }
        for key, digest in digests.items():
            self.current[key] = _Stored(digest, None, stamps.get(key))
        wanted = sorted(key for key in needed if key in digests)
        for file, identity, rows in _select(db, "file, identity, rows", wanted):
            self.current[(file, identity)].rows = {  # type: ignore[union-attr]
                (f, i): cells for f, i, cells in _ROWS.decode(rows)
            }

    def _append(self, file: str, cells: Cells, deleted: bool = False) -> None:
        self.output[file].append((*cells, self.now, self.now if deleted else ""))

    def _upsert(self, entry: Prepared) -> bool:
        key = (self.root_file, entry.root)
        stored = self.current.get(key)
        if stored is not None and entry.digest is not None and stored.digest == entry.digest:
            self.unchanged += 1
            return False
        for file, identity, cells in entry.shared:
            self._merge_shared(file, identity, cells)
        old = stored.rows if stored is not None and stored.rows is not None else {}
        new: dict[Key, Cells] = {}
        changed = False
        for file, identity, cells in entry.rows:
            row = (file, identity)
            latest = new[row] if row in new else old.get(row)  # a link given twice: last wins
            new[row] = cells
            if latest != cells:
                self._append(file, cells)
                changed = True
        for (file, identity), cells in old.items():
            if (file, identity) not in new:  # a child or link the record no longer has
                self._append(file, cells, deleted=True)
                changed = True
        self.current[key] = _Stored(entry.digest, new, entry.stamp)
        self.dirty.add(key)
        if changed:
            self.changed += 1
        else:
            self.unchanged += 1
        return changed

    def _merge_shared(self, file: str, identity: str, cells: Cells) -> None:
        """A linked entity: what the link item carries updates it; absent fields keep theirs."""
        key = (file, identity)
        stored = self.current.get(key)
        if stored is None:
            self._append(file, cells)
            self.current[key] = _Stored(None, {key: cells})
            self.dirty.add(key)
            return
        assert stored.rows is not None  # a shared entity's rows are always loaded
        old = stored.rows.get(key)
        merged = cells
        if old is not None and len(old) == len(cells):  # else the declaration changed: as given
            merged = tuple(new or was for new, was in zip(cells, old, strict=True))
        if merged != old:
            self._append(file, merged)
            stored.rows[key] = merged
            stored.digest = None  # changed by another record: its own digest no longer holds
            self.dirty.add(key)

    def _delete(self, root: str) -> bool:
        """Tombstones for a record and its rows; False when it is not there."""
        key = (self.root_file, root)
        stored = self.current.get(key)
        if stored is None or stored.rows is None:
            return False  # not there (a delete entry always has its rows loaded)
        for (file, _), cells in stored.rows.items():
            self._append(file, cells, deleted=True)
        self.current[key] = None
        self.dirty.add(key)
        self.changed += 1
        return True

    def save(self, db: sqlite3.Connection) -> None:
        kept, gone = [], []
        for key in self.dirty:
            stored = self.current[key]
            if stored is None:
                gone.append(key)
            else:
                assert stored.rows is not None  # a written record always has its rows
                rows = [(*row, cells) for row, cells in stored.rows.items()]
                kept.append((*key, stored.digest, _JSON.encode(rows).decode()))
        db.executemany("INSERT OR REPLACE INTO records VALUES (?, ?, ?, ?)", kept)
        db.executemany("DELETE FROM records WHERE file = ? AND identity = ?", gone)
        db.executemany("DELETE FROM stamps WHERE file = ? AND identity = ?", gone)
        stamped = [
            (*key, stored.stamp)
            for key in self.touched | self.dirty
            if (stored := self.current.get(key)) is not None and stored.stamp is not None
        ]
        db.executemany("INSERT OR REPLACE INTO stamps VALUES (?, ?, ?)", stamped)


def _select(
    db: sqlite3.Connection, columns: str, keys: Sequence[Key], table: str = "records"
) -> list[Any]:
    if not keys:
        return []
    return db.execute(
        f"SELECT {columns} FROM json_each(?) AS j JOIN {table} AS r"  # noqa: S608 (fixed names)
        " ON r.file = j.value ->> 0 AND r.identity = j.value ->> 1",
        (_JSON.encode(keys),),
    ).fetchall()


def adopt_versions(db: sqlite3.Connection, models: Sequence[tuple[str, Sequence[str]]]) -> int:
    """Move the state of earlier versions (a ``versions`` row per CSV row) into ``records``.

    ``models``: each declared model's file and the files of its children and links. Rows of
    models no longer declared stay where they are. Returns how many records were moved."""
    found = db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'versions'")
    if found.fetchone() is None:
        return 0
    moved = 0
    for root_file, owned in models:
        records: dict[str, list[Row]] = {}
        for identity, cells in db.execute(
            "SELECT identity, cells FROM versions WHERE file = ? AND parent IS NULL"
            " AND deleted = 0",
            (root_file,),
        ):
            records[identity] = [(root_file, identity, _CELLS.decode(cells))]
        files = _JSON.encode(list(owned))
        for file, identity, parent, cells in db.execute(
            "SELECT file, identity, parent, cells FROM versions WHERE deleted = 0"
            " AND file IN (SELECT value FROM json_each(?))",
            (files,),
        ):
            if parent in records:
                records[parent].append((file, identity, _CELLS.decode(cells)))
        db.executemany(
            "INSERT OR IGNORE INTO records VALUES (?, ?, NULL, ?)",
            [(root_file, r, _JSON.encode(rows).decode()) for r, rows in records.items()],
        )
        db.execute("DELETE FROM versions WHERE file = ?", (root_file,))
        db.execute("DELETE FROM versions WHERE file IN (SELECT value FROM json_each(?))", (files,))
        moved += len(records)
    if db.execute("SELECT 1 FROM versions LIMIT 1").fetchone() is None:
        db.execute("DROP TABLE versions")
    return moved

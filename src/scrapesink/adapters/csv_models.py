"""The CSV mirror of model records: one file per table, ``<data dir>/<table>.csv``, as a history.

A row is appended only for a new or changed version of a row (a record, a child, a link, a shared
entity); a child or link that a record no longer has, and a deleted record with its children, get
a *tombstone* row (``deleted_at`` set). Columns: a child or link row names its parent by the
parent's natural key (``workflows_workflow_id``, ``movies_url``, ``actors_name``: table + field),
because PostgreSQL's ids are not known here; then the fields; then ``updated_at`` (when this
version was written) and ``deleted_at``.

What the files hold now is kept in ``csv_models.sqlite`` (each row's latest values), so change
detection needs no PostgreSQL; exactly-once uses the same committed lengths + journal ranges as
the raw-event mirror (``csv_sink.CsvFiles``). :func:`compact` rewrites files latest-only.
"""

from __future__ import annotations

import csv
import io
import os
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec

from scrapesink.adapters.csv_format import header_line
from scrapesink.adapters.csv_sink import CsvFiles, _fsync_dir, _unavailable
from scrapesink.application.ports import Batch, WriteOutcome, model_kind
from scrapesink.domain.models import Declaration, FieldDef, ModelDef
from scrapesink.domain.records import DELETE, Entity

_VERSIONS = """
CREATE TABLE IF NOT EXISTS versions (file TEXT NOT NULL, identity TEXT NOT NULL, parent TEXT,
                                     cells TEXT NOT NULL, deleted INTEGER NOT NULL,
                                     PRIMARY KEY (file, identity)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS versions_parent ON versions (parent);
"""
SYSTEM = ("updated_at", "deleted_at")
_JSON = msgspec.json.Encoder()
_DECODE = msgspec.json.Decoder(list[Any])


@dataclass(frozen=True, slots=True)
class TableLayout:
    """One CSV file: its columns, and which of them tell its rows apart."""

    file: str
    columns: tuple[str, ...]
    identity: tuple[str, ...]  # empty: the whole row (children without a key)
    parent_columns: int  # leading columns naming the parent record

    @property
    def header(self) -> tuple[str, ...]:
        return (*self.columns, *SYSTEM)


def layouts(declaration: Declaration, model: ModelDef) -> dict[str, TableLayout]:
    """The files of one model: its table, children, links and linked (shared) models."""
    parent = tuple(f"{model.table_name}_{k}" for k in model.natural_key)
    result = {
        model.table_name: TableLayout(
            f"{model.table_name}.csv", _names(model.fields), model.natural_key, 0
        )
    }
    for child in model.children:
        identity = (
            parent if child.relation == "one" else ((*parent, *child.key) if child.key else ())
        )
        result[child.table_name] = TableLayout(
            f"{child.table_name}.csv", (*parent, *_names(child.fields)), identity, len(parent)
        )
    for link in model.links:
        target = declaration.model(link.model)
        other = tuple(f"{target.table_name}_{k}" for k in target.natural_key)
        result[link.table_name] = TableLayout(
            f"{link.table_name}.csv",
            (*parent, *other, *_names(link.fields)),
            (*parent, *other),
            len(parent),
        )
        result[target.table_name] = TableLayout(
            f"{target.table_name}.csv", _names(target.fields), target.natural_key, 0
        )
    return result


def _names(fields: tuple[FieldDef, ...]) -> tuple[str, ...]:
    return tuple(f.name for f in fields)


def cell(value: Any, spec: FieldDef | None = None) -> str:
    if value is None:
        return ""
    if value is True or value is False:
        return "true" if value else "false"
    if (spec is not None and spec.type == "json") or isinstance(value, dict | list):
        return _JSON.encode(value).decode()
    return str(value)


@dataclass
class _Row:
    parent: str | None
    cells: list[str]
    deleted: bool


class ModelCsvFiles(CsvFiles):
    """The model CSV files and their state, without a model (what `status` needs)."""

    def __init__(self, data_dir: Path) -> None:
        super().__init__(data_dir, data_dir / "csv_models.sqlite", _VERSIONS)

    def files(self) -> list[Path]:
        return sorted(p for p in self.root.glob("*.csv") if p.is_file())


class CsvModelSink(ModelCsvFiles):
    """One model's records mirrored into its tables' CSV files (a ``ports.Sink`` of Entity)."""

    parallelism = 1

    def __init__(self, data_dir: Path, declaration: Declaration, model: ModelDef) -> None:
        super().__init__(data_dir)
        self.declaration = declaration
        self.model = model
        self.kind = model_kind(model.name)
        self.layouts = layouts(declaration, model)
        self._headers = {t.file: header_line(t.header) for t in self.layouts.values()}
        self._header_checked: set[str] = set()  # files whose header this process has seen

    def stage(self, batch: Batch[Entity]) -> Callable[[], WriteOutcome]:
        return lambda: self._deliver(batch)

    def _deliver(self, batch: Batch[Entity]) -> WriteOutcome:
        self._register(set(self._headers))
        with self._state(write=True) as db:
            if self._seen(db, batch):
                return WriteOutcome(0)
            self._migrate_headers(db)
            plan = _Plan(self, db, batch.records)
            texts = {file: _format(rows) for file, rows in plan.output.items() if rows}
            self._commit(db, batch, texts, self._headers.__getitem__)
            plan.save(db)
        same = frozenset(batch.first + position for position in plan.same)
        return WriteOutcome(plan.changed, unchanged=plan.unchanged, unchanged_seqs=same)

    def _migrate_headers(self, db: sqlite3.Connection) -> None:
        """A file written with other columns (the declaration changed) is rewritten with the
        current header first, old rows keeping their values by column name."""
        for file, header in self._headers.items():
            if file in self._header_checked:
                continue
            path = self.root / file
            if not path.exists() or path.stat().st_size == 0:
                continue  # written with this header by the append itself
            with path.open("r", encoding="utf-8", newline="") as handle:
                first = handle.readline()
            if first != header:
                rewrite(db, self.root, file, self._layout(file), latest_only=False)
            self._header_checked.add(file)

    def _layout(self, file: str) -> TableLayout:
        return next(t for t in self.layouts.values() if t.file == file)

    def compact(self) -> dict[str, tuple[int, int]]:
        """Rewrite this model's files latest-only; file -> (rows before, rows after)."""
        self._register(set(self._headers))
        with self._state(write=True) as db:
            return {
                t.file: rewrite(db, self.root, t.file, t, latest_only=True)
                for t in self.layouts.values()
                if (self.root / t.file).exists()
            }


class _Plan:
    """The rows one batch appends, worked out against the stored latest versions."""

    def __init__(self, sink: CsvModelSink, db: sqlite3.Connection, entities: Any) -> None:
        self.sink = sink
        self.model = sink.model
        self.output: dict[str, list[list[str]]] = {t.file: [] for t in sink.layouts.values()}
        self.changed = 0
        self.unchanged = 0
        self.now = datetime.now(UTC).isoformat()
        self.touched: dict[tuple[str, str], _Row] = {}
        self.rows: dict[tuple[str, str], _Row] = {}
        self.children: dict[str, dict[str, set[str]]] = {}  # parent -> file -> identities
        self._load(db, entities)
        self.same: list[int] = []  # positions of the unchanged records
        for position, entity in enumerate(entities):
            if entity.op == DELETE:
                self._delete(entity.record)
            elif not self._upsert(entity.record):
                self.same.append(position)

    def _identity(self, values: list[Any]) -> str:
        return _JSON.encode(values).decode()

    def _load(self, db: sqlite3.Connection, entities: Any) -> None:
        model = self.model
        roots = [self._identity([e.record[k] for k in model.natural_key]) for e in entities]
        root_file = self.sink.layouts[model.table_name].file
        wanted = [[root_file, r] for r in roots]
        for link in model.links:
            target = self.sink.declaration.model(link.model)
            file = self.sink.layouts[target.table_name].file
            for e in entities:
                for item in e.record.get(link.name) or ():
                    wanted.append([file, self._identity([item[k] for k in target.natural_key])])
        query = (
            "SELECT v.file, v.identity, v.parent, v.cells, v.deleted FROM json_each(?) AS j"
            " JOIN versions AS v ON v.file = j.value ->> 0 AND v.identity = j.value ->> 1"
        )
        found = db.execute(query, (_JSON.encode(wanted),)).fetchall()
        found += db.execute(
            "SELECT file, identity, parent, cells, deleted FROM versions"
            " WHERE parent IN (SELECT value FROM json_each(?))",
            (_JSON.encode(roots),),
        ).fetchall()
        for file, identity, parent, cells, deleted in found:
            row = _Row(parent, _DECODE.decode(cells), bool(deleted))
            self.rows[(file, identity)] = row
            if parent is not None and not deleted:
                self.children.setdefault(parent, {}).setdefault(file, set()).add(identity)

    def _put(self, file: str, identity: str, parent: str | None, cells: list[str]) -> bool:
        """Append a version when it differs from the latest; True when one was appended."""
        current = self.rows.get((file, identity))
        if current is not None and not current.deleted and current.cells == cells:
            return False
        row = _Row(parent, cells, False)
        self.rows[(file, identity)] = self.touched[(file, identity)] = row
        self.output[file].append([*cells, self.now, ""])
        return True

    def _tombstone(self, file: str, identity: str) -> None:
        current = self.rows.get((file, identity))
        if current is None or current.deleted:
            return
        row = _Row(current.parent, current.cells, True)
        self.rows[(file, identity)] = self.touched[(file, identity)] = row
        self.output[file].append([*current.cells, self.now, self.now])

    def _upsert(self, record: dict[str, Any]) -> bool:
        model = self.model
        layouts = self.sink.layouts
        key = [record[k] for k in model.natural_key]
        root = self._identity(key)
        key_cells = [cell(v) for v in key]
        changed = self._put(
            layouts[model.table_name].file,
            root,
            None,
            [cell(record.get(f.name), f) for f in model.fields],
        )
        before = self.children.pop(root, {})
        now: dict[str, set[str]] = {}
        for child in model.children:
            layout = layouts[child.table_name]
            items = record.get(child.name)
            items = [] if items is None else [items] if child.relation == "one" else items
            for item in items:
                cells = key_cells + [cell(item.get(f.name), f) for f in child.fields]
                ident = self._identity(
                    [*key, *(item[k] for k in child.key)]
                    if child.relation == "many" and child.key
                    else (key if child.relation == "one" else cells)
                )
                changed |= self._put(layout.file, ident, root, cells)
                now.setdefault(layout.file, set()).add(ident)
        for link in model.links:
            target = self.sink.declaration.model(link.model)
            target_layout = layouts[target.table_name]
            layout = layouts[link.table_name]
            for item in record.get(link.name) or ():
                target_key = [item[k] for k in target.natural_key]
                self._merge_shared(target_layout.file, target.fields, target_key, item)
                cells = key_cells + [cell(v) for v in target_key]
                cells += [cell(item.get(f.name), f) for f in link.fields]
                ident = self._identity([*key, *target_key])
                changed |= self._put(layout.file, ident, root, cells)
                now.setdefault(layout.file, set()).add(ident)
        for file, identities in before.items():
            for ident in identities - now.get(file, set()):
                self._tombstone(file, ident)
                changed = True
        self.children[root] = now
        if changed:
            self.changed += 1
        else:
            self.unchanged += 1
        return changed

    def _merge_shared(
        self, file: str, fields: tuple[FieldDef, ...], key: list[Any], item: dict[str, Any]
    ) -> None:
        """A linked entity: what the link item carries updates it; absent fields keep theirs."""
        identity = self._identity(key)
        current = self.rows.get((file, identity))
        cells = [cell(item.get(f.name), f) for f in fields]
        if current is not None and not current.deleted:
            cells = [
                new if new != "" else old for new, old in zip(cells, current.cells, strict=True)
            ]
        self._put(file, identity, None, cells)

    def _delete(self, key_record: dict[str, Any]) -> None:
        model = self.model
        root = self._identity([key_record[k] for k in model.natural_key])
        current = self.rows.get((self.sink.layouts[model.table_name].file, root))
        if current is None or current.deleted:
            return
        self._tombstone(self.sink.layouts[model.table_name].file, root)
        for file, identities in self.children.pop(root, {}).items():
            for ident in identities:
                self._tombstone(file, ident)
        self.changed += 1

    def save(self, db: sqlite3.Connection) -> None:
        db.executemany(
            "INSERT INTO versions VALUES (?, ?, ?, ?, ?) ON CONFLICT (file, identity) DO UPDATE"
            " SET parent = excluded.parent, cells = excluded.cells, deleted = excluded.deleted",
            [
                (file, ident, row.parent, _JSON.encode(row.cells).decode(), int(row.deleted))
                for (file, ident), row in self.touched.items()
            ],
        )


def _format(rows: list[list[str]]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n").writerows(rows)
    return buffer.getvalue()


def _read(path: Path) -> Iterator[dict[str, str]]:
    with path.open("r", encoding="utf-8", newline="") as handle:
        yield from csv.DictReader(handle)


def rewrite(
    db: sqlite3.Connection, root: Path, file: str, layout: TableLayout, *, latest_only: bool
) -> tuple[int, int]:
    """Rewrite a file with ``layout``'s header (and, ``latest_only``, only each row's latest
    version, deleted rows dropped): temp file, fsync, rename, directory fsync; the committed
    length follows. The caller holds the state's write lock. Returns (rows before, after)."""
    path = root / file
    rows = list(_read(path))
    kept = rows
    if latest_only:
        latest: dict[tuple[str, ...], dict[str, str]] = {}
        columns = layout.identity or layout.columns
        for row in rows:
            ident = tuple(row.get(c, "") for c in columns)
            latest.pop(ident, None)  # re-insert: the order follows the latest versions
            latest[ident] = row
        kept = [row for row in latest.values() if not row.get("deleted_at")]
    temp = path.with_name(f".{file}.compact")
    try:
        with temp.open("w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle, lineterminator="\r\n")
            writer.writerow(layout.header)
            writer.writerows([row.get(c, "") or "" for c in layout.header] for row in kept)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
        _fsync_dir(root)
    except OSError as exc:
        temp.unlink(missing_ok=True)
        raise _unavailable(exc, root) from exc
    db.execute(
        "INSERT INTO files VALUES (?, ?) ON CONFLICT(path) DO UPDATE SET length = excluded.length",
        (file, path.stat().st_size),
    )
    return len(rows), len(kept)

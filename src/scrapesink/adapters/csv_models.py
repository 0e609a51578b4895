"""The CSV mirror of model records: one file per table, ``<data dir>/<table>.csv``, as a history.

A row is appended only for a new or changed version of a row (a record, a child, a link, a shared
entity); a child or link that a record no longer has, and a deleted record with its children, get
a *tombstone* row (``deleted_at`` set). Columns: a child or link row names its parent by the
parent's natural key (``workflows_workflow_id``, ``movies_url``, ``actors_name``: table + field),
because PostgreSQL's ids are not known here; then the fields; then ``updated_at`` (when this
version was written) and ``deleted_at``.

What the files hold now is kept in ``csv_models.sqlite``, a row per record
(``csv_model_state``), so change detection needs no PostgreSQL; exactly-once uses the same
committed lengths + journal ranges as the raw-event mirror (``csv_sink.CsvFiles``).
:func:`compact` rewrites files latest-only.
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import os
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from scrapesink.adapters.csv_files import CsvFiles, fsync_dir, unavailable
from scrapesink.adapters.csv_format import header_line
from scrapesink.adapters.csv_model_state import (
    SCHEMA,
    Cells,
    Plan,
    Prepared,
    Row,
    adopt_versions,
)
from scrapesink.application.kinds import model_kind
from scrapesink.application.ports import Batch, WriteOutcome
from scrapesink.domain.models import Declaration, FieldDef, ModelDef
from scrapesink.domain.records import DELETE, UPSERT, RecordOp
from scrapesink.layout import DataDir

log = logging.getLogger(__name__)
SYSTEM = ("updated_at", "deleted_at")
_JSON = msgspec.json.Encoder()


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
    if type(value) is str and (spec is None or spec.type != "json"):
        return value  # most cells: text in canonical form already
    if value is True or value is False:
        return "true" if value else "false"
    if (spec is not None and spec.type == "json") or isinstance(value, dict | list):
        return _JSON.encode(value).decode()
    return str(value)


def _cells(values: dict[str, Any], fields: tuple[FieldDef, ...]) -> Cells:
    return tuple([cell(values.get(f.name), f) for f in fields])


def _identity(values: Sequence[Any]) -> str:
    return _JSON.encode(values).decode()


class ModelCsvFiles(CsvFiles):
    """The model CSV files and their state, without a model (what `status` needs)."""

    def __init__(self, data_dir: Path) -> None:
        paths = DataDir(data_dir)
        super().__init__(paths.model_csv, paths.model_csv_state, SCHEMA)

    def files(self) -> list[Path]:
        return sorted(p for p in self.root.glob("*.csv") if p.is_file())


class CsvModelSink(ModelCsvFiles):
    """One model's records mirrored into its tables' CSV files (a ``RecordSink`` of RecordOp)."""

    parallelism = 1

    def __init__(self, data_dir: Path, declaration: Declaration, model: ModelDef) -> None:
        super().__init__(data_dir)
        self.declaration = declaration
        self.model = model
        self.kind = model_kind(model.name)
        self.layouts = layouts(declaration, model)
        self._headers = {t.file: header_line(t.header) for t in self.layouts.values()}
        self._header_checked: set[str] = set()  # files whose header this process has seen
        self._adopted = False  # state of earlier versions moved (once per process)
        self.root_file = self.layouts[model.table_name].file
        self._children = [(c, self.layouts[c.table_name].file) for c in model.children]
        self._links = [
            (
                link,
                target,
                self.layouts[target.table_name].file,
                self.layouts[link.table_name].file,
            )
            for link in model.links
            for target in [declaration.model(link.model)]
        ]

    def stage(self, batch: Batch[RecordOp]) -> Callable[[], WriteOutcome]:
        prepared = [
            self._prepare(entity, stamp)
            for entity, stamp in zip(batch.records, batch.stamps(), strict=True)
        ]
        return lambda: self._deliver(batch, prepared)

    def _prepare(self, entity: RecordOp, stamp: bytes) -> Prepared:
        record = entity.record
        key = [record[k] for k in self.model.natural_key]
        root = _identity(key)
        if entity.op == DELETE:
            return Prepared(DELETE, root, stamp)
        rows: list[Row] = [(self.root_file, root, _cells(record, self.model.fields))]
        key_cells = tuple(cell(v) for v in key)
        for child, file in self._children:
            items = record.get(child.name)
            items = [] if items is None else [items] if child.relation == "one" else items
            for item in items:
                cells = key_cells + _cells(item, child.fields)
                if child.relation == "one":
                    ident = root
                elif child.key:
                    ident = _identity([*key, *(item[k] for k in child.key)])
                else:
                    ident = _identity(cells)
                rows.append((file, ident, cells))
        shared: list[Row] = []
        for link, target, target_file, file in self._links:
            for item in record.get(link.name) or ():
                target_key = [item[k] for k in target.natural_key]
                shared.append((target_file, _identity(target_key), _cells(item, target.fields)))
                cells = key_cells + tuple(cell(v) for v in target_key) + _cells(item, link.fields)
                rows.append((file, _identity([*key, *target_key]), cells))
        # Unchanged records are recognised by this digest alone; a record with links is not,
        # since what it says of a shared entity depends on what other records said.
        digest = None if shared else hashlib.blake2b(_JSON.encode(rows), digest_size=16).digest()
        return Prepared(UPSERT, root, stamp, tuple(rows), tuple(shared), digest)

    def _deliver(self, batch: Batch[RecordOp], prepared: list[Prepared]) -> WriteOutcome:
        self._register(set(self._headers))
        with self._state(write=True) as db:
            if self._seen(db, batch):
                return WriteOutcome(0)
            self._migrate_headers(db)
            if not self._adopted:
                moved = adopt_versions(db, self._owned_files())
                if moved:
                    log.info("csv: moved the state of %d records to the per-record layout", moved)
                self._adopted = True
            plan = Plan(db, self.root_file, self._headers, prepared)
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

    def _owned_files(self) -> list[tuple[str, list[str]]]:
        """Every declared model's file and the files of its children and links."""
        return [
            (f"{root}.csv", [f"{t}.csv" for t in owned])
            for root, *owned in (m.tables for m in self.declaration.models.values())
        ]

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


def _format(rows: list[Cells]) -> str:
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
        fsync_dir(root)
    except OSError as exc:
        temp.unlink(missing_ok=True)
        raise unavailable(exc, root) from exc
    db.execute(
        "INSERT INTO files VALUES (?, ?) ON CONFLICT(path) DO UPDATE SET length = excluded.length",
        (file, path.stat().st_size),
    )
    return len(rows), len(kept)

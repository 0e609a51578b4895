"""Model records in both stores: compared per row of each file, and a model's files rebuilt."""

from __future__ import annotations

import csv
import json
import tempfile
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from scrapesink.adapters.csv_format import header_line
from scrapesink.adapters.csv_models import CsvModelSink
from scrapesink.adapters.postgres.database import Database
from scrapesink.adapters.postgres.model_reader import PostgresModelReader
from scrapesink.adapters.postgres.model_sql import q
from scrapesink.adapters.verify.common import (
    JSON,
    PAGE,
    CsvSide,
    VerifyReport,
    close_file,
    digest,
    instant,
    json_value,
    number_text,
    pages,
    readable,
    rebuilding,
)
from scrapesink.domain.models import SYSTEM_COLUMNS, Declaration, FieldDef, ModelDef
from scrapesink.domain.records import UPSERT, RecordOp, validate_record
from scrapesink.errors import RecordError

Normalizer = Callable[[str], Any]


def _normalizer(spec: FieldDef | None) -> Normalizer:
    if spec is None or spec.type in ("string", "text", "boolean", "date", "integer", "bigint"):
        return str
    if spec.type == "json":
        return lambda cell: json_value(cell) if cell else None
    if spec.type in ("numeric", "float"):

        def number(cell: str) -> Any:
            try:
                return number_text(Decimal(cell)) if cell else None
            except InvalidOperation:
                return cell

        return number
    if spec.type == "datetime":
        return lambda cell: instant(cell) if cell else None
    return str


class ModelFiles:
    """One model's own files (the record, its children, its links), as the mirror writes them."""

    def __init__(self, data_dir: Path, declaration: Declaration, model: ModelDef) -> None:
        self.sink = CsvModelSink(data_dir, declaration, model)
        self.model = model
        self.invalid: list[str] = []  # PostgreSQL records the declaration refuses
        targets = {declaration.model(link.model).table_name for link in model.links}
        self.layouts = {t.file: t for name, t in self.sink.layouts.items() if name not in targets}
        self.normalizers = {
            t.file: [_normalizer(spec) for spec in self._specs(declaration, name)]
            for name, t in self.sink.layouts.items()
            if name not in targets
        }

    def _specs(self, declaration: Declaration, table: str) -> list[FieldDef | None]:
        model = self.model
        parent = [model.field(k) for k in model.natural_key]
        if table == model.table_name:
            return list(model.fields)
        for child in model.children:
            if child.table_name == table:
                return [*parent, *child.fields]
        link = next(x for x in model.links if x.table_name == table)
        target = declaration.model(link.model)
        return [*parent, *(target.field(k) for k in target.natural_key), *link.fields]

    def key(self, file: str, cells: Sequence[str]) -> str:
        layout = self.layouts[file]
        columns = layout.identity or layout.columns
        index = [layout.columns.index(c) for c in columns]
        return JSON.encode([file, [cells[i] for i in index]]).decode()

    def digest(self, file: str, cells: Sequence[str]) -> bytes:
        normalize = self.normalizers[file]
        return digest([f(cell) for f, cell in zip(normalize, cells, strict=True)])

    def csv_rows(self) -> Iterator[tuple[str, tuple[str, ...], bool]]:
        """(file, cells, deleted) of every row of the files, in file order."""
        for file, layout in self.layouts.items():
            path = self.sink.root / file
            if not path.exists():
                continue
            with readable(path), path.open(encoding="utf-8", newline="") as handle:
                for row in csv.DictReader(handle):
                    cells = tuple(row.get(c) or "" for c in layout.columns)
                    yield file, cells, bool(row.get("deleted_at"))

    def pg_records(self, database: Database, declaration: Declaration) -> Iterator[list[Any]]:
        """Each PostgreSQL record as the entity the mirror would be handed, with its stamp and
        updated_at, a page at a time (numbers decoded exactly)."""
        exists = database.fetch("SELECT to_regclass(%s)", [q(self.model.table_name)])
        if exists[0][0] is None:  # never used here: PostgreSQL holds none of its records
            return
        document = PostgresModelReader(database, declaration)._document(self.model)
        sql = (
            f"SELECT ({document})::text, t.accepted_stamp, t.updated_at"  # noqa: S608
            f" FROM {q(self.model.table_name)} AS t ORDER BY t.id"
        )
        for page in pages(database, sql):
            entities = []
            for text, stamp, updated in page:
                doc = json.loads(text, parse_float=Decimal)
                values = {k: v for k, v in doc.items() if k not in SYSTEM_COLUMNS}
                try:
                    record = validate_record(declaration, self.model, values).record
                except RecordError as exc:  # written around scrapesink (psql): no CSV form
                    self.invalid.append(f"{exc.path}: {exc.message}")
                    continue
                entities.append((RecordOp(UPSERT, record), bytes(stamp or b""), updated))
            yield entities


def compare_model(
    database: Database,
    declaration: Declaration,
    data_dir: Path,
    model: ModelDef,
    report: VerifyReport,
) -> None:
    files = ModelFiles(data_dir, declaration, model)
    compared = 0
    with tempfile.TemporaryDirectory(prefix="scrapesink-verify-") as work:
        side = CsvSide(work)
        try:
            latest: dict[str, tuple[bytes, str] | None] = {}
            for file, cells, deleted in files.csv_rows():
                key = files.key(file, cells)
                latest[key] = None if deleted else (files.digest(file, cells), key)
                if len(latest) >= PAGE * 10:
                    _flush_latest(side, latest)
            _flush_latest(side, latest)
            side.db.execute("DELETE FROM side WHERE digest IS NULL")  # tombstones: gone
            for page in files.pg_records(database, declaration):
                rows = [
                    (file, cells)
                    for entity, _, _ in page
                    for file, _, cells in files.sink._prepare(entity, b"").rows
                ]
                keys = [files.key(file, cells) for file, cells in rows]
                held = side.take(keys)
                for key, (file, cells) in zip(keys, rows, strict=True):
                    compared += 1
                    if key not in held:
                        report.differ(model.name, key, "missing in csv")
                    elif held[key] != files.digest(file, cells):
                        report.differ(model.name, key, "differs")
            for label in side.rest():
                compared += 1
                report.differ(model.name, label, "missing in postgres")
            for problem in files.invalid:
                report.differ(model.name, "a PostgreSQL record", f"not valid ({problem})")
        finally:
            side.close()
    report.compared[model.name] = compared


def _flush_latest(side: CsvSide, latest: dict[str, tuple[bytes, str] | None]) -> None:
    """Later rows of an identity replace earlier ones (INSERT OR REPLACE keeps file order)."""
    side.put((key, None, key) if v is None else (key, v[0], key) for key, v in latest.items())
    latest.clear()


def repair_model(
    database: Database, declaration: Declaration, data_dir: Path, model: ModelDef
) -> int:
    """Rebuild one model's own files and its records' state from PostgreSQL (latest only);
    returns how many records were written. Crash-safe like :func:`repair_events`."""
    files = ModelFiles(data_dir, declaration, model)
    sink = files.sink
    root = sink.root
    written = 0
    temps = {file: root / f".{file}.repair" for file in files.layouts}
    with rebuilding(sink, temps, root) as db:
        handles = {file: temps[file].open("w", encoding="utf-8", newline="") for file in temps}
        try:
            for file, layout in files.layouts.items():
                handles[file].write(header_line(layout.header))
            writers = {f: csv.writer(h, lineterminator="\r\n") for f, h in handles.items()}
            db.execute("DELETE FROM records WHERE file = ?", (sink.root_file,))
            db.execute("DELETE FROM stamps WHERE file = ?", (sink.root_file,))
            for page in files.pg_records(database, declaration):
                state, stamps = [], []
                for entity, stamp, updated in page:
                    prepared = sink._prepare(entity, stamp)
                    at = updated.astimezone(UTC).isoformat()
                    for file, _, cells in prepared.rows:
                        writers[file].writerow((*cells, at, ""))
                    rows = [[f, i, list(c)] for f, i, c in prepared.rows]
                    state.append(
                        (
                            sink.root_file,
                            prepared.root,
                            prepared.digest,
                            JSON.encode(rows).decode(),
                        )
                    )
                    if stamp:
                        stamps.append((sink.root_file, prepared.root, stamp))
                db.executemany("INSERT OR REPLACE INTO records VALUES (?, ?, ?, ?)", state)
                db.executemany("INSERT OR REPLACE INTO stamps VALUES (?, ?, ?)", stamps)
                written += len(state)
        finally:
            for handle in handles.values():
                close_file(handle)
    return written

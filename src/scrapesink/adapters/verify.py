"""``scrapesink verify``: do PostgreSQL and the CSV files hold the same data? And the repair.

What is compared:

* raw events, per key: the CSV files' row against PostgreSQL's (``occurred_at`` as an instant,
  the payload as JSON values: key order, spacing and ``1.50`` against ``1.5`` do not count);
* model records, per row of each of the model's files (the record, its children, its links):
  the latest version in the CSV history (a tombstone: gone) against the row PostgreSQL's record
  gives when it is written out the way the CSV mirror writes it;
* the CSV files against their committed lengths: a file longer or shorter than scrapesink left
  it was changed behind its back (a line appended or removed by hand, a restore of another copy).

Memory stays bounded whatever the size: the CSV side is loaded into a temporary SQLite file
(a digest per key), PostgreSQL is read through a server-side cursor, a page at a time, and each
page is matched against that file.

:func:`repair_events` and :func:`repair_model` rebuild the CSV files of one source or one model
from PostgreSQL — each file written to a temporary name, fsynced, renamed, the directory
fsynced — and their state with them, under the CSV state's write lock (no writer interleaves).
A crash in the middle leaves files that ``verify`` reports and a second repair fixes.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import sqlite3
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import msgspec
import psycopg

from scrapesink.adapters.csv_format import HEADER, format_fields, header_line
from scrapesink.adapters.csv_models import CsvModelSink
from scrapesink.adapters.csv_sink import CsvEventSink, CsvFiles, _unavailable
from scrapesink.adapters.postgres.database import Database, translate
from scrapesink.adapters.postgres.model_reader import PostgresModelReader
from scrapesink.adapters.postgres.model_sql import q
from scrapesink.domain.events import source_dir_name
from scrapesink.domain.models import SYSTEM_COLUMNS, Declaration, FieldDef, ModelDef
from scrapesink.domain.records import UPSERT, RecordOp, validate_record
from scrapesink.errors import RecordError, StorageError

PAGE = 2000
_JSON = msgspec.json.Encoder()


@dataclass(frozen=True, slots=True)
class Difference:
    what: str  # "events" or the model's name
    key: str  # the event's source/source_id, or the CSV file and the row's identity
    problem: str  # "missing in csv", "missing in postgres", "differs", "twice in csv"

    def __str__(self) -> str:
        return f"{self.what} {self.key}: {self.problem}"


@dataclass
class VerifyReport:
    """What was compared, how many differences of each kind, and the first of them."""

    limit: int = 20
    compared: dict[str, int] = field(default_factory=dict)  # what -> keys or rows compared
    counts: dict[str, int] = field(default_factory=dict)  # what -> differences
    first: list[Difference] = field(default_factory=list)
    files: list[str] = field(default_factory=list)  # CSV files changed behind our back

    def differ(self, what: str, key: str, problem: str) -> None:
        self.counts[what] = self.counts.get(what, 0) + 1
        if len(self.first) < self.limit:
            self.first.append(Difference(what, key, problem))

    @property
    def differences(self) -> int:
        return sum(self.counts.values())

    @property
    def ok(self) -> bool:
        return not self.differences and not self.files

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "compared": self.compared,
            "differences": self.counts,
            "first": [{"what": d.what, "key": d.key, "problem": d.problem} for d in self.first],
            "files_changed": self.files,
        }


# -- canonical values ---------------------------------------------------------------------------
def _number(value: Decimal) -> str:
    return "0" if value == 0 else format(value.normalize(), "f")


def canonical_json(value: Any) -> Any:
    """A JSON value with key order and number spelling removed (numbers parsed as Decimal)."""
    if isinstance(value, dict):
        return {"{}": sorted((k, canonical_json(v)) for k, v in value.items())}
    if isinstance(value, list):
        return [canonical_json(v) for v in value]
    if isinstance(value, Decimal | int) and not isinstance(value, bool):
        return {"n": _number(Decimal(value))}
    return value


def _json_text(text: str) -> Any:
    return canonical_json(json.loads(text, parse_float=Decimal, parse_int=Decimal))


def _digest(*parts: Any) -> bytes:
    return hashlib.blake2b(_JSON.encode(parts), digest_size=16).digest()


def _event_digest(instant: str, payload: str) -> bytes:
    try:
        return _digest(instant, _json_text(payload))
    except (ValueError, RecursionError):  # not JSON, or nested past Python's stack: as text
        return _digest(instant, "text", payload)


def _instant(text: str) -> str:
    moment = datetime.fromisoformat(text)
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(UTC).isoformat()


class _Side:
    """The CSV side of one comparison, keyed and digested, in a temporary SQLite file."""

    def __init__(self, directory: str) -> None:
        self.db = sqlite3.connect(Path(directory) / "side.sqlite", isolation_level=None)
        self.db.execute("PRAGMA journal_mode=OFF")
        self.db.execute("PRAGMA synchronous=OFF")
        self.db.execute(
            "CREATE TABLE side (k TEXT PRIMARY KEY, digest BLOB, label TEXT) WITHOUT ROWID"
        )

    def put(self, rows: Iterable[tuple[str, bytes | None, str]]) -> None:
        self.db.execute("BEGIN")
        self.db.executemany("INSERT OR REPLACE INTO side VALUES (?, ?, ?)", rows)
        self.db.execute("COMMIT")

    def has(self, key: str) -> bool:
        return self.db.execute("SELECT 1 FROM side WHERE k = ?", (key,)).fetchone() is not None

    def take(self, keys: Sequence[str]) -> dict[str, bytes | None]:
        """The digests of ``keys`` held here; those keys are removed (matched)."""
        encoded = _JSON.encode(list(keys))
        found = dict(
            self.db.execute(
                "SELECT s.k, s.digest FROM json_each(?) AS j JOIN side AS s ON s.k = j.value",
                (encoded,),
            ).fetchall()
        )
        self.db.execute("DELETE FROM side WHERE k IN (SELECT value FROM json_each(?))", (encoded,))
        return found

    def rest(self) -> Iterator[str]:
        for (label,) in self.db.execute("SELECT label FROM side ORDER BY k"):
            yield label

    def close(self) -> None:
        self.db.close()


def _stream(database: Database, sql: str, params: Sequence[Any] = ()) -> Iterator[list[Any]]:
    """Rows of a query through a server-side cursor, a page at a time."""
    try:
        with database.connection() as conn, conn.cursor(name="scrapesink_verify") as cur:
            cur.itersize = PAGE
            cur.execute(sql, params)
            while rows := cur.fetchmany(PAGE):
                yield rows
    except psycopg.Error as exc:
        raise translate(exc) from exc


# -- files changed behind our back --------------------------------------------------------------
def check_lengths(
    files: CsvFiles, report: VerifyReport, only: Callable[[str], bool] = lambda rel: True
) -> None:
    """Files whose size is not what scrapesink committed (appended to or cut by hand)."""
    with files._state(write=False) as db:
        committed = db.execute("SELECT path, length FROM files").fetchall()
    for rel, length in committed:
        if not only(rel):
            continue
        path = files.root / rel
        size = path.stat().st_size if path.exists() else None
        if size is None:
            if length:
                report.files.append(f"{path}: missing (scrapesink wrote {length:,} bytes)")
        elif size > length:
            report.files.append(f"{path}: {size - length:,} bytes appended behind scrapesink")
        elif size < length:
            report.files.append(f"{path}: {length - size:,} bytes removed behind scrapesink")


# -- raw events ---------------------------------------------------------------------------------
def _event_key(source: str, source_id: str) -> str:
    return _JSON.encode([source, source_id]).decode()


def _event_files(root: Path, source: str | None) -> list[Path]:
    if source is not None:
        directory = root / source_dir_name(source)
        return sorted(directory.glob("*.csv")) if directory.is_dir() else []
    return sorted(root.glob("*/*.csv")) if root.is_dir() else []


def _event_rows(
    path: Path, side: _Side, report: VerifyReport
) -> list[tuple[str, bytes | None, str]]:
    """One day file's rows as (key, digest, label); keys seen twice are differences."""
    rows: list[tuple[str, bytes | None, str]] = []
    seen: set[str] = set()  # this file's keys (earlier files': in the side table)
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle)
        next(reader, None)
        for row in reader:
            if len(row) != len(HEADER):
                report.differ("events", f"{path.name}:{reader.line_num}", "not a row")
                continue
            key = _event_key(row[0], row[1])
            label = f"{row[0]}/{row[1]}"
            if key in seen or side.has(key):
                report.differ("events", label, "twice in csv")
            seen.add(key)
            try:
                digest = _event_digest(_instant(row[2]), row[3])
            except ValueError:
                digest = None  # not a time: differs from anything
            rows.append((key, digest, label))
    return rows


@contextmanager
def _readable(path: Path) -> Iterator[None]:
    """A CSV file that cannot be read (not UTF-8, not CSV, unreadable) is one clear error."""
    try:
        yield
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise StorageError(f"cannot read {path}: {exc}") from exc


def compare_events(
    database: Database, data_dir: Path, report: VerifyReport, *, source: str | None = None
) -> None:
    sink = CsvEventSink(data_dir)
    directory = source_dir_name(source) + "/" if source is not None else ""
    check_lengths(sink, report, lambda rel: rel.startswith(directory))
    compared = 0
    with tempfile.TemporaryDirectory(prefix="scrapesink-verify-") as work:
        side = _Side(work)
        try:
            for path in _event_files(sink.root, source):
                with _readable(path):
                    rows = _event_rows(path, side, report)
                side.put(rows)
            where = "WHERE source = %s" if source is not None else ""
            sql = (
                "SELECT source, source_id, occurred_at, payload::text"  # noqa: S608 - constant
                f" FROM raw_events {where}"
            )
            for page in _stream(database, sql, [source] if source is not None else []):
                keys = [_event_key(s, i) for s, i, _, _ in page]
                held = side.take(keys)
                for key, (s, i, at, payload) in zip(keys, page, strict=True):
                    compared += 1
                    label = f"{s}/{i}"
                    if key not in held:
                        report.differ("events", label, "missing in csv")
                    elif held[key] != _event_digest(at.astimezone(UTC).isoformat(), payload):
                        report.differ("events", label, "differs")
            for label in side.rest():
                compared += 1
                report.differ("events", label, "missing in postgres")
        finally:
            side.close()
    report.compared["events"] = report.compared.get("events", 0) + compared


def repair_events(database: Database, data_dir: Path, source: str) -> int:
    """Rebuild one source's day files and its keys from PostgreSQL; returns the rows written.

    Under the CSV state's write lock: each day is written to a temporary file (rows come in
    time order, so one is open at a time) and fsynced; the keys, lengths and renames are
    committed together, then the renames made (``CsvFiles.replace_files``)."""
    sink = CsvEventSink(data_dir)
    directory = sink.root / source_dir_name(source)
    header = header_line(HEADER)
    written = 0
    temps: dict[str, Path] = {}
    sql = (
        "SELECT e.source_id, e.occurred_at, e.payload::text, k.stamp FROM raw_events e"
        " JOIN raw_event_keys k ON k.source = e.source AND k.source_id = e.source_id"
        " AND k.occurred_at = e.occurred_at WHERE e.source = %s"
        " ORDER BY e.occurred_at, e.id"
    )
    with _rebuilding(sink, temps, directory) as db:
        directory.mkdir(parents=True, exist_ok=True)
        db.execute("DELETE FROM keys WHERE source = ?", (source,))
        day, handle = "", None
        try:
            for page in _stream(database, sql, [source]):
                keys = []
                for source_id, at, payload, stamp in page:
                    iso = at.astimezone(UTC).isoformat()
                    if iso[:10] != day:
                        _close(handle)
                        day = iso[:10]
                        rel = (directory / f"{day}.csv").relative_to(sink.root).as_posix()
                        temps[rel] = directory / f".{day}.csv.repair"
                        handle = temps[rel].open("w", encoding="utf-8", newline="")
                        handle.write(header)
                    assert handle is not None
                    handle.write(format_fields(source, source_id, iso, payload))
                    keys.append((source, source_id, stamp, day))
                db.executemany("INSERT OR REPLACE INTO keys VALUES (?, ?, ?, ?)", keys)
                written += len(keys)
        finally:
            _close(handle)
        stale = [  # days PostgreSQL holds nothing of
            path
            for path in directory.glob("*.csv")
            if path.relative_to(sink.root).as_posix() not in temps
        ]
        for path in stale:
            db.execute(
                "DELETE FROM files WHERE path = ?", (path.relative_to(sink.root).as_posix(),)
            )
    for path in stale:
        path.unlink(missing_ok=True)
    return written


@contextmanager
def _rebuilding(
    files: CsvFiles, temps: dict[str, Path], where: Path
) -> Iterator[sqlite3.Connection]:
    """Rebuild files crash-safely: under the CSV state's write lock the caller writes the
    temporary files named in ``temps`` (filled as it goes) and the state; their lengths and
    renames are committed with that state (``CsvFiles.replace_files``), then the renames made.
    Temporary files are removed when anything failed before the commit."""
    committed = False
    try:
        with files._state(write=True) as db:
            yield db
            files.replace_files(db, temps)
        committed = True
        with files._state(write=True) as db:
            files.finish_renames(db)
    except OSError as exc:
        raise _unavailable(exc, where) from exc
    finally:
        if not committed:
            for temp in temps.values():
                temp.unlink(missing_ok=True)


def _close(handle: Any) -> None:
    """Flush, fsync and close a temporary file being written (None: nothing open)."""
    if handle is not None and not handle.closed:
        handle.flush()
        os.fsync(handle.fileno())
        handle.close()


def sources(database: Database, data_dir: Path) -> list[str]:
    """Every source either store holds."""
    found = {s for (s,) in database.fetch("SELECT DISTINCT source FROM raw_event_keys")}
    root = CsvEventSink(data_dir).root
    if root.is_dir():
        found.update(unquote(d.name) for d in root.iterdir() if d.is_dir())
    return sorted(found)


# -- models -------------------------------------------------------------------------------------
Normalizer = Callable[[str], Any]


def _normalizer(spec: FieldDef | None) -> Normalizer:
    if spec is None or spec.type in ("string", "text", "boolean", "date", "integer", "bigint"):
        return str
    if spec.type == "json":
        return lambda cell: _json_text(cell) if cell else None
    if spec.type in ("numeric", "float"):

        def number(cell: str) -> Any:
            try:
                return _number(Decimal(cell)) if cell else None
            except InvalidOperation:
                return cell

        return number
    if spec.type == "datetime":
        return lambda cell: _instant(cell) if cell else None
    return str


class _ModelFiles:
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
        return _JSON.encode([file, [cells[i] for i in index]]).decode()

    def digest(self, file: str, cells: Sequence[str]) -> bytes:
        normalize = self.normalizers[file]
        return _digest([f(cell) for f, cell in zip(normalize, cells, strict=True)])

    def csv_rows(self) -> Iterator[tuple[str, tuple[str, ...], bool]]:
        """(file, cells, deleted) of every row of the files, in file order."""
        for file, layout in self.layouts.items():
            path = self.sink.root / file
            if not path.exists():
                continue
            with _readable(path), path.open(encoding="utf-8", newline="") as handle:
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
        for page in _stream(database, sql):
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
    files = _ModelFiles(data_dir, declaration, model)
    compared = 0
    with tempfile.TemporaryDirectory(prefix="scrapesink-verify-") as work:
        side = _Side(work)
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


def _flush_latest(side: _Side, latest: dict[str, tuple[bytes, str] | None]) -> None:
    """Later rows of an identity replace earlier ones (INSERT OR REPLACE keeps file order)."""
    side.put((key, None, key) if v is None else (key, v[0], key) for key, v in latest.items())
    latest.clear()


def repair_model(
    database: Database, declaration: Declaration, data_dir: Path, model: ModelDef
) -> int:
    """Rebuild one model's own files and its records' state from PostgreSQL (latest only);
    returns how many records were written. Crash-safe like :func:`repair_events`."""
    files = _ModelFiles(data_dir, declaration, model)
    sink = files.sink
    root = sink.root
    written = 0
    temps = {file: root / f".{file}.repair" for file in files.layouts}
    with _rebuilding(sink, temps, root) as db:
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
                            _JSON.encode(rows).decode(),
                        )
                    )
                    if stamp:
                        stamps.append((sink.root_file, prepared.root, stamp))
                db.executemany("INSERT OR REPLACE INTO records VALUES (?, ?, ?, ?)", state)
                db.executemany("INSERT OR REPLACE INTO stamps VALUES (?, ?, ?)", stamps)
                written += len(state)
        finally:
            for handle in handles.values():
                _close(handle)
    return written


def verify(
    database: Database,
    declaration: Declaration,
    data_dir: Path,
    *,
    model: str | None = None,
    source: str | None = None,
    limit: int = 20,
) -> VerifyReport:
    """Compare both stores: every source and model, or only the one named."""
    report = VerifyReport(limit=limit)
    if model is None:
        compare_events(database, data_dir, report, source=source)
    if source is None:
        names = [model] if model is not None else list(declaration.models)
        for name in names:
            compare_model(database, declaration, data_dir, declaration.model(name), report)
        if names:  # one state for every model's files
            owned = {
                file
                for name in names
                for file in _ModelFiles(data_dir, declaration, declaration.model(name)).layouts
            }
            sink = CsvModelSink(data_dir, declaration, declaration.model(names[0]))
            check_lengths(sink, report, owned.__contains__)
    return report

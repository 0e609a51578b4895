"""What both halves of ``verify`` use: the report, the CSV side's digests, PostgreSQL pages,
the normal forms values are compared in, and the rebuild of files under the state's lock."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import psycopg

from scrapesink.adapters.csv_files import CsvFiles, unavailable
from scrapesink.adapters.postgres.database import Database, translate
from scrapesink.errors import StorageError

PAGE = 2000
JSON = msgspec.json.Encoder()


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
def number_text(value: Decimal) -> str:
    return "0" if value == 0 else format(value.normalize(), "f")


def canonical_json(value: Any) -> Any:
    """A JSON value with key order and number spelling removed (numbers parsed as Decimal)."""
    if isinstance(value, dict):
        return {"{}": sorted((k, canonical_json(v)) for k, v in value.items())}
    if isinstance(value, list):
        return [canonical_json(v) for v in value]
    if isinstance(value, Decimal | int) and not isinstance(value, bool):
        return {"n": number_text(Decimal(value))}
    return value


def json_value(text: str) -> Any:
    return canonical_json(json.loads(text, parse_float=Decimal, parse_int=Decimal))


def digest(*parts: Any) -> bytes:
    return hashlib.blake2b(JSON.encode(parts), digest_size=16).digest()


def instant(text: str) -> str:
    moment = datetime.fromisoformat(text)
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(UTC).isoformat()


class CsvSide:
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
        encoded = JSON.encode(list(keys))
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


def pages(database: Database, sql: str, params: Sequence[Any] = ()) -> Iterator[list[Any]]:
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


@contextmanager
def readable(path: Path) -> Iterator[None]:
    """A CSV file that cannot be read (not UTF-8, not CSV, unreadable) is one clear error."""
    try:
        yield
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise StorageError(f"cannot read {path}: {exc}") from exc


@contextmanager
def rebuilding(
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
        raise unavailable(exc, where) from exc
    finally:
        if not committed:
            for temp in temps.values():
                temp.unlink(missing_ok=True)


def close_file(handle: Any) -> None:
    """Flush, fsync and close a temporary file being written (None: nothing open)."""
    if handle is not None and not handle.closed:
        handle.flush()
        os.fsync(handle.fileno())
        handle.close()

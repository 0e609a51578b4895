"""Raw events in both stores: compared per key, and the CSV files of a source rebuilt."""

from __future__ import annotations

import csv
import tempfile
from datetime import UTC
from pathlib import Path
from urllib.parse import unquote

from scrapesink.adapters.csv_format import HEADER, format_fields, header_line
from scrapesink.adapters.csv_sink import CsvEventSink
from scrapesink.adapters.postgres.database import Database
from scrapesink.adapters.verify.common import (
    JSON,
    CsvSide,
    VerifyReport,
    check_lengths,
    close_file,
    digest,
    instant,
    json_value,
    pages,
    readable,
    rebuilding,
)
from scrapesink.domain.values import source_dir_name


def _event_digest(instant: str, payload: str) -> bytes:
    try:
        return digest(instant, json_value(payload))
    except (ValueError, RecursionError):  # not JSON, or nested past Python's stack: as text
        return digest(instant, "text", payload)


# -- raw events ---------------------------------------------------------------------------------
def _event_key(source: str, source_id: str) -> str:
    return JSON.encode([source, source_id]).decode()


def _event_files(root: Path, source: str | None) -> list[Path]:
    if source is not None:
        directory = root / source_dir_name(source)
        return sorted(directory.glob("*.csv")) if directory.is_dir() else []
    return sorted(root.glob("*/*.csv")) if root.is_dir() else []


def _event_rows(
    path: Path, side: CsvSide, report: VerifyReport
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
                digest = _event_digest(instant(row[2]), row[3])
            except ValueError:
                digest = None  # not a time: differs from anything
            rows.append((key, digest, label))
    return rows


def compare_events(
    database: Database, data_dir: Path, report: VerifyReport, *, source: str | None = None
) -> None:
    sink = CsvEventSink(data_dir)
    directory = source_dir_name(source) + "/" if source is not None else ""
    check_lengths(sink, report, lambda rel: rel.startswith(directory))
    compared = 0
    with tempfile.TemporaryDirectory(prefix="scrapesink-verify-") as work:
        side = CsvSide(work)
        try:
            for path in _event_files(sink.root, source):
                with readable(path):
                    rows = _event_rows(path, side, report)
                side.put(rows)
            where = "WHERE source = %s" if source is not None else ""
            sql = (
                "SELECT source, source_id, occurred_at, payload::text"  # noqa: S608 - constant
                f" FROM raw_events {where}"
            )
            for page in pages(database, sql, [source] if source is not None else []):
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
    with rebuilding(sink, temps, directory) as db:
        directory.mkdir(parents=True, exist_ok=True)
        db.execute("DELETE FROM keys WHERE source = ?", (source,))
        day, handle = "", None
        try:
            for page in pages(database, sql, [source]):
                keys = []
                for source_id, at, payload, stamp in page:
                    iso = at.astimezone(UTC).isoformat()
                    if iso[:10] != day:
                        close_file(handle)
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
            close_file(handle)
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


def sources(database: Database, data_dir: Path) -> list[str]:
    """Every source either store holds."""
    found = {s for (s,) in database.fetch("SELECT DISTINCT source FROM raw_event_keys")}
    root = CsvEventSink(data_dir).root
    if root.is_dir():
        found.update(unquote(d.name) for d in root.iterdir() if d.is_dir())
    return sorted(found)

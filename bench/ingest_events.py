"""Raw-event ingest benchmarks: scrapesink's path against a bare COPY, and memory on 1M events.

Ratios are measured in one run on one machine (the two paths alternate, best of N each), never
compared with absolute numbers from elsewhere.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
from psycopg import sql

from scrapesink.adapters.embedded import EmbeddedPostgres
from scrapesink.adapters.postgres.database import Database, PoolOptions
from scrapesink.adapters.postgres.migrate import Migrator
from scrapesink.adapters.postgres.partitions import PartitionManager
from scrapesink.adapters.readers import open_input, read_records
from scrapesink.bootstrap import bootstrap
from scrapesink.config import Settings

BASE = datetime(2026, 10, 1, tzinfo=UTC)


def make_events(n: int, *, seed: int = 7, days: int = 14) -> Iterator[dict[str, object]]:
    """Realistic flat scraped records (~350 bytes of JSON each) over ``days`` days."""
    rng = random.Random(seed)
    sellers = [f"seller-{i}" for i in range(200)]
    for i in range(n):
        at = BASE + timedelta(seconds=rng.uniform(0, days * 86400))
        yield {
            "source": rng.choice(("shop", "news", "jobs", "reviews")),
            "id": f"item-{i:08d}",
            "timestamp": at.isoformat(),
            "title": f"Product number {i} with a reasonably long title",
            "price": round(rng.uniform(1, 999), 2),
            "currency": rng.choice(("EUR", "USD", "GBP")),
            "seller": rng.choice(sellers),
            "tags": rng.sample(["new", "sale", "eco", "bulk", "premium", "refurb"], 3),
            "stock": {"available": rng.random() > 0.3, "count": rng.randint(0, 500)},
            "url": f"https://shop.example/p/{i}",
        }


def write_jsonl(path: Path, n: int) -> Path:
    with path.open("w", encoding="utf-8") as fh:
        for record in make_events(n):
            fh.write(json.dumps(record))
            fh.write("\n")
    return path


@dataclass
class Timing:
    label: str
    rows: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.rows / self.seconds


@contextmanager
def bench_server(workdir: Path) -> Iterator[str]:
    """The server to measure on: SCRAPESINK_BENCH_DATABASE_URL (its role needs CREATEDB), or an
    embedded one in ``workdir``, stopped before the caller removes that directory."""
    configured = os.environ.get("SCRAPESINK_BENCH_DATABASE_URL")
    if configured:
        yield configured
        return
    embedded = EmbeddedPostgres(workdir / "pgdata")
    try:
        yield embedded.start()
    finally:
        embedded.stop()


def fresh_database(server_url: str, name: str) -> str:
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = server_url.rsplit("/", 1)[0] + "/" + name
    if "?" in server_url:  # embedded: postgresql://postgres:@/postgres?host=/socket
        base, query = server_url.split("?", 1)
        url = base.rsplit("/", 1)[0] + "/" + name + "?" + query
    Migrator(Database(url, PoolOptions(size=1, min_size=0))).upgrade()
    return url


def premake(database: Database, days: int) -> None:
    """Both paths start with the same partitions present: creating them is not what is timed."""
    PartitionManager(database).ensure_days(
        (BASE + timedelta(days=d)).date() for d in range(days + 1)
    )


def bare_copy(url: str, path: Path) -> Timing:
    """The baseline: the same rows straight into raw_events with COPY, no checks, no dedup.

    Rows are prepared before the clock starts, so the baseline pays only for COPY itself.
    """
    rows = []
    with path.open("rb") as fh:
        for line in fh:
            r = json.loads(line)
            at = datetime.fromisoformat(r["timestamp"])
            rows.append((r["source"], r["id"], at, json.dumps(r, separators=(",", ":"))))
    database = Database(url, PoolOptions(size=1, min_size=1))
    database.open()
    premake(database, 15)
    database.close()
    start = time.perf_counter()
    copy_sql = "COPY raw_events (source, source_id, occurred_at, payload) FROM STDIN"
    with psycopg.connect(url) as conn, conn.cursor() as cur, cur.copy(copy_sql) as copy:
        for row in rows:
            copy.write_row(row)
    return Timing("bare COPY", len(rows), time.perf_counter() - start)


def scrapesink_path(url: str, path: Path, data_dir: Path, *, csv: bool) -> Timing:
    """The whole `scrapesink ingest` path from the file: read, decode, validate, dedupe,
    journal (fsynced), then PostgreSQL (claim keys, COPY) and, with ``csv``, the CSV mirror."""
    shutil.rmtree(data_dir, ignore_errors=True)
    settings = Settings(database_url=url, data_dir=data_dir, csv_enabled=csv)
    app = bootstrap(settings, schema="check")
    try:
        premake(app.database, 15)
        app.start_writing()
        start = time.perf_counter()
        infile = open_input(path)
        try:
            records = read_records(infile, "jsonl", max_record_bytes=1 << 20)
            summary = app.ingest_service().ingest(records)
        finally:
            infile.close()
        app.close()  # compacts and removes the drained journal: part of the work
        elapsed = time.perf_counter() - start
    finally:
        app.close()
    assert summary.inserted == summary.read and not summary.pending, summary.as_dict()
    if csv:
        assert summary.sinks["csv"].stored == summary.read
    return Timing("scrapesink" + (" + CSV" if csv else ""), summary.inserted, elapsed)


def ratio_benchmark(server_url: str, workdir: Path, n: int, rounds: int) -> dict[str, object]:
    """Alternate the three paths ``rounds`` times on fresh databases; report every round."""
    path = write_jsonl(workdir / f"events_{n}.jsonl", n)
    bare_rates: list[float] = []
    ratios: dict[str, list[float]] = {"postgres": [], "full": []}
    best: dict[str, float] = {"postgres": 0.0, "full": 0.0}
    for round_ in range(rounds):
        bare = bare_copy(fresh_database(server_url, "scrapesink_bench_bare"), path)
        bare_rates.append(bare.rate)
        line = f"  round {round_ + 1}: bare COPY {bare.rate:9,.0f} rows/s"
        for key, csv in (("postgres", False), ("full", True)):
            url = fresh_database(server_url, f"scrapesink_bench_{key}")
            ours = scrapesink_path(url, path, workdir / f"data_{key}", csv=csv)
            ratios[key].append(ours.rate / bare.rate)
            best[key] = max(best[key], ours.rate)
            line += f"   {ours.label} {ours.rate:9,.0f} ({ours.rate / bare.rate:.3f})"
        print(line, flush=True)
    best_bare = max(bare_rates)
    result: dict[str, object] = {
        "events": n,
        "rounds": rounds,
        "bare_copy_rows_per_s": round(best_bare),
    }
    for key in ("postgres", "full"):
        ordered = sorted(ratios[key])
        result[key] = {
            "rows_per_s": round(best[key]),
            "ratio_best_vs_best": round(best[key] / best_bare, 3),
            "ratio_median_of_rounds": round(ordered[len(ordered) // 2], 3),
            "ratios": [round(r, 3) for r in ordered],
        }
    return result


def _vm_hwm_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


def memory_benchmark(server_url: str, workdir: Path, n: int) -> dict[str, object]:
    """Peak RSS of `scrapesink ingest` streaming an n-event file, measured by the kernel."""
    path = write_jsonl(workdir / f"events_{n}.jsonl", n)
    url = fresh_database(server_url, "scrapesink_bench_memory")
    env = {**os.environ, "SCRAPESINK_DATABASE_URL": url, "SCRAPESINK_DATA_DIR": str(workdir)}
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "scrapesink", "ingest", str(path), "--json", "--quiet"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    # VmHWM is the kernel's high-water mark of this process's resident memory (children such as
    # the database server are not in it); polled until the process ends.
    peak_kib = 0
    while proc.poll() is None:
        peak_kib = max(peak_kib, _vm_hwm_kib(proc.pid))
        time.sleep(0.05)
    stdout, stderr = proc.communicate()
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(stderr)
    summary = json.loads(stdout)
    return {
        "events": n,
        "inserted": summary["inserted"],
        "file_mb": round(path.stat().st_size / 1e6),
        "peak_rss_mb": round(peak_kib / 1024),
        "seconds": round(elapsed, 1),
        "rows_per_s": round(n / elapsed),
    }

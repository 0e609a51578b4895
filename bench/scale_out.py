"""The shared journal end to end: events/s with 1 and with 2 PostgreSQL workers against the
single-process SQLite path, same rows, same run; and the latency from publish to PostgreSQL at
a steady rate of half the measured maximum.

    python bench/scale_out.py                        # 100,000 events, 3 rounds
    python bench/scale_out.py --events 10000 --rounds 1   # check the harness

Every variant delivers to both stores (PostgreSQL and CSV) from the same JSONL file:

* ``sqlite``: ``scrapesink ingest`` as on one machine (local journal, the process delivers);
* ``redis-1`` / ``redis-2``: ``scrapesink ingest`` with SCRAPESINK_JOURNAL_URL only publishes;
  1 or 2 ``scrapesink worker --sink postgres`` and one ``--sink csv`` deliver. The time runs from
  the start of the ingest to the moment both consumer groups have acknowledged everything.

A redis-server of the benchmark's own (appendonly yes, appendfsync always, in a temporary
directory); PostgreSQL: the embedded one in a temporary directory, or
SCRAPESINK_BENCH_DATABASE_URL. Results go to ``bench/RESULTS_SCALE_OUT.md`` with the CPU seconds
each process used, which is where the time goes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
import psycopg
import redis

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
RESULTS = HERE / "RESULTS_SCALE_OUT.md"
SCRAPESINK = [sys.executable, "-m", "scrapesink"]
VARIANTS = ("sqlite", "redis-1", "redis-2")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_redis(directory: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    process = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory),
         "--appendonly", "yes", "--appendfsync", "always", "--save", ""],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    for _ in range(200):
        try:
            client.ping()
            return process, url
        except redis.exceptions.ConnectionError:
            time.sleep(0.05)
    raise SystemExit("redis-server did not start")


def write_events(path: Path, n: int) -> None:
    from ingest_events import make_events

    with path.open("w") as out:
        for record in make_events(n):
            out.write(json.dumps(record) + "\n")


@dataclass
class Run:
    variant: str
    seconds: float
    events: int
    cpu: dict[str, float] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.events / self.seconds


def drained(client: redis.Redis) -> bool:
    groups = client.xinfo_groups("scrapesink:{events}:stream")
    return bool(groups) and all((g.get("lag") or 0) == 0 and int(g["pending"]) == 0 for g in groups)


def cpu_of(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system + times.children_user + times.children_system)


def postgres_cpu() -> float:
    """CPU seconds of the PostgreSQL servers on the machine: each postmaster's own and its
    ended backends' (which it waited for), plus the backends still running."""
    total = 0.0
    for process in psutil.process_iter(["name", "ppid"]):
        if not (process.info["name"] or "").startswith("postgres"):
            continue
        try:
            parent = psutil.Process(process.info["ppid"]).name()
            times = process.cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system
        if not parent.startswith("postgres"):  # the postmaster
            total += times.children_user + times.children_system
    return total


def run_variant(
    variant: str, events: Path, n: int, server: str, redis_url: str, workdir: Path
) -> Run:
    from ingest_events import fresh_database

    url = fresh_database(server, f"bench_scale_{variant.replace('-', '_')}")
    data_dir = workdir / f"data-{variant}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCRAPESINK_")}
    env.update(SCRAPESINK_DATABASE_URL=url, SCRAPESINK_DATA_DIR=str(data_dir), NO_COLOR="1")
    workers: list[tuple[str, subprocess.Popen[bytes]]] = []
    client = redis.Redis.from_url(redis_url)
    client.flushall()
    pg_before = postgres_cpu()
    if variant != "sqlite":
        env["SCRAPESINK_JOURNAL_URL"] = redis_url
        count = int(variant.split("-")[1])
        for i, sink in enumerate(["csv", *["postgres"] * count]):
            process = subprocess.Popen(
                [*SCRAPESINK, "worker", "--sink", sink, "--name", f"{sink}-{i}"],
                env=env,
                stderr=subprocess.PIPE,
            )
            assert process.stderr is not None
            for line in process.stderr:  # ready once it says what it delivers
                if b"delivering" in line:
                    break
            workers.append((f"{sink} worker {i}", process))
    started = time.perf_counter()
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    ingest = subprocess.Popen([*SCRAPESINK, "ingest", str(events), "--quiet"], env=env)
    if ingest.wait(timeout=3600) != 0:
        raise SystemExit(f"{variant}: ingest failed")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)  # the ingest: the one child waited for
    ingest_cpu = (after.ru_utime - children.ru_utime) + (after.ru_stime - children.ru_stime)
    if variant != "sqlite":
        while not drained(client):
            time.sleep(0.02)
    seconds = time.perf_counter() - started
    run = Run(variant, seconds, n)
    run.cpu["postgres server"] = postgres_cpu() - pg_before
    for name, process in workers:
        run.cpu[name] = cpu_of(psutil.Process(process.pid))
        process.terminate()
        process.wait(timeout=60)
    run.cpu["ingest"] = ingest_cpu
    with psycopg.connect(url) as conn:
        stored = conn.execute("SELECT count(*) FROM raw_events").fetchone()
    assert stored is not None and stored[0] > 0, f"{variant}: nothing stored"
    return run


PRODUCER = """
import sys, time
from scrapesink import open as sink_open
rate, seconds = float(sys.argv[1]), float(sys.argv[2])
per_batch = 100
with sink_open() as sink:
    start = time.perf_counter()
    sent = 0
    while time.perf_counter() - start < seconds:
        due = start + sent / rate
        pause = due - time.perf_counter()
        if pause > 0:
            time.sleep(pause)
        now = time.time()
        sink.write_events([
            {"source": "lat", "source_id": f"{sent + i}", "occurred_at": "2026-12-01T00:00:00Z",
             "payload": {"t": now}}
            for i in range(per_batch)
        ])
        sent += per_batch
"""


def latency(rate: float, server: str, redis_url: str, workdir: Path) -> dict[str, float]:
    """Publish at ``rate`` events/s for 15 s (batches of 100) with one PostgreSQL worker and
    one CSV worker; per event, PostgreSQL's commit-side time minus the publish call's start."""
    from ingest_events import fresh_database

    url = fresh_database(server, "bench_scale_latency")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCRAPESINK_")}
    env.update(
        SCRAPESINK_DATABASE_URL=url,
        SCRAPESINK_DATA_DIR=str(workdir / "data-latency"),
        SCRAPESINK_JOURNAL_URL=redis_url,
    )
    redis.Redis.from_url(redis_url).flushall()
    workers = []
    for sink in ("postgres", "csv"):
        process = subprocess.Popen(
            [*SCRAPESINK, "worker", "--sink", sink], env=env, stderr=subprocess.PIPE
        )
        assert process.stderr is not None
        for line in process.stderr:
            if b"delivering" in line:
                break
        workers.append(process)
    subprocess.run([sys.executable, "-c", PRODUCER, str(rate), "15"], env=env, check=True)
    client = redis.Redis.from_url(redis_url)
    while not drained(client):
        time.sleep(0.05)
    for process in workers:
        process.terminate()
        process.wait(timeout=60)
    with psycopg.connect(url) as conn:
        # created_at is now() of the delivering transaction (its start: the commit follows
        # within the same batch's work)
        row = conn.execute(
            "SELECT percentile_cont(ARRAY[0.5, 0.9, 0.99]) WITHIN GROUP (ORDER BY d), count(*)"
            " FROM (SELECT extract(epoch FROM created_at) - (payload->>'t')::float8 AS d"
            " FROM raw_events) x"
        ).fetchone()
    assert row is not None
    p50, p90, p99 = row[0]
    return {"rate": rate, "events": row[1], "p50": p50, "p90": p90, "p99": p99}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    from ingest_events import bench_server

    with tempfile.TemporaryDirectory(prefix="scrapesink-scale-") as tmp:
        workdir = Path(tmp)
        events = workdir / "events.jsonl"
        write_events(events, args.events)
        (workdir / "redis").mkdir()
        redis_process, redis_url = start_redis(workdir / "redis")
        try:
            with bench_server(workdir) as server:
                runs: dict[str, list[Run]] = {v: [] for v in VARIANTS}
                for round_ in range(args.rounds):
                    for variant in VARIANTS:
                        run = run_variant(variant, events, args.events, server, redis_url, workdir)
                        runs[variant].append(run)
                        print(
                            f"round {round_ + 1} {variant}: {run.seconds:.2f} s,"
                            f" {run.rate:,.0f} events/s",
                            flush=True,
                        )
                best = max(statistics.median(r.rate for r in runs[v]) for v in VARIANTS[1:])
                lat = latency(best / 2, server, redis_url, workdir)
                print(f"latency at {lat['rate']:,.0f} events/s: p99 {lat['p99'] * 1000:.0f} ms")
        finally:
            redis_process.terminate()
            redis_process.wait(timeout=30)
        report(runs, lat, args)


def report(runs: dict[str, list[Run]], lat: dict[str, Any], args: argparse.Namespace) -> None:
    median = {v: statistics.median(r.rate for r in runs[v]) for v in VARIANTS}
    where = "server" if os.environ.get("SCRAPESINK_BENCH_DATABASE_URL") else "embedded PostgreSQL"
    lines = [
        "# Scale-out: Redis Streams and workers vs the single-process path",
        "",
        f"`python bench/scale_out.py --events {args.events} --rounds {args.rounds}` on"
        f" {datetime.now(UTC):%Y-%m-%d}, {platform.machine()}, {os.cpu_count()} cores,"
        f" {where}, redis-server {redis_version()} (appendfsync always). Both stores written"
        " in every variant; the time runs from the ingest's start to both groups acknowledging"
        " everything. Medians of the rounds, interleaved.",
        "",
        "| variant | events/s | vs sqlite | runs (s) |",
        "|---|---|---|---|",
    ]
    for v in VARIANTS:
        seconds = ", ".join(f"{r.seconds:.2f}" for r in runs[v])
        ratio = median[v] / median["sqlite"]
        lines.append(f"| {v} | {median[v]:,.0f} | {ratio:.2f}x | {seconds} |")
    lines += [
        "",
        f"redis-2 / redis-1: {median['redis-2'] / median['redis-1']:.2f}x.",
        "",
        "## Where the time goes (CPU seconds of each process, last round)",
        "",
    ]
    for v in VARIANTS:
        cpu = runs[v][-1].cpu
        parts = ", ".join(f"{name} {seconds:.1f}" for name, seconds in cpu.items())
        lines.append(f"- {v} ({runs[v][-1].seconds:.1f} s wall): {parts}")
    lines += [
        "",
        "## Latency from publish to PostgreSQL",
        "",
        f"At {lat['rate']:,.0f} events/s (half the best median above), batches of 100 for 15 s,"
        f" one PostgreSQL worker and one CSV worker, {lat['events']:,} events: p50"
        f" {lat['p50'] * 1000:.0f} ms, p90 {lat['p90'] * 1000:.0f} ms, p99"
        f" {lat['p99'] * 1000:.0f} ms (PostgreSQL's transaction time of the delivering batch"
        " minus the time the producer's call began).",
        "",
    ]
    RESULTS.write_text("\n".join(lines))
    print("\n".join(lines))


def redis_version() -> str:
    done = subprocess.run(["redis-server", "--version"], capture_output=True, text=True)
    return done.stdout.split("v=")[1].split()[0] if "v=" in done.stdout else "?"


if __name__ == "__main__":
    main()

"""REST API benchmark: HTTP batch ingest vs in-process ingest, and GET latency under load.

    python bench/api.py              # 60k events per round, 3 rounds, 32 readers
    python bench/api.py --quick      # small sizes, to check the harness

- **in-process**: the Python API (`scrapesink.open()`, `write_events`) storing the events in
  batches of 1000, one after the other: PostgreSQL and CSV, the full durable path.
- **HTTP**: `scrapesink serve` (a real process, API keys on) and 4 client threads posting
  1000-event JSON batches concurrently (bodies serialized before the clock starts), each
  waiting for its answer (stored in PostgreSQL and CSV) before sending the next.
Rounds alternate the two on fresh databases of the same server; the ratio of one run is what
counts (target: HTTP >= 0.5x in-process). Then 32 client threads GET events by key from the
server, with one worker process and with two, and the latency percentiles are reported.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent))

from ingest_events import bench_server, fresh_database, make_events
from tests.support import ApiServer

import scrapesink

BATCH = 1000
RESULTS = Path(__file__).parent / "RESULTS_API.md"


def batches(n: int) -> list[list[dict[str, Any]]]:
    events = list(make_events(n))
    return [events[i : i + BATCH] for i in range(0, n, BATCH)]


def in_process(url: str, data_dir: Path, parts: list[list[dict[str, Any]]]) -> float:
    with scrapesink.open(database_url=url, data_dir=data_dir) as sink:
        sink.write_events(parts[0][:10])  # warm: pool, partitions, journal
        started = time.perf_counter()
        for part in parts:
            summary = sink.write_events(part)
            assert summary.rejected == 0
        return time.perf_counter() - started


def over_http(server: ApiServer, bodies: list[bytes], clients: int) -> float:
    queue = list(reversed(bodies))
    lock = threading.Lock()
    errors: list[str] = []

    def work() -> None:
        with server.client(server.token) as client:
            while True:
                with lock:
                    if not queue:
                        return
                    body = queue.pop()
                response = client.post(
                    "/api/v1/events", content=body, headers={"Content-Type": "application/json"}
                )
                if response.status_code != 200:
                    errors.append(response.text[:200])

    with server.client(server.token) as client:  # warm
        client.post("/api/v1/events", json=list(make_events(10, seed=99)))
    threads = [threading.Thread(target=work) for _ in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    assert not errors, errors[:3]
    return elapsed


def get_latency(
    server: ApiServer, keys: list[tuple[str, str]], clients: int, per_client: int
) -> dict[str, float]:
    latencies: list[float] = []
    lock = threading.Lock()

    def work(seed: int) -> None:
        rng = random.Random(seed)
        mine = []
        with server.client(server.token) as client:
            for _ in range(per_client):
                source, key = rng.choice(keys)
                started = time.perf_counter()
                response = client.get(f"/api/v1/events/{source}/{key}")
                mine.append(time.perf_counter() - started)
                assert response.status_code == 200, response.text
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "requests": len(latencies),
        "clients": clients,
        "p50_ms": round(latencies[len(latencies) // 2] * 1000, 2),
        "p99_ms": round(latencies[int(len(latencies) * 0.99)] * 1000, 2),
        "requests_per_s": round(len(latencies) / elapsed),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, to check the harness")
    parser.add_argument("--events", type=int, default=60_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--readers", type=int, default=32)
    parser.add_argument("--gets", type=int, default=100, help="GETs per reader")
    args = parser.parse_args()
    if args.quick:
        args.events, args.rounds, args.gets = 10_000, 1, 20

    parts = batches(args.events)
    bodies = [json.dumps(part).encode() for part in parts]
    local: list[float] = []
    remote: list[float] = []
    with (
        tempfile.TemporaryDirectory(prefix="scrapesink-bench-api-") as tmp,
        bench_server(Path(tmp)) as server_url,
    ):
        workdir = Path(tmp)
        for round_ in range(args.rounds):
            url = fresh_database(server_url, f"bench_api_local_{round_}")
            seconds = in_process(url, workdir / f"local{round_}", parts)
            local.append(args.events / seconds)
            print(f"round {round_}: in-process {local[-1]:,.0f} events/s", flush=True)

            url = fresh_database(server_url, f"bench_api_http_{round_}")
            data_dir = workdir / f"http{round_}"
            data_dir.mkdir()
            server = ApiServer(url, data_dir)
            try:
                seconds = over_http(server, bodies, args.clients)
                remote.append(args.events / seconds)
                print(f"round {round_}: HTTP {remote[-1]:,.0f} events/s", flush=True)
                if round_ == args.rounds - 1:
                    keys = [(str(e["source"]), str(e["id"])) for p in parts for e in p]
                    latency = get_latency(server, keys, args.readers, args.gets)
            finally:
                server.stop()
            if round_ == args.rounds - 1:  # the same data behind `serve --workers 2`
                token = server.token  # keys exist now: the new server prints none
                server = ApiServer(url, data_dir, "--workers", "2")
                server.token = token
                try:
                    latency_2 = get_latency(server, keys, args.readers, args.gets)
                finally:
                    server.stop()
    ratios = [http / own for http, own in zip(remote, local, strict=True)]
    result = {
        "events": args.events,
        "batch": BATCH,
        "clients": args.clients,
        "in_process_events_per_s": [round(x) for x in local],
        "http_events_per_s": [round(x) for x in remote],
        "ratio_best_vs_best": round(max(remote) / max(local), 3),
        "ratio_median_of_rounds": round(statistics.median(ratios), 3),
        "get_by_key": latency,
        "get_by_key_2_workers": latency_2,
    }
    print(json.dumps(result, indent=2))
    if not args.quick:
        RESULTS.write_text(
            "# REST API benchmark\n\n"
            f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {platform.machine()}, "
            f"{os.cpu_count()} cores (server, clients and PostgreSQL share them), "
            f"Python {platform.python_version()}. Compare the ratios of one run.\n\n"
            f"- {args.events:,} events per round in {BATCH}-event batches, {args.rounds} rounds, "
            "PostgreSQL and CSV (the full durable path) in both cases.\n"
            f"- in-process (`write_events`): {', '.join(f'{x:,.0f}' for x in local)} events/s\n"
            f"- HTTP, {args.clients} concurrent clients: "
            f"{', '.join(f'{x:,.0f}' for x in remote)} events/s\n"
            f"- **ratio {result['ratio_best_vs_best']}** best vs best, median of rounds "
            f"{result['ratio_median_of_rounds']} (target >= 0.5)\n"
            f"- GET /api/v1/events/{{source}}/{{id}}, {args.readers} concurrent clients, "
            f"{latency['requests']:,} requests: p50 {latency['p50_ms']} ms, "
            f"**p99 {latency['p99_ms']} ms**, {latency['requests_per_s']:,} requests/s; with "
            f"`serve --workers 2`: p50 {latency_2['p50_ms']} ms, **p99 {latency_2['p99_ms']} ms**, "
            f"{latency_2['requests_per_s']:,} requests/s\n"
        )
        print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()

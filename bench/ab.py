"""Before/after: the same workloads on two versions of scrapesink, alternating, in one run.

    python bench/ab.py --base 4ae4474            # this tree against that commit
    python bench/ab.py --base HEAD~3 --events 100000 --records 5000 --rounds 5

Each round runs every workload once on each version (the order alternates between rounds), each
in a fresh process and a fresh database on the same server, through the public Python API:

* ``events``: raw-event ingest, the full durable path (journal, PostgreSQL, CSV), new keys;
* ``events-again``: the same events again (every one a duplicate);
* ``saves``: new workflows (five tables, journal, PostgreSQL, CSV);
* ``resaves``: the same workflows again (unchanged);
* ``event-pages``, ``record-pages``: every event (1000 a page) and every workflow (500 a page)
  read back through the keyset pagination of the read side;
* ``record-gets``: workflows got one by one by natural key (with their children).

Reports the median rate of each and the ratio after/before. The base version is checked out
into a temporary git worktree, this tree is copied, and each is imported from there (same
virtualenv). Uses the server named by SCRAPESINK_BENCH_DATABASE_URL or an embedded one. Never
part of `make test`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import psycopg
from ingest_events import bench_server
from psycopg import sql

ROOT = Path(__file__).resolve().parent.parent

# Runs in the version under test (its src/ first on sys.path): times each workload once.
CHILD = r"""
import json, sys, time
import psycopg
from datetime import UTC, datetime, timedelta
sys.path.insert(0, sys.argv[1])
import scrapesink

url, data_dir, events, records = sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
base = datetime.now(UTC) - timedelta(days=3)
rows = [{"source": "shop", "id": f"item-{i:08d}",
         "timestamp": (base + timedelta(seconds=i % 200_000)).isoformat(),
         "title": f"Product {i} with a reasonably long title", "price": i % 997 / 7,
         "tags": ["new", "sale"], "stock": {"available": i % 3 > 0, "count": i % 500}}
        for i in range(events)]
flows = [{"workflow_id": f"wf-{n}", "url": f"https://n8n.io/workflows/{n}",
          "quality_score": (n % 100) / 100, "layer1_success": True, "processing_time": 2.5,
          "metadata": {"title": f"Workflow {n}: sync leads", "views": n * 3,
                       "description": "Collects new leads and posts a daily digest.",
                       "categories": ["sales", "marketing"], "tags": [f"tag{n % 20}"]},
          "structure": {"node_count": 8, "connection_count": 7, "node_types": ["webhook"],
                        "workflow_json": {"nodes": [{"id": i} for i in range(8)]}},
          "content": {"explainer_text": "This workflow watches a form", "has_videos": True},
          "transcripts": [{"video_url": f"https://youtu.be/{n}-{i}", "platform": "youtube",
                           "duration": 120} for i in range(2)]}
         for n in range(records)]
def pages(read):
    after, n = None, 0
    while True:
        items, after = read(after)
        n += len(items)
        if after is None:
            return n

def settle():
    # Reads start from the same state in both versions, however fast their writes were: rows
    # vacuumed (hint bits, visibility map) and analyzed, rather than autovacuum's timing.
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM (ANALYZE)")
    return 0

result = {}
with scrapesink.open(database_url=url, data_dir=data_dir) as sink:
    gets = [f"wf-{n}" for n in range(0, records, max(1, records // 1000))]
    for name, run in (
        ("events", lambda: sink.write_events(rows) and events),
        ("events-again", lambda: sink.write_events(rows) and events),
        ("saves", lambda: sink.save("workflows", flows) and records),
        ("resaves", lambda: sink.save("workflows", flows) and records),
        ("settle", settle),
        ("event-pages", lambda: pages(lambda a: (lambda p: (p.events, p.next_cursor))(
            sink.list_events(limit=1000, after=a)))),
        ("record-pages", lambda: pages(lambda a: (lambda p: (p.records, p.next_cursor))(
            sink.list("workflows", limit=500, after=a)))),
        ("record-gets", lambda: sum(sink.get("workflows", k) is not None for k in gets)),
    ):
        started = time.perf_counter()
        n = run()
        if name != "settle":
            result[name] = n / (time.perf_counter() - started)
print(json.dumps(result))
"""


def run_once(src: Path, url: str, data_dir: Path, events: int, records: int) -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(src), url, str(data_dir), str(events), str(records)],
        capture_output=True,
        text=True,
        check=False,
        env={k: v for k, v in os.environ.items() if not k.startswith("SCRAPESINK_")},
    )
    if done.returncode != 0:
        raise SystemExit(f"benchmark child failed ({src}):\n{done.stderr}")
    rates: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return rates


def empty_database(server_url: str, name: str) -> str:
    """A new database without any schema: each version migrates it with its own migrations."""
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    if "?" in server_url:  # embedded: postgresql://postgres:@/postgres?host=/socket
        base, query = server_url.split("?", 1)
        return base.rsplit("/", 1)[0] + "/" + name + "?" + query
    return server_url.rsplit("/", 1)[0] + "/" + name


def upgrade(src: Path, url: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCRAPESINK_")}
    env["PYTHONPATH"] = str(src)
    subprocess.run(
        [sys.executable, "-m", "scrapesink", "--database-url", url, "db", "upgrade"],
        env=env,
        capture_output=True,
        check=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="the commit to compare against")
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--records", type=int, default=3_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="scrapesink-ab-") as tmp:
        work = Path(tmp)
        base_tree = work / "base"
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(base_tree), args.base],
            check=True,
            capture_output=True,
        )
        # A copy of this tree: editing it while the benchmark runs changes nothing measured.
        shutil.copytree(ROOT / "src", work / "after" / "src")
        trees = {"before": base_tree / "src", "after": work / "after" / "src"}
        samples: dict[str, dict[str, list[float]]] = {v: {} for v in trees}
        try:
            with bench_server(work) as server:
                for round_ in range(args.rounds):
                    order = list(trees) if round_ % 2 == 0 else list(reversed(trees))
                    for version in order:
                        name = f"ab_{version}_{round_}"
                        url = empty_database(server, name)
                        upgrade(trees[version], url)  # each version's own migrations
                        rates = run_once(
                            trees[version], url, work / name, args.events, args.records
                        )
                        for workload, rate in rates.items():
                            samples[version].setdefault(workload, []).append(rate)
                        print(version, json.dumps({k: round(v) for k, v in rates.items()}))
        finally:
            subprocess.run(
                ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(base_tree)],
                check=False,
                capture_output=True,
            )
    print(f"\nmedian of {args.rounds} rounds, records/s (after / before; and the median of the")
    print("rounds' own ratios, each round running both versions back to back):")
    for workload in samples["after"]:
        before = statistics.median(samples["before"][workload])
        after = statistics.median(samples["after"][workload])
        pairs = zip(samples["after"][workload], samples["before"][workload], strict=True)
        paired = statistics.median(a / b for a, b in pairs)
        print(
            f"  {workload:13} {before:10,.0f} -> {after:10,.0f}   {after / before:.3f}x"
            f"   paired {paired:.3f}x"
        )


if __name__ == "__main__":
    main()

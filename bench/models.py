"""Model benchmark: saving workflows (5 tables) through scrapesink vs the seed-style baseline.

    python bench/models.py                     # 10k workflows saved, reads on 100k
    python bench/models.py --quick             # small sizes, to check the harness

Baseline (seed 003): SQLAlchemy ORM, one session and transaction per workflow, into the same
five tables (created by scrapesink's own DDL, so both write the same indexes). scrapesink: the
full durable path (journal, PostgreSQL through upsert_workflows, CSV files). Both run in this
process against the same PostgreSQL, in one run, so the ratio is what counts. Reads (get; list
of the records' fields, and with children; search for words in a quarter of the records, and
for a few matches) are timed in-process on a database holding --read-records workflows. Without
--quick the figures go to bench/RESULTS_MODELS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

import psycopg
from ingest_events import bench_server, fresh_database
from sqlalchemy import create_engine
from sqlalchemy.orm import Session

import scrapesink

RESULTS = Path(__file__).parent / "RESULTS_MODELS.md"


def workflow(n: int) -> dict[str, Any]:
    return {
        "workflow_id": f"wf-{n}",
        "url": f"https://n8n.io/workflows/{n}",
        "quality_score": (n % 100) / 100,
        "layer1_success": True,
        "layer2_success": n % 3 != 0,
        "layer3_success": n % 5 != 0,
        "processing_time": 2.5,
        "metadata": {
            "title": f"Workflow {n}: sync {['Slack', 'Gmail', 'Notion', 'Airtable'][n % 4]} leads",
            "description": "Collects new leads, enriches them and posts a daily digest.",
            "use_case": "sales automation",
            "author_name": f"author {n % 50}",
            "views": n * 3,
            "categories": ["sales", "marketing"],
            "tags": [f"tag{n % 20}", "automation"],
        },
        "structure": {
            "node_count": 8,
            "connection_count": 7,
            "node_types": ["webhook", "http", "slack"],
            "workflow_json": {"nodes": [{"id": i, "type": "http"} for i in range(8)]},
        },
        "content": {"explainer_text": "This workflow watches a form and ...", "has_videos": True},
        "transcripts": [
            {"video_url": f"https://youtu.be/{n}-{i}", "platform": "youtube", "duration": 120}
            for i in range(2)
        ],
    }


def orm_baseline(url: str, records: list[dict[str, Any]]) -> float:
    """Seed 003's repository: ORM objects, one transaction per workflow."""
    from sqlalchemy.ext.automap import automap_base

    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    base = automap_base()
    base.prepare(autoload_with=engine)
    classes = base.classes
    start = time.perf_counter()
    for record in records:
        with Session(engine) as session, session.begin():
            root = {k: v for k, v in record.items() if not isinstance(v, dict | list)}
            wf = classes.workflows(**root, content_hash="")
            session.add(wf)
            session.flush()
            for name, table in (
                ("metadata", "workflow_metadata"),
                ("structure", "workflow_structure"),
                ("content", "workflow_content"),
            ):
                session.add(getattr(classes, table)(workflows_id=wf.id, **record[name]))
            for transcript in record["transcripts"]:
                session.add(classes.video_transcripts(workflows_id=wf.id, **transcript))
    elapsed = time.perf_counter() - start
    engine.dispose()
    return elapsed


def scrapesink_save(url: str, data_dir: Path, records: list[dict[str, Any]]) -> tuple[float, float]:
    with scrapesink.open(database_url=url, data_dir=data_dir) as sink:
        sink.save("workflows", records[:10])  # schema applied, connections warm: not timed
        start = time.perf_counter()
        first = sink.save("workflows", records)
        saved = time.perf_counter() - start
        start = time.perf_counter()
        again = sink.save("workflows", records)
        resaved = time.perf_counter() - start
    assert first.stored == len(records) - 10 and again.unchanged == len(records), (first, again)
    return saved, resaved


def reads(url: str, data_dir: Path, count: int, samples: int) -> dict[str, float]:
    with scrapesink.open(database_url=url, data_dir=data_dir, csv_enabled=False) as sink:
        for start in range(0, count, 5000):
            sink.save("workflows", (workflow(i) for i in range(start, min(count, start + 5000))))
        with psycopg.connect(url, autocommit=True) as conn:
            # what autovacuum (or `scrapesink maintain`) does soon after a bulk load: statistics
            # for the planner, and a visibility map, before the reads are timed
            conn.execute("VACUUM ANALYZE")
        timings: dict[str, list[float]] = {
            "get": [],
            "list": [],
            "list_children": [],
            "search": [],
            "search_selective": [],
        }
        words = ["slack", "gmail leads", "notion", "airtable sync"]  # each in a quarter
        for i in range(samples):
            n = (i * 7919) % count
            t = time.perf_counter()
            assert sink.get("workflows", f"wf-{n}") is not None
            timings["get"].append(time.perf_counter() - t)
            t = time.perf_counter()
            page = sink.list("workflows", limit=50, sort="-quality_score")
            timings["list"].append(time.perf_counter() - t)
            assert len(page.records) == 50
            t = time.perf_counter()
            page = sink.list("workflows", limit=50, sort="-quality_score", children=True)
            timings["list_children"].append(time.perf_counter() - t)
            assert len(page.records) == 50 and "metadata" in page.records[0]
            t = time.perf_counter()
            hits = sink.search("workflows", words[i % len(words)], limit=20)
            timings["search"].append(time.perf_counter() - t)
            assert len(hits) == 20
            t = time.perf_counter()  # a number and a word of one title: a few matches
            hits = sink.search("workflows", f"{n} {words[n % 4].split()[0]}", limit=20)
            timings["search_selective"].append(time.perf_counter() - t)
            assert hits and hits[0].record["workflow_id"] == f"wf-{n}"
        # The same reads again, each kind in a run of its own: above, every sample follows a
        # search that ranked 25,000 rows on both cores; here, the latency of the read alone.
        timings["get_alone"], timings["list_alone"], timings["search_selective_alone"] = [], [], []
        for i in range(samples):
            t = time.perf_counter()
            sink.get("workflows", f"wf-{(i * 7919) % count}")
            timings["get_alone"].append(time.perf_counter() - t)
        for _ in range(samples):
            t = time.perf_counter()
            sink.list("workflows", limit=50, sort="-quality_score")
            timings["list_alone"].append(time.perf_counter() - t)
        for i in range(samples):
            n = (i * 7919) % count
            t = time.perf_counter()
            sink.search("workflows", f"{n} {words[n % 4].split()[0]}", limit=20)
            timings["search_selective_alone"].append(time.perf_counter() - t)
    return {
        f"{name}_p50_ms": statistics.median(values) * 1000 for name, values in timings.items()
    } | {
        f"{name}_p99_ms": sorted(values)[int(len(values) * 0.99) - 1] * 1000
        for name, values in timings.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--records", type=int, default=10_000)
    parser.add_argument("--read-records", type=int, default=100_000)
    parser.add_argument("--samples", type=int, default=500)
    args = parser.parse_args()
    if args.quick:
        args.records, args.read_records, args.samples = 1000, 5000, 100
    records = [workflow(i) for i in range(args.records)]
    with (
        tempfile.TemporaryDirectory(prefix="scrapesink-bench-") as tmp,
        bench_server(Path(tmp)) as server,
    ):
        workdir = Path(tmp)
        ours = fresh_database(server, "bench_models_ours")
        saved, resaved = scrapesink_save(ours, workdir / "ours", records)
        theirs = fresh_database(server, "bench_models_orm")
        with scrapesink.open(database_url=theirs, data_dir=workdir / "orm") as sink:
            sink.stats("workflows")  # creates the same tables, indexes and functions
        baseline = orm_baseline(theirs, records)
        result: dict[str, Any] = {
            "records": args.records,
            "orm_seconds": round(baseline, 2),
            "scrapesink_seconds": round(saved, 3),
            "scrapesink_resave_seconds": round(resaved, 3),
            "speedup": round(baseline / saved, 1),
            "resave_speedup": round(baseline / resaved, 1),
        }
        print(json.dumps(result), flush=True)
        reading = fresh_database(server, "bench_models_reads")
        result |= {
            k: round(v, 3)
            for k, v in reads(reading, workdir / "reads", args.read_records, args.samples).items()
        }
        result["read_records"] = args.read_records
        print(json.dumps(result), flush=True)
    if not args.quick:
        _report(result, args.samples)


def _report(r: dict[str, Any], samples: int) -> None:
    def read(name: str) -> str:
        return f"p50 **{r[f'{name}_p50_ms']} ms**, p99 {r[f'{name}_p99_ms']} ms"

    RESULTS.write_text(
        "# Model benchmark\n\n"
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {platform.machine()}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}, embedded PostgreSQL "
        "(the Python process and PostgreSQL share the cores). Compare the ratios of one run; "
        "absolute times move with the machine's load.\n\n"
        f"## Saving {r['records']:,} workflows (5 tables)\n\n"
        f"- seed-style baseline (SQLAlchemy ORM, a transaction per workflow): "
        f"{r['orm_seconds']} s\n"
        f"- scrapesink, full durable path (journal, PostgreSQL, CSV): "
        f"{r['scrapesink_seconds']} s, **{r['speedup']}x** (target 30x)\n"
        f"- the same {r['records']:,} again, unchanged: {r['scrapesink_resave_seconds']} s, "
        f"**{r['resave_speedup']}x**\n\n"
        f"## Reads on {r['read_records']:,} workflows, in-process, {samples} samples each\n\n"
        "Each sample takes its turn at get, list, list with children, search and selective "
        "search; then get, list and selective search run alone (a run of each).\n\n"
        f"- get by key, whole record: {read('get')}; alone {read('get_alone')} "
        "(target 0.5 ms)\n"
        f"- list 50 sorted by -quality_score, the records' fields: {read('list')}; alone "
        f"{read('list_alone')} (target 1 ms)\n"
        f"- list 50 with children: {read('list_children')}\n"
        f"- search top 20, words in a quarter of the records (25,000 matches ranked): "
        f"{read('search')} (target 5 ms)\n"
        f"- search top 20, a number and a word of one title: {read('search_selective')}; "
        f"alone {read('search_selective_alone')}\n"
    )
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()

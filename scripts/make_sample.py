"""Regenerate src/scrapesink/data/sample_events.jsonl.gz, the events `make demo` ingests.

Deterministic (fixed seed, fixed reference day): ~3,000 events from four scrapers over the last
ten days before the reference day, in both record shapes, with re-scraped duplicates, late
arrivals from earlier days, naive and offset timestamps, and a handful of broken lines so the
demo shows what rejection looks like.
"""

from __future__ import annotations

import gzip
import json
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "src" / "scrapesink" / "data" / "sample_events.jsonl.gz"
REFERENCE = datetime(2026, 11, 1, tzinfo=UTC)


def main() -> None:
    rng = random.Random(4)
    lines: list[str] = []
    shops = ["ACME", "Globex", "Initech", "Umbrella"]
    for i in range(1200):
        at = REFERENCE - timedelta(days=rng.uniform(0, 10))
        lines.append(
            json.dumps(
                {
                    "source": "shop",
                    "id": f"sku-{i:05d}",
                    "timestamp": at.isoformat(),
                    "title": f"Product {i}",
                    "price": round(rng.uniform(1, 500), 2),
                    "currency": rng.choice(["EUR", "USD"]),
                    "seller": rng.choice(shops),
                    "in_stock": rng.random() > 0.2,
                }
            )
        )
    for i in range(900):
        at = REFERENCE - timedelta(days=rng.uniform(0, 10))
        lines.append(
            json.dumps(
                {
                    "source": "news",
                    "source_id": f"https://news.example/{i}",
                    "occurred_at": at.astimezone(
                        __import__("datetime").timezone(timedelta(hours=rng.choice([-5, 0, 2, 9])))
                    ).isoformat(),
                    "payload": {
                        "headline": f"Headline {i} «ünïcödé»",
                        "lang": rng.choice(["en", "de"]),
                        "tags": rng.sample(["economy", "tech", "sport", "politics"], 2),
                    },
                },
                ensure_ascii=False,
            )
        )
    for i in range(600):
        at = REFERENCE - timedelta(days=rng.uniform(0, 10))
        lines.append(
            json.dumps(
                {
                    "source": "jobs",
                    "id": 100000 + i,
                    # naive timestamps: read as UTC and counted in the summary
                    "timestamp": at.replace(tzinfo=None).isoformat(timespec="seconds"),
                    "company": rng.choice(shops),
                    "remote": rng.random() > 0.5,
                    "salary": {"min": 40000 + i * 10, "max": 60000 + i * 10},
                }
            )
        )
    for i in range(300):
        at = REFERENCE - timedelta(days=rng.uniform(0, 10))
        lines.append(
            json.dumps(
                {
                    "source": "weather",
                    "id": f"station-{i % 30}-{i // 30}",
                    "timestamp": int(at.timestamp()),
                    "temp_c": round(rng.uniform(-10, 30), 1),
                }
            )
        )
    rng.shuffle(lines)
    # re-scrapes: the same keys again (duplicates), some with changed values (first write wins)
    lines += rng.sample(lines, 250)
    # late arrivals: events from 20-40 days ago, long after their day was written
    for i in range(60):
        at = REFERENCE - timedelta(days=rng.uniform(20, 40))
        lines.append(
            json.dumps(
                {
                    "source": "shop",
                    "id": f"late-{i}",
                    "timestamp": at.isoformat(),
                    "title": f"Backfilled {i}",
                    "price": 9.99,
                }
            )
        )
    # a few broken records
    lines += [
        '{"source": "shop", "id": "broken-1", "timestamp": "yesterday-ish", "title": "x"}',
        '{"source": "shop", "title": "no id"}',
        '{"source": "shop", "id": "bad-json", "timestamp": ',
        '["not", "an", "object"]',
    ]
    OUT.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(OUT, "wt", encoding="utf-8", compresslevel=9) as fh:
        gzip_mtime_fixed = "\n".join(lines) + "\n"
        fh.write(gzip_mtime_fixed)
    print(f"wrote {len(lines)} lines to {OUT}")


if __name__ == "__main__":
    main()

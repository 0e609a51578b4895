"""What honouring "the oldest copy wins" costs the CSV mirror when copies arrive out of order.

    python bench/csv_reversal.py [--rows 200000]

A day file of ``--rows`` events is written in batches of 5,000; then one batch of another
journal whose copies of some keys are *older* than the ones the file holds is delivered (what a
second process racing on those keys, or a late catch-up, produces). Its cost — one rewrite of the
day file — is reported next to the cost of an ordinary batch. No PostgreSQL needed.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from scrapesink.adapters.csv_sink import CsvEventSink
from scrapesink.application.ports import Batch
from scrapesink.domain.events import RawEvent

AT = datetime(2026, 1, 10, 10, tzinfo=UTC)


def events(ids: range, text: str) -> list[RawEvent]:
    payload = '{"title": "%s %d with a reasonably long title", "price": 12.5, "tags": ["a"]}'
    return [RawEvent("shop", f"k{i}", AT, payload % (text, i), AT.isoformat()) for i in ids]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        sink = CsvEventSink(Path(tmp))
        ordinary = []
        for first in range(0, args.rows, 5000):
            ids = range(first, min(first + 5000, args.rows))
            batch = Batch(
                "j-new",
                first + 1,
                first + len(ids),
                events(ids, "new"),
                range(2_000_000 + first, 2_000_000 + first + len(ids)),
            )
            started = time.perf_counter()
            sink.stage(batch)()
            ordinary.append(time.perf_counter() - started)
        size = next(sink.root.rglob("*.csv")).stat().st_size
        for older in (1, 100, 5000):
            ids = range(older * 7, older * 7 + older)
            times = range(1_000_000, 1_000_000 + older)
            late = Batch(f"j-old-{older}", 1, older, events(ids, "old"), times)
            started = time.perf_counter()
            outcome = sink.stage(late)()
            seconds = time.perf_counter() - started
            assert outcome.stored == older, outcome
            print(
                f"{older:5} older copies reaching a {args.rows:,}-row day file"
                f" ({size / 1e6:.0f} MB): {seconds * 1000:8.1f} ms"
            )
        ordinary.sort()
        print(
            f"an ordinary batch of 5,000 new events: {ordinary[len(ordinary) // 2] * 1000:.1f} ms"
        )


if __name__ == "__main__":
    main()

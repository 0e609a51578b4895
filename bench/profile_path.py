"""Where the time of the durable write path goes: each stage alone, single-threaded, 100k events.

    python bench/profile_path.py        # prints a table (used for bench/PROFILE.md)

The stages run one after the other here; in `scrapesink ingest` they overlap on two cores
(reading thread, a journal-then-deliver pipeline, two PostgreSQL connections, a CSV thread).
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from ingest_events import bench_server, fresh_database, premake, write_jsonl

from scrapesink.adapters.csv_sink import CsvEventSink
from scrapesink.adapters.journal import Journal
from scrapesink.adapters.postgres.database import Database, PoolOptions
from scrapesink.adapters.postgres.encoding import EncodedBatch
from scrapesink.adapters.postgres.events import PostgresEventStore
from scrapesink.adapters.postgres.partitions import PartitionManager
from scrapesink.adapters.readers import open_input, read_records
from scrapesink.application.ports import Batch
from scrapesink.domain.events import EventRules, validate_event

N, SIZE = 100_000, 5000


def main() -> None:
    with (
        tempfile.TemporaryDirectory(prefix="scrapesink-profile-") as tmp,
        bench_server(Path(tmp)) as server,
    ):
        work = Path(tmp)
        path = write_jsonl(work / "events.jsonl", N)
        rows: list[tuple[str, float]] = []

        def timed(label: str, func):  # type: ignore[no-untyped-def]
            start = time.perf_counter()
            result = func()
            rows.append((label, time.perf_counter() - start))
            return result

        def read():  # type: ignore[no-untyped-def]
            infile = open_input(path)
            try:
                return list(read_records(infile, "jsonl", max_record_bytes=1 << 20))
            finally:
                infile.close()

        items = timed("read + decode JSON Lines (msgspec)", read)
        now, rules = datetime.now(UTC), EventRules()
        events = timed(
            "validate (keys, timestamp, window, payload checks)",
            lambda: [
                validate_event(i[1], rules, now=now, location=i[0], raw=i[2]).event for i in items
            ],
        )
        batches = [events[i : i + SIZE] for i in range(0, N, SIZE)]
        journal = Journal.create(work / "journal")
        timed(
            "journal append (msgpack, SQLite WAL, fsync per batch)",
            lambda: [journal.append(b) for b in batches],
        )
        encoded = timed(
            "PostgreSQL encoding (sort, key arrays, COPY text)",
            lambda: [EncodedBatch(Batch("j", 0, len(b) - 1, b)) for b in batches],
        )
        database = Database(fresh_database(server, "profile"), PoolOptions(size=2, min_size=1))
        database.open()
        premake(database, 15)
        store = PostgresEventStore(database, PartitionManager(database), premake_days=0)
        timed(
            "PostgreSQL claim + COPY, one connection (server time + wire)",
            lambda: [store._write(e) for e in encoded],
        )
        database.close()
        csv_sink = CsvEventSink(work / "data")
        timed(
            "CSV delivery (key check, format, flock+write+fsync, state commit)",
            lambda: [
                csv_sink.stage(Batch("j", i * SIZE + 1, (i + 1) * SIZE, b))()
                for i, b in enumerate(batches)
            ],
        )
        journal.close(remove_if_empty=False)
        shutil.rmtree(work / "data", ignore_errors=True)
    total = sum(seconds for _, seconds in rows)
    print(f"| stage ({N:,} events, alone) | seconds | µs per event | share |")
    print("|---|---:|---:|---:|")
    for label, seconds in rows:
        print(f"| {label} | {seconds:.2f} | {seconds / N * 1e6:.1f} | {seconds / total:.0%} |")
    print(f"| **sum** | {total:.2f} | {total / N * 1e6:.1f} | |")


if __name__ == "__main__":
    main()

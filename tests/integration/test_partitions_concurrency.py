"""Partitions under concurrency and retention."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import psycopg

from scrapesink.bootstrap import App, bootstrap
from scrapesink.config import Settings
from scrapesink.entrypoints.python import Sink


def ev(source_id, at, source="s"):
    return {
        "source": source,
        "source_id": source_id,
        "occurred_at": at,
        "payload": {"i": source_id},
    }


def test_eight_writers_create_the_same_new_day_at_once(settings: Settings, database_url):
    # Eight independent processes' worth of state: each its own pool and partition cache.
    apps = [bootstrap(settings, schema="check") for _ in range(8)]
    barrier = threading.Barrier(8)
    results, errors = [], []

    def write(n: int) -> None:
        try:
            # overlapping keys across writers: 0..149 are written by everybody
            batch = [ev(f"k{i}", f"2024-02-29T{i % 24:02d}:00:00Z") for i in range(150)]
            batch += [ev(f"w{n}-{i}", f"2024-02-29T{i % 24:02d}:30:00Z") for i in range(50)]
            barrier.wait()
            results.append(Sink(apps[n]).write_events(batch))
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for application in apps:
        application.close()
    assert errors == []
    # Each shared key ends with the copy accepted first; when that copy was delivered after
    # another writer's, it took the key over, and both writers were told "stored" for it.
    inserted, duplicates = (sum(r.inserted for r in results), sum(r.duplicates for r in results))
    assert inserted + duplicates == 8 * 200 and inserted >= 150 + 8 * 50, (inserted, duplicates)
    with psycopg.connect(database_url) as conn:
        count, keys = conn.execute(
            "SELECT (SELECT count(*) FROM raw_events_2024_02_29),"
            " (SELECT count(*) FROM raw_event_keys)"
        ).fetchone()
    assert count == keys == 550


def test_prune_drops_old_partitions_with_their_keys(app: App, sink: Sink, database_url):
    now = datetime.now(UTC)
    old = (now - timedelta(days=40)).replace(hour=12).isoformat()
    recent = (now - timedelta(days=2)).isoformat()
    sink.write_events([ev("old", old), ev("recent", recent)])
    old_name = f"raw_events_{(now - timedelta(days=40)):%Y_%m_%d}"

    preview = app.partitions.prune(timedelta(days=30), dry_run=True)
    assert [p.name for p in preview] == [old_name]
    assert preview[0].rows == 1
    assert old_name in {p.name for p in app.partitions.existing()}  # dry run changed nothing

    dropped = app.partitions.prune(timedelta(days=30))
    assert [p.name for p in dropped] == [old_name]
    assert old_name not in {p.name for p in app.partitions.existing()}
    assert sink.get_event("s", "old") is None
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT source_id FROM raw_event_keys").fetchall() == [("recent",)]
    # the key is free again: a re-scrape of that old event is stored, in a re-created partition
    assert sink.write_events([ev("old", old)]).inserted == 1


def test_writer_with_a_stale_cache_recovers_after_another_process_pruned(settings, database_url):
    writer = bootstrap(settings, schema="check")
    pruner = bootstrap(settings, schema="check")
    try:
        at = (datetime.now(UTC) - timedelta(days=50)).isoformat()
        Sink(writer).write_events([ev("one", at)])
        assert pruner.partitions.prune(timedelta(days=30))
        # writer still believes the partition exists; the insert must not fail
        result = Sink(writer).write_events([ev("two", at)])
        assert result.inserted == 1
    finally:
        writer.close()
        pruner.close()

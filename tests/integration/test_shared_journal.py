"""The shared journal on Redis Streams, in one process: publishing, workers, trimming, leases.

Each test has a redis-server of its own (AOF, appendfsync always) and a fresh database; the
processes-and-signals half (kill -9 of workers and of Redis, several producers) is in
tests/e2e/test_scale_out.py.
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis

from scrapesink.adapters.csv_sink import CsvEventSink
from scrapesink.adapters.redis_deadletters import RedisDeadLetters
from scrapesink.adapters.redis_streams import RedisJournal, RedisStreams, entry_us, stream_key
from scrapesink.adapters.verify import verify
from scrapesink.application.kinds import EVENTS
from scrapesink.application.ports import Batch
from scrapesink.application.replay import republish_dead_letters
from scrapesink.application.worker import Worker, WorkerOptions
from scrapesink.bootstrap import App, bootstrap, dead_letter_store
from scrapesink.config import Settings
from scrapesink.domain.events import RawEvent
from scrapesink.entrypoints.python import Sink
from scrapesink.errors import ConfigError, TransientStorageError
from tests.support import RedisServer

FAST = WorkerOptions(claim_idle_seconds=0.2, count=50, block_ms=50, tidy_seconds=0.0)


@pytest.fixture
def shared(database_url: str, data_dir: Path, redis_server: RedisServer) -> Iterator[App]:
    settings = Settings(database_url=database_url, data_dir=data_dir, journal_url=redis_server.url)
    app = bootstrap(settings, schema="check")
    yield app
    app.close()


def event(i: int, source: str = "shop") -> dict[str, Any]:
    return {
        "source": source,
        "source_id": f"id-{i}",
        "occurred_at": "2026-12-01T10:00:00Z",
        "payload": {"i": i, "text": "naïve \u2603"},
    }


def worker(
    app: App,
    sink: str,
    name: str,
    journal: Any = None,
    declarations: Any = None,
    **options: Any,
) -> Worker:
    lease = "csv" if sink == "csv" else None
    opts = dataclasses.replace(FAST, lease=lease, **options)
    return Worker(
        journal or app.streams,
        sink,
        name,
        app.sinks_for,
        app.dead_letters,
        app.policy,
        options=opts,
        declarations=declarations,
    )


def run_until_done(app: App, workers: Sequence[Worker], rounds: int = 200) -> None:
    """Step the workers until every group has delivered and acknowledged everything."""
    assert app.streams is not None
    for _ in range(rounds):
        for w in workers:
            w.step()
        groups = app.streams.groups()
        if groups and all((g.lag or 0) == 0 and g.pending == 0 for g in groups):
            return
    raise AssertionError(f"workers did not finish: {app.streams.groups()}")


def count(database_url: str, table: str) -> int:
    with psycopg.connect(database_url) as conn:
        row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()  # noqa: S608
    assert row is not None
    return int(row[0])


def csv_lines(data_dir: Path) -> list[str]:
    lines = []
    for path in sorted((data_dir / "raw_events").rglob("*.csv")):
        lines += path.read_text(encoding="utf-8").splitlines()[1:]
    return lines


def test_publishers_share_one_dense_sequence_and_the_entry_id_is_the_stamp(
    redis_server: RedisServer,
) -> None:
    streams = RedisStreams(redis_server.url)
    a = RedisJournal(streams, EVENTS, ["postgres"])
    b = RedisJournal(RedisStreams(redis_server.url), EVENTS, ["postgres"])
    assert a.id == b.id and a.id.startswith("redis-")
    now = datetime.now(UTC)
    records = [RawEvent("s", f"k{i}", now, "{}", now.isoformat()) for i in range(3)]
    got = []
    for journal in (a, b, a, b):
        first, last = journal.append(records)
        got.append((first, last, journal.last_accepted_us))
    assert [(a, b) for a, b, _ in got] == [(1, 3), (4, 6), (7, 9), (10, 12)]
    times = [t for _, _, t in got]
    assert all(later >= earlier + 3 for earlier, later in itertools.pairwise(times))
    ids = [entry_id for entry_id, _ in streams.client.xrange(stream_key(EVENTS))]
    assert [entry_us(i) for i in ids] == times  # the stamp's time is the entry id
    # read back as a journal (the port's reading side): seqs and stamps as given
    entries = [e for chunk in a.read(4, 9) for e in chunk]
    assert [e.seq for e in entries] == [4, 5, 6, 7, 8, 9]
    assert entries[0].accepted_us == times[1] and entries[3].accepted_us == times[2]
    assert a.first_seq() == 1 and a.count_between(4, 9) == 6


def test_strict_durability_refuses_a_redis_that_does_not_fsync_every_write(
    tmp_path: Path,
) -> None:
    lax = RedisServer(tmp_path / "lax", appendfsync="everysec")
    try:
        with pytest.raises(ConfigError, match=r"appendfsync everysec.*DURABILITY=relaxed"):
            RedisJournal(RedisStreams(lax.url), EVENTS, ["postgres"])
        relaxed = RedisJournal(RedisStreams(lax.url, durability="relaxed"), EVENTS, ["postgres"])
        now = datetime.now(UTC)
        assert relaxed.append([RawEvent("s", "k", now, "{}", now.isoformat())]) == (1, 1)
    finally:
        lax.close()


def test_unreachable_redis_is_not_an_acknowledgement(
    shared: App, redis_server: RedisServer
) -> None:
    sink = Sink(shared)
    sink.write_events([event(1)])
    redis_server.kill()
    with pytest.raises(TransientStorageError, match=r"unreachable.*0 records before were ack"):
        sink.write_events([event(2)])
    redis_server.start()  # the AOF brought back everything acknowledged
    assert shared.streams is not None
    assert shared.streams.client.xlen(stream_key(EVENTS)) == 1


def test_workers_deliver_events_and_models_to_both_stores(
    shared: App, database_url: str, data_dir: Path, redis_server: RedisServer
) -> None:
    first, second = Sink(shared), Sink(bootstrap(shared.settings, schema="check"))
    try:
        first.write_events([event(i) for i in range(300)])
        second.write_events([event(i) for i in range(200, 500)])  # 100 keys overlap
        first.save("movies", [{"url": "u1", "title": "Old title", "year": 1990}])
        second.save("movies", [{"url": "u1", "title": "New title", "year": 1991}])  # later
        first.save("movies", [{"url": f"u{i}", "title": f"T{i}"} for i in range(2, 40)])
        # nothing is stored by a producer: workers deliver
        assert count(database_url, "raw_events") == 0
        workers = [worker(shared, "postgres", "pg-1"), worker(shared, "postgres", "pg-2")]
        run_until_done(shared, [*workers, worker(shared, "csv", "csv-1")])
    finally:
        second.close()
    assert count(database_url, "raw_events") == 500
    assert sorted(csv_lines(data_dir)) == sorted(set(csv_lines(data_dir)))
    assert len(csv_lines(data_dir)) == 500
    assert count(database_url, "movies") == 39
    movie = first.get("movies", "u1")
    assert movie is not None and movie["title"] == "New title"  # the newest stamp wins
    report = verify(shared.database, shared.declaration, data_dir)
    assert report.ok, report.as_dict()
    # both groups have acknowledged everything: progress is forgotten, the stream trimmed
    stored = sum(w.report().stored for w in workers)
    assert stored == 500 + 39  # each record stored once, by one of the two workers
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT count(*) FROM journal_progress").fetchone() == (0,)


class AckLost(RedisStreams):
    """A worker's connection that breaks right after the store committed, before XACK: the
    entries stay pending with it, as with a worker killed at that point."""

    def ack(self, kind: str, group: str, ids: Sequence[bytes]) -> None:
        raise TransientStorageError("connection lost before XACK")


@pytest.mark.parametrize("sink_name", ["postgres", "csv"])
def test_entries_committed_but_not_acknowledged_are_taken_over_without_storing_twice(
    shared: App, database_url: str, data_dir: Path, redis_server: RedisServer, sink_name: str
) -> None:
    for start in (0, 40, 80):  # three entries; the heir takes them two at a time
        Sink(shared).write_events([event(i) for i in range(start, start + 40)])
    dying = worker(shared, sink_name, "dying", journal=AckLost(redis_server.url))
    with pytest.raises(TransientStorageError):
        for _ in range(20):
            dying.step()
    assert shared.streams is not None
    (group,) = [g for g in shared.streams.groups() if g.group == sink_name]
    assert group.pending > 0  # committed, never acknowledged
    heir = worker(shared, sink_name, "heir", count=2)
    run_until_done(shared, [heir, worker(shared, "postgres" if sink_name == "csv" else "csv", "o")])
    assert heir.report().stored == 120 - dying.report().stored  # the taken-over part: not again
    assert count(database_url, "raw_events") == 120
    assert len(csv_lines(data_dir)) == 120
    assert verify(shared.database, shared.declaration, data_dir).ok


def test_trimming_keeps_what_a_lagging_group_still_needs(
    shared: App, data_dir: Path, database_url: str
) -> None:
    sink = Sink(shared)
    for start in range(0, 100, 10):
        sink.write_events([event(i) for i in range(start, start + 10)])
    assert shared.streams is not None
    client: redis.Redis = shared.streams.client
    pg = worker(shared, "postgres", "pg")
    for _ in range(10):
        pg.step()
    assert count(database_url, "raw_events") == 100
    shared.streams.trim(EVENTS)
    assert client.xlen(stream_key(EVENTS)) == 10  # csv has taken nothing yet: all kept
    csv = worker(shared, "csv", "csv", count=4)
    csv.step()  # takes 4 entries (still only 4 of 10 settled for csv)
    shared.streams.trim(EVENTS)
    assert client.xlen(stream_key(EVENTS)) == 6
    run_until_done(shared, [pg, csv])
    shared.streams.trim(EVENTS)
    assert client.xlen(stream_key(EVENTS)) == 1  # the last entry stays (cheap)
    assert len(csv_lines(data_dir)) == 100


def test_one_csv_writer_at_a_time(shared: App, data_dir: Path) -> None:
    Sink(shared).write_events([event(i) for i in range(30)])
    first, second = worker(shared, "csv", "csv-a"), worker(shared, "csv", "csv-b")
    first.step()
    assert second.step() == 0 and not second.holds_lease
    first.close()  # gives the lease up
    run_until_done(shared, [second, worker(shared, "postgres", "pg")])
    assert second.holds_lease
    assert len(csv_lines(data_dir)) == 30


def test_a_csv_range_held_in_part_is_refused_not_appended_again(data_dir: Path) -> None:
    sink = CsvEventSink(data_dir)
    now = datetime.now(UTC)
    events = [RawEvent("s", f"k{i}", now, "{}", now.isoformat()) for i in range(20)]
    sink.stage(Batch("j", 1, 10, events[:10]))()
    sink.stage(Batch("j", 1, 10, events[:10]))()  # the same range again: a no-op
    with pytest.raises(TransientStorageError, match="partly"):
        sink.stage(Batch("j", 5, 14, events[4:14]))()
    assert len(csv_lines(data_dir)) == 10


def test_health_fails_on_a_group_with_lag_and_no_worker(shared: App) -> None:
    Sink(shared).write_events([event(1)])
    checks = {c.name: c for c in shared.health().checks}
    assert not checks["group postgres events"].ok
    assert "lag 1" in checks["group csv events"].detail
    run_until_done(shared, [worker(shared, "postgres", "pg"), worker(shared, "csv", "csv")])
    checks = {c.name: c for c in shared.health().checks}
    assert checks["group postgres events"].ok and checks["group csv events"].ok


def test_a_refused_record_goes_to_the_shared_dead_letters_and_retry_publishes_it_again(
    shared: App, database_url: str, data_dir: Path
) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("ALTER TABLE raw_events ADD CONSTRAINT no_poison CHECK (source <> 'poison')")
    Sink(shared).write_events([event(1), event(2, source="poison"), event(3)])
    workers = [worker(shared, "postgres", "pg"), worker(shared, "csv", "csv")]
    run_until_done(shared, workers)
    assert count(database_url, "raw_events") == 2  # the neighbours are stored
    # in Redis: any process of the installation sees it, on any machine
    store = dead_letter_store(shared.settings)
    assert isinstance(store, RedisDeadLetters)
    (letter,) = store.list()
    assert (letter.sink, letter.record.source, letter.attempts) == ("postgres", "poison", 1)
    assert letter.accepted_us is not None
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("ALTER TABLE raw_events DROP CONSTRAINT no_poison")
    assert shared.streams is not None
    assert republish_dead_letters(store.list(), shared.streams.republish, store) == 1
    assert store.list() == []
    run_until_done(shared, workers)
    assert count(database_url, "raw_events") == 3
    assert len(csv_lines(data_dir)) == 3  # the CSV copy is not written twice
    with psycopg.connect(database_url) as conn:
        stamp = conn.execute("SELECT stamp FROM raw_event_keys WHERE source = 'poison'").fetchone()
    assert stamp is not None and bytes(stamp[0])[:8] == letter.accepted_us.to_bytes(8, "big")
    assert verify(shared.database, shared.declaration, data_dir).ok


def test_metrics_show_each_group(shared: App) -> None:
    from prometheus_client import CollectorRegistry

    from scrapesink.adapters.metrics import render

    Sink(shared).write_events([event(1), event(2)])
    registry = CollectorRegistry()
    registry.register(shared.gauges())
    text = render(registry).decode()
    assert 'scrapesink_stream_group_lag{group="csv",stream="events"} 1.0' in text
    assert 'scrapesink_stream_group_idle_seconds{group="postgres",stream="events"} -1.0' in text
    run_until_done(shared, [worker(shared, "postgres", "pg"), worker(shared, "csv", "csv")])
    text = render(registry).decode()
    assert 'scrapesink_stream_group_lag{group="postgres",stream="events"} 0.0' in text
    assert 'scrapesink_stream_group_consumers{group="csv",stream="events"} 1.0' in text


def test_an_entry_no_worker_can_read_is_set_aside_and_blocks_nothing(
    shared: App, database_url: str, data_dir: Path
) -> None:
    sink = Sink(shared)
    sink.write_events([event(1)])
    assert shared.streams is not None
    client = shared.streams.client
    client.xadd(stream_key(EVENTS), {"f": "2", "r": b"\xc1 not msgpack"})  # by hand, id *
    client.xadd(stream_key(EVENTS), {"garbage": "yes"})
    sink.write_events([event(2), event(3)])  # publishing goes on after a foreign entry
    run_until_done(shared, [worker(shared, "postgres", "pg"), worker(shared, "csv", "csv")])
    assert count(database_url, "raw_events") == 3
    assert len(csv_lines(data_dir)) == 3
    aside = client.xrange("scrapesink:unreadable")
    assert len(aside) == 4  # two entries, for each of the two groups
    assert {f[b"group"] for _, f in aside} == {b"postgres", b"csv"}
    assert all(b"error" in f and f[b"error"] for _, f in aside)


def test_a_csv_worker_with_another_data_directory_never_writes_part_of_the_records(
    shared: App, data_dir: Path
) -> None:
    assert shared.streams is not None
    assert shared.streams.settle_home("csv", "home-a") is None  # the first one makes it home
    assert shared.streams.settle_home("csv", "home-b") == "home-a"
    Sink(shared).write_events([event(i) for i in range(10)])
    stranger = worker(shared, "csv", "csv-b", home="home-b")
    assert stranger.step() == 0 and stranger.elsewhere and not stranger.holds_lease
    owner = worker(shared, "csv", "csv-a", home="home-a")
    run_until_done(shared, [owner, worker(shared, "postgres", "pg")])
    assert len(csv_lines(data_dir)) == 10
    # moved on purpose: the old home's worker stands by from its next pass
    assert shared.streams.settle_home("csv", "home-b", move=True) is None
    Sink(shared).write_events([event(10)])
    assert owner.step() == 0 and owner.elsewhere


def test_a_worker_declaring_a_model_otherwise_leaves_its_records_waiting(
    shared: App, database_url: str
) -> None:
    from scrapesink.domain.models import fingerprint

    sink = Sink(shared)
    sink.save("movies", [{"url": "u1", "title": "T"}])
    sink.write_events([event(1)])
    mine = fingerprint(shared.declaration.model("movies"))
    assert shared.streams is not None and shared.streams.declared("model:movies") == mine
    other = worker(shared, "postgres", "pg-old", declarations=lambda kind: "an older one")
    for _ in range(5):
        other.step()
    assert other.mismatched == {"model:movies"}
    assert count(database_url, "movies") == 0 and count(database_url, "raw_events") == 1
    same = worker(shared, "postgres", "pg-new", declarations=lambda kind: mine)
    run_until_done(shared, [same, worker(shared, "csv", "csv")])
    assert count(database_url, "movies") == 1 and not same.mismatched


def test_workers_gone_for_good_leave_the_group(shared: App) -> None:
    Sink(shared).write_events([event(1)])
    run_until_done(shared, [worker(shared, "postgres", "gone"), worker(shared, "csv", "csv")])
    assert shared.streams is not None
    time.sleep(0.2)
    assert shared.streams.forget_consumers(EVENTS, "postgres", idle_ms=100_000) == 0
    assert shared.streams.forget_consumers(EVENTS, "postgres", idle_ms=100) == 1
    (group,) = [g for g in shared.streams.groups() if g.group == "postgres"]
    assert group.consumers == 0


def test_a_worker_restarted_under_its_name_delivers_its_own_pending_entries_first(
    shared: App, redis_server: RedisServer, database_url: str
) -> None:
    Sink(shared).write_events([event(i) for i in range(20)])
    dying = worker(shared, "postgres", "pg-1", journal=AckLost(redis_server.url))
    with pytest.raises(TransientStorageError):
        dying.step()
    # the same name again, long before any claim could happen (claim idle: an hour)
    again = worker(shared, "postgres", "pg-1", claim_idle_seconds=3600.0)
    again.step()
    assert shared.streams is not None
    (group,) = [g for g in shared.streams.groups() if g.group == "postgres"]
    assert group.pending == 0 and count(database_url, "raw_events") == 20

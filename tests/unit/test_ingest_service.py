"""The ingest service over an in-memory store: batching, in-batch dedup, rejections, summary."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import pytest

from scrapesink.application.ingest import IngestService
from scrapesink.application.ports import WriteOutcome
from scrapesink.domain.events import EventRules, RawEvent
from scrapesink.errors import InputError, RecordError


class MemoryStore:
    """A fake EventStore: first write of a key wins, like the real one."""

    def __init__(self) -> None:
        self.events: dict[tuple[str, str], RawEvent] = {}
        self.batches: list[int] = []
        self.prepared = 0

    def prepare(self) -> None:
        self.prepared += 1

    def stage(self, events: Sequence[RawEvent]):
        events = list(events)
        return lambda: self.write(events)

    def write(self, events: Sequence[RawEvent]) -> WriteOutcome:
        assert len({e.key for e in events}) == len(events), "service must dedupe a batch"
        self.batches.append(len(events))
        duplicates = set()
        for event in events:
            if event.key in self.events:
                duplicates.add(event.key)
            else:
                self.events[event.key] = event
        return WriteOutcome(len(events) - len(duplicates), frozenset(duplicates))


def rec(i, source="s", **extra):
    return (f"line {i}", {"source": source, "id": i, "timestamp": "2025-05-15T10:00:00Z", **extra})


def service(store, batch_size=3):
    return IngestService(store, EventRules(), batch_size=batch_size)


NOW = lambda: datetime(2025, 5, 16, tzinfo=UTC)  # noqa: E731


def test_batches_grow_from_small_to_batch_size():
    store = MemoryStore()
    service(store, batch_size=2000).ingest([rec(i) for i in range(5000)], now=NOW)
    assert store.batches == [500, 1000, 2000, 1500]


def test_batches_summary_and_cross_batch_duplicates():
    store = MemoryStore()
    records = [rec(i) for i in range(7)] + [rec(2), rec(3)]
    summary = service(store).ingest(records, now=NOW)
    # 2 and 3 come back while their first copies are still in flight: duplicates at once
    assert store.batches == [3, 3, 1]
    assert (summary.read, summary.inserted, summary.duplicates, summary.rejected) == (9, 7, 2, 0)
    assert store.prepared == 1


def test_duplicate_key_inside_one_batch_keeps_the_first():
    store = MemoryStore()
    summary = service(store, batch_size=10).ingest([rec(1, v="first"), rec(1, v="second")], now=NOW)
    assert (summary.inserted, summary.duplicates) == (1, 1)
    assert store.events[("s", "1")].payload["v"] == "first"


def test_rejected_records_never_block_their_neighbours():
    store = MemoryStore()
    seen = []
    records = [
        rec(1),
        ("line 2", {"id": 2}),
        RecordError("malformed JSON", location="line 3"),
        rec(4),
    ]
    summary = service(store).ingest(records, on_reject=seen.append, now=NOW)
    assert summary.inserted == 2
    assert summary.rejected == 2
    assert [e.location for e in summary.rejections] == ["line 2", "line 3"]
    assert seen == summary.rejections
    assert not summary.ok


def test_records_before_a_fatal_input_error_are_stored():
    store = MemoryStore()

    def broken():
        yield rec(1)
        yield rec(2)
        raise InputError("f.json: malformed JSON after item [1]")

    with pytest.raises(InputError):
        service(store, batch_size=100).ingest(broken(), now=NOW)
    assert set(store.events) == {("s", "1"), ("s", "2")}


def test_cleaning_is_counted():
    store = MemoryStore()
    summary = service(store).ingest(
        [("line 1", {"source": "s", "id": 1, "timestamp": "2025-05-15T10:00:00", "t": "a\x00"})],
        now=NOW,
    )
    assert (summary.naive_timestamps, summary.nul_cleaned) == (1, 1)

"""The ingest service over in-memory fakes: batching, dedup, rejections, per-sink outcome."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from scrapesink.application.delivery import RetryPolicy
from scrapesink.application.durable import DurableWriter
from scrapesink.application.ingest import IngestService
from scrapesink.domain.events import EventRules
from scrapesink.errors import InputError, RecordError
from tests.unit.fakes import MemoryDeadLetters, MemoryJournal, MemorySink

NOW = lambda: datetime(2025, 5, 16, tzinfo=UTC)  # noqa: E731


def rec(i, source="s", **extra):
    return (f"line {i}", {"source": source, "id": i, "timestamp": "2025-05-15T10:00:00Z", **extra})


def make(batch_size=3, sinks=None):
    sinks = sinks or [MemorySink("postgres"), MemorySink("csv")]
    journal = MemoryJournal()
    writer = DurableWriter(journal, sinks, MemoryDeadLetters(), RetryPolicy(0, 60))
    return IngestService(writer, EventRules(), batch_size=batch_size), journal, sinks


def test_batches_grow_from_small_to_batch_size():
    service, _, (store, _) = make(batch_size=2000)
    service.ingest([rec(i) for i in range(5000)], now=NOW)
    assert store.batches == [500, 1000, 2000, 1500]


def test_every_sink_gets_every_record_and_the_journal_is_compacted():
    service, journal, (pg, csv) = make()
    records = [rec(i) for i in range(7)] + [rec(20), rec(3)]  # rec(3) again, much later
    summary = service.ingest(records, now=NOW)
    assert (summary.read, summary.inserted, summary.duplicates, summary.rejected) == (9, 8, 1, 0)
    assert set(pg.events) == set(csv.events) == {("s", str(i)) for i in (*range(7), 20)}
    assert summary.sinks["csv"].stored == 8
    assert journal.entries == {}  # both sinks have everything: nothing left to keep


def test_duplicate_key_inside_one_batch_keeps_the_first():
    service, _, (pg, _) = make(batch_size=10)
    summary = service.ingest([rec(1, v="first"), rec(1, v="second")], now=NOW)
    assert (summary.inserted, summary.duplicates) == (1, 1)
    assert pg.events[("s", "1")].payload["v"] == "first"


def test_rejected_records_never_block_their_neighbours():
    service, _, _ = make()
    seen = []
    records = [
        rec(1),
        ("line 2", {"id": 2}),
        RecordError("malformed JSON", location="line 3"),
        rec(4),
    ]
    summary = service.ingest(records, on_reject=seen.append, now=NOW)
    assert summary.inserted == 2
    assert summary.rejected == 2
    assert [e.location for e in summary.rejections] == ["line 2", "line 3"]
    assert seen == summary.rejections
    assert not summary.ok


def test_records_before_a_fatal_input_error_are_stored():
    service, _, (pg, _) = make(batch_size=100)

    def broken():
        yield rec(1)
        yield rec(2)
        raise InputError("f.json: malformed JSON after item [1]")

    with pytest.raises(InputError):
        service.ingest(broken(), now=NOW)
    assert set(pg.events) == {("s", "1"), ("s", "2")}


def test_cleaning_is_counted():
    service, _, _ = make()
    summary = service.ingest(
        [("line 1", {"source": "s", "id": 1, "timestamp": "2025-05-15T10:00:00", "t": "a\x00"})],
        now=NOW,
    )
    assert (summary.naive_timestamps, summary.nul_cleaned) == (1, 1)

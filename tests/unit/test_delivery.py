"""Delivery lanes: a failing sink never blocks or loses the other; refused records are isolated."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime

from scrapesink.application.delivery import RetryPolicy, contiguous_end, missing
from scrapesink.application.durable import DurableWriter
from scrapesink.application.replay import replay
from scrapesink.domain.events import RawEvent
from scrapesink.errors import ConstraintError, TransientStorageError
from tests.unit.fakes import MemoryDeadLetters, MemoryJournal, MemorySink

AT = datetime(2025, 5, 15, tzinfo=UTC)


def events(n, start=0):
    return [RawEvent("s", str(i), AT, "{}") for i in range(start, start + n)]


def postgres_down(reason: str) -> tuple[MemorySink, MemorySink, MemoryJournal, DurableWriter]:
    """A writer to two sinks whose "postgres" fails transiently until told otherwise."""
    pg, csv = MemorySink("postgres"), MemorySink("csv")
    pg.fail_with = TransientStorageError(reason)
    journal = MemoryJournal()
    writer = DurableWriter(journal, [pg, csv], MemoryDeadLetters(), RetryPolicy(0, 60))
    return pg, csv, journal, writer


def test_contiguous_end_and_missing():
    assert contiguous_end(1, [(1, 5), (6, 9), (12, 20)]) == 9
    assert contiguous_end(1, [(2, 5)]) == 0
    assert contiguous_end(3, [(1, 5), (4, 8)]) == 8
    assert missing(1, 20, [(1, 5), (9, 10)]) == [(6, 8), (11, 20)]
    assert missing(1, 5, []) == [(1, 5)]
    assert missing(1, 5, [(1, 5)]) == []


def test_a_sink_that_is_down_leaves_its_records_pending_and_the_other_goes_on():
    _, _, journal, writer = postgres_down("connection refused")
    writer.write(events(10))
    writer.write(events(10, start=10))
    reports = writer.close()
    assert reports["csv"].stored == 20
    assert reports["postgres"].pending == 20
    assert reports["postgres"].error == "connection refused"
    assert len(journal.entries) == 20  # kept: postgres lacks all of it
    assert not journal.entries.keys() - set(range(1, 21))


def test_a_sink_that_cannot_prepare_a_batch_leaves_it_pending_and_the_write_stands():
    pg, csv = MemorySink("postgres"), MemorySink("csv")
    csv.stage_fails_with = KeyError("video_url")  # e.g. journaled under another declaration
    journal = MemoryJournal()
    writer = DurableWriter(journal, [pg, csv], MemoryDeadLetters(), RetryPolicy(0, 60))
    assert writer.write(events(5)) == (1, 5)  # acknowledged: no error for the caller
    reports = writer.close()
    assert (reports["postgres"].stored, reports["csv"].pending) == (5, 5)
    assert "video_url" in (reports["csv"].error or "")
    assert sorted(journal.entries) == [1, 2, 3, 4, 5]  # kept for the csv sink


def test_replay_after_recovery_delivers_exactly_what_was_missing():
    pg, csv, journal, writer = postgres_down("down")
    writer.write(events(7))
    writer.close()
    pg.fail_with = None
    result = replay(
        ["j"], lambda _: journal, lambda _: [pg, csv], MemoryDeadLetters(), RetryPolicy(0, 60)
    )
    assert result.reports["postgres"].stored == 7
    assert result.reports["csv"].stored == 0  # csv had it all: nothing sent twice
    assert len(pg.events) == len(csv.events) == 7
    assert journal.entries == {} and result.removed == 1


def test_a_refused_record_goes_to_dead_letters_and_its_neighbours_are_stored():
    pg = MemorySink("postgres")
    pg.refuse = lambda e: ConstraintError("bad value") if e.source_id == "13" else None
    dead = MemoryDeadLetters()
    journal = MemoryJournal()
    writer = DurableWriter(journal, [pg], dead, RetryPolicy(0, 60))
    writer.write(events(20))
    reports = writer.close()
    assert reports["postgres"].stored == 19
    assert reports["postgres"].dead_letters == 1
    assert [(sink, seq, e.source_id) for sink, _, seq, e, _ in dead.letters] == [
        ("postgres", 14, "13")
    ]
    assert journal.entries == {}  # the refused record is handled: nothing blocks compaction


def test_a_sink_that_recovers_within_the_run_catches_up_from_the_journal():
    pg = MemorySink("postgres")
    journal = MemoryJournal()
    writer = DurableWriter(journal, [pg], MemoryDeadLetters(), RetryPolicy(0, 0))
    pg.fail_with = TransientStorageError("blip")
    writer.write(events(5))
    writer.delivery.drain()
    pg.fail_with = None
    writer.write(events(5, start=5))
    reports = writer.close()
    assert reports["postgres"].pending == 0
    assert reports["postgres"].stored == 10
    assert journal.entries == {}


def test_replay_leaves_journals_in_use_to_their_process():
    pg = MemorySink("postgres")
    result = replay(
        ["live"], lambda _: None, lambda _: [pg], MemoryDeadLetters(), RetryPolicy(0, 60)
    )
    assert (result.busy, result.journals) == (1, 0)
    assert pg.events == {}


def test_a_journal_in_use_cannot_be_taken_over(tmp_path):
    from scrapesink.adapters.journal import Journal

    mine = Journal.create(tmp_path)
    try:
        assert Journal.open_if_free(mine.path) is None
    finally:
        mine.close()
    other = Journal.open_if_free(mine.path)  # removed when closed empty: a new one is made
    assert other is not None
    other.close()


def test_a_statement_the_store_refuses_blames_no_record_and_keeps_the_batch():
    from scrapesink.errors import QueryError

    pg = MemorySink("postgres")
    pg.fail_with = QueryError("permission denied for table raw_events")
    dead = MemoryDeadLetters()
    journal = MemoryJournal()
    writer = DurableWriter(journal, [pg], dead, RetryPolicy(0, 60))
    writer.write(events(5))
    reports = writer.close()
    assert dead.letters == []
    assert reports["postgres"].pending == 5
    assert "permission denied" in reports["postgres"].error
    assert len(journal.entries) == 5


def test_a_sink_that_is_back_gets_its_pending_records_before_newer_ones():
    pg, csv, _, writer = postgres_down("connection refused")
    writer = DurableWriter(writer.journal, [pg, csv], MemoryDeadLetters(), RetryPolicy(0, 0))
    writer.write(events(3))  # seqs 1-3: pending for postgres
    writer.delivery.drain()
    pg.fail_with = None
    writer.write(events(2, start=3))  # 4-5: the first batch after the outage finds it back
    writer.delivery.drain()
    writer.write(events(2, start=5))  # 6-7: pending 1-3 go first
    writer.delivery.drain()
    assert pg.ranges["j1"] == [(4, 5), (1, 3), (6, 7)]
    assert writer.reports()["postgres"].pending == 0
    writer.close()


def test_a_writer_that_does_not_wait_journals_while_its_store_is_busy_and_feed_hands_on():
    # Background delivery (the Python API's deliver="background"): a write returns once
    # journaled, whatever the stores do; the batches wait in the journal, not in memory, and
    # feed hands them on, consecutive writes read back as one batch.
    pg, csv = MemorySink("postgres"), MemorySink("csv")
    pg.gate.clear()  # postgres hangs on whatever it is given
    journal = MemoryJournal()
    writer = DurableWriter(
        journal, [pg, csv], MemoryDeadLetters(), RetryPolicy(0, 60), wait_for_lanes=False
    )
    for start in range(0, 50, 10):  # with waiting lanes the second write would block here
        writer.write(events(10, start=start))
    assert writer.undelivered() == {"postgres": 50, "csv": 50}
    assert writer.reports()["postgres"].pending == 50
    feeder = threading.Thread(target=writer.feed)
    feeder.start()  # postgres takes one batch and hangs; csv gets everything
    while csv.batches != [50]:
        time.sleep(0.01)
    assert not writer.idle
    pg.gate.set()
    feeder.join()
    writer.delivery.drain()
    assert writer.idle and writer.undelivered() == {"postgres": 0, "csv": 0}
    assert pg.batches == [50]  # five writes, one delivery
    assert len(pg.events) == len(csv.events) == 50
    assert writer.close()["postgres"].stored == 50
    assert journal.entries == {}


def test_closing_without_catch_up_leaves_what_waits_in_the_journal():
    pg, csv = MemorySink("postgres"), MemorySink("csv")
    journal = MemoryJournal()
    writer = DurableWriter(
        journal, [pg, csv], MemoryDeadLetters(), RetryPolicy(0, 60), wait_for_lanes=False
    )
    writer.write(events(10))
    writer.feed()
    writer.write(events(10, start=10))
    reports = writer.close(catch_up=False)
    assert (reports["postgres"].stored, reports["postgres"].pending) == (10, 10)
    assert sorted(journal.entries) == list(range(11, 21))  # kept for replay

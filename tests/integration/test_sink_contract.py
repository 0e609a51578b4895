"""One contract, every EventSink: the in-memory fake, the CSV mirror and PostgreSQL behave alike."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from scrapesink.adapters.csv_sink import CsvEventSink
from scrapesink.application.ports import Batch, EventSink
from scrapesink.bootstrap import bootstrap
from scrapesink.config import Settings
from scrapesink.domain.events import RawEvent
from tests.unit.fakes import MemorySink

AT = datetime(2025, 5, 15, 10, tzinfo=UTC)


def events(*ids: str, source: str = "s") -> list[RawEvent]:
    return [RawEvent(source, i, AT, f'{{"id": "{i}"}}', AT.isoformat()) for i in ids]


@pytest.fixture(params=["memory", "csv", "postgres"])
def sink(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[EventSink]:
    if request.param == "memory":
        yield MemorySink()
    elif request.param == "csv":
        yield CsvEventSink(tmp_path / "data")
    else:
        database_url = request.getfixturevalue("database_url")
        app = bootstrap(Settings(database_url=database_url, data_dir=tmp_path), schema="check")
        yield app.events
        app.close()


def test_new_records_are_stored_and_known_keys_are_duplicates(sink: EventSink):
    first = sink.stage(Batch("j", 1, 3, events("a", "b", "c")))()
    assert (first.stored, first.duplicates) == (3, frozenset())
    second = sink.stage(Batch("j", 4, 5, events("c", "d")))()
    assert (second.stored, second.duplicates) == (1, frozenset({("s", "c")}))


def test_delivered_ranges_are_recorded_with_the_data(sink: EventSink):
    sink.stage(Batch("j", 1, 2, events("a", "b")))()
    sink.stage(Batch("j", 5, 6, events("e", "f")))()  # out of order is fine
    sink.stage(Batch("j", 3, 4, events("c", "d")))()
    assert sink.delivered("j") == [(1, 2), (3, 4), (5, 6)]
    assert sink.delivered("other") == []


def test_skipped_ranges_count_as_handled_and_forget_drops_the_bookkeeping(sink: EventSink):
    sink.stage(Batch("j", 1, 1, events("a")))()
    sink.skip("j", 2, 2)
    assert sink.delivered("j") == [(1, 1), (2, 2)]
    sink.forget("j")
    assert sink.delivered("j") == []


def test_delivering_a_range_again_never_duplicates(sink: EventSink):
    batch = Batch("j", 1, 2, events("a", "b"))
    sink.stage(batch)()
    again = sink.stage(batch)()
    assert again.stored == 0
    assert again.duplicates == frozenset({("s", "a"), ("s", "b")})


def test_records_outside_any_journal_are_stored_too(sink: EventSink):
    outcome = sink.stage(Batch("", 0, 0, events("lone")))()
    assert outcome.stored == 1
    assert sink.delivered("") == []


def test_repair_is_safe_at_any_time(sink: EventSink):
    sink.repair()
    sink.stage(Batch("j", 1, 1, events("a")))()
    sink.repair()
    assert sink.stage(Batch("j", 2, 2, events("a")))().stored == 0

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


def stamped(*ids: str, at_us: int, payload: str, journal: str = "j") -> Batch[RawEvent]:
    """A batch of one journal, journaled at ``at_us``: its records' acceptance stamps."""
    records = [RawEvent("s", i, AT, f'{{"v": "{payload}"}}', AT.isoformat()) for i in ids]
    return Batch(journal, at_us, at_us + len(ids) - 1, records, range(at_us, at_us + len(ids)))


def test_the_oldest_stamp_wins_whichever_copy_arrives_first(sink: EventSink):
    # "second" was accepted later but reaches the sink first (a catch-up after an outage).
    sink.stage(stamped("a", "b", at_us=2_000, payload="second", journal="j2"))()
    outcome = sink.stage(stamped("a", at_us=1_000, payload="first", journal="j1"))()
    assert (outcome.stored, outcome.duplicates) == (1, frozenset())
    again = sink.stage(stamped("a", "b", at_us=3_000, payload="third", journal="j3"))()
    assert (again.stored, again.duplicates) == (0, frozenset({("s", "a"), ("s", "b")}))
    assert held(sink) == {"a": "first", "b": "second"}


def held(sink: EventSink) -> dict[str, str]:
    """What the sink holds per source_id (the payload's "v")."""
    import csv
    import json

    if isinstance(sink, MemorySink):
        return {k[1]: json.loads(e.payload_json)["v"] for k, e in sink.events.items()}
    if isinstance(sink, CsvEventSink):
        rows = []
        for path in sink.files():
            with path.open(encoding="utf-8", newline="") as handle:
                rows += list(csv.DictReader(handle))
        ids = [row["source_id"] for row in rows]
        assert len(ids) == len(set(ids)), "a key is in the CSV files twice"
        return {row["source_id"]: json.loads(row["payload"])["v"] for row in rows}
    with sink.database.connection() as conn:  # type: ignore[attr-defined]
        rows = conn.execute("SELECT source_id, payload->>'v' FROM raw_events").fetchall()
    ids = [r[0] for r in rows]
    assert len(ids) == len(set(ids)), "a key is in raw_events twice"
    return dict(rows)


def test_a_batch_holding_a_key_twice_stores_its_older_copy_once(sink: EventSink):
    # A catch-up batch spans several writes: the same key may be in it twice.
    records = [
        RawEvent("s", "k", AT, '{"v": "first"}', AT.isoformat()),
        RawEvent("s", "other", AT, '{"v": "x"}', AT.isoformat()),
        RawEvent("s", "k", AT, '{"v": "again"}', AT.isoformat()),
    ]
    outcome = sink.stage(Batch("j", 1, 3, records, [10, 10, 20]))()
    assert outcome.stored == 2
    assert held(sink) == {"k": "first", "other": "x"}


def test_csv_a_reversal_never_commits_a_tail_a_crashed_writer_left(tmp_path: Path):
    sink = CsvEventSink(tmp_path / "data")
    sink.stage(stamped("a", "b", at_us=2_000, payload="second", journal="j2"))()
    (day,) = sink.files()
    with day.open("ab") as handle:  # a writer killed after its append, before its commit
        handle.write(b's,zz,2025-05-15T10:00:00+00:00,"{""v"": ""torn')
    big = "x" * 300_000  # beyond the csv module's default field limit
    sink.stage(stamped("c", at_us=2_500, payload=big, journal="j3"))()
    sink.stage(stamped("a", at_us=1_000, payload="first", journal="j1"))()
    assert held(sink) == {"a": "first", "b": "second", "c": big}
    assert b"torn" not in day.read_bytes()


def test_csv_a_reversal_whose_held_file_was_removed_by_hand_just_stores(tmp_path: Path):
    sink = CsvEventSink(tmp_path / "data")
    sink.stage(stamped("a", at_us=2_000, payload="second", journal="j2"))()
    (day,) = sink.files()
    day.unlink()
    outcome = sink.stage(stamped("a", at_us=1_000, payload="first", journal="j1"))()
    assert outcome.stored == 1
    assert held(sink) == {"a": "first"}


def test_csv_files_replaced_whole_even_when_the_process_dies_before_renaming(tmp_path: Path):
    # `verify --repair csv` commits the new lengths with the renames to make, then renames: a
    # process killed in between leaves the renames to whoever takes the lock next.
    sink = CsvEventSink(tmp_path / "data")
    sink.stage(stamped("a", at_us=1_000, payload="old"))()
    (day,) = sink.files()
    rebuilt = day.read_bytes() + b's,b,2025-05-15T10:00:00+00:00,"{""v"": 1}"\r\n'
    temp = day.with_name(f".{day.name}.repair")
    temp.write_bytes(rebuilt)
    with sink._state(write=True) as db:
        sink.replace_files(db, {day.relative_to(sink.root).as_posix(): temp})
    # killed here: the state says the new length, the file is the old one
    CsvEventSink(tmp_path / "data").repair()  # the next start
    assert day.read_bytes() == rebuilt and not temp.exists()

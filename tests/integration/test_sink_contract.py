"""One contract, every record kind on every sink: raw events and a model's records, each on
the in-memory fake, the CSV mirror and PostgreSQL, behave alike (the stamp rule being the kind's
own: the oldest copy of an event wins, the newest version of a record)."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from scrapesink.adapters.csv_models import CsvModelSink
from scrapesink.adapters.csv_sink import CsvEventSink
from scrapesink.adapters.postgres.model_schema import ModelSchema
from scrapesink.adapters.postgres.model_sink import PostgresModelSink
from scrapesink.application.kinds import EventKind, ModelKind, RecordKind
from scrapesink.application.ports import Batch, RecordSink
from scrapesink.bootstrap import bootstrap
from scrapesink.config import Settings
from scrapesink.domain.declarations import load_models, parse_declaration
from scrapesink.domain.events import RawEvent
from scrapesink.domain.records import UPSERT, RecordOp
from tests.unit.fakes import MemoryModelSink, MemorySink

AT = datetime(2025, 5, 15, 10, tzinfo=UTC)
OWN = parse_declaration(
    {
        "models": {
            "items": {
                "table_name": "contract_items",
                "natural_key": ["key"],
                "fields": [
                    {"name": "key", "type": "string", "nullable": False},
                    {"name": "v", "type": "text"},
                ],
            }
        }
    }
)
DECLARATION = load_models().merged(OWN)  # beside the bundled models, as a user's file is
ITEMS = DECLARATION.model("items")


def events(*ids: str, source: str = "s") -> list[RawEvent]:
    return [RawEvent(source, i, AT, f'{{"id": "{i}"}}', AT.isoformat()) for i in ids]


@dataclass
class Subject:
    """One kind on one sink, and how to read back what the sink holds."""

    kind: RecordKind
    sink: RecordSink[Any]
    store: str

    def records(self, *ids: str, v: str = "x") -> list[Any]:
        if isinstance(self.kind, EventKind):
            return [RawEvent("s", i, AT, json.dumps({"v": v}), AT.isoformat()) for i in ids]
        return [RecordOp(UPSERT, {"key": i, "v": v}) for i in ids]

    def held(self) -> dict[str, str]:
        """What the sink holds: key -> its "v" (a key held twice fails)."""
        sink = self.sink
        if isinstance(sink, MemorySink):
            return {k[1]: json.loads(e.payload_json)["v"] for k, e in sink.events.items()}
        if isinstance(sink, MemoryModelSink):
            return {k[0]: r["v"] for k, r in sink.records.items()}
        if isinstance(sink, CsvModelSink):
            latest: dict[str, dict[str, str]] = {}
            for row in _rows(sink.root / sink.root_file):
                latest[row["key"]] = row  # each record's rows are in stamp order
            return {k: row["v"] for k, row in latest.items() if not row["deleted_at"]}
        if isinstance(sink, CsvEventSink):
            rows = [row for path in sink.files() for row in _rows(path)]
            ids = [row["source_id"] for row in rows]
            assert len(ids) == len(set(ids)), "a key is in the CSV files twice"
            return {row["source_id"]: json.loads(row["payload"])["v"] for row in rows}
        query = (
            "SELECT source_id, payload->>'v' FROM raw_events"
            if isinstance(self.kind, EventKind)
            else "SELECT key, v FROM contract_items"
        )
        with sink.database.connection() as conn:  # type: ignore[attr-defined]
            rows = conn.execute(query).fetchall()
        assert len(rows) == len({r[0] for r in rows}), "a key is stored twice"
        return dict(rows)


def _rows(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(
    params=[
        ("events", "memory"),
        ("events", "csv"),
        ("events", "postgres"),
        ("model", "memory"),
        ("model", "csv"),
        ("model", "postgres"),
    ],
    ids=lambda p: f"{p[0]}-{p[1]}",
)
def subject(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Subject]:
    family, store = request.param
    kind: RecordKind = EventKind() if family == "events" else ModelKind(ITEMS, DECLARATION)
    if store == "memory":
        fake = MemorySink() if family == "events" else MemoryModelSink("items", ["key"])
        yield Subject(kind, fake, store)
        return
    if store == "csv":
        data = tmp_path / "data"
        sink = CsvEventSink(data) if family == "events" else CsvModelSink(data, DECLARATION, ITEMS)
        yield Subject(kind, sink, store)
        return
    database_url = request.getfixturevalue("database_url")
    app = bootstrap(Settings(database_url=database_url, data_dir=tmp_path), schema="check")
    try:
        if family == "events":
            yield Subject(kind, app.events, store)
        else:
            ModelSchema(app.database).ensure(DECLARATION)
            yield Subject(kind, PostgresModelSink(app.database, ITEMS), store)
    finally:
        app.close()


def stamped(subject: Subject, *ids: str, at_us: int, v: str, journal: str = "j") -> Batch[Any]:
    """A batch of one journal, journaled at ``at_us``: its records' acceptance stamps."""
    records = subject.records(*ids, v=v)
    return Batch(journal, at_us, at_us + len(ids) - 1, records, range(at_us, at_us + len(ids)))


def test_new_records_are_stored_and_a_known_key_is_answered_for(subject: Subject):
    sink = subject.sink
    first = sink.stage(Batch("j", 1, 3, subject.records("a", "b", "c")))()
    assert first.stored == 3 and not first.duplicate_seqs and not first.unchanged_seqs
    second = sink.stage(Batch("j", 4, 5, subject.records("c", "d")))()
    assert second.stored == 1
    # the record a receipt answers "duplicate" (an event) or "unchanged" (a model's record)
    assert second.duplicate_seqs | second.unchanged_seqs == {4}
    assert subject.held() == dict.fromkeys("abcd", "x")


def test_delivered_ranges_are_recorded_with_the_data(subject: Subject):
    sink = subject.sink
    sink.stage(Batch("j", 1, 2, subject.records("a", "b")))()
    sink.stage(Batch("j", 5, 6, subject.records("e", "f")))()  # out of order is fine
    sink.stage(Batch("j", 3, 4, subject.records("c", "d")))()
    assert sink.delivered("j") == [(1, 2), (3, 4), (5, 6)]
    assert sink.delivered("other") == []


def test_skipped_ranges_count_as_handled_and_forget_drops_the_bookkeeping(subject: Subject):
    sink = subject.sink
    sink.stage(Batch("j", 1, 1, subject.records("a")))()
    sink.skip("j", 2, 2)
    assert sink.delivered("j") == [(1, 1), (2, 2)]
    sink.forget("j")
    assert sink.delivered("j") == []


def test_delivering_a_range_again_never_stores_twice(subject: Subject):
    batch = Batch("j", 1, 2, subject.records("a", "b"))
    subject.sink.stage(batch)()
    again = subject.sink.stage(batch)()
    assert again.stored == 0
    if subject.kind.stamp_rule == "oldest":  # events: each copy is a duplicate
        assert again.duplicate_seqs == {1, 2}
    assert subject.held() == {"a": "x", "b": "x"}


def test_records_outside_any_journal_are_stored_too(subject: Subject):
    outcome = subject.sink.stage(Batch("", 0, 0, subject.records("lone")))()
    assert outcome.stored == 1
    assert subject.sink.delivered("") == []


def test_repair_is_safe_at_any_time(subject: Subject):
    subject.sink.repair()
    subject.sink.stage(Batch("j", 1, 1, subject.records("a")))()
    subject.sink.repair()
    assert subject.sink.stage(Batch("j", 2, 2, subject.records("a")))().stored == 0


def test_the_kinds_stamp_rule_decides_whichever_copy_arrives_first(subject: Subject):
    sink = subject.sink
    # "second" was accepted later but reaches the sink first (a catch-up after an outage).
    sink.stage(stamped(subject, "a", "b", at_us=2_000, v="second", journal="j2"))()
    late = sink.stage(stamped(subject, "a", at_us=1_000, v="first", journal="j1"))()
    sink.stage(stamped(subject, "a", "b", at_us=3_000, v="third", journal="j3"))()
    if subject.kind.stamp_rule == "oldest":
        assert late.stored == 1  # the older copy took the key over
        assert subject.held() == {"a": "first", "b": "second"}
    else:
        assert late.stored == 0  # an older version changes nothing
        assert subject.held() == {"a": "third", "b": "third"}


def test_a_batch_holding_a_key_twice_keeps_the_copy_its_stamp_rule_says(subject: Subject):
    # A catch-up batch spans several writes: the same key may be in it twice.
    k1, other, k2 = (
        *subject.records("k", v="first"),
        *subject.records("other"),
        *subject.records("k", v="again"),
    )
    outcome = subject.sink.stage(Batch("j", 1, 3, [k1, other, k2], [10, 10, 20]))()
    winner = "first" if subject.kind.stamp_rule == "oldest" else "again"
    assert subject.held() == {"k": winner, "other": "x"}
    if subject.kind.stamp_rule == "oldest":
        # the older copy, once; the later one is answered for as a duplicate
        assert (outcome.stored, outcome.duplicate_seqs) == (2, {3})


def event_stamped(*ids: str, at_us: int, payload: str, journal: str = "j") -> Batch[RawEvent]:
    records = [RawEvent("s", i, AT, f'{{"v": "{payload}"}}', AT.isoformat()) for i in ids]
    return Batch(journal, at_us, at_us + len(ids) - 1, records, range(at_us, at_us + len(ids)))


def csv_held(sink: CsvEventSink) -> dict[str, str]:
    return Subject(EventKind(), sink, "csv").held()


def test_csv_a_reversal_never_commits_a_tail_a_crashed_writer_left(tmp_path: Path):
    sink = CsvEventSink(tmp_path / "data")
    sink.stage(event_stamped("a", "b", at_us=2_000, payload="second", journal="j2"))()
    (day,) = sink.files()
    with day.open("ab") as handle:  # a writer killed after its append, before its commit
        handle.write(b's,zz,2025-05-15T10:00:00+00:00,"{""v"": ""torn')
    big = "x" * 300_000  # beyond the csv module's default field limit
    sink.stage(event_stamped("c", at_us=2_500, payload=big, journal="j3"))()
    sink.stage(event_stamped("a", at_us=1_000, payload="first", journal="j1"))()
    assert csv_held(sink) == {"a": "first", "b": "second", "c": big}
    assert b"torn" not in day.read_bytes()


def test_csv_a_reversal_whose_held_file_was_removed_by_hand_just_stores(tmp_path: Path):
    sink = CsvEventSink(tmp_path / "data")
    sink.stage(event_stamped("a", at_us=2_000, payload="second", journal="j2"))()
    (day,) = sink.files()
    day.unlink()
    outcome = sink.stage(event_stamped("a", at_us=1_000, payload="first", journal="j1"))()
    assert outcome.stored == 1
    assert csv_held(sink) == {"a": "first"}


def test_csv_files_replaced_whole_even_when_the_process_dies_before_renaming(tmp_path: Path):
    # `verify --repair csv` commits the new lengths with the renames to make, then renames: a
    # process killed in between leaves the renames to whoever takes the lock next.
    sink = CsvEventSink(tmp_path / "data")
    sink.stage(event_stamped("a", at_us=1_000, payload="old"))()
    (day,) = sink.files()
    rebuilt = day.read_bytes() + b's,b,2025-05-15T10:00:00+00:00,"{""v"": 1}"\r\n'
    temp = day.with_name(f".{day.name}.repair")
    temp.write_bytes(rebuilt)
    with sink._state(write=True) as db:
        sink.replace_files(db, {day.relative_to(sink.root).as_posix(): temp})
    # killed here: the state says the new length, the file is the old one
    CsvEventSink(tmp_path / "data").repair()  # the next start
    assert day.read_bytes() == rebuilt and not temp.exists()

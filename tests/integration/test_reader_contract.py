"""One contract per read port: the in-memory fakes answer as PostgreSQL does (what the CLI, the
REST API and the Python API read through: ``ports.EventReader``, ``ports.ModelReader``)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from scrapesink.adapters.postgres.model_schema import ModelSchema
from scrapesink.adapters.postgres.model_sink import PostgresModelSink
from scrapesink.application.ports import (
    Batch,
    EventQuery,
    EventReader,
    Filter,
    ModelReader,
    RecordSink,
)
from scrapesink.bootstrap import bootstrap
from scrapesink.config import Settings
from scrapesink.domain.declarations import load_models, parse_declaration
from scrapesink.domain.events import RawEvent
from scrapesink.domain.records import UPSERT, RecordOp
from tests.unit.fakes import MemoryModelSink, MemorySink

AT = datetime(2025, 5, 15, 10, tzinfo=UTC)
DECLARATION = load_models().merged(
    parse_declaration(
        {
            "models": {
                "gadgets": {
                    "table_name": "gadgets",
                    "natural_key": ["sku"],
                    "fields": [
                        {"name": "sku", "type": "string", "nullable": False},
                        {"name": "name", "type": "text", "search": True},
                        {"name": "price", "type": "integer", "index": True},
                    ],
                }
            }
        }
    )
)
GADGETS = DECLARATION.model("gadgets")


def event(source: str, source_id: str, hours: int, **payload: Any) -> RawEvent:
    at = AT + timedelta(hours=hours)
    return RawEvent(source, source_id, at, json.dumps(payload), at.isoformat())


EVENTS = [
    event("shop", "1", 0, color="red"),
    event("shop", "2", 1, color="blue"),
    event("news", "1", 2, color="red"),
    event("shop", "3", 30, color="red"),  # the next day
]


@pytest.fixture(params=["memory", "postgres"])
def events(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[EventReader]:
    if request.param == "memory":
        fake = MemorySink("postgres")
        fake.stage(Batch("", 0, len(EVENTS) - 1, EVENTS))()
        yield fake
        return
    app = bootstrap(
        Settings(database_url=request.getfixturevalue("database_url"), data_dir=tmp_path),
        schema="check",
    )
    try:
        app.events.write(EVENTS)
        yield app.event_reader
    finally:
        app.close()


def test_an_event_is_got_by_its_key(events: EventReader):
    found = events.get("shop", "2")
    assert (found.source, found.source_id, found.occurred_at) == (
        "shop",
        "2",
        AT + timedelta(hours=1),
    )
    assert found.payload == {"color": "blue"} and found.processed is False
    assert events.get("shop", "nope") is None


def test_event_pages_follow_time_and_filters(events: EventReader):
    first = events.query(EventQuery(limit=2))
    assert [(e.source, e.source_id) for e in first.events] == [("shop", "1"), ("shop", "2")]
    rest = events.query(EventQuery(limit=2, after=first.next_cursor))
    assert [(e.source, e.source_id) for e in rest.events] == [("news", "1"), ("shop", "3")]
    assert rest.next_cursor is None
    shop = events.query(EventQuery(source="shop", contains={"color": "red"}))
    assert [e.source_id for e in shop.events] == ["1", "3"]
    window = events.query(EventQuery(since=AT + timedelta(hours=1), until=AT + timedelta(hours=2)))
    assert [e.source_id for e in window.events] == ["2"]


def test_marking_processed_counts_what_changed_and_stats_follow(events: EventReader):
    assert events.mark_processed([("shop", "1"), ("shop", "1"), ("nope", "x")]) == 1
    assert events.mark_processed([("shop", "1")]) == 0
    assert [e.source_id for e in events.query(EventQuery(processed=True)).events] == ["1"]
    stats = [(s.source, s.day.isoformat(), s.events, s.processed) for s in events.stats()]
    assert stats == [
        ("news", "2025-05-15", 1, 0),
        ("shop", "2025-05-15", 2, 1),
        ("shop", "2025-05-16", 1, 0),
    ]
    assert [s.source for s in events.stats(source="news")] == ["news"]


GADGET_RECORDS = [
    {"sku": "a", "name": "red kettle", "price": 30},
    {"sku": "b", "name": "blue kettle", "price": 10},
    {"sku": "c", "name": "toaster", "price": None},
    {"sku": "d", "name": "kettle descaler", "price": 20},
]


@pytest.fixture(params=["memory", "postgres"])
def models(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ModelReader]:
    batch = Batch("", 0, 3, [RecordOp(UPSERT, dict(r)) for r in GADGET_RECORDS])
    if request.param == "memory":
        fake = MemoryModelSink("gadgets", ["sku"])
        fake.stage(batch)()
        yield fake
        return
    app = bootstrap(
        Settings(database_url=request.getfixturevalue("database_url"), data_dir=tmp_path),
        schema="check",
    )
    try:
        app.use_declaration(DECLARATION)
        ModelSchema(app.database).ensure(DECLARATION)
        sink: RecordSink[Any] = PostgresModelSink(app.database, GADGETS)
        sink.stage(batch)()
        yield app.model_reader
    finally:
        app.close()


def fields(record: dict[str, Any] | None) -> dict[str, Any] | None:
    """A record's declared fields (the stores add system columns of their own)."""
    return None if record is None else {f.name: record[f.name] for f in GADGETS.fields}


def test_a_record_is_got_by_its_natural_key(models: ModelReader):
    assert fields(models.get(GADGETS, {"sku": "b"})) == GADGET_RECORDS[1]
    assert models.get(GADGETS, {"sku": "zz"}) is None


def test_record_pages_sort_with_nulls_last_and_filter(models: ModelReader):
    first = models.list(GADGETS, sort="-price", limit=2)
    assert [r["sku"] for r in first.records] == ["a", "d"]
    rest = models.list(GADGETS, sort="-price", limit=2, after=first.next_cursor)
    assert [r["sku"] for r in rest.records] == ["b", "c"] and rest.next_cursor is None
    cheap = models.list(GADGETS, filters=[Filter("price", "<", 25)], sort="price")
    assert [r["sku"] for r in cheap.records] == ["b", "d"]
    assert models.count(GADGETS, [Filter("price", ">=", 20)]) == 2
    assert models.count(GADGETS) == 4


def test_search_finds_records_by_their_search_fields(models: ModelReader):
    hits = models.search(GADGETS, "kettle")
    assert sorted(h.record["sku"] for h in hits) == ["a", "b", "d"]
    assert models.search(GADGETS, "toaster")[0].record["sku"] == "c"


def test_stats_count_the_records(models: ModelReader):
    assert models.stats(GADGETS)["records"] == 4

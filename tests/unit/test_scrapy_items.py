"""Scrapy items as records: the SCRAPESINK_ITEMS mapping, raw-event fields, conversion."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import pytest
import scrapy

from scrapesink.entrypoints.scrapy.items import EVENTS, ItemRules, Origins, content_id, plain
from scrapesink.errors import ConfigError, RecordError

AT = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


class Movie(scrapy.Item):
    url = scrapy.Field()
    actors = scrapy.Field()


class Remake(Movie):
    pass


@dataclasses.dataclass
class Actor:
    name: str


def rules(**settings: object) -> ItemRules:
    return ItemRules.from_settings(settings.get)


def test_classes_map_to_models_subclasses_too_and_other_items_are_raw_events():
    r = rules(SCRAPESINK_ITEMS={Movie: "movies", "tests.unit.test_scrapy_items.Actor": "actors"})
    assert r.target(Movie(url="u")) == ("model", "movies")
    assert r.target(Remake(url="u")) == ("model", "movies")
    assert r.target(Actor("a")) == ("model", "actors")
    assert r.target({"url": "u"}) == EVENTS
    assert r.models == ["actors", "movies"]


def test_a_callable_chooses_the_model_and_none_means_a_raw_event():
    r = rules(SCRAPESINK_ITEMS=lambda item: "movies" if "title" in item else None)
    assert r.target({"title": "Heat"}) == ("model", "movies")
    assert r.target({"page": 1}) == EVENTS
    with pytest.raises(ConfigError, match="returned 3, not a model name"):
        rules(SCRAPESINK_ITEMS=lambda item: 3).target({})


@pytest.mark.parametrize(
    ("items", "message"),
    [
        ({"nowhere.Movie": "movies"}, "cannot load 'nowhere.Movie'"),
        ({"x": "movies"}, "cannot load 'x'"),
        ({Movie: ""}, "must be a name"),
        ({"tests.unit.test_scrapy_items.AT": "movies"}, "is not a class"),
        (["movies"], "must map item classes to model names"),
    ],
)
def test_a_bad_mapping_is_one_clear_error(items: object, message: str):
    with pytest.raises(ConfigError, match=message):
        rules(SCRAPESINK_ITEMS=items)


def test_raw_event_fields_come_from_the_item_or_from_the_crawl():
    record = {"sku": "a-1", "shop": "north", "seen": "2026-01-01T00:00:00Z", "price": 3}
    default = rules().event(record, spider="shop", origin="ab12#0", scraped_at=AT)
    assert default == {
        "source": "shop",
        "source_id": "ab12#0",
        "occurred_at": AT.isoformat(),
        "payload": record,
    }
    named = rules(
        SCRAPESINK_EVENT_SOURCE_FIELD="shop",
        SCRAPESINK_EVENT_ID_FIELD="sku",
        SCRAPESINK_EVENT_TIME_FIELD="seen",
    ).event(record, spider="shop", origin="ab12#0", scraped_at=AT)
    assert (named["source"], named["source_id"], named["occurred_at"]) == (
        "north",
        "a-1",
        "2026-01-01T00:00:00Z",
    )
    with pytest.raises(RecordError, match="missing field sku"):
        rules(SCRAPESINK_EVENT_ID_FIELD="sku").event({}, spider="s", origin=None, scraped_at=AT)


def test_without_an_origin_the_id_is_a_digest_of_the_content():
    event = rules().event({"b": 1, "a": [1, 2]}, spider="s", origin=None, scraped_at=AT)
    assert event["source_id"] == content_id({"a": [1, 2], "b": 1})  # key order does not count
    assert event["source_id"] != content_id({"a": [2, 1], "b": 1})


def test_nested_items_become_plain_dicts():
    movie = Movie(url="u", actors=[Actor("Al"), {"name": "Val"}])
    assert plain(movie) == {"url": "u", "actors": [{"name": "Al"}, {"name": "Val"}]}
    with pytest.raises(RecordError, match="not an item: got int"):
        plain(3)


def test_origins_are_taken_once_and_only_for_the_same_object():
    origins = Origins(limit=2)
    a, b, c = {"n": 1}, {"n": 1}, {"n": 3}
    origins.note(a, "fp#0")
    assert origins.take(b) is None  # equal, not the same item
    assert origins.take(a) == "fp#0"
    assert origins.take(a) is None
    for item in (a, b, c):
        origins.note(item, "x")
    assert len(origins) == 2  # bounded: the oldest is forgotten


def test_raw_event_payloads_hold_only_json_types():
    from decimal import Decimal

    when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    record = {
        "at": when,
        "day": when.date(),
        "price": Decimal("19.99"),
        "exact": Decimal("0.1000000000000000000001"),
        "tags": {"b", "a"},
        "pair": (1, 2),
        "body": b"caf\xc3\xa9",
        "nested": [{"when": when}],
    }
    payload = rules().event(record, spider="s", origin="x", scraped_at=AT)["payload"]
    assert payload == {
        "at": "2026-01-02T03:04:05+00:00",
        "day": "2026-01-02",
        "price": 19.99,
        "exact": "0.1000000000000000000001",  # a float would change it
        "tags": ["a", "b"],
        "pair": [1, 2],
        "body": "café",
        "nested": [{"when": "2026-01-02T03:04:05+00:00"}],
    }
    with pytest.raises(RecordError, match="not UTF-8") as caught:
        rules().event({"x": [b"\xff"]}, spider="s", origin="x", scraped_at=AT)
    assert caught.value.path == "payload.x[0]"


def test_any_spider_name_makes_a_job_name():
    from scrapesink.domain.jobs import check_name
    from scrapesink.entrypoints.scrapy.items import job_name

    for spider in ("movies", "a/b", "../../evil", "ünï😀", ".", "x" * 300, "__init__"):
        assert check_name(job_name(spider)) == job_name(spider)
    assert job_name("movies") == "movies"
    assert job_name("a/b") == "a-b"


def test_a_mapping_module_that_fails_to_import_is_one_configuration_error(tmp_path, monkeypatch):
    (tmp_path / "boom_items.py").write_text("raise RuntimeError('no import for you')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ConfigError, match="RuntimeError: no import for you"):
        rules(SCRAPESINK_ITEMS="boom_items.Movie")


def test_event_times_and_sources_given_as_python_values():
    record = {"when": datetime(2026, 1, 2, 3, 4, 5), "day": AT.date(), "shop": None}
    r = rules(SCRAPESINK_EVENT_TIME_FIELD="when", SCRAPESINK_EVENT_SOURCE_FIELD="shop")
    event = r.event(record, spider="spider", origin="x", scraped_at=AT)
    assert event["occurred_at"] == "2026-01-02T03:04:05"  # naive: read as UTC by validation
    assert event["source"] == "spider"  # the field is there but empty: the spider's name
    day = rules(SCRAPESINK_EVENT_TIME_FIELD="day").event(
        record, spider="s", origin="x", scraped_at=AT
    )
    assert day["occurred_at"] == "2026-01-02"


def test_the_spider_middleware_is_off_with_the_pipeline():
    from scrapy.exceptions import NotConfigured
    from scrapy.utils.test import get_crawler

    from scrapesink.scrapy import ScrapesinkSpiderMiddleware

    with pytest.raises(NotConfigured):
        ScrapesinkSpiderMiddleware(get_crawler(settings_dict={"SCRAPESINK_ENABLED": False}))

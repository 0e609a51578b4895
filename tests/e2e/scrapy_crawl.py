"""Runs one crawl of the example movie site in this process (the tests run it as a subprocess:
a Twisted reactor starts once per process) and writes its stats as JSON.

    python tests/e2e/scrapy_crawl.py BASE_URL STATS.json [--kind K] [--reactor R]
        [--yielded FILE] [--acked FILE] [--spy] [-s NAME=VALUE ...]

``--kind``: the item kind movies are yielded as (scrapy, dict, dataclass, attrs, pydantic).
``--reactor``: asyncio (Scrapy's default), epoll (Twisted's own) or none (reactor-less).
``--yielded``: each item's key is appended (and flushed) just before the spider yields it.
``--acked``: a pipeline after scrapesink's appends each key it sees (fsynced): acknowledged.
``--spy``: count journal writes and database calls made on the reactor thread mid-crawl.
``-s`` values are JSON when they parse as JSON (``-s CONCURRENT_ITEMS=100``).
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import os
import sys
import threading
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "examples" / "scrapy_movies"))

import attrs  # noqa: E402
import pydantic  # noqa: E402
import scrapy  # noqa: E402
from movies_spider import Movie, MoviesSpider  # noqa: E402

# One movie and one actor shape, made in each item kind itemadapter knows besides dict and
# scrapy.Item (the fields of the example's items).
ACTOR = [("name", str), ("role", str | None), ("billing_order", int | None)]
MOVIE = [
    ("url", str),
    ("title", str | None),
    ("year", Any),
    ("rating", float | None),
    ("genres", list[str]),
    ("synopsis", str | None),
]


def _dataclasses() -> tuple[Any, Any]:
    actor = dataclasses.make_dataclass("ActorData", ACTOR)
    return dataclasses.make_dataclass("MovieData", [*MOVIE, ("actors", list[actor])]), actor


def _attrs() -> tuple[Any, Any]:
    actor = attrs.make_class("ActorAttrs", [name for name, _ in ACTOR])
    movie = attrs.make_class("MovieAttrs", [name for name, _ in MOVIE] + ["actors"])
    return movie, actor


def _pydantic() -> tuple[Any, Any]:
    actor = pydantic.create_model("ActorModel", **{n: (t, ...) for n, t in ACTOR})
    fields = {n: (t, ...) for n, t in MOVIE}
    return pydantic.create_model("MovieModel", **fields, actors=(list[actor], ...)), actor


KINDS: dict[str, tuple[Any, Any]] = {
    "dataclass": _dataclasses(),
    "attrs": _attrs(),
    "pydantic": _pydantic(),
}


def as_kind(kind: str, movie: Movie) -> Any:
    if kind == "scrapy":
        return movie
    fields = dict(movie)
    actors = [dict(a) for a in fields.pop("actors")]
    if kind == "dict":
        return {**fields, "actors": actors}
    movie_class, actor_class = KINDS[kind]
    return movie_class(**fields, actors=[actor_class(**a) for a in actors])


def is_movie(item: Any) -> str | None:
    """SCRAPESINK_ITEMS as a callable: dict movies have a title; listing pages do not."""
    return "movies" if "title" in item else None


def nasty_items(base: str) -> list[Any]:
    """What a hostile site makes a spider yield: 4 stored (cleaned), 7 rejected."""
    deep: Any = "bottom"
    for _ in range(600):
        deep = {"d": deep}
    when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    return [
        {"url": f"{base}/nul", "text": "a\x00b", "k": ["\x00"]},  # stored, NUL removed
        {"url": f"{base}/nul-key", "k\x00": 1},  # rejected: removing it could merge keys
        {"url": f"{base}/typed", "at": when, "price": Decimal("9.99"), "tags": {"x"}},
        Movie(url=f"{base}/nul-movie", title="Nul\x00Title", actors=[{"name": "A\x00B"}]),
        {"url": f"{base}/unicode", "text": "\u202eevil \U0001f600 \ud7ff", "\u00e9": "é"},
        {"url": f"{base}/deep", "deep": deep},  # rejected: too deep
        {"url": f"{base}/huge", "blob": "x" * 2_000_000},  # rejected: too large
        {"url": f"{base}/bytes", "body": b"\xff\xfe"},  # rejected: not UTF-8
        Movie(url=f"{base}/bad-actor", title="T", actors=[{"name": None}]),  # rejected
        Movie(url=f"{base}/no-title"),  # rejected: title is required
        Movie(url=f"{base}/object", title="T", genres=[object()]),  # rejected: not storable
    ]


class KindSpider(MoviesSpider):
    kind = "scrapy"
    yielded: Any = None
    gc_frozen = 0  # the most objects the cyclic collector was told to leave alone, mid-crawl
    nasty = False
    movies = 0
    break_journal_after = 0

    def start_nasty(self, response: Any) -> Any:
        yield from nasty_items(response.url.rsplit("/", 1)[0])

    def _note(self, item: Any) -> None:
        if self.yielded is not None:
            key = item["url"] if isinstance(item, dict) else getattr(item, "url", None)
            if isinstance(item, Movie):
                key = item["url"]
            self.yielded.write(f"{key}\n")
            self.yielded.flush()

    def parse(self, response: Any) -> Any:
        if self.nasty and response.url.endswith("/index.html"):
            yield from self.start_nasty(response)
        for obj in super().parse(response):
            if not isinstance(obj, scrapy.Request):
                self._note(obj)
            yield obj

    def parse_movie(self, response: Any) -> Any:
        KindSpider.gc_frozen = max(KindSpider.gc_frozen, gc.get_freeze_count())
        for movie in super().parse_movie(response):
            item = as_kind(self.kind, movie)
            self._note(movie)
            self.movies += 1
            if self.movies == self.break_journal_after:
                # the journal directory becomes a file: no new journal can be made
                journals = Path(os.environ["SCRAPESINK_DATA_DIR"]) / "journal"
                journals.rename(journals.with_name("journal.moved"))
                journals.write_text("not a directory")
            yield item


class AckLog:
    """A pipeline after scrapesink's: every item it sees was acknowledged (journaled)."""

    def __init__(self, path: str) -> None:
        self.fh = open(path, "a", encoding="utf-8")  # noqa: SIM115

    @classmethod
    def from_crawler(cls, crawler: Any) -> AckLog:
        return cls(crawler.settings["ACK_LOG"])

    def process_item(self, item: Any, spider: Any = None) -> Any:
        url = item["url"] if isinstance(item, dict | scrapy.Item) else item.url
        self.fh.write(f"{url}\n")
        self.fh.flush()
        os.fsync(self.fh.fileno())
        return item


class Spy:
    """Counts journal writes and database calls per thread while the spider is open."""

    def __init__(self) -> None:
        self.main = threading.main_thread()
        self.crawling = False
        self.counts = {"journal_main": 0, "journal_other": 0, "db_main": 0, "db_other": 0}

    def wrap(self, owner: Any, name: str, what: str) -> None:
        original = getattr(owner, name)
        spy = self

        def spied(*args: Any, **kwargs: Any) -> Any:
            if spy.crawling:
                where = "main" if threading.current_thread() is spy.main else "other"
                spy.counts[f"{what}_{where}"] += 1
            return original(*args, **kwargs)

        setattr(owner, name, spied)

    def install(self) -> None:
        import psycopg

        from scrapesink.adapters.journal import Journal
        from scrapesink.entrypoints.scrapy.pipeline import ScrapesinkPipeline

        self.wrap(Journal, "append", "journal")
        for owner in (psycopg.Connection, psycopg.Cursor):
            for name in ("execute", "executemany", "copy"):
                if hasattr(owner, name):
                    self.wrap(owner, name, "db")
        opened, closing = ScrapesinkPipeline.open_spider, ScrapesinkPipeline.close_spider
        spy = self

        def open_spider(pipeline: Any, spider: Any = None) -> None:
            opened(pipeline, spider)
            spy.crawling = True

        def close_spider(pipeline: Any, spider: Any = None) -> None:
            spy.crawling = False
            closing(pipeline, spider)

        ScrapesinkPipeline.open_spider = open_spider  # type: ignore[method-assign]
        ScrapesinkPipeline.close_spider = close_spider  # type: ignore[method-assign]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("base_url")
    parser.add_argument("stats", type=Path)
    parser.add_argument("--kind", default="scrapy", choices=["scrapy", "dict", *KINDS])
    parser.add_argument("--reactor", default="asyncio", choices=["asyncio", "epoll", "none"])
    parser.add_argument("--yielded")
    parser.add_argument("--acked")
    parser.add_argument("--spy", action="store_true")
    parser.add_argument("--nasty", action="store_true", help="yield hostile items too")
    parser.add_argument("--break-journal-after", type=int, default=0, metavar="MOVIES")
    parser.add_argument("-s", dest="settings", action="append", default=[])
    args = parser.parse_args()

    settings: dict[str, Any] = {
        "ADDONS": {"scrapesink.scrapy.ScrapesinkAddon": 0},
        "LOG_LEVEL": "INFO",
        "ROBOTSTXT_OBEY": False,
        "TELNETCONSOLE_ENABLED": False,
    }
    # the spider's own setting (custom_settings outranks the ones given here)
    if args.kind == "dict":
        KindSpider.custom_settings = {"SCRAPESINK_ITEMS": "scrapy_crawl.is_movie"}
    elif args.kind != "scrapy":
        KindSpider.custom_settings = {"SCRAPESINK_ITEMS": {KINDS[args.kind][0]: "movies"}}
    if args.acked:
        settings["ITEM_PIPELINES"] = {AckLog: 900}
        settings["ACK_LOG"] = args.acked
    for pair in args.settings:
        name, _, value = pair.partition("=")
        try:
            settings[name] = json.loads(value)
        except json.JSONDecodeError:
            settings[name] = value
    spy = Spy() if args.spy else None
    if spy is not None:
        spy.install()

    KindSpider.kind = args.kind
    KindSpider.nasty = args.nasty
    KindSpider.break_journal_after = args.break_journal_after
    if args.yielded:
        KindSpider.yielded = open(args.yielded, "a", encoding="utf-8")  # noqa: SIM115
    if args.reactor == "none":
        from scrapy.crawler import AsyncCrawlerProcess

        settings["TWISTED_REACTOR_ENABLED"] = False
        process: Any = AsyncCrawlerProcess(settings)
    else:
        from scrapy.crawler import CrawlerProcess

        if args.reactor == "epoll":
            settings["TWISTED_REACTOR"] = "twisted.internet.epollreactor.EPollReactor"
        process = CrawlerProcess(settings)
    crawler = process.create_crawler(KindSpider)
    process.crawl(crawler, base_url=args.base_url)
    process.start()
    stats = {k: v for k, v in crawler.stats.get_stats().items() if isinstance(v, int | str)}
    if spy is not None:
        stats.update({f"spy/{k}": v for k, v in spy.counts.items()})
    stats["gc/frozen_mid_crawl"] = KindSpider.gc_frozen
    stats["gc/frozen_after"] = gc.get_freeze_count()
    args.stats.write_text(json.dumps(stats, indent=1, default=str))


if __name__ == "__main__":
    main()

"""The Scrapy item pipeline: a crawl's items journaled off the reactor, stored in the background.

    process_item (reactor thread)                  journaling thread        feeder, lanes
    item ─ itemadapter → record ─ hand over ──────► group commit ─ journal ─► PostgreSQL, CSV
       ◄─────────────────── acknowledged (journaled) or rejected ◄─┘

* ``process_item`` converts the item and hands it over (never blocking); it resumes when the
  record is journaled (acknowledged: a crash after that loses nothing) or rejected with its
  reason. Items are journaled together by :class:`~scrapesink.application.group_commit.
  GroupCommit` (``SCRAPESINK_ITEM_BATCH`` records, ``SCRAPESINK_ITEM_BATCH_MS`` at most), so one
  fsync covers many items. No journal write and no database call runs on the reactor thread.
* Delivery runs in the background (``scrapesink.open(deliver="background")``): a store that is
  slow or down makes the journal grow, not memory or the crawl's wait.
* ``close_spider`` journals what is in flight, waits at most ``SCRAPESINK_CLOSE_TIMEOUT`` seconds
  for the stores, records the crawl as one job run (``partial`` when something is still pending
  or was rejected) and says what is pending and why. The next start, or ``scrapesink replay``,
  delivers it.

Works under the asyncio reactor, Twisted's default reactors and Scrapy's reactor-less mode:
an item waits on an asyncio future where an asyncio loop runs the coroutine, on a Deferred
otherwise.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from scrapy.exceptions import CloseSpider, DropItem, NotConfigured

from scrapesink.application.group_commit import GroupCommit, Outcome
from scrapesink.application.outcomes import SinkReport
from scrapesink.application.summary import WriteSummary
from scrapesink.config import Settings, get_settings
from scrapesink.domain.jobs import check_name as check_job_name
from scrapesink.entrypoints.python import Sink
from scrapesink.entrypoints.python import open as open_sink
from scrapesink.entrypoints.scrapy.delivery import DeliveryProcess
from scrapesink.entrypoints.scrapy.items import (
    EVENTS,
    ItemRules,
    Target,
    TooDeep,
    job_name,
    now,
    origins_of,
    plain,
)
from scrapesink.errors import ConfigError, RecordError, ScrapesinkError

log = logging.getLogger("scrapesink.scrapy")
STATS_EVERY = 1.0  # seconds between refreshes of the delivery stats during a crawl
ROTATE_SECONDS = 0.5  # a journal is closed for the delivery process at most this old
MAX_RESTARTS = 3  # times a delivery process that ended mid-crawl is started again
FINISH_GRACE = 30.0  # what the delivery process may take beyond the close timeout to stop


def _as_environment(value: Any) -> str:
    """A crawler setting's value as the environment would give it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return os.pathsep.join(str(v) for v in value)
    return str(value)


def _setting_names() -> dict[str, str]:
    """Crawler setting name → Settings field: ``SCRAPESINK_<FIELD>``, or a field's own alias
    (``PG_HOST``), exactly as in the environment."""
    names = {}
    for name, info in Settings.model_fields.items():
        alias = info.validation_alias
        names[alias if isinstance(alias, str) else f"SCRAPESINK_{name.upper()}"] = name
    return names


@dataclass
class PipelineOptions:
    """What the pipeline reads from the crawler's settings."""

    overrides: dict[str, Any] = field(default_factory=dict)  # Settings fields
    environment: dict[str, str] = field(default_factory=dict)  # the same, as the environment
    rules: ItemRules = field(default_factory=ItemRules)
    job: str | None = None
    drop_rejected: bool = True
    close_timeout: float = 60.0
    batch: int = 500
    batch_ms: float = 1.0
    freeze_gc: bool = True

    @classmethod
    def from_crawler_settings(cls, settings: Any, spider_name: str) -> PipelineOptions:
        """Raises ConfigError with one line naming the setting."""

        def get(name: str) -> Any:
            return settings.get(name)

        given = {
            name: (field_name, settings.get(name))
            for name, field_name in _setting_names().items()
            if settings.get(name) is not None
        }
        overrides = {field_name: value for field_name, value in given.values()}
        environment = {name: _as_environment(value) for name, (_, value) in given.items()}
        try:
            options = cls(
                overrides=overrides,
                environment=environment,
                rules=ItemRules.from_settings(get),
                job=settings.get("SCRAPESINK_JOB") or job_name(spider_name),
                drop_rejected=settings.getbool("SCRAPESINK_DROP_REJECTED", True),
                close_timeout=settings.getfloat("SCRAPESINK_CLOSE_TIMEOUT", 60.0),
                batch=settings.getint("SCRAPESINK_ITEM_BATCH", 500),
                batch_ms=settings.getfloat("SCRAPESINK_ITEM_BATCH_MS", 1.0),
                freeze_gc=settings.getbool("SCRAPESINK_FREEZE_GC", True),
            )
        except ValueError as exc:  # getbool/getint/getfloat on text that is none of those
            raise ConfigError(f"invalid scrapesink setting: {exc}") from None
        if not 1 <= options.batch <= 1000:
            raise ConfigError(f"SCRAPESINK_ITEM_BATCH must be 1..1000, got {options.batch}")
        if not 0 <= options.batch_ms <= 10_000:
            raise ConfigError(f"SCRAPESINK_ITEM_BATCH_MS must be 0..10000, got {options.batch_ms}")
        if options.close_timeout < 0:
            raise ConfigError("SCRAPESINK_CLOSE_TIMEOUT must not be negative")
        return options


class ScrapesinkPipeline:
    """``ITEM_PIPELINES = {"scrapesink.scrapy.ScrapesinkPipeline": 800}`` (or the add-on)."""

    def __init__(self, crawler: Any) -> None:
        if not crawler.settings.getbool("SCRAPESINK_ENABLED", True):
            raise NotConfigured("SCRAPESINK_ENABLED is off")
        self.crawler = crawler
        self.origins = origins_of(crawler)
        self.sink: Sink | None = None
        self.options = PipelineOptions()
        self._commit: GroupCommit[Target] | None = None
        self._run: Any = None
        self._counts = {"accepted": 0, "rejected": 0, "failed": 0}
        self._input_duplicates = 0
        self._journal_writes = 0
        self._stats_at = 0.0
        self._spider_name = ""
        self._failed_once = False
        self._closing: Any = None  # the engine closing the spider after a journal failure
        self._delivery: DeliveryProcess | None = None
        self._rotated_at = 0.0
        self._unrotated = False  # written since the last rotation
        self._models: set[str] = set()
        self._delivered_before: dict[str, SinkReport] = {}  # by delivery processes that died
        self._restarts = 0
        self._shared = False
        self._froze_gc = False

    @classmethod
    def from_crawler(cls, crawler: Any) -> ScrapesinkPipeline:
        return cls(crawler)

    # -- opening --------------------------------------------------------------------------------
    def open_spider(self, spider: Any = None) -> None:
        spider = spider or self.crawler.spider
        self._spider_name = spider.name
        try:
            self._open(spider.name)
        except (ScrapesinkError, OSError) as exc:
            message = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
            log.error("scrapesink cannot start: %s", message)
            self._release()
            raise CloseSpider(f"scrapesink: {message}") from None

    def _open(self, spider_name: str) -> None:
        self.options = options = PipelineOptions.from_crawler_settings(
            self.crawler.settings, spider_name
        )
        settings = get_settings(**options.overrides)  # a bad value is named before anything
        # A shared journal (SCRAPESINK_JOURNAL_URL): items are published, `scrapesink worker`s
        # deliver them; no delivery process of our own, no journal to rotate
        self._shared = settings.journal_url is not None
        self.sink = sink = open_sink(deliver="journal", **options.overrides)
        sink.check_data_dir()
        declared = sink.models  # SCRAPESINK_MODELS is read (and refused) now, not mid-crawl
        try:
            check_job_name(options.job or "")
        except RecordError as exc:
            raise ConfigError(f"SCRAPESINK_JOB: {exc.message}") from None
        for model in options.rules.models:
            if model not in declared:
                known = ", ".join(declared) or "none"
                raise ConfigError(
                    f"SCRAPESINK_ITEMS names the model {model!r}, which is not declared "
                    f"(declared: {known}; add yours with SCRAPESINK_MODELS)"
                )
        if not options.rules.id_field and not self.origins.active:
            log.info(
                "scrapesink: raw events are identified by their content (enable "
                "ScrapesinkSpiderMiddleware, or the add-on, for request fingerprints)"
            )
        self._run = sink.job_run(options.job or spider_name, origin="scrapy")
        self._run.__enter__()
        self._delivery = None if self._shared else self._start_delivery()
        self._rotated_at = time.monotonic()
        self._models = set(declared)
        self._commit = GroupCommit(
            self._write,
            max_records=options.batch,
            linger=options.batch_ms / 1000,
            on_written=self._written,
            dispatch=_dispatcher(),  # open_spider runs in the reactor's thread, as items do
            on_idle=self._rotate,  # a quiet crawl's last items are delivered all the same
            idle_every=ROTATE_SECONDS,
            name="scrapesink-scrapy-journal",
        )
        log.info("scrapesink: writing to %s and CSV files in %s", sink.database, sink.data_dir)
        if options.freeze_gc and gc.get_freeze_count() == 0:
            # Everything alive now (Scrapy's and scrapesink's modules, the crawler, the sink:
            # long-lived) leaves the cyclic collector's view. Opening scrapesink more than
            # doubles the objects the collector walks at each full pass (psycopg, SQLAlchemy,
            # pydantic: +64k), and a crawl allocates fast enough to run it often: measured, that
            # alone cost 2.8 s of CPU and 1.3 s of a 24 s crawl's time; frozen, nothing. Freed
            # objects are still freed (reference counts); `close_spider` unfreezes.
            # SCRAPESINK_FREEZE_GC = False leaves the collector alone.
            gc.freeze()
            self._froze_gc = True

    # -- items ----------------------------------------------------------------------------------
    async def process_item(self, item: Any, spider: Any = None) -> Any:
        commit = self._commit
        if commit is None:
            raise DropItem("scrapesink is not open")
        origin = self.origins.take(item)
        target = EVENTS
        try:
            target = self.options.rules.target(item)
            if target[1] is not None and target[1] not in self._models:
                raise ConfigError(f"SCRAPESINK_ITEMS named the model {target[1]!r}, not declared")
            record = plain(item)
            if target == EVENTS:
                record = self.options.rules.event(
                    record, spider=self._spider_name, origin=origin, scraped_at=now()
                )
        except (RecordError, ConfigError) as exc:
            outcome = Outcome("rejected", exc)
        except Exception as exc:  # a SCRAPESINK_ITEMS callable's own bug: that item alone
            outcome = Outcome("rejected", RecordError(f"{type(exc).__name__}: {exc}"))
        else:
            outcome = await _handed_over(commit, target, record)
        self._counts[outcome.status] += 1
        self._refresh_stats()
        if outcome.status == "accepted":
            return item
        what = f"{target[1]} record" if target[1] else "raw event"
        if outcome.status == "rejected":
            if isinstance(outcome.error, TooDeep):
                # Scrapy cannot log a dropped item this deep (its own RecursionError then stops
                # the items after it): passed on, as without scrapesink
                log.warning("scrapesink rejected this %s (passed on): %s", what, outcome.reason)
                return item
            if self.options.drop_rejected:
                raise DropItem(f"scrapesink rejected this {what}: {outcome.reason}")
            log.warning("scrapesink rejected this %s (passed on): %s", what, outcome.reason)
            return item
        self._give_up(outcome.reason)
        raise DropItem(f"scrapesink could not journal this {what}: {outcome.reason}")

    def _write(self, target: Target, records: list[Any]) -> WriteSummary:
        """In the journaling thread: one write of one target's records (journaled on return)."""
        assert self.sink is not None
        if time.monotonic() - self._rotated_at >= ROTATE_SECONDS:
            self._rotate()
        self._unrotated = True
        _, model = target
        if model is None:
            return self.sink.write_events(records)
        return self.sink.save(model, records)

    def _rotate(self) -> None:
        """In the journaling thread: close what was journaled for the delivery process."""
        if self.sink is not None and self._unrotated and not self._shared:
            self.sink.rotate()
            self._unrotated = False
        self._rotated_at = time.monotonic()

    def _written(self, target: Target, summary: WriteSummary) -> None:
        # only the journaling thread writes these; the reactor thread reads them
        self._input_duplicates += summary.input_duplicates
        self._journal_writes += summary.batches

    def _give_up(self, reason: str) -> None:
        """The journal cannot be written: nothing more can be acknowledged, so the crawl
        stops (once) rather than scrape items it would drop."""
        if self._failed_once:
            return
        self._failed_once = True
        log.error("scrapesink cannot journal items (%s): closing the spider", reason)
        engine = self.crawler.engine
        if not hasattr(engine, "close_spider_async"):  # Scrapy 2.13
            self._closing = engine.close_spider(self.crawler.spider, "scrapesink_failed")
            return
        closing = engine.close_spider_async(reason="scrapesink_failed")
        try:
            asyncio.get_running_loop()
        except RuntimeError:  # a Twisted reactor without asyncio
            from scrapy.utils.defer import deferred_from_coro

            self._closing = deferred_from_coro(closing)
        else:
            self._closing = asyncio.ensure_future(closing)

    # -- the delivery process -------------------------------------------------------------------
    def _start_delivery(self) -> DeliveryProcess:
        return DeliveryProcess(self.options.environment, self.options.close_timeout)

    def _watch_delivery(self) -> None:
        """A delivery process that ended mid-crawl (killed, out of memory) is started again, a
        few times at most; what it did is kept in the stats."""
        delivery = self._delivery
        if delivery is None or delivery.process.poll() is None:
            return
        code = delivery.process.returncode
        for name, report in delivery.reports().items():
            self._delivered_before.setdefault(name, SinkReport()).add(report)
        if self._restarts >= MAX_RESTARTS:
            log.error(
                "scrapesink: the delivery process ended (exit code %s); items stay journaled "
                "for `scrapesink replay`",
                code,
            )
            self._delivery = None
            return
        self._restarts += 1
        log.warning("scrapesink: the delivery process ended (exit code %s): restarted", code)
        delivery.finish(0)
        self._delivery = self._start_delivery()

    def _delivery_reports(self) -> dict[str, SinkReport]:
        reports = {name: replace(r) for name, r in self._delivered_before.items()}
        if self._delivery is not None:
            for name, report in self._delivery.reports().items():
                total = reports.setdefault(name, SinkReport())
                total.add(report)
                total.pending, total.error = report.pending, report.error
        return reports

    # -- stats ----------------------------------------------------------------------------------
    def _refresh_stats(self, *, force: bool = False) -> None:
        if self.sink is None:
            return
        moment = time.monotonic()
        if not force and moment - self._stats_at < STATS_EVERY:
            return
        self._stats_at = moment
        self._watch_delivery()
        reports = self._delivery_reports()
        self._set_stats(reports, {name: r.pending for name, r in reports.items()})

    def _set_stats(self, reports: dict[str, SinkReport], pending: dict[str, int]) -> None:
        stats = self.crawler.stats
        stats.set_value("scrapesink/journaled", self._counts["accepted"])
        stats.set_value("scrapesink/rejected", self._counts["rejected"])
        stats.set_value("scrapesink/journal_writes", self._journal_writes)
        if self._counts["failed"]:
            stats.set_value("scrapesink/failed", self._counts["failed"])
        for name, report in reports.items():
            for key in ("stored", "duplicates", "unchanged", "dead_letters"):
                stats.set_value(f"scrapesink/{name}/{key}", getattr(report, key))
            stats.set_value(f"scrapesink/{name}/pending", pending.get(name, 0))
        primary = reports.get("postgres", SinkReport())
        stats.set_value("scrapesink/stored", primary.stored)
        stats.set_value("scrapesink/duplicates", primary.duplicates + self._input_duplicates)
        stats.set_value("scrapesink/unchanged", primary.unchanged)
        stats.set_value("scrapesink/pending", max(pending.values(), default=0))
        if any(r.dead_letters for r in reports.values()):
            stats.set_value("scrapesink/dead_letters", primary.dead_letters)

    # -- closing --------------------------------------------------------------------------------
    def close_spider(self, spider: Any = None) -> None:
        sink = self.sink
        if sink is None:
            return
        try:
            if self._commit is not None:
                self._commit.close()  # every item handed over is journaled (or failed)
                self._commit = None
            if not self._shared:
                sink.rotate()  # the last journals, for the delivery process's last passes
            self._watch_delivery()
            finished, why_not = False, "the delivery process ended early"
            if self._delivery is not None:
                finished = self._delivery.finish(self.options.close_timeout + FINISH_GRACE)
                why_not = "not delivered within SCRAPESINK_CLOSE_TIMEOUT"
            reports = self._delivery_reports()
            pending = self._pending(sink)
            self._set_stats(reports, pending)
            self._finish_run(reports, pending)
            for name, count in sorted(pending.items()):
                if not count:
                    continue
                why = reports[name].error if name in reports else None
                if not why and not finished:
                    why = why_not
                log.warning(
                    "scrapesink: %d records pending for %s%s; they are in the journal and "
                    "are delivered by the next start or `scrapesink replay`",
                    count,
                    name,
                    f" ({why})" if why else "",
                )
        finally:
            self._release()

    @staticmethod
    def _pending(sink: Sink) -> dict[str, int]:
        """Per store, the journaled records it lacks (every journal of the data directory)."""
        try:
            return {name: status.pending for name, status in sink.status().sinks.items()}
        except ScrapesinkError as exc:
            log.warning("scrapesink: pending records not counted: %s", exc.message)
            return {}

    def _finish_run(self, reports: dict[str, SinkReport], pending: dict[str, int]) -> None:
        if self._run is None:
            return
        primary = reports.get("postgres", SinkReport())
        primary = SinkReport(
            stored=primary.stored,
            duplicates=primary.duplicates,
            unchanged=primary.unchanged,
            pending=max(pending.values(), default=0),
            dead_letters=primary.dead_letters,
        )
        self._run.count(
            read=sum(self._counts.values()),
            rejected=self._counts["rejected"],
            input_duplicates=self._input_duplicates,
            primary=primary,
            dead_letters=sum(r.dead_letters for r in reports.values()),
        )
        failed = ScrapesinkError(f"{self._counts['failed']} items could not be journaled")
        run, self._run = self._run, None
        if self._counts["failed"]:
            run.__exit__(type(failed), failed, None)
        else:
            run.__exit__(None, None, None)

    def _release(self) -> None:
        if self._froze_gc:
            gc.unfreeze()  # back to the oldest generation: collected as before
            self._froze_gc = False
        if self._commit is not None:
            self._commit.close()
            self._commit = None
        if self.sink is not None:
            sink, self.sink = self.sink, None
            sink.close()  # journal-only: closing delivers nothing, the journals stay
        if self._delivery is not None:
            delivery, self._delivery = self._delivery, None
            if delivery.process.poll() is None:
                delivery.finish(self.options.close_timeout + FINISH_GRACE)


def _dispatcher() -> Callable[[list[tuple[Callable[[Outcome], None], Outcome]]], None]:
    """How the journaling thread answers a round of items: one hop to the thread running this
    coroutine, then every item's callback there. An asyncio loop where one runs it (the asyncio
    reactor, reactor-less mode), the Twisted reactor otherwise."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        from twisted.internet import reactor

        def hop(answers: list[tuple[Callable[[Outcome], None], Outcome]]) -> None:
            reactor.callFromThread(_answer, answers)

        return hop

    def hop_asyncio(answers: list[tuple[Callable[[Outcome], None], Outcome]]) -> None:
        loop.call_soon_threadsafe(_answer, answers)

    return hop_asyncio


def _answer(answers: list[tuple[Callable[[Outcome], None], Outcome]]) -> None:
    for done, outcome in answers:
        done(outcome)


async def _handed_over(commit: GroupCommit[Target], target: Target, record: Any) -> Outcome:
    """Hand ``record`` to the journaling thread and wait for its outcome without blocking the
    reactor: on an asyncio future when an asyncio loop runs this coroutine, on a Deferred under
    another Twisted reactor (the callbacks run in the loop's thread: see ``_dispatcher``)."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        loop = None
    if loop is not None:
        future: asyncio.Future[Outcome] = loop.create_future()

        def resolve(outcome: Outcome) -> None:
            if not future.done():
                future.set_result(outcome)

        commit.submit(target, record, resolve)
        return await future
    from twisted.internet.defer import Deferred

    deferred: Deferred[Outcome] = Deferred()
    commit.submit(target, record, deferred.callback)
    return await deferred

"""The Python API: ``with scrapesink.open() as sink: sink.write_events(records)``."""

from __future__ import annotations

import builtins
import logging
import os
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, TypeVar

from scrapesink.application.feeder import Feeder
from scrapesink.application.models import ModelService
from scrapesink.application.operations import PipelineStatus
from scrapesink.application.outcomes import SinkReport
from scrapesink.application.ports import (
    DayStats,
    EventPage,
    EventQuery,
    Filter,
    ModelPage,
    ModelReader,
    SearchHit,
)
from scrapesink.application.replay import ReplayResult, RetryResult, retry_dead_letters
from scrapesink.application.runs import JobRun
from scrapesink.application.summary import IngestSummary, ModelSummary, WriteSummary
from scrapesink.bootstrap import App, bootstrap
from scrapesink.config import get_settings
from scrapesink.domain.events import StoredEvent
from scrapesink.errors import ConfigError, RecordError

log = logging.getLogger(__name__)

Deliver = Literal["sync", "background", "journal"]
DELIVER_MODES = ("sync", "background", "journal")
S = TypeVar("S", bound=WriteSummary)


class Sink:
    """A handle on scrapesink for one process; close it (or use ``with``). Threads may share it.

    Every write is journaled locally before the call returns, then delivered to PostgreSQL and
    the CSV files. ``deliver="sync"`` (default) waits for the sinks and reports what each did;
    ``deliver="background"`` returns once the records are journaled and delivers while the
    scraper goes on — :meth:`flush` and :meth:`close` wait and report.
    """

    def __init__(self, app: App, *, deliver: Deliver = "sync") -> None:
        if deliver not in DELIVER_MODES:
            raise ConfigError(f"deliver must be one of {DELIVER_MODES}, got {deliver!r}")
        self._app = app
        self._deliver = deliver
        self._model_service: ModelService | None = None
        self._active = threading.local()  # the job run a thread is inside, if any
        self._feeder: Feeder | None = None
        if deliver == "background":
            # Writes never wait for a store: a write returns once journaled, and the feeder
            # hands what waits in the journal to each store that can take it (a slow or
            # stopped store makes the journal grow, never the memory or the writer's wait).
            app.wait_for_lanes = False
            self._feeder = Feeder(app.open_writers)
        if deliver == "journal":
            # This process only journals; another delivers the journals it closes (see
            # rotate): the Scrapy pipeline's crawl keeps its GIL and its CPU.
            app.delivers = False
            self.startup = ReplayResult()
        else:
            self.startup = app.start_writing()

    @contextmanager
    def run(self, job: str, *, source: str | None = None) -> Iterator[JobRun]:
        """Record the writes of this block (in this thread) as one run of ``job``.

        ``with sink.run("daily-shop") as run: sink.write_events(...)``. The job is made when
        new (kind ``ingest``); a disabled job raises Conflict. The run ends ``succeeded``,
        ``partial`` (rejected or pending records) or ``failed`` (the block raised);
        ``run.run`` is the recorded run (``scrapesink jobs runs``).
        """
        outer = getattr(self._active, "run", None)
        with self._app.job_run(job, origin="python", source=source) as job_run:
            self._active.run = job_run
            try:
                yield job_run
            finally:
                self._active.run = outer

    def job_run(self, job: str, *, origin: str = "python", source: str | None = None) -> JobRun:
        """A run of ``job`` to enter and leave yourself, counted with ``run.count(...)``, for a
        writer that cannot wrap its writes in :meth:`run` (the Scrapy pipeline)."""
        return self._app.job_run(job, origin=origin, source=source, bind_logs=False)

    @property
    def models(self) -> builtins.list[str]:
        """The names of the declared models (the bundled ones and ``SCRAPESINK_MODELS``)."""
        return sorted(self._app.declaration.models)

    @property
    def data_dir(self) -> Path:
        """The data directory (CSV files, journals, the embedded database)."""
        return self._app.settings.data_dir

    def rotate(self) -> None:
        """``deliver="journal"``: close the journals written so far, so that a process
        delivering them (``scrapesink replay``, the Scrapy pipeline's deliverer) can; the next
        write starts new ones."""
        self._app.rotate()

    def status(self) -> PipelineStatus:
        """What waits where: per store, the journaled records it lacks (every journal of the
        data directory), and the dead letters (as ``scrapesink status``)."""
        return self._app.status()

    def check_data_dir(self) -> None:
        """Raise ConfigError, in one line, when the journal directory cannot be written (for a
        writer that must fail at its start rather than at its first record)."""
        directory = self._app.paths.journals
        probe = directory / f".probe-{os.getpid()}"
        try:
            directory.mkdir(parents=True, exist_ok=True)
            fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.write(fd, b"x")
                os.fsync(fd)
            finally:
                os.close(fd)
            probe.unlink()
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise ConfigError(
                f"the data directory cannot be written: {directory}: {reason}"
            ) from None

    def drain(self, timeout: float) -> bool:
        """Wait at most ``timeout`` seconds until every store has what was journaled so far,
        or has failed (its records left pending); False when the time ran out first. In sync
        mode every write has waited already."""
        if self._feeder is None:
            return True
        return self._feeder.wait_idle(timeout)

    @property
    def _settles(self) -> bool:
        return self._deliver == "sync"

    def _counted(self, summary: S) -> S:
        job_run = getattr(self._active, "run", None)
        if job_run is not None:
            job_run.add(summary)
        return summary

    @property
    def deliver(self) -> Deliver:
        """``"sync"`` or ``"background"``."""
        return self._deliver

    @property
    def database(self) -> str:
        """Which database this sink writes to (embedded or a URL without password)."""
        return self._app.database_label

    def write_events(
        self,
        records: Iterable[Mapping[str, Any] | Any],
        *,
        source: str | None = None,
        id_field: str = "id",
        time_field: str = "timestamp",
    ) -> IngestSummary:
        """Validate and store raw events; re-sending a record is a counted duplicate.

        Args:
            records: canonical ``{source, source_id, occurred_at, payload}`` dicts, or flat scraped
                objects whose id and time fields are ``id_field`` and ``time_field``.
            source: the source of flat records (and of canonical ones that lack it).
            id_field: the id field of flat records.
            time_field: the time field of flat records.

        Returns:
            The summary: read, inserted, duplicates, rejected (with each reason and ``[index]``),
            and per sink (``summary.sinks["postgres"]``, ``["csv"]``) what was stored, found
            duplicate, left pending or sent to dead letters. In background mode the per-sink
            figures come from :meth:`flush`.
        """
        rules = self._app.rules(id_field=id_field, time_field=time_field, default_source=source)
        service = self._app.ingest_service(rules)
        return self._counted(service.ingest(_numbered(records), settle=self._settles))

    # -- models ---------------------------------------------------------------------------------
    def _models(self) -> ModelService:
        if self._model_service is None:
            self._model_service = self._app.models()
        return self._model_service

    def save(self, model: str, records: Iterable[Mapping[str, Any]]) -> ModelSummary:
        """Upsert model records (``"movies"``, ``"workflows"``, your own) on their natural key.

        A new or changed record is stored in PostgreSQL and appended to the model's CSV files;
        an unchanged one is counted (``summary.unchanged``) and writes nothing. Children and
        links are replaced to match the record; in one call the last record of a key wins.
        Invalid records are rejected with their JSON path (``summary.rejections``).
        """
        return self._counted(self._models().save(model, _numbered(records), settle=self._settles))

    def get(self, model: str, key: Mapping[str, Any] | Any) -> dict[str, Any] | None:
        """One record with its children and links, by natural key (a dict, or the bare value
        of a one-field key); None when absent."""
        return self._models().get(model, key)

    def list(
        self,
        model: str,
        *,
        where: Sequence[Filter | tuple[str, str, Any]] = (),
        sort: str | None = None,
        limit: int = 50,
        after: str | None = None,
        children: bool = False,
    ) -> ModelPage:
        """A page of records: ``where=[("quality_score", ">=", 0.8)]`` (operators
        ``= != < <= > >=``, and ``~`` for JSON containment), ``sort="-quality_score"`` (nulls
        last; ties by id in the same direction); pass ``page.next_cursor`` as ``after`` for the
        next page. Records carry their own fields; ``children=True`` gives whole records, with
        children and links, as :meth:`get` does. Declare ``"index": true`` on a field you sort
        by: a page is then read in index order, whatever the table's size."""
        if not 1 <= limit <= 10_000:
            raise RecordError(f"limit must be between 1 and 10000, got {limit}", path="limit")
        service = self._models()
        filters = [f if isinstance(f, Filter) else Filter(*f) for f in where]
        return self._repository().list(
            service.model(model),
            filters=filters,
            sort=sort,
            limit=limit,
            after=after,
            children=children,
        )

    def search(self, model: str, text: str, *, limit: int = 20) -> builtins.list[SearchHit]:
        """Records ranked by full-text relevance over the model's search fields."""
        return self._repository().search(self._models().model(model), text, limit=limit)

    def update(
        self, model: str, key: Mapping[str, Any] | Any, changes: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Change some fields of a record (a child or link list given replaces the old one);
        returns the record as stored. Raises NotFound when there is no such record."""
        return self._models().update(model, key, changes)

    def delete(self, model: str, *keys: Mapping[str, Any] | Any) -> ModelSummary:
        """Delete records by natural key, with their children and links (the CSV history
        keeps them, marked deleted, until ``compact``)."""
        return self._models().delete(model, list(keys))

    def stats(self, model: str) -> dict[str, Any]:
        """Counts, rates of boolean fields (workflow layer success), averages and ranges."""
        return self._repository().stats(self._models().model(model))

    def compact(self, model: str | None = None) -> dict[str, tuple[int, int]]:
        """Rewrite model CSV files latest-only, atomically (deleted records dropped); returns
        per file the rows before and after. Pending deliveries are flushed first."""
        self.flush()
        return self._app.operations.compact(model)

    def _repository(self) -> ModelReader:
        self._models()  # the declaration is applied before the first read
        return self._app.model_reader

    def flush(self) -> dict[str, SinkReport]:
        """Wait until every journaled record is delivered (or pending); totals per sink."""
        reports: dict[str, SinkReport] = {}
        for writer in self._app.writers():
            for name, report in writer.settle().items():
                reports.setdefault(name, SinkReport()).add(report)
        return reports

    def retry_dead_letters(self, sink: str | None = None) -> RetryResult:
        """Send dead letters (of one sink, or all) to their sink again; stored ones are removed."""
        store = self._app.dead_letters
        return retry_dead_letters(
            store.list(sink=sink, limit=1_000_000), self._app.sinks_for, store
        )

    def replay(self) -> ReplayResult:
        """Deliver what journals left by earlier processes still hold (done at open, too)."""
        return self._app.replay()

    def get_event(self, source: str, source_id: str) -> StoredEvent | None:
        """The stored event for a key, or None."""
        return self._app.event_reader.get(source, source_id)

    def list_events(
        self,
        *,
        source: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        processed: bool | None = None,
        contains: dict[str, Any] | None = None,
        limit: int = 100,
        after: str | None = None,
    ) -> EventPage:
        """One page of events by (occurred_at, id); pass ``page.next_cursor`` as ``after``."""
        if not 1 <= limit <= 10_000:
            raise RecordError(f"limit must be between 1 and 10000, got {limit}", path="limit")
        query = EventQuery(source, since, until, processed, contains, limit, after)
        return self._app.event_reader.query(query)

    def event_stats(
        self,
        *,
        source: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> builtins.list[DayStats]:
        """Event counts per source and UTC day."""
        return self._app.event_reader.stats(source=source, since=since, until=until)

    def mark_processed(self, keys: Sequence[tuple[str, str]], processed: bool = True) -> int:
        """Set (or clear) the processed flag of events; returns how many changed."""
        return self._app.event_reader.mark_processed(keys, processed)

    def close(self, *, timeout: float | None = None) -> dict[str, SinkReport]:
        """Deliver what can be, then release; returns the totals per sink for this sink's life.

        Anything a sink could not take stays in the local journal and is delivered by the next
        ``scrapesink replay`` or the next open.

        Args:
            timeout: in background mode, wait at most this many seconds for the stores to
                take what is journaled (None: until each store has it or has failed); what
                is left is reported pending. A delivery already in flight is finished first
                (a store that fails it is retried for up to ``SCRAPESINK_RETRY_SECONDS``).
        """
        if self._feeder is None:
            return self._app.close()
        done = timeout is None or self._feeder.wait_idle(timeout)
        self._feeder.stop()
        return self._app.close(catch_up=done)

    def pending(self) -> dict[str, int]:
        """Per store, how many records this sink journaled are not delivered yet (in flight
        or waiting in the journal)."""
        totals: dict[str, int] = {}
        for writer in self._app.open_writers():
            for name, count in writer.undelivered().items():
                totals[name] = totals.get(name, 0) + count
        return totals

    def reports(self) -> dict[str, SinkReport]:
        """Per store, what it did so far with this sink's records (without waiting)."""
        reports: dict[str, SinkReport] = {}
        for writer in self._app.open_writers():
            for name, report in writer.reports().items():
                reports.setdefault(name, SinkReport()).add(report)
        return reports

    def __enter__(self) -> Sink:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _numbered(records: Iterable[Any]) -> Iterator[tuple[str, Any]]:
    """Records as the write loop takes them, each named by its index (``[3]``) in errors."""
    return ((f"[{i}]", record) for i, record in enumerate(records))


def open(deliver: Deliver = "sync", **settings: Any) -> Sink:
    """Open a sink. Keyword arguments override settings (``database_url=``, ``data_dir=``...).

    With no database configured the embedded PostgreSQL starts in ``<data_dir>/pgdata`` and the
    schema is migrated by itself; an external server must be at head (``scrapesink db upgrade``).
    An external server that does not answer is not an error: records are journaled (and
    mirrored to CSV) and reach PostgreSQL when it is back — ``summary.pending`` says how many
    wait. Journals left by earlier processes are delivered first.

    Args:
        deliver: ``"sync"`` waits for PostgreSQL and CSV on every write; ``"background"``
            returns once records are journaled (for long-running scrapers; flushed on close);
            ``"journal"`` only journals: another process delivers the journals this one
            closes (:meth:`Sink.rotate`, and closing), e.g. ``scrapesink replay``.
    """
    if deliver not in DELIVER_MODES:
        raise ConfigError(f"deliver must be one of {DELIVER_MODES}, got {deliver!r}")
    app = bootstrap(get_settings(**settings), offline_ok=True)
    if app.offline:
        log.warning("%s; records are journaled and delivered when it is back", app.offline)
    try:
        return Sink(app, deliver=deliver)
    except BaseException:
        app.close()
        raise

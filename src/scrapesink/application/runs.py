"""Recording a job run around ingests: ``with JobRun(store, "daily-shop", origin="cli") as run:``.

The run is *running* while the block runs and ends *succeeded* (everything stored), *partial*
(records rejected, pending or sent to dead letters) or *failed* (the block raised). Counts add
up every write made inside it. Records matter more than their metadata: when PostgreSQL cannot
take the run, the ingest goes on (journaled as always) and a warning says the run is not
recorded.
"""

from __future__ import annotations

import contextvars
import logging
import threading
from collections.abc import Mapping
from types import TracebackType
from typing import Any, Protocol

import structlog

from scrapesink.application.outcomes import SinkReport
from scrapesink.application.summary import WriteSummary
from scrapesink.domain.jobs import Job, Run, RunCounts
from scrapesink.errors import Conflict, NotFound, RecordError, StorageError
from scrapesink.logs import get_logger

log = logging.getLogger(__name__)
slog = get_logger(__name__)


class RunStore(Protocol):
    def ensure(self, name: str, *, source: str | None = None, kind: str = "ingest") -> Job: ...

    def start(self, job: Job, origin: str) -> Run: ...

    def finish(
        self,
        run_id: int,
        status: str,
        counts: RunCounts,
        error_summary: str | None = None,
        *,
        source: str | None = None,
    ) -> Run: ...


class NoRun:
    """Stands in for a JobRun when no job is named: counts nothing."""

    def add(self, summary: WriteSummary) -> None:
        pass


class JobRun:
    def __init__(
        self,
        store: RunStore,
        job: str,
        *,
        origin: str,
        source: str | None = None,
        bind_logs: bool = True,
    ) -> None:
        self.store = store
        # The run's job and id on every log line of the block (structlog's context variables);
        # off for a run entered and left in different contexts (a crawl's open and close).
        self.bind_logs = bind_logs
        self.job_name = job
        self.origin = origin
        self.source = source
        self.run: Run | None = None  # the recorded run (None when it could not be recorded)
        self._lock = threading.Lock()
        self._counts = {k: 0 for k in ("read", "stored", "duplicate", "unchanged", "rejected")}
        self._pending = 0
        self._dead = 0
        self._tokens: Mapping[str, contextvars.Token[Any]] = {}

    @property
    def counts(self) -> RunCounts:
        with self._lock:
            return RunCounts(**self._counts, pending=self._pending)

    def add(self, summary: WriteSummary) -> None:
        """Count one write's summary into the run."""
        self.count(
            read=summary.read,
            rejected=summary.rejected,
            input_duplicates=summary.input_duplicates,
            primary=summary.primary_report,
            dead_letters=summary.dead_letters,
        )
        if self.source is None and summary.sources:  # raw events name their sources
            self.source = sorted(summary.sources)[0]

    def count(
        self,
        *,
        read: int,
        rejected: int,
        input_duplicates: int,
        primary: SinkReport,
        dead_letters: int,
    ) -> None:
        """Count records into the run: what was read and rejected, and what the primary
        store (PostgreSQL) did with the rest (a writer that delivers in the background counts
        its totals once, at the end)."""
        with self._lock:
            self._counts["read"] += read
            self._counts["stored"] += primary.stored
            self._counts["duplicate"] += input_duplicates + primary.duplicates
            self._counts["unchanged"] += primary.unchanged
            self._counts["rejected"] += rejected
            self._pending += primary.pending
            self._dead += dead_letters

    def __enter__(self) -> JobRun:
        # Disabled or unknown-kind jobs are refused (Conflict): the caller asked for this job.
        try:
            job = self.store.ensure(self.job_name, source=self.source)
            self.run = self.store.start(job, self.origin)
        except (NotFound, Conflict, RecordError):
            raise
        except StorageError as exc:
            log.warning("run of job %s not recorded: %s", self.job_name, exc.message)
            return self
        if self.bind_logs:
            self._tokens = structlog.contextvars.bind_contextvars(
                job=self.job_name, run=self.run.id
            )
        slog.info("run started", origin=self.origin)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if self.run is None:
                return
            counts = self.counts
            if exc is not None:
                status = "failed"
                error = f"{type(exc).__name__}: {getattr(exc, 'message', None) or exc}"[:2000]
            elif counts.rejected or counts.pending or self._dead:
                status = "partial"
                error = _partial(counts, self._dead)
            else:
                status, error = "succeeded", None
            try:
                self.run = self.store.finish(self.run.id, status, counts, error, source=self.source)
            except StorageError as storage:
                log.warning("run %s not finished in PostgreSQL: %s", self.run.id, storage.message)
                return
            slog.info(
                "run finished",
                status=status,
                duration_seconds=self.run.duration_seconds,
                **{f"records_{k}": v for k, v in self.run.as_dict()["records"].items()},
            )
        finally:
            if self._tokens:
                structlog.contextvars.reset_contextvars(**self._tokens)


def _partial(counts: RunCounts, dead: int) -> str:
    parts = []
    if counts.rejected:
        parts.append(f"{counts.rejected} rejected")
    if counts.pending:
        parts.append(f"{counts.pending} pending (journaled, delivered by replay)")
    if dead:
        parts.append(f"{dead} sent to dead letters")
    return ", ".join(parts)

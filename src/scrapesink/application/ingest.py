"""The ingest service: validate each record, batch, deliver to the event store, count everything."""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from scrapesink.application.ports import EventStore, WriteOutcome
from scrapesink.domain.events import EventRules, RawEvent, validate_event
from scrapesink.errors import InputError, RecordError

MAX_KEPT_REJECTIONS = 1000
log = logging.getLogger(__name__)


@dataclass
class IngestSummary:
    """What one ingest did. ``rejections`` keeps the first 1000 errors; ``rejected`` counts all."""

    read: int = 0
    inserted: int = 0
    duplicates: int = 0
    rejected: int = 0
    naive_timestamps: int = 0
    nul_cleaned: int = 0
    batches: int = 0
    rejections: list[RecordError] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.rejected == 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "read": self.read,
            "inserted": self.inserted,
            "duplicates": self.duplicates,
            "rejected": self.rejected,
            "naive_timestamps": self.naive_timestamps,
            "nul_cleaned": self.nul_cleaned,
        }


# What readers yield: (location, value), (location, value, its JSON text), or an error.
Record = tuple[str | None, Any] | tuple[str | None, Any, str | None] | RecordError
ProgressHook = Callable[[IngestSummary], None]
RejectHook = Callable[[RecordError], None]


class IngestService:
    """Validate → batch → store. Knows nothing of where records come from or where they go."""

    def __init__(self, store: EventStore, rules: EventRules, *, batch_size: int = 5000) -> None:
        self.store = store
        self.rules = rules
        self.batch_size = batch_size

    def ingest(
        self,
        records: Iterable[Record],
        *,
        on_reject: RejectHook | None = None,
        on_batch: ProgressHook | None = None,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> IngestSummary:
        """Ingest ``records``: ``(location, value)`` pairs or errors from a reader.

        Batches are pipelined: while one is being written, the next is read and validated (the
        store's thread mostly waits on the database, so two cores are both busy). At most two
        batches are in memory. Records read before a fatal input error are still stored before
        the error propagates; a storage error stops the ingest at once.
        """
        summary = IngestSummary()
        batch: dict[tuple[str, str], RawEvent] = {}
        self.store.prepare()

        def reject(error: RecordError) -> None:
            summary.rejected += 1
            if len(summary.rejections) < MAX_KEPT_REJECTIONS:
                summary.rejections.append(error)
            if on_reject is not None:
                on_reject(error)

        with _Writer(self.store, summary, on_batch) as writer:
            in_flight = writer.keys  # read-only here; the writer adds and removes batches' keys
            reference = now()
            # Small batches first, doubling up to batch_size: the database starts working
            # while the first big batch would still be being read.
            limit = min(self.batch_size, 500)
            try:
                for item in records:
                    summary.read += 1
                    if isinstance(item, RecordError):
                        reject(item)
                        continue
                    try:
                        checked = validate_event(
                            item[1],
                            self.rules,
                            now=reference,
                            location=item[0],
                            raw=item[2] if len(item) == 3 else None,
                        )
                    except RecordError as error:
                        reject(error)
                        continue
                    cleaning = checked.cleaning
                    if cleaning.naive_timestamp or cleaning.nul_removed:
                        summary.naive_timestamps += cleaning.naive_timestamp
                        summary.nul_cleaned += cleaning.nul_removed
                    event = checked.event
                    key = (event.source, event.source_id)
                    if key in batch or key in in_flight:
                        # the same key again before its first copy is committed: first one wins
                        summary.duplicates += 1
                        continue
                    batch[key] = event
                    if len(batch) >= limit:
                        writer.submit(batch)
                        batch = {}
                        limit = min(2 * limit, self.batch_size)
                        reference = now()
            except InputError:
                writer.submit(batch)  # what was read before the input broke is good: keep it
                writer.drain()
                raise
            writer.submit(batch)
            writer.drain()
        log.info("ingest done: %s", ", ".join(f"{k} {v}" for k, v in summary.as_dict().items()))
        return summary


class _Writer:
    """Writes batches in background threads (one connection each) while the caller reads on.

    Up to ``depth`` batches are in flight at once, so the database works on one batch while the
    next is being claimed and the caller parses a third. Batches in flight never share a key:
    the caller looks in :attr:`keys` and counts such a record as a duplicate, which keeps "first
    write wins" in input order.
    """

    def __init__(
        self,
        store: EventStore,
        summary: IngestSummary,
        on_batch: ProgressHook | None,
        depth: int = 2,
    ) -> None:
        self._store = store
        self._summary = summary
        self._on_batch = on_batch
        self._depth = depth
        self._executor = ThreadPoolExecutor(
            max_workers=depth, thread_name_prefix="scrapesink-write"
        )
        self._pending: deque[tuple[Future[WriteOutcome], dict[tuple[str, str], RawEvent]]] = deque()
        self.keys: set[tuple[str, str]] = set()  # of the batches in flight

    def submit(self, batch: dict[tuple[str, str], RawEvent]) -> None:
        """Hand over a batch (keyed by its events' keys); the caller must not reuse the dict."""
        if not batch:
            return
        while len(self._pending) >= self._depth:
            self._finish_oldest()
        self.keys.update(batch)
        store_it = self._store.stage(list(batch.values()))  # encoding happens here, in our thread
        future = self._executor.submit(store_it)
        self._pending.append((future, batch))

    def drain(self) -> None:
        """Wait for every batch in flight; a storage error is raised here."""
        while self._pending:
            self._finish_oldest()

    def _finish_oldest(self) -> None:
        future, batch = self._pending.popleft()
        try:
            outcome = future.result()
        finally:
            self.keys.difference_update(batch)
        self._summary.inserted += outcome.stored
        self._summary.duplicates += len(outcome.duplicates)
        self._summary.batches += 1
        if self._on_batch is not None:
            self._on_batch(self._summary)

    def __enter__(self) -> _Writer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        # On an error the batches in flight still finish (they cannot be cancelled halfway).
        self._executor.shutdown(wait=True)

"""The ingest service: validate each record, batch, journal, deliver to every sink, count."""

from __future__ import annotations

import gc
import logging
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from scrapesink.application import delivery
from scrapesink.application.delivery import DUPLICATE, PENDING, Receipt, SinkReport
from scrapesink.application.durable import DurableWriter
from scrapesink.domain.events import EventRules, RawEvent, validate_event
from scrapesink.errors import InputError, RecordError
from scrapesink.logs import get_logger

MAX_KEPT_REJECTIONS = 1000
log = logging.getLogger(__name__)
slog = get_logger(__name__)
RejectHook = Callable[[RecordError], None]
REJECTED = "rejected"


@dataclass(frozen=True, slots=True)
class RecordResult:
    """What became of one input record: ``stored``, ``duplicate``, ``unchanged``, ``pending``
    (journaled, not yet in PostgreSQL), ``dead_letter`` or ``rejected`` (with path and reason)."""

    status: str
    location: str | None = None
    path: str | None = None
    reason: str | None = None

    def as_dict(self) -> dict[str, Any]:
        result: dict[str, Any] = {"status": self.status}
        if self.status == REJECTED:
            result.update(path=self.path, reason=self.reason)
        return result


class Tracker:
    """Per-record results of one write, in input order (what an HTTP client is answered).

    A record that reached the journal is answered with what the primary sink did with it, read
    from the write's :class:`Receipt` at the end.
    """

    def __init__(self) -> None:
        self.results: list[RecordResult] = []
        self._journaled: list[tuple[int, int]] = []  # (result index, journal seq)

    def add(self, status: str, location: str | None = None) -> int:
        self.results.append(RecordResult(status, location))
        return len(self.results) - 1

    def rejected(self, error: RecordError) -> None:
        self.results.append(
            RecordResult(REJECTED, error.location, error.path or None, error.message)
        )

    def superseded(self, index: int) -> None:
        self.results[index] = RecordResult(DUPLICATE, self.results[index].location)

    def journaled(self, indexes: Iterable[int], first: int) -> None:
        self._journaled.extend((index, first + i) for i, index in enumerate(indexes))

    def resolve(self, receipt: Receipt, sink: str) -> list[RecordResult]:
        for index, seq in self._journaled:
            self.results[index] = RecordResult(
                receipt.status(sink, seq), self.results[index].location
            )
        return self.results


@dataclass(kw_only=True)
class WriteSummary:
    """What one write of many records did (raw events or model records).

    ``rejections`` keeps the first 1000 errors; ``rejected`` counts all. ``sinks`` says per sink
    what was stored, found duplicate or unchanged, left pending (still in the journal, delivered
    by ``replay``) or sent to dead letters; ``primary`` (PostgreSQL) is the one counted as
    stored.
    """

    read: int = 0
    accepted: int = 0
    input_duplicates: int = 0
    rejected: int = 0
    nul_cleaned: int = 0
    rejections: list[RecordError] = field(default_factory=list)
    sinks: dict[str, SinkReport] = field(default_factory=dict)
    primary: str = "postgres"
    #: one result per input record, in order, when the write was tracked (``track=True``)
    results: list[RecordResult] | None = None

    @property
    def primary_report(self) -> SinkReport:
        return self.sinks.get(self.primary) or SinkReport()

    @property
    def pending(self) -> int:
        return sum(report.pending for report in self.sinks.values())

    @property
    def dead_letters(self) -> int:
        return sum(report.dead_letters for report in self.sinks.values())

    @property
    def ok(self) -> bool:
        return self.rejected == 0

    def reject(
        self, error: RecordError, hook: RejectHook | None, tracker: Tracker | None = None
    ) -> None:
        self.rejected += 1
        if len(self.rejections) < MAX_KEPT_REJECTIONS:
            self.rejections.append(error)
        if tracker is not None:
            tracker.rejected(error)
        if hook is not None:
            hook(error)

    def finish(
        self,
        writer: DurableWriter,
        before: dict[str, SinkReport],
        settle: bool,
        receipt: Receipt | None,
        tracker: Tracker | None,
        journaled: Sequence[tuple[int, int]] = (),
    ) -> None:
        """Wait for the sinks as asked and fill in what each did.

        Untracked, the counts are what the sinks did meanwhile (records of earlier writes that
        a sink caught up on included), but ``pending`` is exact: how many of this write's own
        ``journaled`` ranges each sink still lacks."""
        if receipt is not None and tracker is not None:
            self.sinks = writer.wait(receipt)
            self.results = tracker.resolve(receipt, self.primary)
            return
        after = writer.settle() if settle else writer.reports()
        pending = writer.pending_in(journaled)
        self.sinks = {
            name: replace(after[name].since(before.get(name)), pending=pending.get(name, 0))
            for name in after
        }


@dataclass(kw_only=True)
class IngestSummary(WriteSummary):
    """What one raw-event ingest did. ``inserted`` is what PostgreSQL stored; ``duplicates``
    adds the copies dropped before the journal (the same key again in the same input)."""

    naive_timestamps: int = 0
    batches: int = 0
    sources: set[str] = field(default_factory=set)  # of the accepted events

    @property
    def inserted(self) -> int:
        return self.primary_report.stored

    @property
    def duplicates(self) -> int:
        return self.input_duplicates + self.primary_report.duplicates

    def as_dict(self) -> dict[str, Any]:
        return {
            "read": self.read,
            "inserted": self.inserted,
            "duplicates": self.duplicates,
            "rejected": self.rejected,
            "pending": self.pending,
            "dead_letters": self.dead_letters,
            "naive_timestamps": self.naive_timestamps,
            "nul_cleaned": self.nul_cleaned,
            "sinks": {name: report.as_dict() for name, report in self.sinks.items()},
        }


# What readers yield: (location, value), (location, value, its JSON text), or an error.
Record = tuple[str | None, Any] | tuple[str | None, Any, str | None] | RecordError
ProgressHook = Callable[["IngestSummary"], None]


class IngestService:
    """Validate → batch → journal (acknowledged) → every sink. Knows no store by name."""

    def __init__(self, writer: DurableWriter, rules: EventRules, *, batch_size: int = 5000) -> None:
        self.writer = writer
        self.rules = rules
        self.batch_size = batch_size

    def ingest(
        self,
        records: Iterable[Record],
        *,
        on_reject: RejectHook | None = None,
        on_batch: ProgressHook | None = None,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        settle: bool = True,
        track: bool = False,
    ) -> IngestSummary:
        """Ingest ``records``: ``(location, value)`` pairs or errors from a reader.

        Each batch is journaled (that is the acknowledgement) and handed to every sink, whose
        lanes store it in the background while the next batch is read. With ``settle`` the call
        waits for the sinks and reports what each did; without, it returns once everything is
        journaled (background delivery). Records read before a fatal input error are kept.

        ``track`` answers for these records alone, one result each (``summary.results``), and
        waits for the sinks to answer for them rather than for everything in flight: what a
        server needs whose concurrent requests share one writer.
        """
        with _fewer_gc_passes():
            if not track:
                return self._ingest(records, on_reject, on_batch, now, settle, None)
            with self.writer.receipt() as receipt:
                return self._ingest(records, on_reject, on_batch, now, settle, receipt)

    def _ingest(
        self,
        records: Iterable[Record],
        on_reject: RejectHook | None,
        on_batch: ProgressHook | None,
        now: Callable[[], datetime],
        settle: bool,
        receipt: Receipt | None,
    ) -> IngestSummary:
        summary = IngestSummary()
        tracker = Tracker() if receipt is not None else None
        before = self.writer.reports()
        batch: dict[tuple[str, str], RawEvent] = {}
        slots: list[int] = []  # the tracker's result index of each record in ``batch``
        recent: deque[dict[tuple[str, str], RawEvent]] = deque(maxlen=2)

        journaled: list[tuple[int, int]] = []

        def flush() -> None:
            if batch:
                first, last = self.writer.write(list(batch.values()), receipt)
                journaled.append((first, last))
                if tracker is not None:
                    tracker.journaled(slots, first)
                summary.accepted += len(batch)
                summary.batches += 1
                recent.append(batch)
                if on_batch is not None:
                    on_batch(summary)

        reference = now()
        # Small batches first, doubling up to batch_size: the sinks start working while the
        # first big batch would still be being read.
        limit = min(self.batch_size, 500)
        try:
            for item in records:
                summary.read += 1
                if isinstance(item, RecordError):
                    summary.reject(item, on_reject, tracker)
                    self._log_rejected(item, None)
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
                    summary.reject(error, on_reject, tracker)
                    self._log_rejected(error, item[1])
                    continue
                cleaning = checked.cleaning
                if cleaning.naive_timestamp or cleaning.nul_removed:
                    summary.naive_timestamps += cleaning.naive_timestamp
                    summary.nul_cleaned += cleaning.nul_removed
                event = checked.event
                key = (event.source, event.source_id)
                # The same key again while its first copy may still be in flight: the first
                # one wins, in input order, whichever batch commits first.
                if key in batch or (recent and (key in recent[-1] or key in recent[0])):
                    summary.input_duplicates += 1
                    if tracker is not None:
                        tracker.add(DUPLICATE, item[0])
                    continue
                batch[key] = event
                summary.sources.add(event.source)
                if tracker is not None:
                    slots.append(tracker.add(PENDING, item[0]))
                if len(batch) >= limit:
                    flush()
                    batch, slots = {}, []
                    limit = min(2 * limit, self.batch_size)
                    reference = now()
        except InputError:
            flush()  # what was read before the input broke is good: keep it
            if settle:
                self.writer.settle()
            raise
        flush()
        summary.finish(self.writer, before, settle, receipt, tracker, journaled)
        slog.info(
            "ingest done",
            **{k: v for k, v in summary.as_dict().items() if k != "sinks"},
            sources=sorted(summary.sources),
        )
        return summary

    def _log_rejected(self, error: RecordError, value: Any) -> None:
        """Count it, and one line per rejected record naming it by source and source_id when
        it has them (never by its payload, which may hold anything)."""
        source: Any = self.rules.default_source
        if isinstance(value, dict):
            source = value.get("source", source)
        delivery.rejected("events", source if isinstance(source, str) else None)
        if not log.isEnabledFor(logging.INFO):
            return
        source_id: Any = None
        if isinstance(value, dict):
            source_id = value.get("source_id", value.get(self.rules.id_field))
        slog.info(
            "record rejected",
            source=source if isinstance(source, str) else None,
            source_id=str(source_id) if isinstance(source_id, str | int) else None,
            location=error.location,
            path=error.path or None,
            reason=error.message,
        )


_gc_lock = threading.Lock()
_gc_users = 0
_gc_saved: tuple[int, ...] = gc.get_threshold()


@contextmanager
def _fewer_gc_passes() -> Iterator[None]:
    """Run the cyclic garbage collector less often while ingesting.

    Every decoded record allocates a burst of short-lived objects that hold no reference cycles,
    so the default first-generation threshold (700) runs the collector thousands of times for
    nothing: measured, this alone costs ~8% of ingest throughput. Thresholds are restored when
    the last concurrent ingest ends.
    """
    global _gc_users, _gc_saved
    with _gc_lock:
        if _gc_users == 0:
            _gc_saved = gc.get_threshold()
            gc.set_threshold(50_000, *_gc_saved[1:])
        _gc_users += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_users -= 1
            if _gc_users == 0:
                gc.set_threshold(*_gc_saved)

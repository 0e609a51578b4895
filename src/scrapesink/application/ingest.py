"""The ingest service: validate each record, batch, journal, deliver to every sink, count."""

from __future__ import annotations

import gc
import logging
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from scrapesink.application.delivery import SinkReport
from scrapesink.application.durable import DurableWriter
from scrapesink.domain.events import EventRules, RawEvent, validate_event
from scrapesink.errors import InputError, RecordError

MAX_KEPT_REJECTIONS = 1000
log = logging.getLogger(__name__)
RejectHook = Callable[[RecordError], None]


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

    def reject(self, error: RecordError, hook: RejectHook | None) -> None:
        self.rejected += 1
        if len(self.rejections) < MAX_KEPT_REJECTIONS:
            self.rejections.append(error)
        if hook is not None:
            hook(error)


@dataclass(kw_only=True)
class IngestSummary(WriteSummary):
    """What one raw-event ingest did. ``inserted`` is what PostgreSQL stored; ``duplicates``
    adds the copies dropped before the journal (the same key again in the same input)."""

    naive_timestamps: int = 0
    batches: int = 0

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
    ) -> IngestSummary:
        """Ingest ``records``: ``(location, value)`` pairs or errors from a reader.

        Each batch is journaled (that is the acknowledgement) and handed to every sink, whose
        lanes store it in the background while the next batch is read. With ``settle`` the call
        waits for the sinks and reports what each did; without, it returns once everything is
        journaled (background delivery). Records read before a fatal input error are kept.
        """
        with _fewer_gc_passes():
            return self._ingest(
                records, on_reject=on_reject, on_batch=on_batch, now=now, settle=settle
            )

    def _ingest(
        self,
        records: Iterable[Record],
        *,
        on_reject: RejectHook | None,
        on_batch: ProgressHook | None,
        now: Callable[[], datetime],
        settle: bool,
    ) -> IngestSummary:
        summary = IngestSummary()
        before = self.writer.reports()
        batch: dict[tuple[str, str], RawEvent] = {}
        recent: deque[dict[tuple[str, str], RawEvent]] = deque(maxlen=2)

        def flush() -> None:
            if batch:
                self.writer.write(list(batch.values()))
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
                    summary.reject(item, on_reject)
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
                    summary.reject(error, on_reject)
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
                    continue
                batch[key] = event
                if len(batch) >= limit:
                    flush()
                    batch = {}
                    limit = min(2 * limit, self.batch_size)
                    reference = now()
        except InputError:
            flush()  # what was read before the input broke is good: keep it
            if settle:
                self.writer.settle()
            raise
        flush()
        after = self.writer.settle() if settle else self.writer.reports()
        summary.sinks = {name: after[name].since(before.get(name)) for name in after}
        log.info("ingest done: %s", ", ".join(f"{k} {v}" for k, v in summary.as_dict().items()))
        return summary


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

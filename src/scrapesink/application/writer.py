"""The write loop of every record kind: validate each record, batch, journal, deliver, count.

    read item ─ a reader's error ───────────────► rejected (counted, logged, hook)
        │
        kind.check ─ RecordError ───────────────► rejected
        │
        a key seen again ───────────────────────► input duplicate (kind.keep "first": the first
        │                                          copy wins while it may be in flight, i.e. in
        │                                          this batch or the two before; "last": the
        │                                          last copy in its batch wins)
        batch ─ full ─► journal (acknowledged) ─► every sink's lane, in the background

A fatal input error (a broken file) keeps what was read before it: the batch so far is journaled
and, when the caller settles, delivered before the error is raised. At the end the summary says
what each sink did (waiting for them when asked); a tracked write answers per record.
"""

from __future__ import annotations

import gc
import logging
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from scrapesink.application.durable import DurableWriter
from scrapesink.application.kinds import Item, RecordKind
from scrapesink.application.outcomes import DUPLICATE, PENDING, Receipt
from scrapesink.application.summary import RejectHook, Tracker, WriteSummary
from scrapesink.errors import InputError, RecordError, StorageError, UnencodableRecords
from scrapesink.logs import get_logger

log = logging.getLogger(__name__)
slog = get_logger(__name__)

# What readers yield: (location, value), (location, value, its JSON text), or an error.
Record = Item | RecordError
ProgressHook = Callable[[WriteSummary], None]


class RecordWriter:
    """Validate → batch → journal (acknowledged) → every sink, for one kind of record."""

    def __init__(self, durable: DurableWriter, kind: RecordKind, *, batch_size: int = 5000) -> None:
        self.durable = durable  # the journal and the lanes of this kind
        self.kind = kind
        self.batch_size = batch_size

    def write(
        self,
        records: Iterable[Record],
        *,
        on_reject: RejectHook | None = None,
        on_batch: ProgressHook | None = None,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        settle: bool = True,
        track: bool = False,
    ) -> WriteSummary:
        """Write ``records``: ``(location, value)`` pairs or errors from a reader.

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
                return self._write(records, on_reject, on_batch, now, settle, None)
            with self.durable.receipt() as receipt:
                return self._write(records, on_reject, on_batch, now, settle, receipt)

    def _write(
        self,
        records: Iterable[Record],
        on_reject: RejectHook | None,
        on_batch: ProgressHook | None,
        now: Callable[[], datetime],
        settle: bool,
        receipt: Receipt | None,
    ) -> WriteSummary:
        kind, writer = self.kind, self.durable
        summary = WriteSummary(kind=kind)
        tracker = Tracker() if receipt is not None else None
        before = writer.reports()
        batch: dict[Any, Any] = {}
        slots: dict[Any, int] = {}  # key -> the tracker's result index of its record
        locations: dict[Any, str | None] = {}  # key -> where its record was read
        # Keys of the last two batches: while their records may still be in flight, the same
        # key again is an input duplicate (the first copy wins, whichever batch commits first).
        recent: deque[dict[Any, Any]] = deque(maxlen=2)
        first_wins = kind.keep == "first"
        journaled: list[tuple[int, int]] = []

        def flush() -> None:
            while batch:
                try:
                    first, last = writer.write(list(batch.values()), receipt)
                except StorageError as exc:
                    # the caller must know what it can count on: the batches before this one
                    exc.message += (
                        f" ({summary.accepted:,} records before were acknowledged; this batch"
                        f" of {len(batch):,} and what follows were not)"
                    )
                    exc.args = (exc.message,)
                    raise
                except UnencodableRecords as exc:  # those records alone are rejected
                    keys = list(batch)
                    for index, (path, reason) in exc.reasons.items():
                        key = keys[index]
                        record = batch.pop(key)
                        error = RecordError(reason, location=locations.get(key), path=path)
                        summary.reject(error, on_reject, None)
                        self._rejected(error, record)
                        if tracker is not None:
                            tracker.replace_rejected(slots.pop(key), error)
                    if not exc.reasons:
                        raise
                    continue
                break
            if batch:
                journaled.append((first, last))
                if tracker is not None:
                    tracker.journaled([slots[key] for key in batch], first)
                summary.accepted += len(batch)
                summary.batches += 1
                if first_wins:
                    recent.append(batch)
                if on_batch is not None:
                    on_batch(summary)

        reference = now()
        # Small batches first, doubling up to batch_size: the sinks start working while the
        # first big batch would still be being read.
        limit = min(self.batch_size, 500) if kind.ramp else self.batch_size
        check = kind.check
        try:
            for item in records:
                summary.read += 1
                if isinstance(item, RecordError):
                    summary.reject(item, on_reject, tracker)
                    self._rejected(item, None)
                    continue
                try:
                    key, record = check(item, reference, summary)
                except RecordError as error:
                    summary.reject(error, on_reject, tracker)
                    self._rejected(error, item[1])
                    continue
                if first_wins:
                    if key in batch or (recent and (key in recent[-1] or key in recent[0])):
                        summary.input_duplicates += 1
                        if tracker is not None:
                            tracker.add(DUPLICATE, item[0])
                        continue
                elif batch.pop(key, None) is not None:
                    summary.input_duplicates += 1  # the last one wins, at the end of the batch
                    if tracker is not None:
                        tracker.superseded(slots.pop(key))
                batch[key] = record
                locations[key] = item[0]
                if tracker is not None:
                    slots[key] = tracker.add(PENDING, item[0])
                if len(batch) >= limit:
                    flush()
                    batch, slots, locations = {}, {}, {}
                    limit = min(2 * limit, self.batch_size)
                    reference = now()
        except InputError:
            flush()  # what was read before the input broke is good: keep it
            if settle:
                writer.settle()
            raise
        flush()
        summary.finish(writer, before, settle, receipt, tracker, journaled)
        report = summary.as_dict()
        del report["sinks"]
        slog.info(f"{kind.action} done", **report, sources=sorted(summary.sources))
        return summary

    def _rejected(self, error: RecordError, value: Any) -> None:
        """Count it, and one line per rejected record naming it by what it says it is (an
        event's source and source_id, a record's model), never by its payload."""
        names = self.kind.named_by(value)
        self.durable.observer.rejected(self.kind, names.get("source") or names.get("model"))
        if not log.isEnabledFor(logging.INFO):
            return
        slog.info(
            "record rejected",
            **names,
            location=error.location,
            path=error.path or None,
            reason=error.message,
        )


_gc_lock = threading.Lock()
_gc_users = 0
_gc_saved: tuple[int, ...] = gc.get_threshold()


@contextmanager
def _fewer_gc_passes() -> Iterator[None]:
    """Run the cyclic garbage collector less often while writing.

    Every decoded record allocates a burst of short-lived objects that hold no reference cycles,
    so the default first-generation threshold (700) runs the collector thousands of times for
    nothing: measured, this alone costs ~8% of ingest throughput. Thresholds are restored when
    the last concurrent write ends.
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

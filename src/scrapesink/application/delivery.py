"""Delivery: journal batches to every sink, each sink on its own lane, failures contained.

Policy, per lane (one per sink):

* a batch is encoded in the caller's thread (``sink.stage``) and stored in the lane's threads, at
  most ``sink.parallelism`` at once (back-pressure beyond that); a batch a sink cannot encode
  stays pending for that sink, like one it could not store;
* transient errors (connection refused or lost, timeouts, disk full, directory not writable) are
  retried with jittered exponential backoff for up to ``retry_seconds``; then the lane is *down*
  for ``cooldown_seconds``: batches meanwhile stay in the journal, pending for that sink only,
  and the other lanes go on;
* a constraint error (a value the store refuses) splits the batch in halves until the offending
  records are alone; each goes to the dead-letter store and its journal slot is marked handled,
  so its good neighbours are stored and nothing blocks behind it;
* any other permanent error (privileges, a schema that changed under us) blames no record: the
  lane goes down like on a transient error and the batch waits in the journal for the fix.

Nothing is ever dropped: whatever a lane did not store is still in the journal, and
:func:`replay` (run by ``scrapesink replay`` and at start-up) delivers it later.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

from tenacity import Retrying, retry_if_exception_type, stop_after_delay, wait_random_exponential

from scrapesink.application.kinds import RecordKind
from scrapesink.application.outcomes import DEAD_LETTER, PENDING, STORED, Noted, SinkReport
from scrapesink.application.ports import Batch, DeadLetters, RecordSink, WriteOutcome
from scrapesink.errors import (
    ConstraintError,
    PermanentStorageError,
    StorageError,
    TransientStorageError,
)
from scrapesink.logs import get_logger

log = logging.getLogger(__name__)
slog = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    retry_seconds: float = 10.0
    cooldown_seconds: float = 30.0


class DeliveryObserver(Protocol):
    """Told what every lane did (the metrics adapter): passed in by the composition root."""

    def delivered(
        self, sink: str, kind: RecordKind, batch: Batch[Any], outcome: WriteOutcome, seconds: float
    ) -> None: ...

    def refused(self, sink: str, kind: RecordKind, record: Any) -> None: ...

    def left_pending(self, sink: str, kind: RecordKind, records: int) -> None: ...

    def failed(self, sink: str, error: BaseException) -> None: ...

    def rejected(self, kind: RecordKind, name: str | None) -> None:
        """A record failed validation before the journal (``name``: its source or model)."""


class Unobserved:
    """The observer of a process that counts nothing (tests, tools)."""

    def delivered(
        self, sink: str, kind: RecordKind, batch: Batch[Any], outcome: WriteOutcome, seconds: float
    ) -> None:
        pass

    def refused(self, sink: str, kind: RecordKind, record: Any) -> None:
        pass

    def left_pending(self, sink: str, kind: RecordKind, records: int) -> None:
        pass

    def failed(self, sink: str, error: BaseException) -> None:
        pass

    def rejected(self, kind: RecordKind, name: str | None) -> None:
        pass


UNOBSERVED = Unobserved()


@dataclass
class Lane:
    """Delivers batches of one kind of record to one sink."""

    kind: RecordKind
    sink: RecordSink[Any]
    dead_letters: DeadLetters
    policy: RetryPolicy
    observer: DeliveryObserver = UNOBSERVED
    report: SinkReport = field(default_factory=SinkReport)
    handled: list[tuple[int, int]] = field(default_factory=list)  # ranges stored or dead
    pending: list[tuple[int, int]] = field(default_factory=list)
    receipts: list[Noted] = field(default_factory=list)  # shared with the Delivery

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(self.sink.parallelism)
        self._executor = ThreadPoolExecutor(
            self.sink.parallelism, thread_name_prefix=f"scrapesink-{self.sink.name}"
        )
        self._futures: set[Future[None]] = set()
        self._down_until = 0.0
        self._failed_at = 0.0  # the last delivery that failed, and the last that succeeded
        self._stored_at = 0.0

    @property
    def down(self) -> bool:
        return time.monotonic() < self._down_until

    @property
    def failing(self) -> bool:
        """The last delivery (or check) failed, and none succeeded since."""
        return self._failed_at > self._stored_at

    @property
    def back(self) -> bool:
        """A delivery succeeded since the last one failed: the store answers again (without
        this, a writer would wait on retries to find out while the store is still down)."""
        return self._stored_at > self._failed_at

    def submit(self, batch: Batch[Any]) -> None:
        """Store ``batch`` in a lane thread, once one is free (back-pressure)."""
        if self.down:
            self._left_pending(batch, None)
            return
        try:
            work = self.sink.stage(batch)
        except Exception as exc:
            # The batch is journaled (acknowledged) already: a sink that cannot even prepare
            # it (a record journaled under another declaration) leaves it pending for this
            # sink alone, as a failed delivery would, and the caller's write stands.
            log.exception("unexpected error preparing a batch for %s", self.sink.name)
            self.failed(exc)
            self._left_pending(batch, exc)
            return
        self._slots.acquire()
        future = self._executor.submit(self._run, batch, work)
        with self._lock:
            self._futures.add(future)
        future.add_done_callback(self._done)

    def defer(self, batch: Batch[Any]) -> None:
        """Leave ``batch`` in the journal for ``DurableWriter.feed`` (pending, no error)."""
        self._left_pending(batch, None, counted=False)

    def _done(self, future: Future[None]) -> None:
        with self._lock:
            self._futures.discard(future)

    @property
    def idle(self) -> bool:
        """Nothing in flight and nothing waiting in the journal for this sink."""
        with self._lock:
            return not self._futures and not self.pending

    def drain(self) -> None:
        while True:
            with self._lock:
                futures = list(self._futures)
            if not futures:
                return
            for future in futures:
                future.result()

    def close(self) -> None:
        self.drain()
        self._executor.shutdown(wait=True)

    # -- in a lane thread ---------------------------------------------------------------------
    def _run(self, batch: Batch[Any], work: Callable[[], WriteOutcome]) -> None:
        try:
            self._store(batch, work)
        finally:
            self._slots.release()

    def _store(self, batch: Batch[Any], work: Callable[[], WriteOutcome]) -> None:
        started = time.perf_counter()
        try:
            outcome = self._with_retries(work)
        except TransientStorageError as exc:
            self.failed(exc)
            self._went_down(exc)
            self._left_pending(batch, exc)
            return
        except ConstraintError as exc:  # a value the store refuses: find the record(s)
            self.failed(exc)
            self._isolate(batch, exc)
            return
        except PermanentStorageError as exc:
            # The statement itself is refused (privileges, a changed schema): no record is to
            # blame, so nothing goes to dead letters; the batch waits in the journal for a fix.
            self.failed(exc)
            self._went_down(exc)
            self._left_pending(batch, exc)
            return
        except Exception as exc:
            log.exception("unexpected error delivering to %s", self.sink.name)
            self.failed(exc)
            self._left_pending(batch, exc)
            return
        seconds = time.perf_counter() - started
        self._stored_at = time.monotonic()
        self.observer.delivered(self.sink.name, self.kind, batch, outcome, seconds)
        with self._lock:
            self.report.stored += outcome.stored
            self.report.duplicates += len(outcome.duplicate_seqs)
            self.report.unchanged += outcome.unchanged
            self.handled.append((batch.first, batch.last))
        self._note(batch, outcome)

    def answered(self) -> None:
        """The store answered (a look at what it holds): it is back, whatever failed before."""
        self._stored_at = time.monotonic()

    def failed(self, error: BaseException) -> None:
        """A delivery, or a look at what the store holds, failed with ``error``."""
        self._failed_at = time.monotonic()
        self.observer.failed(self.sink.name, error)

    def _note(self, batch: Batch[Any], outcome: WriteOutcome | None, status: str = STORED) -> None:
        for receipt in list(self.receipts):
            receipt.note(self.sink.name, batch, outcome, status)

    def _with_retries(self, work: Callable[[], WriteOutcome]) -> WriteOutcome:
        for attempt in Retrying(
            retry=retry_if_exception_type(TransientStorageError),
            stop=stop_after_delay(self.policy.retry_seconds),
            wait=wait_random_exponential(multiplier=0.1, max=3.0),
            reraise=True,
        ):
            with attempt:
                return work()
        raise AssertionError("unreachable")  # pragma: no cover

    def _isolate(self, batch: Batch[Any], error: ConstraintError) -> None:
        if len(batch.records) == 1:
            record = batch.records[0]
            slog.warning(
                "record refused",
                sink=self.sink.name,
                kind=self.kind.name,
                **self.kind.identity(record),
                error_type=error.error_type,
                error=error.message,
            )
            try:
                self.dead_letters.add(
                    self.sink.name,
                    self.kind.name,
                    batch.journal_id,
                    batch.first,
                    record,
                    error,
                    batch.accepted_us[0] if batch.accepted_us else None,
                )
                if batch.journal_id:
                    self.sink.skip(batch.journal_id, batch.first, batch.last)
            except TransientStorageError as exc:
                self._left_pending(batch, exc)
                return
            with self._lock:
                self.report.dead_letters += 1
                self.handled.append((batch.first, batch.last))
            self.observer.refused(self.sink.name, self.kind, record)
            self._note(batch, None, DEAD_LETTER)
            return
        for half in batch.split():
            self._store(half, self.sink.stage(half))

    def take_pending(self) -> list[tuple[int, int]]:
        """The ranges left pending so far, no longer counted pending (to hand them again)."""
        with self._lock:
            ranges, self.pending = self.pending, []
            self.report.pending -= sum(last - first + 1 for first, last in ranges)
        return ranges

    def handled_count(self) -> int:
        """How many records this lane stored or sent to dead letters."""
        with self._lock:
            return sum(last - first + 1 for first, last in self.handled)

    def restore(self, ranges: Sequence[tuple[int, int]]) -> None:
        """Ranges taken with :meth:`take_pending` and not handed on: pending again."""
        with self._lock:
            self.pending.extend(ranges)
            self.report.pending += sum(last - first + 1 for first, last in ranges)

    def pending_in(self, ranges: Sequence[tuple[int, int]]) -> int:
        """How many seqs of ``ranges`` are pending on this lane now."""
        with self._lock:
            held = list(self.pending)
        return sum(max(0, min(b, d) - max(a, c) + 1) for a, b in held for c, d in ranges)

    def collapse(self, start: int, upto: int) -> None:
        """Replace the ranges covering ``start..upto`` by one (a long run stays small)."""
        with self._lock:
            self.handled = [(start, upto), *(r for r in self.handled if r[1] > upto)]

    def _went_down(self, error: StorageError) -> None:
        slog.warning(
            "sink unavailable, records stay pending",
            sink=self.sink.name,
            error_type=error.error_type,
            error=error.message,
        )
        self._down_until = time.monotonic() + self.policy.cooldown_seconds

    def _left_pending(
        self, batch: Batch[Any], error: BaseException | None, *, counted: bool = True
    ) -> None:
        """The batch waits in the journal for this sink. ``counted``: as a failure to deliver
        (the metric); a batch merely queued behind busy slots is not one."""
        with self._lock:
            self.report.pending += len(batch.records)
            self.pending.append((batch.first, batch.last))
            if error is not None:
                self.report.error = getattr(error, "message", None) or str(error)
        if counted:
            self.observer.left_pending(self.sink.name, self.kind, len(batch.records))
        self._note(batch, None, PENDING)


class Delivery:
    """All lanes of one journal, plus what is needed to compact it."""

    def __init__(
        self,
        kind: RecordKind,
        sinks: Sequence[RecordSink[Any]],
        dead_letters: DeadLetters,
        policy: RetryPolicy,
        observer: DeliveryObserver = UNOBSERVED,
    ) -> None:
        self.receipts: list[Noted] = []
        self.lanes = [
            Lane(kind, sink, dead_letters, policy, observer, receipts=self.receipts)
            for sink in sinks
        ]

    def submit(self, batch: Batch[Any]) -> None:
        for lane in self.lanes:
            lane.submit(batch)

    def defer(self, batch: Batch[Any]) -> None:
        """Leave ``batch`` in the journal for every lane, pending without an error."""
        for lane in self.lanes:
            lane.defer(batch)

    def drain(self) -> None:
        for lane in self.lanes:
            lane.drain()

    def close(self) -> None:
        for lane in self.lanes:
            lane.close()

    def reports(self) -> dict[str, SinkReport]:
        return {lane.sink.name: lane.report for lane in self.lanes}


def contiguous_end(start: int, ranges: Sequence[tuple[int, int]]) -> int:
    """The last seq such that ``start..seq`` is covered by ``ranges`` (``start - 1`` if none)."""
    end = start - 1
    for first, last in sorted(ranges):
        if first > end + 1:
            break
        end = max(end, last)
    return end


def missing(first: int, last: int, ranges: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """The parts of ``first..last`` not covered by ``ranges``."""
    gaps, cursor = [], first
    for a, b in sorted(ranges):
        if b < cursor:
            continue
        if a > last:
            break
        if a > cursor:
            gaps.append((cursor, min(a - 1, last)))
        cursor = max(cursor, b + 1)
        if cursor > last:
            break
    if cursor <= last:
        gaps.append((cursor, last))
    return gaps

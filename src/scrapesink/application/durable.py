"""The durable write path: journal first (that is the acknowledgement), then every sink.

:class:`DurableWriter` owns one process's journal and its delivery lanes; what other (dead)
processes left behind is delivered by ``replay.replay``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

from scrapesink.application.delivery import (
    UNOBSERVED,
    Delivery,
    DeliveryObserver,
    Lane,
    RetryPolicy,
    contiguous_end,
)
from scrapesink.application.kinds import RecordKind, kind_named
from scrapesink.application.outcomes import Receipt, RemoteOutcomes, SinkReport
from scrapesink.application.ports import Batch, DeadLetters, Journal, JournalEntry, RecordSink
from scrapesink.errors import (
    ScrapesinkError,
    StorageError,
)

log = logging.getLogger(__name__)
COMPACT_EVERY = 8  # batches between journal compactions while writing
CLOSE_RETRY_SECONDS = 2.0


class DurableWriter:
    """Journal, then deliver to every sink; counts what each sink did."""

    def __init__(
        self,
        journal: Journal,
        sinks: Sequence[RecordSink[Any]],
        dead_letters: DeadLetters,
        policy: RetryPolicy,
        *,
        batch_size: int = 5000,
        kind: RecordKind | None = None,
        observer: DeliveryObserver = UNOBSERVED,
        wait_for_lanes: bool = True,
        remote: RemoteOutcomes | None = None,
    ) -> None:
        self.journal = journal
        # A shared journal: no lane here, workers deliver; what they did arrives through
        # ``remote`` for the receipts of writes that wait for it.
        self.remote = remote
        # False: a write never waits for a sink (background delivery): it only journals, and
        # ``feed`` (the feeder thread) hands what waits in the journal to each sink.
        self.wait_for_lanes = wait_for_lanes
        self.kind = kind or kind_named(journal.kind)
        self.sinks = list(sinks)
        self.observer = observer
        self.delivery = Delivery(self.kind, sinks, dead_letters, policy, observer)
        self.batch_size = batch_size
        self._start = journal.last_seq + 1
        self._closed = False
        self._writes = 0
        self._feeding = 0
        self._lock = threading.RLock()

    def write(self, records: Sequence[Any], receipt: Receipt | None = None) -> tuple[int, int]:
        """Append to the journal (durable on return: acknowledged), then hand to every sink.

        With a ``receipt`` (from :meth:`receipt`) the sinks note on it what they did with each
        of these records."""
        with self._lock:  # one journal connection; callers may share a Sink across threads
            if self._closed:
                raise ScrapesinkError("this sink is closed: open a new one to write")
            return self._write(records, receipt)

    @contextmanager
    def receipt(self) -> Iterator[Receipt]:
        """A receipt for the records written with it, noted on by every lane until the end of
        the ``with`` block: concurrent callers each learn what became of their own records."""
        receipt = Receipt(self.journal.id)
        self.delivery.receipts.append(receipt)
        if self.remote is not None:
            self.remote.start()  # before the write: no outcome of it can pass unseen
            self.remote.register(receipt)
        try:
            yield receipt
        finally:
            self.delivery.receipts.remove(receipt)
            if self.remote is not None:
                self.remote.unregister(receipt)

    def wait(self, receipt: Receipt) -> dict[str, SinkReport]:
        """Wait until every sink answered for the receipt's records (stored, or left pending:
        a lane gives up after the retry policy's time); per sink, what it did with them."""
        names = [lane.sink.name for lane in self.delivery.lanes]
        if self.remote is not None and not names:
            # workers answer when they have delivered: waited for a bounded time, what they
            # have not answered for is pending (safe in the shared journal)
            names = list(self.remote.sinks)
            receipt.wait(names, timeout=self.remote.wait_seconds)
        else:
            receipt.wait(names)
        return {name: receipt.report(name) for name in names}

    def _write(self, records: Sequence[Any], receipt: Receipt | None = None) -> tuple[int, int]:
        first, last = self.journal.append(records)
        if receipt is not None and records:
            receipt.cover(first, last)
        if records:
            # A sink that is back gets what it missed first: what users expect, and cheaper
            # than a reversal (the stores decide by stamp anyway, so this is not for safety).
            # "Back" means a delivery succeeded since the last failure: the first batch after
            # an outage finds that out itself rather than make the writer wait on retries.
            # Without waiting for lanes that is ``feed``'s work, in journal order.
            for lane in self.delivery.lanes:
                if self.wait_for_lanes and lane.pending and not lane.down and lane.back:
                    self._catch_up(lane)
            start = self.journal.last_accepted_us
            accepted = range(start, start + len(records))
            batch = Batch(self.journal.id, first, last, records, accepted)
            if self.wait_for_lanes:
                self.delivery.submit(batch)
            else:
                # The write returns as soon as the batch is journaled: even encoding it for
                # the sinks is the feeder's work (which reads consecutive small writes back
                # as one batch, so the stores see fewer, bigger transactions).
                self.delivery.defer(batch)
            self._writes += 1
            if self._writes % COMPACT_EVERY == 0:
                self._compact()  # keeps the journal small during a long ingest
        return first, last

    def settle(self) -> dict[str, SinkReport]:
        """Wait for deliveries, retry what a recovered sink missed, compact the journal."""
        with self._lock:
            return self._settle()

    def _settle(self) -> dict[str, SinkReport]:
        self.delivery.drain()
        for lane in self.delivery.lanes:
            if lane.pending and not lane.down:
                self._catch_up(lane)
        self.delivery.drain()
        self._compact()
        return self.reports()

    def reports(self) -> dict[str, SinkReport]:
        return {name: replace(report) for name, report in self.delivery.reports().items()}

    def catch_up(self) -> int:
        """Hand again to each sink that is up what it left pending (a long-running process
        cannot wait for ``settle`` at the end); returns how many records were resubmitted."""
        with self._lock:
            if self._closed:
                return 0
            resubmitted = 0
            for lane in self.delivery.lanes:
                if lane.pending and not lane.down:
                    resubmitted += lane.report.pending
                    self._catch_up(lane)
            return resubmitted

    def feed(self) -> int:
        """Hand each sink that is up what waits for it in the journal, oldest first; returns
        how many records were handed on.

        It waits for the lanes' free slots (it runs in a thread of its own, the background
        delivery's) but holds the writer's lock only to read the journal, so writes go on
        meanwhile."""
        self._feeding += 1  # records taken from pending are neither pending nor in flight
        try:
            return self._feed()
        finally:
            self._feeding -= 1

    def _feed(self) -> int:
        handed = 0
        for lane in self.delivery.lanes:
            if lane.down or not lane.pending:
                continue
            ranges = coalesce(lane.take_pending())
            for i, (first, last) in enumerate(ranges):
                while first <= last:
                    with self._lock:
                        if self._closed:  # what was not handed on stays pending
                            lane.restore([(first, last), *ranges[i + 1 :]])
                            return handed
                        upto = min(last, first + self.batch_size - 1)
                        batches = list(batches_of(self.journal, first, upto, self.batch_size))
                    for batch in batches:
                        lane.submit(batch)
                        handed += len(batch.records)
                    first = upto + 1
        return handed

    def undelivered(self) -> dict[str, int]:
        """Per sink, how many records journaled by this writer it has not taken yet (in
        flight, or waiting in the journal)."""
        journaled = self.journal.last_seq - self._start + 1
        return {lane.sink.name: journaled - lane.handled_count() for lane in self.delivery.lanes}

    @property
    def idle(self) -> bool:
        """Every sink has everything journaled so far, or left it pending after a failure."""
        if self._feeding:
            return False
        return all(lane.idle or lane.down for lane in self.delivery.lanes)

    def close(self, *, catch_up: bool = True) -> dict[str, SinkReport]:
        """Deliver what is in flight and, with ``catch_up``, what waits for a sink that is up;
        then release. What a sink lacks stays in the journal for the next start or replay."""
        with self._lock:
            if self._closed:
                return self.reports()
            self._closed = True
            # Shutting down (SIGTERM, the end of a run): a store that still fails is not waited
            # for long; what it lacks stays in the journal for replay.
            for lane in self.delivery.lanes:
                lane.policy = replace(
                    lane.policy, retry_seconds=min(lane.policy.retry_seconds, CLOSE_RETRY_SECONDS)
                )
            if catch_up:
                reports = self._settle()
            else:
                self.delivery.drain()
                self._compact()
                reports = self.reports()
            self.delivery.close()
            if self.journal.close():  # empty: removed; the sinks' bookkeeping is garbage now
                forget_journal(self.sinks, self.journal.id)
        return reports

    def _catch_up(self, lane: Lane) -> None:
        for first, last in sorted(lane.take_pending()):
            for batch in batches_of(self.journal, first, last, self.batch_size):
                lane.submit(batch)

    def pending_in(self, ranges: Sequence[tuple[int, int]]) -> dict[str, int]:
        """Per sink, how many records of the journal ``ranges`` are pending there now."""
        return {lane.sink.name: lane.pending_in(ranges) for lane in self.delivery.lanes}

    def _compact(self) -> None:
        upto = min(
            (contiguous_end(self._start, lane.handled) for lane in self.delivery.lanes),
            default=self._start - 1,
        )
        if upto >= self._start:
            self.journal.compact(upto)
            for lane in self.delivery.lanes:
                lane.collapse(self._start, upto)


def coalesce(ranges: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sorted ranges with adjacent and overlapping ones merged: (1, 4), (5, 9) -> (1, 9)."""
    merged: list[tuple[int, int]] = []
    for first, last in sorted(ranges):
        if merged and first <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], last))
        else:
            merged.append((first, last))
    return merged


def batches_of(journal: Journal, first: int, last: int, size: int) -> Iterable[Batch[Any]]:
    """Contiguous batches of the journal's entries in ``first..last``."""
    for chunk in journal.read(first, last, chunk=size):
        run: list[JournalEntry] = []
        for entry in chunk:
            if run and entry.seq != run[-1].seq + 1:
                yield _batch(journal.id, run)
                run = []
            run.append(entry)
        if run:
            yield _batch(journal.id, run)


def _batch(journal_id: str, entries: Sequence[JournalEntry]) -> Batch[Any]:
    return Batch(
        journal_id,
        entries[0].seq,
        entries[-1].seq,
        [e.record for e in entries],
        [e.accepted_us for e in entries],
    )


def forget_journal(sinks: Sequence[RecordSink[Any]], journal_id: str) -> None:
    for sink in sinks:
        try:
            sink.forget(journal_id)
        except StorageError as exc:  # only bookkeeping is left behind
            log.info("could not forget journal %s in %s: %s", journal_id, sink.name, exc)

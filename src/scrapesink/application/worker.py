"""`scrapesink worker`: deliver a shared journal to one sink, as one consumer of its group.

Each sink (``postgres``, ``csv``) has one consumer group on every kind's stream; any number of
workers may consume in a group. One pass, per kind:

1. entries this consumer was handed and did not acknowledge (its store was down) are delivered
   again once the lane is up, and entries other consumers left unacknowledged for
   ``claim_idle`` are taken over (a worker died). Either kind may be in the store already (the
   worker died after its commit, before its acknowledgement): only the seqs the store's progress
   lacks are delivered, so a redelivery is a no-op;
2. new entries are read in batches (blocking briefly when there are none) and runs of
   consecutive seqs are delivered as one batch through a :class:`~delivery.Lane` (retries,
   dead letters, as on one machine); the store records the seqs atomically with the data;
3. the entries the store now holds are acknowledged; those it could not take stay
   unacknowledged with this consumer, and nothing new is read for a lane that is down, so the
   group's lag shows the outage;
4. now and then, per kind: the store forgets progress below the oldest entry its group has not
   acknowledged (no consumer can be handed those again), and the stream is trimmed below the
   oldest entry *any* group still needs.

A sink that holds its files on one machine (``csv``) delivers under a lease (``lease``): one
writer at a time, the others standing by; the CSV state's own lock and progress check keep a
writer whose lease lapsed from appending anything twice.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

from scrapesink.application.delivery import (
    UNOBSERVED,
    DeliveryObserver,
    Lane,
    RetryPolicy,
    missing,
)
from scrapesink.application.kinds import kind_named
from scrapesink.application.outcomes import OutcomeNotes, SinkReport
from scrapesink.application.ports import (
    Batch,
    DeadLetters,
    JournalEntry,
    RecordSink,
    SharedJournal,
    StreamEntry,
)
from scrapesink.errors import StorageError
from scrapesink.logs import get_logger

log = logging.getLogger(__name__)
slog = get_logger(__name__)

SinksFor = Callable[[str], Sequence[RecordSink[Any]] | None]


@dataclass(frozen=True, slots=True)
class WorkerOptions:
    claim_idle_seconds: float = 30.0
    #: entries read at once (each a producer's batch)
    count: int = 500
    #: records per batch handed to the store
    batch_size: int = 5000
    block_ms: int = 1000
    #: how often kinds are looked up, progress forgotten and streams trimmed
    tidy_seconds: float = 5.0
    #: the sink delivers under this lease (one writer at a time); None: no lease
    lease: str | None = None
    #: where the leased files live (a data directory's identity): a worker elsewhere stands by
    home: str = ""


class Worker:
    """One consumer of one sink's group, over every kind this process can deliver."""

    def __init__(
        self,
        journal: SharedJournal,
        sink: str,
        consumer: str,
        sinks_for: SinksFor,
        dead_letters: DeadLetters,
        policy: RetryPolicy,
        *,
        options: WorkerOptions = WorkerOptions(),
        observer: DeliveryObserver = UNOBSERVED,
        kinds: Callable[[], Sequence[str]] | None = None,
        declarations: Callable[[str], str | None] | None = None,
    ) -> None:
        self.journal = journal
        self.sink = sink
        self.consumer = consumer
        self.sinks_for = sinks_for
        self.dead_letters = dead_letters
        self.policy = policy
        self.options = options
        self.observer = observer
        self._kinds_of = kinds or journal.kinds
        # a model kind -> this process's declaration fingerprint (None: no check)
        self._declarations = declarations
        self.mismatched: set[str] = set()  # model kinds producers declare otherwise
        self._lanes: dict[str, Lane] = {}
        self._notes = OutcomeNotes()  # what the lanes did, for producers waiting on it
        self._ids: dict[str, str] = {}
        self._backlog: set[str] = set()  # kinds with entries handed to us and not acked
        self._kinds: list[str] = []
        self._tidied = 0.0
        self._claimed = 0.0
        self.holds_lease = options.lease is None
        self.elsewhere = False  # the leased files live in another data directory

    def report(self) -> SinkReport:
        """What this worker's deliveries did so far, all kinds together, and the error of a
        store that fails now."""
        total = SinkReport()
        lanes = list(self._lanes.values())
        for lane in lanes:
            total.add(lane.report)
        # an error is said while its store still fails, not once it answers again
        total.error = next((lane.report.error for lane in lanes if lane.failing), None)
        return total

    # -- the loop -------------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        """Deliver until ``stop`` is set (the current pass ends first)."""
        try:
            while not stop.is_set():
                try:
                    self.step()
                except StorageError as exc:  # Redis unreachable: wait, then go on
                    slog.warning("worker pass failed", sink=self.sink, error=exc.message)
                    stop.wait(min(5.0, self.options.block_ms / 1000 + 1))
                except Exception as exc:  # a bug of ours: said in the log, the worker goes on
                    slog.error(
                        "worker pass failed unexpectedly",
                        sink=self.sink,
                        error=f"{type(exc).__name__}: {exc}",
                    )
                    stop.wait(5.0)
        finally:
            self.close()

    def close(self) -> None:
        for lane in self._lanes.values():
            lane.close()
        if self.options.lease is not None and self.holds_lease:
            with suppress(StorageError):  # it expires by itself
                self.journal.drop_lease(self.options.lease, self.consumer)

    def step(self) -> int:
        """One pass; returns how many records were delivered or sent to dead letters."""
        now = time.monotonic()
        if now - self._tidied >= self.options.tidy_seconds:
            self._tidy()
            self._tidied = now
        if not self._lease():
            time.sleep(self.options.block_ms / 1000)
            return 0
        handled = 0
        live = [k for k in self._kinds if not self._lane(k).down]
        claim = now - self._claimed >= self.options.claim_idle_seconds / 4
        for kind in live:
            if kind in self._backlog:
                mine = self.journal.read_group(
                    [kind],
                    self.sink,
                    self.consumer,
                    count=self.options.count,
                    block_ms=None,
                    history=True,
                )
                entries = mine.get(kind, [])
                if not entries:
                    self._backlog.discard(kind)
                handled += self._deliver(kind, entries, check=True)
            if claim:
                taken = self.journal.claim(
                    kind,
                    self.sink,
                    self.consumer,
                    min_idle_ms=int(self.options.claim_idle_seconds * 1000),
                    count=self.options.count,
                )
                if taken:
                    slog.info("entries taken over", sink=self.sink, kind=kind, entries=len(taken))
                handled += self._deliver(kind, taken, check=True)
        if claim:
            self._claimed = now
        live = [k for k in live if k not in self._backlog and not self._lane(k).down]
        if not live:
            time.sleep(self.options.block_ms / 1000)
            return handled
        fresh = self.journal.read_group(
            live,
            self.sink,
            self.consumer,
            count=self.options.count,
            block_ms=self.options.block_ms,
        )
        for kind, entries in fresh.items():
            handled += self._deliver(kind, entries, check=False)
        return handled

    # -- delivering -----------------------------------------------------------------------------
    def _deliver(self, kind: str, entries: Sequence[StreamEntry], *, check: bool) -> int:
        if not entries:
            return 0
        lane = self._lane(kind)
        journal_id = self._ids[kind]
        for entry in entries:
            if entry.unreadable is not None:
                self.journal.set_aside(kind, self.sink, entry)
        ordered = sorted((e for e in entries if e.unreadable is None), key=lambda e: e.first)
        if not ordered:
            return 0
        have: list[tuple[int, int]] = []
        if check:
            try:
                have = lane.sink.delivered(journal_id)
            except StorageError as exc:  # cannot tell what it holds: keep them for later
                lane.report.error = exc.message
                lane.failed(exc)
                self._backlog.add(kind)
                return 0
            lane.answered()
        before = lane.handled_count()  # 0: cleared after each delivery
        for batch in _batches(journal_id, ordered, have, self.options.batch_size):
            lane.submit(batch)
        lane.drain()
        try:
            self.journal.report_outcomes(self._notes.take())
        except StorageError as exc:  # a notice: a producer waiting for it answers pending
            log.info("outcomes not reported: %s", exc.message)
        left = lane.take_pending()
        done = [e.id for e in ordered if not any(a <= e.last and e.first <= b for a, b in left)]
        self.journal.ack(kind, self.sink, done)
        if len(done) < len(ordered):
            self._backlog.add(kind)
        handled = lane.handled_count() - before
        lane.handled.clear()  # acknowledged now: the lane need not keep the ranges (drained)
        return handled

    def _lane(self, kind: str) -> Lane:
        lane = self._lanes.get(kind)
        if lane is None:
            sink = self._sink_of(kind)
            assert sink is not None  # only kinds with this sink are in self._kinds
            lane = self._lanes[kind] = Lane(
                kind_named(kind),
                sink,
                self.dead_letters,
                self.policy,
                self.observer,
                receipts=[self._notes],
            )
        return lane

    def _sink_of(self, kind: str) -> RecordSink[Any] | None:
        return next((s for s in self.sinks_for(kind) or () if s.name == self.sink), None)

    def _lease(self) -> bool:
        lease = self.options.lease
        if lease is None:
            return True
        ms = int(self.options.claim_idle_seconds * 1000)
        answer = self.journal.take_lease(lease, self.consumer, ms, self.options.home)
        held = bool(answer)
        if answer is None and not self.elsewhere:
            slog.error(
                "the files of this sink now live in another data directory: standing by",
                sink=self.sink,
                worker=self.consumer,
            )
        self.elsewhere = answer is None
        if held != self.holds_lease:
            slog.info(
                "lease taken" if held else "lease held by another worker: standing by",
                sink=self.sink,
                lease=lease,
                worker=self.consumer,
            )
        self.holds_lease = held
        return held

    # -- now and then ---------------------------------------------------------------------------
    def _declared_otherwise(self, kind: str) -> bool:
        """Producers validate this model with another declaration: its records are left in the
        stream (they wait for a worker declared as the producers are) rather than stored by
        rules they were not checked against."""
        mine = self._declarations(kind) if self._declarations is not None else None
        theirs = self.journal.declared(kind) if mine is not None else None
        otherwise = theirs is not None and theirs != mine
        if otherwise and kind not in self.mismatched:
            slog.error(
                "producers declare this model otherwise: its records wait (same"
                " SCRAPESINK_MODELS for producers and workers)",
                sink=self.sink,
                kind=kind,
                producers=theirs,
                worker=mine,
            )
        if otherwise:
            self.mismatched.add(kind)
        else:
            self.mismatched.discard(kind)
        return otherwise

    def _tidy(self) -> None:
        kinds = []
        for kind in self._kinds_of():
            sinks = self.sinks_for(kind)
            if sinks is None or self._sink_of(kind) is None:
                continue  # a model not declared here: kept for a worker that declares it
            self.journal.ensure_groups(kind, [s.name for s in sinks])
            self._ids[kind] = self.journal.journal_id(kind)
            if self._declared_otherwise(kind):
                continue
            kinds.append(kind)
        if not self._kinds:
            # at start: what this consumer was handed before (a worker restarted under its
            # old name) comes first, from its own pending list
            self._backlog.update(kinds)
        self._kinds = kinds
        for kind in kinds:
            lane = self._lane(kind)
            if lane.down:
                continue
            try:
                below = self.journal.settled_below(kind, self.sink)
                if below is not None:
                    lane.sink.forget_below(self._ids[kind], below)
                self.journal.trim(kind)
                gone = max(10 * self.options.claim_idle_seconds, 600.0)
                self.journal.forget_consumers(kind, self.sink, int(gone * 1000))
            except StorageError as exc:
                log.info("tidying %s for %s: %s", kind, self.sink, exc.message)


def _batches(
    journal_id: str,
    entries: Sequence[StreamEntry],
    have: Sequence[tuple[int, int]],
    size: int,
) -> list[Batch[Any]]:
    """Runs of consecutive seqs the store lacks, at most ``size`` records each."""
    batches: list[Batch[Any]] = []
    run: list[JournalEntry] = []
    origin: str | None = None  # one batch: records of one origin (their stamps name it)

    def close() -> None:
        if run:
            batches.append(
                Batch(
                    journal_id,
                    run[0].seq,
                    run[-1].seq,
                    [e.record for e in run],
                    [e.accepted_us for e in run],
                    origin,
                )
            )
            run.clear()

    for entry in entries:
        records = list(entry.entries())
        wanted = missing(entry.first, entry.last, have) if have else [(entry.first, entry.last)]
        if entry.origin != origin:
            close()
            origin = entry.origin
        for first, last in wanted:
            for item in records[first - entry.first : last - entry.first + 1]:
                if run and (item.seq != run[-1].seq + 1 or len(run) >= size):
                    close()
                run.append(item)
    close()
    return batches

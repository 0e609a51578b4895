"""What sinks did: a run's counts per sink (:class:`SinkReport`) and, for a caller that must
answer for its own records, what became of each of them (:class:`Receipt`).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any, Protocol

from scrapesink.application.ports import Batch, WriteOutcome

STORED, DUPLICATE, UNCHANGED, DEAD_LETTER, PENDING = (
    "stored",
    "duplicate",
    "unchanged",
    "dead_letter",
    "pending",
)


@dataclass
class SinkReport:
    """What one sink did in one run."""

    stored: int = 0
    duplicates: int = 0
    unchanged: int = 0  # model records identical to what the sink held
    pending: int = 0
    dead_letters: int = 0
    error: str | None = None  # why records are pending

    def as_dict(self) -> dict[str, object]:
        return asdict(self)

    def add(self, other: SinkReport) -> None:
        """Count ``other`` into this report (several journals replayed)."""
        self.stored += other.stored
        self.duplicates += other.duplicates
        self.unchanged += other.unchanged
        self.pending += other.pending
        self.dead_letters += other.dead_letters
        self.error = other.error or self.error

    def since(self, before: SinkReport | None) -> SinkReport:
        """What happened after ``before`` (an earlier copy of this report)."""
        if before is None:
            return replace(self)
        return SinkReport(
            stored=self.stored - before.stored,
            duplicates=self.duplicates - before.duplicates,
            unchanged=self.unchanged - before.unchanged,
            pending=self.pending - before.pending,
            dead_letters=self.dead_letters - before.dead_letters,
            error=self.error if self.pending > before.pending else None,
        )


class Noted(Protocol):
    """What a delivery lane tells of each range it handled: a :class:`Receipt`, or a worker's
    :class:`OutcomeNotes` that passes it on to the producers waiting for it."""

    def note(
        self, sink: str, batch: Batch[Any], outcome: WriteOutcome | None, status: str = ...
    ) -> None: ...


class RemoteOutcomes(Protocol):
    """What workers of a shared journal did, for the receipts of writes waiting on it."""

    #: the sinks workers deliver to (each answers for every record)
    sinks: Sequence[str]
    #: how long a write waits for them before answering pending
    wait_seconds: float

    def start(self) -> None: ...

    def register(self, receipt: Receipt) -> None: ...

    def unregister(self, receipt: Receipt) -> None: ...


class Receipt:
    """What each sink did with some records of one journal, record by record.

    A caller that must answer for its own records (an HTTP request among concurrent ones, whose
    counts a shared writer's running totals would mix up) registers a receipt with the
    :class:`Delivery`; every lane notes on it what became of the records it covers, whichever
    batch, split half or catch-up carried them. A record a sink has said nothing about is
    pending there: it is in the journal and ``replay`` delivers it.
    """

    def __init__(self, journal_id: str) -> None:
        self.journal_id = journal_id
        self._seqs: set[int] = set()
        self._status: dict[str, dict[int, str]] = {}
        self._lock = threading.Condition()

    def cover(self, first: int, last: int) -> None:
        with self._lock:
            self._seqs.update(range(first, last + 1))

    def wait(self, sinks: Sequence[str], timeout: float | None = None) -> bool:
        """Until every sink has said something (pending included) of every covered record."""

        def answered() -> bool:
            return all(len(self._status.get(sink, ())) >= len(self._seqs) for sink in sinks)

        with self._lock:
            return self._lock.wait_for(answered, timeout)

    def note(
        self, sink: str, batch: Batch[Any], outcome: WriteOutcome | None, status: str = STORED
    ) -> None:
        if batch.journal_id != self.journal_id:
            return
        with self._lock:
            wanted = self._seqs
            if not wanted or batch.last < min(wanted) or batch.first > max(wanted):
                return
            noted = self._status.setdefault(sink, {})
            for seq in range(batch.first, batch.last + 1):
                if seq in wanted:
                    noted[seq] = _status_of(seq, outcome, status)
            self._lock.notify_all()

    def status(self, sink: str, seq: int) -> str:
        with self._lock:
            return self._status.get(sink, {}).get(seq, PENDING)

    def report(self, sink: str) -> SinkReport:
        """This receipt's records as one sink's report."""
        with self._lock:
            noted = self._status.get(sink, {})
            counts = {status: 0 for status in (STORED, DUPLICATE, UNCHANGED, DEAD_LETTER)}
            for seq in self._seqs:
                status = noted.get(seq, PENDING)
                if status != PENDING:
                    counts[status] += 1
            return SinkReport(
                stored=counts[STORED],
                duplicates=counts[DUPLICATE],
                unchanged=counts[UNCHANGED],
                pending=len(self._seqs) - sum(counts.values()),
                dead_letters=counts[DEAD_LETTER],
            )


def _status_of(seq: int, outcome: WriteOutcome | None, status: str) -> str:
    if outcome is None:
        return status
    if seq in outcome.unchanged_seqs:
        return UNCHANGED
    if seq in outcome.duplicate_seqs:
        return DUPLICATE
    return STORED


@dataclass(frozen=True, slots=True)
class Outcome:
    """One delivered (or refused, or left pending) range of one journal at one sink."""

    sink: str
    journal_id: str
    first: int
    last: int
    status: str
    duplicates: Sequence[int] = ()
    unchanged: Sequence[int] = ()

    def fields(self) -> dict[str, str]:
        return {
            "s": self.sink,
            "j": self.journal_id,
            "f": str(self.first),
            "l": str(self.last),
            "st": self.status,
            "d": ",".join(map(str, self.duplicates)),
            "u": ",".join(map(str, self.unchanged)),
        }

    @classmethod
    def parse(cls, fields: dict[bytes, bytes]) -> Outcome:
        def seqs(key: bytes) -> list[int]:
            text = fields.get(key, b"").decode()
            return [int(x) for x in text.split(",")] if text else []

        return cls(
            fields[b"s"].decode(),
            fields[b"j"].decode(),
            int(fields[b"f"]),
            int(fields[b"l"]),
            fields[b"st"].decode(),
            seqs(b"d"),
            seqs(b"u"),
        )


class OutcomeNotes:
    """Collects what a worker's lane notes (it stands where a receipt would), to publish."""

    def __init__(self) -> None:
        self.outcomes: list[Outcome] = []
        self._lock = threading.Lock()

    def note(
        self, sink: str, batch: Batch[Any], outcome: WriteOutcome | None, status: str = STORED
    ) -> None:
        duplicates = sorted(outcome.duplicate_seqs) if outcome else []
        unchanged = sorted(outcome.unchanged_seqs) if outcome else []
        with self._lock:
            self.outcomes.append(
                Outcome(sink, batch.journal_id, batch.first, batch.last, status, duplicates,
                        unchanged)
            )  # fmt: skip

    def take(self) -> list[Outcome]:
        with self._lock:
            taken, self.outcomes = self.outcomes, []
        return taken

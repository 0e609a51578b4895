"""What one write of many records did: counts, rejections, per-sink reports, per-record results.

One :class:`WriteSummary` type for every record kind; what it reports (``as_dict``) is chosen by
the kind's ``summary_fields``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from scrapesink.application.outcomes import DUPLICATE, Receipt, SinkReport
from scrapesink.errors import RecordError

if TYPE_CHECKING:
    from scrapesink.application.durable import DurableWriter
    from scrapesink.application.kinds import RecordKind

MAX_KEPT_REJECTIONS = 1000
REJECTED = "rejected"
RejectHook = Callable[[RecordError], None]


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

    def replace_rejected(self, index: int, error: RecordError) -> None:
        """A record counted in its batch that the journal refused (see ``UnencodableRecords``)."""
        self.results[index] = RecordResult(
            REJECTED, error.location, error.path or None, error.message
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
    """What one write of many records did (raw events or one model's records).

    ``rejections`` keeps the first 1000 errors; ``rejected`` counts all. ``sinks`` says per sink
    what was stored, found duplicate or unchanged, left pending (still in the journal, delivered
    by ``replay``) or sent to dead letters; ``primary`` (PostgreSQL) is the one counted as
    stored. ``duplicates`` adds the copies dropped before the journal (the same key again in the
    same input) to the primary sink's; ``stored`` (``inserted``) and ``unchanged`` are the
    primary sink's.
    """

    kind: RecordKind
    read: int = 0
    accepted: int = 0
    input_duplicates: int = 0
    rejected: int = 0
    nul_cleaned: int = 0
    naive_timestamps: int = 0
    batches: int = 0
    sources: set[str] = field(default_factory=set)  # of the accepted raw events
    rejections: list[RecordError] = field(default_factory=list)
    sinks: dict[str, SinkReport] = field(default_factory=dict)
    primary: str = "postgres"
    #: one result per input record, in order, when the write was tracked (``track=True``)
    results: list[RecordResult] | None = None

    @property
    def model(self) -> str | None:
        return self.kind.model

    @property
    def primary_report(self) -> SinkReport:
        return self.sinks.get(self.primary) or SinkReport()

    @property
    def stored(self) -> int:
        return self.primary_report.stored

    inserted = stored

    @property
    def unchanged(self) -> int:
        return self.primary_report.unchanged

    @property
    def duplicates(self) -> int:
        return self.input_duplicates + self.primary_report.duplicates

    @property
    def pending(self) -> int:
        return sum(report.pending for report in self.sinks.values())

    @property
    def dead_letters(self) -> int:
        return sum(report.dead_letters for report in self.sinks.values())

    @property
    def ok(self) -> bool:
        return self.rejected == 0

    def as_dict(self) -> dict[str, Any]:
        report = {name: getattr(self, name) for name in self.kind.summary_fields}
        report["sinks"] = {name: sink.as_dict() for name, sink in self.sinks.items()}
        return report

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


# The names the two kinds' summaries had before there was one type (public API).
IngestSummary = WriteSummary
ModelSummary = WriteSummary

"""Record kinds: everything the write path needs to know about one kind of record, in one object.

A kind names its journal, says what the journal holds (the record type msgspec packs), turns an
input value into a record and its key, says which copy of a key wins within one write and across
stores (the stamp rule), names a record in logs, dead letters and metrics, and says which sinks
its records go to. Raw events are one kind; each declared model is another. Everything above the
journal (the :class:`~scrapesink.application.writer.RecordWriter` loop, delivery, dead letters,
metrics, status) works on a kind and never asks which one it has; a new kind of record (a Scrapy
item mapping, a Parquet sink's) is a new instance, not a new code path.

    kind          journal       record     within a write    across stores (stamps)
    EventKind     events        RawEvent   first copy wins   oldest stamp wins
    ModelKind     model:<name>  RecordOp     last copy wins    newest stamp wins

:func:`kind_named` is the one place a journal name is read back into its kind.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime
from operator import attrgetter
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, Protocol, TypeVar

from scrapesink.domain.events import EventRules, RawEvent, validate_event
from scrapesink.domain.models import Declaration, ModelDef
from scrapesink.domain.records import (
    DELETE,
    UPSERT,
    RecordOp,
    key_of,
    validate_key,
    validate_record,
)
from scrapesink.errors import ConfigError

if TYPE_CHECKING:
    from scrapesink.application.ports import Batch, WriteOutcome

EVENTS = "events"  # the journal name of raw events; a model's is "model:<name>"
_MODEL_PREFIX = "model:"
T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)

#: what readers yield: (location, value), (location, value, its JSON text)
Item = tuple[str | None, Any] | tuple[str | None, Any, str | None]


def model_kind(model: str) -> str:
    """The journal name of one model's records."""
    return f"{_MODEL_PREFIX}{model}"


class Counts(Protocol):
    """What validation counts into a write's summary (``summary.WriteSummary``)."""

    naive_timestamps: int
    nul_cleaned: int
    sources: set[str]


#: what each kind's summary reports, in order (``WriteSummary.as_dict``)
EVENT_FIELDS = (
    "read",
    "inserted",
    "duplicates",
    "rejected",
    "pending",
    "dead_letters",
    "naive_timestamps",
    "nul_cleaned",
)
MODEL_FIELDS = (
    "model",
    "read",
    "stored",
    "unchanged",
    "input_duplicates",
    "rejected",
    "pending",
    "dead_letters",
    "nul_cleaned",
)


class Targets(Protocol[T_co]):
    """Where records can go (the composition root, or what status reads progress from): a kind
    picks its sinks from here."""

    def event_sinks(self) -> Sequence[T_co]: ...

    def model_sinks(self, model: str) -> Sequence[T_co] | None: ...


class Letter(NamedTuple):
    """A record as the dead-letter store keeps it (columns every kind fills)."""

    source: str
    source_id: str
    occurred_at: str
    payload: str


class RecordKind(Protocol):
    """One kind of record (see the module docstring)."""

    #: the journal (and journal-kind) name: ``events``, ``model:movies``
    name: str
    #: its metric ``kind`` label: ``events`` or ``model``
    family: str

    @property
    def model(self) -> str | None:
        """The model it is the records of (None for raw events)."""

    #: what its journal holds (packed by msgspec)
    record_type: type[Any]
    #: which copy of a key a write keeps when the input repeats it
    keep: Literal["first", "last"]
    #: which copy the stores keep when two arrive (by acceptance stamp): each store applies it
    #: in its own terms (SQL, the CSV state), and the sink contract suite holds them to it
    stamp_rule: Literal["oldest", "newest"]
    #: batches start small and double up to the batch size (the sinks start sooner)
    ramp: bool
    #: what its write summaries report (``WriteSummary.as_dict``)
    summary_fields: tuple[str, ...]
    #: what a write of it is called in logs (``ingest done``, ``save done``)
    action: str

    def check(self, item: Item, now: datetime, summary: Counts) -> tuple[Any, Any]:
        """Validate one input value: (its key, the record to journal); counts what was cleaned
        into ``summary``; raises ``RecordError``."""

    def label(self, record: Any | None) -> str:
        """The metric ``name`` label of a record (or of this kind's records as a whole)."""

    def identity(self, record: Any) -> dict[str, str]:
        """What names a record in a log line (never its payload)."""

    def named_by(self, value: Any) -> dict[str, str | None]:
        """What names an input value that failed validation (fields it may have)."""

    def tally(self, batch: Batch[Any], outcome: WriteOutcome) -> Iterator[tuple[str, str, int]]:
        """(label, outcome, count) of one delivered batch, for the records metric."""

    def letter(self, record: Any) -> Letter: ...

    def from_letter(self, letter: Letter) -> Any: ...

    def document(self, record: Any) -> dict[str, Any]:
        """A record as JSON for people (``dead-letters show``)."""

    def sinks(self, targets: Targets[T]) -> Sequence[T] | None:
        """The sinks its records go to; None when this process cannot deliver them."""


_source = attrgetter("source")


class EventKind:
    """Raw events: validated by ``EventRules``; the first copy of a key wins."""

    name = EVENTS
    family = "events"
    model: str | None = None
    record_type = RawEvent
    keep: Literal["first", "last"] = "first"
    stamp_rule: Literal["oldest", "newest"] = "oldest"
    ramp = True
    summary_fields: tuple[str, ...] = EVENT_FIELDS
    action = "ingest"

    def __init__(self, rules: EventRules | None = None) -> None:
        self.rules = rules or EventRules()

    def check(self, item: Item, now: datetime, summary: Counts) -> tuple[Any, RawEvent]:
        checked = validate_event(
            item[1],
            self.rules,
            now=now,
            location=item[0],
            raw=item[2] if len(item) == 3 else None,
        )
        cleaning = checked.cleaning
        if cleaning.naive_timestamp or cleaning.nul_removed:
            summary.naive_timestamps += cleaning.naive_timestamp
            summary.nul_cleaned += cleaning.nul_removed
        event = checked.event
        summary.sources.add(event.source)
        return (event.source, event.source_id), event

    def label(self, record: Any | None) -> str:
        return "*" if record is None else str(record.source)

    def identity(self, record: Any) -> dict[str, str]:
        return {"source": record.source, "source_id": record.source_id}

    def named_by(self, value: Any) -> dict[str, str | None]:
        source: Any = self.rules.default_source
        source_id: Any = None
        if isinstance(value, dict):
            source = value.get("source", source)
            source_id = value.get("source_id", value.get(self.rules.id_field))
        return {
            "source": source if isinstance(source, str) else None,
            "source_id": str(source_id) if isinstance(source_id, str | int) else None,
        }

    def tally(self, batch: Batch[Any], outcome: WriteOutcome) -> Iterator[tuple[str, str, int]]:
        # map + attrgetter counts in C: this runs for every batch of every sink
        stored: Counter[str] = Counter(map(_source, batch.records))
        duplicates: Counter[str] = Counter()
        if outcome.duplicate_seqs:
            records, first = batch.records, batch.first
            duplicates.update(records[seq - first].source for seq in outcome.duplicate_seqs)
            stored.subtract(duplicates)
        for source, n in stored.items():
            if n:
                yield source, "stored", n
        for source, n in duplicates.items():
            yield source, "duplicate", n

    def letter(self, record: Any) -> Letter:
        return Letter(
            record.source, record.source_id, record.occurred_at.isoformat(), record.payload_json
        )

    def from_letter(self, letter: Letter) -> RawEvent:
        return RawEvent(
            letter.source,
            letter.source_id,
            datetime.fromisoformat(letter.occurred_at),
            letter.payload,
        )

    def document(self, record: Any) -> dict[str, Any]:
        return {
            "source": record.source,
            "source_id": record.source_id,
            "occurred_at": record.iso(),
            "payload": record.payload,
        }

    def sinks(self, targets: Targets[T]) -> Sequence[T] | None:
        return targets.event_sinks()


class ModelKind:
    """One model's records (journaled as ``RecordOp``): validated against the declaration;
    the last copy of a key in one write wins. Without a declaration (a journal read back by
    name) it can do everything but validate."""

    family = "model"
    record_type = RecordOp
    keep: Literal["first", "last"] = "last"
    stamp_rule: Literal["oldest", "newest"] = "newest"
    ramp = False
    summary_fields: tuple[str, ...] = MODEL_FIELDS
    action = "save"

    def __init__(
        self,
        model: str | ModelDef,
        declaration: Declaration | None = None,
        *,
        journal_name: str | None = None,
    ) -> None:
        self.definition = model if isinstance(model, ModelDef) else None
        self.model: str = model.name if isinstance(model, ModelDef) else model
        self.name = journal_name or model_kind(self.model)
        self.declaration = declaration

    def _bound(self) -> tuple[Declaration, ModelDef]:
        if self.declaration is None:
            raise ConfigError(f"no declaration of model {self.model!r} to check records with")
        return self.declaration, self.definition or self.declaration.model(self.model)

    def check(self, item: Item, now: datetime, summary: Counts) -> tuple[Any, RecordOp]:
        declaration, model = self._bound()
        checked = validate_record(declaration, model, item[1], item[0])
        summary.nul_cleaned += checked.nul_removed
        return key_of(model, checked.record), RecordOp(UPSERT, checked.record)

    def deletions(self, keys: Iterable[Any]) -> list[RecordOp]:
        """Delete operations for natural keys (validated)."""
        _, model = self._bound()
        return [RecordOp(DELETE, validate_key(model, key)) for key in keys]

    def label(self, record: Any | None) -> str:
        return self.model

    def identity(self, record: Any) -> dict[str, str]:
        return {"op": str(record[0])}

    def named_by(self, value: Any) -> dict[str, str | None]:
        return {"model": self.model}

    def tally(self, batch: Batch[Any], outcome: WriteOutcome) -> Iterator[tuple[str, str, int]]:
        if outcome.stored:
            yield self.model, "stored", outcome.stored
        if outcome.unchanged:
            yield self.model, "unchanged", outcome.unchanged

    def letter(self, record: Any) -> Letter:
        payload = json.dumps(record.record, ensure_ascii=False)
        return Letter(self.name, record.op, datetime.now(UTC).isoformat(), payload)

    def from_letter(self, letter: Letter) -> RecordOp:
        return RecordOp(letter.source_id, json.loads(letter.payload))

    def document(self, record: Any) -> dict[str, Any]:
        return {"op": record.op, "record": record.record}

    def sinks(self, targets: Targets[T]) -> Sequence[T] | None:
        return targets.model_sinks(self.model)


def kind_named(name: str) -> RecordKind:
    """The kind of a journal name (a journal, a dead letter, a sink's ``kind``).

    A name that is neither (a journal from another version, a damaged file) is read as the
    records of a model no one here declares: its journal is kept, for a process that does."""
    if name == EVENTS:
        return EventKind()
    return ModelKind(name.removeprefix(_MODEL_PREFIX), journal_name=name)

"""The model service: save, update and delete entities through the journal; query them.

Writes take the durable path raw events take (validate → journal, acknowledged → every sink), one
journal per model. Reads go to PostgreSQL (the repository port). An update reads the current
record, applies the changes and saves the result as a whole record, so both stores see one
version; a delete is journaled too, so the CSV history gets its tombstone.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from scrapesink.application import delivery
from scrapesink.application.delivery import PENDING, Receipt
from scrapesink.application.durable import DurableWriter
from scrapesink.application.ingest import Record, RejectHook, Tracker, WriteSummary
from scrapesink.domain.models import SYSTEM_COLUMNS, Declaration, ModelDef
from scrapesink.domain.records import (
    DELETE,
    UPSERT,
    Entity,
    key_of,
    validate_key,
    validate_record,
)
from scrapesink.errors import InputError, NotFound, RecordError
from scrapesink.logs import get_logger

log = logging.getLogger(__name__)
slog = get_logger(__name__)


@dataclass(kw_only=True)
class ModelSummary(WriteSummary):
    """What one save did: per sink, ``stored`` counts new or changed records, ``unchanged``
    those identical to what the sink held (nothing written)."""

    model: str

    @property
    def stored(self) -> int:
        return self.primary_report.stored

    @property
    def unchanged(self) -> int:
        return self.primary_report.unchanged

    def as_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "read": self.read,
            "stored": self.stored,
            "unchanged": self.unchanged,
            "input_duplicates": self.input_duplicates,
            "rejected": self.rejected,
            "pending": self.pending,
            "dead_letters": self.dead_letters,
            "nul_cleaned": self.nul_cleaned,
            "sinks": {name: report.as_dict() for name, report in self.sinks.items()},
        }


class Repository(Protocol):
    """What the service reads through (``adapters.postgres.entities.ModelRepository``)."""

    def get(self, model: ModelDef, key: dict[str, Any]) -> dict[str, Any] | None: ...


class ModelService:
    def __init__(
        self,
        declaration: Declaration,
        writer_for: Callable[[ModelDef], DurableWriter],
        repository: Repository,
        *,
        batch_size: int = 1000,
    ) -> None:
        self.declaration = declaration
        self.writer_for = writer_for
        self.repository = repository
        self.batch_size = batch_size

    def model(self, name: str) -> ModelDef:
        return self.declaration.model(name)

    def save(
        self,
        name: str,
        records: Iterable[Record],
        *,
        on_reject: RejectHook | None = None,
        settle: bool = True,
        track: bool = False,
    ) -> ModelSummary:
        """Validate, journal and deliver ``records`` (``(location, value)`` pairs or errors).

        ``track``: one result per record (``summary.results``), waiting for these records only
        (see ``IngestService.ingest``)."""
        model = self.model(name)
        writer = self.writer_for(model)
        if not track:
            return self._save(model, writer, records, on_reject, settle, None)
        with writer.receipt() as receipt:
            return self._save(model, writer, records, on_reject, settle, receipt)

    def _save(
        self,
        model: ModelDef,
        writer: DurableWriter,
        records: Iterable[Record],
        on_reject: RejectHook | None,
        settle: bool,
        receipt: Receipt | None,
    ) -> ModelSummary:
        summary = ModelSummary(model=model.name)
        tracker = Tracker() if receipt is not None else None
        before = writer.reports()
        batch: dict[tuple[Any, ...], Entity] = {}
        slots: dict[tuple[Any, ...], int] = {}  # key -> the tracker's result index

        journaled: list[tuple[int, int]] = []

        def flush() -> None:
            if batch:
                first, last = writer.write(list(batch.values()), receipt)
                journaled.append((first, last))
                if tracker is not None:
                    tracker.journaled([slots[key] for key in batch], first)
                summary.accepted += len(batch)
                batch.clear()
                slots.clear()

        try:
            for item in records:
                summary.read += 1
                if isinstance(item, RecordError):
                    summary.reject(item, on_reject, tracker)
                    continue
                try:
                    checked = validate_record(self.declaration, model, item[1], item[0])
                except RecordError as error:
                    summary.reject(error, on_reject, tracker)
                    delivery.rejected("model", model.name)
                    continue
                summary.nul_cleaned += checked.nul_removed
                key = key_of(model, checked.record)
                if batch.pop(key, None) is not None:
                    summary.input_duplicates += 1  # last one wins, at the end of the batch
                    if tracker is not None:
                        tracker.superseded(slots.pop(key))
                batch[key] = Entity(UPSERT, checked.record)
                if tracker is not None:
                    slots[key] = tracker.add(PENDING, item[0])
                if len(batch) >= self.batch_size:
                    flush()
        except InputError:
            flush()
            if settle:
                writer.settle()
            raise
        flush()
        summary.finish(writer, before, settle, receipt, tracker, journaled)
        slog.info("save done", **{k: v for k, v in summary.as_dict().items() if k != "sinks"})
        return summary

    def get(self, name: str, key: Mapping[str, Any] | Any) -> dict[str, Any] | None:
        model = self.model(name)
        return self.repository.get(model, validate_key(model, key))

    def update(
        self, name: str, key: Mapping[str, Any] | Any, changes: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Apply ``changes`` (fields; a child or link list replaces the old one) to a record.

        Raises:
            NotFound: no record has this key.
            RecordError: the changed record is invalid (nothing is written).
        """
        model = self.model(name)
        checked_key = validate_key(model, key)
        current = self.repository.get(model, checked_key)
        if current is None:
            raise NotFound(f"no {model.name} record with {_describe(checked_key)}")
        for k in model.natural_key:
            if k in changes and changes[k] != current[k]:
                raise RecordError(
                    "the natural key cannot be updated (save a new record instead)", path=k
                )
        merged = {k: v for k, v in current.items() if k not in SYSTEM_COLUMNS} | dict(changes)
        summary = self.save(name, [(None, merged)], track=True)
        if summary.rejections:
            raise summary.rejections[0]
        found = self.repository.get(model, checked_key)
        return found if found is not None else merged

    def delete(self, name: str, keys: Sequence[Mapping[str, Any] | Any]) -> ModelSummary:
        """Delete records (with their children and links) by natural key, through the journal."""
        model = self.model(name)
        writer = self.writer_for(model)
        entities = [Entity(DELETE, validate_key(model, key)) for key in keys]
        summary = ModelSummary(model=model.name, read=len(entities), accepted=len(entities))
        with writer.receipt() as receipt:  # wait for these deletes, not for everything
            if entities:
                writer.write(entities, receipt)
            summary.sinks = writer.wait(receipt)
        return summary


def _describe(key: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in key.items())

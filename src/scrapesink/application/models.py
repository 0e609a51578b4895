"""The model service: save, update and delete a model's records through the journal; get them.

Writes take the durable path raw events take (validate → journal, acknowledged → every sink), one
journal per model. Reads go to PostgreSQL (the repository port). An update reads the current
record, applies the changes and saves the result as a whole record, so both stores see one
version; a delete is journaled too, so the CSV history gets its tombstone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from scrapesink.application.durable import DurableWriter
from scrapesink.application.kinds import ModelKind
from scrapesink.application.ports import ModelReader
from scrapesink.application.summary import RejectHook, WriteSummary
from scrapesink.application.writer import Record, RecordWriter
from scrapesink.domain.models import SYSTEM_COLUMNS, Declaration, ModelDef
from scrapesink.domain.records import validate_key
from scrapesink.errors import ConstraintError, NotFound, RecordError


class ModelService:
    def __init__(
        self,
        declaration: Declaration,
        writer_for: Callable[[ModelKind], DurableWriter],
        reader: ModelReader,
        *,
        batch_size: int = 1000,
    ) -> None:
        self.declaration = declaration
        self.writer_for = writer_for
        self.reader = reader
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
    ) -> WriteSummary:
        """Validate, journal and deliver ``records`` (``(location, value)`` pairs or errors);
        the last copy of a key in one batch wins (see ``RecordWriter.write``)."""
        kind = self.kind(name)
        writer = RecordWriter(self.writer_for(kind), kind, batch_size=self.batch_size)
        return writer.write(records, on_reject=on_reject, settle=settle, track=track)

    def kind(self, name: str) -> ModelKind:
        return ModelKind(self.model(name), self.declaration)

    def get(self, name: str, key: Mapping[str, Any] | Any) -> dict[str, Any] | None:
        model = self.model(name)
        return self.reader.get(model, validate_key(model, key))

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
        current = self.reader.get(model, checked_key)
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
        if summary.dead_letters:  # the change's error stays with it: never the old record back
            raise ConstraintError(
                f"the change to {model.name} {_describe(checked_key)} was refused by"
                f" {', '.join(n for n, r in summary.sinks.items() if r.dead_letters)} and kept"
                " as a dead letter (scrapesink deadletters list)"
            )
        found = self.reader.get(model, checked_key)
        return found if found is not None else merged

    def delete(self, name: str, keys: Sequence[Mapping[str, Any] | Any]) -> WriteSummary:
        """Delete records (with their children and links) by natural key, through the journal."""
        kind = self.kind(name)
        writer = self.writer_for(kind)
        deletions = kind.deletions(keys)
        summary = WriteSummary(kind=kind, read=len(deletions), accepted=len(deletions))
        with writer.receipt() as receipt:  # wait for these deletes, not for everything
            if deletions:
                writer.write(deletions, receipt)
            summary.sinks = writer.wait(receipt)
        return summary


def _describe(key: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in key.items())

"""The ingest service: validate each record, batch, deliver to the event store, count everything."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from scrapesink.application.ports import EventStore
from scrapesink.domain.events import EventRules, RawEvent, validate_event
from scrapesink.errors import InputError, RecordError

MAX_KEPT_REJECTIONS = 1000


@dataclass
class IngestSummary:
    """What one ingest did. ``rejections`` keeps the first 1000 errors; ``rejected`` counts all."""

    read: int = 0
    inserted: int = 0
    duplicates: int = 0
    rejected: int = 0
    naive_timestamps: int = 0
    nul_cleaned: int = 0
    batches: int = 0
    rejections: list[RecordError] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.rejected == 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "read": self.read,
            "inserted": self.inserted,
            "duplicates": self.duplicates,
            "rejected": self.rejected,
            "naive_timestamps": self.naive_timestamps,
            "nul_cleaned": self.nul_cleaned,
        }


Record = tuple[str | None, Any] | RecordError
ProgressHook = Callable[[IngestSummary], None]
RejectHook = Callable[[RecordError], None]


class IngestService:
    """Validate → batch → store. Knows nothing of where records come from or where they go."""

    def __init__(self, store: EventStore, rules: EventRules, *, batch_size: int = 5000) -> None:
        self.store = store
        self.rules = rules
        self.batch_size = batch_size

    def ingest(
        self,
        records: Iterable[Record],
        *,
        on_reject: RejectHook | None = None,
        on_batch: ProgressHook | None = None,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> IngestSummary:
        """Ingest ``records``: ``(location, value)`` pairs or errors from a reader.

        Records read before a fatal input error are still stored before the error propagates.
        """
        summary = IngestSummary()
        batch: dict[tuple[str, str], RawEvent] = {}
        self.store.prepare()

        def reject(error: RecordError) -> None:
            summary.rejected += 1
            if len(summary.rejections) < MAX_KEPT_REJECTIONS:
                summary.rejections.append(error)
            if on_reject is not None:
                on_reject(error)

        def flush() -> None:
            if not batch:
                return
            outcome = self.store.write(list(batch.values()))
            summary.inserted += len(outcome.stored)
            summary.duplicates += len(batch) - len(outcome.stored)
            summary.batches += 1
            batch.clear()
            if on_batch is not None:
                on_batch(summary)

        reference = now()
        try:
            for item in records:
                summary.read += 1
                if isinstance(item, RecordError):
                    reject(item)
                    continue
                location, value = item
                try:
                    checked = validate_event(value, self.rules, now=reference, location=location)
                except RecordError as error:
                    reject(error)
                    continue
                summary.naive_timestamps += checked.cleaning.naive_timestamp
                summary.nul_cleaned += checked.cleaning.nul_removed
                event = checked.event
                if event.key in batch:  # same key twice in one batch: the first one wins
                    summary.duplicates += 1
                    continue
                batch[event.key] = event
                if len(batch) >= self.batch_size:
                    flush()
                    reference = now()
        except InputError:
            flush()  # what was read before the input broke is good: keep it
            raise
        flush()
        return summary

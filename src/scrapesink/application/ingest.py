"""The ingest service: raw events through the one write loop (``writer.RecordWriter``)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, datetime

from scrapesink.application.durable import DurableWriter
from scrapesink.application.kinds import EventKind
from scrapesink.application.summary import RejectHook, WriteSummary
from scrapesink.application.writer import ProgressHook, Record, RecordWriter
from scrapesink.domain.events import EventRules


class IngestService:
    """Validate → batch → journal (acknowledged) → every sink. Knows no store by name."""

    def __init__(self, writer: DurableWriter, rules: EventRules, *, batch_size: int = 5000) -> None:
        self.rules = rules
        self.kind = EventKind(rules)
        self.loop = RecordWriter(writer, self.kind, batch_size=batch_size)

    def ingest(
        self,
        records: Iterable[Record],
        *,
        on_reject: RejectHook | None = None,
        on_batch: ProgressHook | None = None,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        settle: bool = True,
        track: bool = False,
    ) -> WriteSummary:
        """Ingest ``records`` (see ``RecordWriter.write``); raw events: the first copy of a key
        in the input wins."""
        return self.loop.write(
            records, on_reject=on_reject, on_batch=on_batch, now=now, settle=settle, track=track
        )

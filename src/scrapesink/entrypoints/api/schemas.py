"""Request and response shapes of the REST API (what /openapi.json documents)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from scrapesink.application.outcomes import SinkReport
from scrapesink.application.summary import WriteSummary
from scrapesink.domain.events import StoredEvent

Status = Literal["stored", "duplicate", "unchanged", "pending", "dead_letter", "rejected"]


class RecordOutcome(BaseModel):
    """What became of one record of the request (``index``: its position, from 0)."""

    index: int
    status: Status
    path: str | None = None
    reason: str | None = None


class SinkCounts(BaseModel):
    stored: int
    duplicates: int
    unchanged: int
    pending: int
    dead_letters: int
    error: str | None = None


class WriteResponse(BaseModel):
    """Counts for the request, per sink, and one outcome per record. ``pending`` records are
    journaled (acknowledged) and reach PostgreSQL when it can take them."""

    read: int
    stored: int
    duplicates: int
    unchanged: int
    pending: int
    rejected: int
    dead_letters: int
    nul_cleaned: int
    sinks: dict[str, SinkCounts]
    results: list[RecordOutcome]


def write_response(summary: WriteSummary) -> WriteResponse:
    primary = summary.primary_report
    results = summary.results or []
    return WriteResponse(
        read=summary.read,
        stored=primary.stored,
        duplicates=summary.input_duplicates + primary.duplicates,
        unchanged=primary.unchanged,
        pending=primary.pending,
        rejected=summary.rejected,
        dead_letters=primary.dead_letters,
        nul_cleaned=summary.nul_cleaned,
        sinks={name: _counts(report) for name, report in summary.sinks.items()},
        results=[
            RecordOutcome(index=i, status=r.status, path=r.path, reason=r.reason)
            for i, r in enumerate(results)
        ],
    )


def _counts(report: SinkReport) -> SinkCounts:
    return SinkCounts(
        stored=report.stored,
        duplicates=report.duplicates,
        unchanged=report.unchanged,
        pending=report.pending,
        dead_letters=report.dead_letters,
        error=report.error,
    )


class EventOut(BaseModel):
    id: int
    source: str
    source_id: str
    occurred_at: datetime
    payload: dict[str, Any]
    created_at: datetime
    processed: bool

    @classmethod
    def of(cls, event: StoredEvent) -> EventOut:
        return cls(
            id=event.id,
            source=event.source,
            source_id=event.source_id,
            occurred_at=event.occurred_at,
            payload=event.payload,
            created_at=event.created_at,
            processed=event.processed,
        )


class EventPageOut(BaseModel):
    events: list[EventOut]
    next_cursor: str | None


class DayStatsOut(BaseModel):
    source: str
    day: date
    events: int
    processed: int


class EventKey(BaseModel):
    source: str = Field(min_length=1)
    source_id: str = Field(min_length=1)


class MarkProcessed(BaseModel):
    keys: list[EventKey] = Field(min_length=1, max_length=10_000)
    processed: bool = True


class Changed(BaseModel):
    changed: int


class FieldOut(BaseModel):
    name: str
    type: str
    nullable: bool


class ModelOut(BaseModel):
    name: str
    table_name: str
    natural_key: list[str]
    fields: list[FieldOut]
    children: list[str]
    links: list[str]
    search_fields: list[str]


class ModelPageOut(BaseModel):
    records: list[dict[str, Any]]
    next_cursor: str | None


class SearchHitOut(BaseModel):
    rank: float
    record: dict[str, Any]


class DeleteResponse(BaseModel):
    deleted: int
    pending: int


class SinkStatusOut(BaseModel):
    pending: int
    oldest_pending: datetime | None
    dead_letters: int


class StatusOut(BaseModel):
    database: str
    sinks: dict[str, SinkStatusOut]
    journals: int
    journals_in_use: int
    journal_bytes: int


class DeadLetterOut(BaseModel):
    id: int
    sink: str
    kind: str
    error_type: str
    message: str
    attempts: int
    first_failed_at: datetime
    last_failed_at: datetime
    record: dict[str, Any]


class RetryRequest(BaseModel):
    ids: list[int] | None = Field(default=None, description="Dead letter ids (default: all).")
    sink: str | None = Field(default=None, description="Only this sink's.")


class RetryOut(BaseModel):
    stored: list[int]
    refused: dict[str, str]


class PartitionOut(BaseModel):
    name: str
    start: datetime
    end: datetime
    rows: int
    size_bytes: int


class EnsureRequest(BaseModel):
    days: int | None = Field(default=None, ge=0, le=366, description="Days ahead (a year at most).")


class PruneRequest(BaseModel):
    older_than: str = Field(description="Drop days that ended longer ago than this: 30d, 12h.")
    dry_run: bool = False


class NamesOut(BaseModel):
    names: list[str]


class ReplayOut(BaseModel):
    journals: int
    removed: int
    busy: int
    sinks: dict[str, SinkCounts]


class CheckOut(BaseModel):
    name: str
    ok: bool
    detail: str


class HealthOut(BaseModel):
    status: Literal["ok", "degraded"]
    database: str
    database_ok: bool
    error: str | None = None
    checks: list[CheckOut]
    pending: dict[str, int]
    oldest_pending_seconds: dict[str, float | None]
    dead_letters: dict[str, int]


class ComponentOut(BaseModel):
    name: str
    kind: str
    config: dict[str, Any]


class JobOut(BaseModel):
    name: str
    kind: str
    source: str | None
    config: dict[str, Any]
    enabled: bool
    created_at: datetime
    updated_at: datetime
    components: list[ComponentOut]


class RunRecords(BaseModel):
    read: int
    stored: int
    duplicate: int
    unchanged: int
    rejected: int
    pending: int


class RunOut(BaseModel):
    id: int
    job: str
    status: Literal["pending", "running", "succeeded", "failed", "partial"]
    origin: str
    started_at: datetime
    finished_at: datetime | None
    duration_seconds: float | None
    records: RunRecords
    error_summary: str | None

"""Raw events over HTTP: batch and streamed ingest, get, list, mark processed, stats."""

from __future__ import annotations

import json
import tempfile
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from scrapesink.adapters.readers import read_jsonl
from scrapesink.application.ports import EventQuery
from scrapesink.entrypoints.api.deps import Events, Reader, ServicesDep, Writer
from scrapesink.entrypoints.api.routes.common import (
    MAX_PAGE,
    NDJSON,
    errors,
    json_body,
    json_only,
    json_request,
    records_of,
    require_media,
    written,
)
from scrapesink.entrypoints.api.schemas import (
    Changed,
    DayStatsOut,
    EventOut,
    EventPageOut,
    MarkProcessed,
    WriteResponse,
)
from scrapesink.entrypoints.api.services import Services
from scrapesink.errors import NotFound

router = APIRouter(prefix="/api/v1/events", tags=["raw events"])

Source = Annotated[
    str | None, Query(description="Source of flat records (and of canonical ones lacking it).")
]
IdField = Annotated[str, Query(description="The id field of flat records.")]
TimeField = Annotated[str, Query(description="The time field of flat records.")]
JobName = Annotated[
    str | None,
    Query(description="Record this request as a run of the job (made when new)."),
]
_RECORD = {"type": "object", "additionalProperties": True}
_WRITE_ERRORS = errors(400, 401, 403, 413, 415, 422)


def _ingest(
    services: Services,
    records: Any,
    source: str | None,
    id_field: str,
    time_field: str,
    job: str | None,
) -> JSONResponse:
    rules = services.app.rules(id_field=id_field, time_field=time_field, default_source=source)
    with services.job_run(job, source) as run:
        summary = services.ingest_service(rules).ingest(records, track=True)
        run.add(summary)
    return written(summary)


@router.post(
    "",
    summary="Ingest a batch of raw events (a JSON array)",
    response_model=WriteResponse,
    responses={202: {"model": WriteResponse}, **_WRITE_ERRORS},
    openapi_extra=json_request({"type": "array", "items": _RECORD}),
)
async def ingest_events(
    request: Request,
    services: ServicesDep,
    _: Writer,
    source: Source = None,
    id_field: IdField = "id",
    time_field: TimeField = "timestamp",
    job: JobName = None,
) -> JSONResponse:
    """Each record is canonical (``source, source_id, occurred_at, payload``) or a flat scraped
    object (id and time fields named by the query). An event already stored is a
    ``duplicate``; an invalid one is ``rejected`` with its path and the others are stored.
    200 when PostgreSQL answered for every record, 202 when some are ``pending`` (journaled,
    delivered when PostgreSQL is back)."""
    body = records_of(await json_body(request), services.settings.api_max_batch)
    records = [(f"[{i}]", record) for i, record in enumerate(body)]
    return await run_in_threadpool(_ingest, services, records, source, id_field, time_field, job)


@router.post(
    "/stream",
    summary="Ingest raw events streamed as NDJSON (one JSON object per line)",
    response_model=WriteResponse,
    responses={202: {"model": WriteResponse}, **_WRITE_ERRORS},
    openapi_extra=json_request({"type": "string"}, ndjson=True),
)
async def ingest_stream(
    request: Request,
    services: ServicesDep,
    _: Writer,
    source: Source = None,
    id_field: IdField = "id",
    time_field: TimeField = "timestamp",
    job: JobName = None,
) -> JSONResponse:
    """The body streams to a spooled temporary file (memory up to 1 MiB, then disk) and is
    ingested line by line once complete, so a body over the size limit (413) stores nothing.
    A line that is not JSON is ``rejected`` (``line N``); the others are stored."""
    require_media(request, NDJSON, "application/jsonl", "application/json-seq")
    with tempfile.SpooledTemporaryFile(max_size=1 << 20) as spool:
        async for chunk in request.stream():
            spool.write(chunk)
        spool.seek(0)
        records = read_jsonl(spool, max_record_bytes=services.settings.max_payload_bytes * 2)
        return await run_in_threadpool(
            _ingest, services, records, source, id_field, time_field, job
        )


@router.get(
    "",
    summary="List raw events (keyset pagination)",
    response_model=EventPageOut,
    responses=errors(400, 401, 403, 422),
)
def list_events(
    _: Reader,
    events: Events,
    source: str | None = None,
    since: Annotated[datetime | None, Query(description="occurred_at from (inclusive)")] = None,
    until: Annotated[datetime | None, Query(description="occurred_at until (exclusive)")] = None,
    processed: bool | None = None,
    contains: Annotated[
        str | None, Query(description='JSON object the payload contains: {"kind": "a"}')
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
    after: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
) -> EventPageOut:
    wanted = None
    if contains is not None:
        try:
            wanted = json.loads(contains)
        except json.JSONDecodeError as exc:
            raise HTTPException(422, f"contains: not valid JSON ({exc.msg})") from None
        if not isinstance(wanted, dict):
            raise HTTPException(422, "contains: must be a JSON object")
    page = events.query(EventQuery(source, since, until, processed, wanted, limit, after))
    return EventPageOut(events=[EventOut.of(e) for e in page.events], next_cursor=page.next_cursor)


@router.get(
    "/stats",
    summary="Events per source and UTC day",
    response_model=list[DayStatsOut],
    responses=errors(401, 403, 422),
)
def event_stats(
    _: Reader,
    events: Events,
    source: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> list[DayStatsOut]:
    rows = events.stats(source=source, since=since, until=until)
    return [
        DayStatsOut(source=r.source, day=r.day, events=r.events, processed=r.processed)
        for r in rows
    ]


@router.post(
    "/processed",
    summary="Mark events processed (or not)",
    response_model=Changed,
    responses=errors(400, 401, 403, 413, 415, 422),
    dependencies=[Depends(json_only)],
)
def mark_processed(body: MarkProcessed, _: Writer, events: Events) -> Changed:
    keys = [(k.source, k.source_id) for k in body.keys]
    return Changed(changed=events.mark_processed(keys, body.processed))


@router.get(
    "/{source}/{source_id}",
    summary="One event by its key",
    response_model=EventOut,
    responses=errors(401, 403, 404),
)
def get_event(
    source: str,
    source_id: str,
    _: Reader,
    events: Events,
) -> EventOut:
    event = events.get(source, source_id)
    if event is None:
        raise NotFound(f"no event {source}/{source_id}")
    return EventOut.of(event)

"""Operations over HTTP: status, dead letters, partitions, replay (admin), health, metrics."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException

from scrapesink.application.replay import retry_dead_letters
from scrapesink.config import parse_duration
from scrapesink.entrypoints.api.deps import Admin, ServicesDep
from scrapesink.entrypoints.api.metrics import CONTENT_TYPE
from scrapesink.entrypoints.api.routes.common import errors, json_if_any, json_only
from scrapesink.entrypoints.api.schemas import (
    CheckOut,
    DeadLetterOut,
    EnsureRequest,
    HealthOut,
    NamesOut,
    PartitionOut,
    PruneRequest,
    ReplayOut,
    RetryOut,
    RetryRequest,
    SinkCounts,
    StatusOut,
)

router = APIRouter(prefix="/api/v1", tags=["operations"])
probes = APIRouter(tags=["probes"])
_ADMIN_ERRORS = errors(401, 403, 503)


@router.get(
    "/status",
    summary="Pending records per sink, dead letters, journals",
    response_model=StatusOut,
    responses=_ADMIN_ERRORS,
)
def status(services: ServicesDep, _: Admin) -> StatusOut:
    return StatusOut.model_validate(services.status().as_dict())


@router.get(
    "/dead-letters",
    summary="Records a sink refused for good, oldest first",
    response_model=list[DeadLetterOut],
    responses=_ADMIN_ERRORS,
)
def dead_letters(
    services: ServicesDep,
    _: Admin,
    sink: str | None = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
) -> list[DeadLetterOut]:
    letters = services.app.dead_letters.list(sink=sink, limit=limit)
    return [DeadLetterOut.model_validate(letter.as_dict()) for letter in letters]


@router.post(
    "/dead-letters/retry",
    summary="Send dead letters to their sink again",
    response_model=RetryOut,
    responses=errors(400, 401, 403, 404, 415, 422, 503),
    dependencies=[Depends(json_if_any)],
)
def retry(services: ServicesDep, principal: Admin, body: RetryRequest | None = None) -> RetryOut:
    """Without a body: every dead letter of every sink."""
    body = body or RetryRequest()
    store = services.app.dead_letters
    if body.ids:
        letters = [store.get(i) for i in body.ids]
    else:
        letters = store.list(sink=body.sink, limit=1_000_000)
    result = retry_dead_letters(letters, services.app.sinks_for, store)
    services.record_audit(
        principal,
        "dead-letters retry",
        body.sink or "all",
        f"{len(result.stored)} stored, {len(result.refused)} refused",
        {"ids": body.ids},
    )
    return RetryOut(stored=result.stored, refused={str(k): v for k, v in result.refused.items()})


@router.get(
    "/partitions",
    summary="Day partitions of raw_events",
    response_model=list[PartitionOut],
    responses=_ADMIN_ERRORS,
)
def partitions(services: ServicesDep, _: Admin) -> list[PartitionOut]:
    return [
        PartitionOut(name=p.name, start=p.start, end=p.end, rows=p.rows, size_bytes=p.size_bytes)
        for p in services.app.partitions.details()
    ]


@router.post(
    "/partitions/ensure",
    summary="Create today's partition and the next days",
    response_model=NamesOut,
    responses=errors(400, 401, 403, 415, 422, 503),
    dependencies=[Depends(json_if_any)],
)
def ensure_partitions(
    services: ServicesDep, principal: Admin, body: EnsureRequest | None = None
) -> NamesOut:
    """Without a body: today and SCRAPESINK_PARTITION_PREMAKE_DAYS ahead."""
    body = body or EnsureRequest()
    ahead = services.settings.partition_premake_days if body.days is None else body.days
    created = services.app.partitions.premake(ahead)
    names = [part.name for part in created]
    services.record_audit(principal, "partitions ensure", f"{ahead} days", f"{len(names)} created")
    return NamesOut(names=names)


@router.post(
    "/partitions/prune",
    summary="Drop day partitions older than a duration",
    response_model=list[PartitionOut],
    responses=errors(400, 401, 403, 415, 422, 503),
    dependencies=[Depends(json_only)],
)
def prune_partitions(
    services: ServicesDep, body: PruneRequest, principal: Admin
) -> list[PartitionOut]:
    try:
        age = parse_duration(body.older_than)
    except ValueError as exc:
        raise HTTPException(422, f"older_than: {exc}") from None
    if age < timedelta(days=1):
        raise HTTPException(422, "older_than: must be at least 1d")
    dropped = services.app.partitions.prune(age, dry_run=body.dry_run)
    services.record_audit(
        principal,
        "partitions prune",
        body.older_than,
        f"{'would drop' if body.dry_run else 'dropped'} {len(dropped)}",
        {"partitions": [p.name for p in dropped], "dry_run": body.dry_run},
    )
    return [
        PartitionOut(name=p.name, start=p.start, end=p.end, rows=p.rows, size_bytes=p.size_bytes)
        for p in dropped
    ]


@router.post(
    "/replay",
    summary="Deliver what journals still hold for a sink",
    response_model=ReplayOut,
    responses=_ADMIN_ERRORS,
)
def replay(services: ServicesDep, principal: Admin) -> ReplayOut:
    services.app.catch_up()  # this server's own journal first
    result = services.app.replay()
    pending = sum(r.pending for r in result.reports.values())
    services.record_audit(
        principal, "replay", "journals", f"{result.journals} replayed, {pending} pending"
    )
    return ReplayOut(
        journals=result.journals,
        removed=result.removed,
        busy=result.busy,
        sinks={n: SinkCounts.model_validate(r.as_dict()) for n, r in result.reports.items()},
    )


@probes.get(
    "/api/health",
    summary="Database reachable, journal and sink lag",
    response_model=HealthOut,
    responses={503: {"model": HealthOut}},
)
def health(services: ServicesDep) -> JSONResponse:
    """The checks of `scrapesink health` (database, migrations, partitions, pending age, disk):
    ``status`` is ``degraded`` when any fails; the answer is 503 only when PostgreSQL does not
    answer (ingest goes on into the journal meanwhile)."""
    checks = services.app.health()
    database = next(c for c in checks.checks if c.name == "database")
    report = services.status(database_up=database.ok)
    now = datetime.now(UTC)
    body = HealthOut(
        status="ok" if checks.ok else "degraded",
        database=services.app.database.label,
        database_ok=database.ok,
        error=None if database.ok else database.detail,
        checks=[CheckOut(name=c.name, ok=c.ok, detail=c.detail) for c in checks.checks],
        pending={name: s.pending for name, s in report.sinks.items()},
        oldest_pending_seconds={
            name: (now - s.oldest_pending).total_seconds() if s.oldest_pending else None
            for name, s in report.sinks.items()
        },
        dead_letters={name: s.dead_letters for name, s in report.sinks.items()},
    )
    return JSONResponse(body.model_dump(mode="json"), 200 if database.ok else 503)


@probes.get("/metrics", summary="Prometheus metrics (text format)", response_class=Response)
def metrics(services: ServicesDep) -> Response:
    return Response(services.metrics.render(), media_type=CONTENT_TYPE)

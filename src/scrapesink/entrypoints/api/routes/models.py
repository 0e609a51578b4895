"""Declared models over HTTP: save, get, list, update, delete, search, stats."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from scrapesink.domain.models import ModelDef
from scrapesink.entrypoints.api.deps import Models, Reader, ServicesDep, Writer
from scrapesink.entrypoints.api.routes.common import (
    MAX_PAGE,
    errors,
    json_body,
    json_request,
    records_of,
    written,
)
from scrapesink.entrypoints.api.schemas import (
    DeleteResponse,
    FieldOut,
    ModelOut,
    ModelPageOut,
    SearchHitOut,
    WriteResponse,
)
from scrapesink.entrypoints.api.services import Services
from scrapesink.entrypoints.parsing import parse_filters, parse_key
from scrapesink.errors import NotFound

router = APIRouter(prefix="/api/v1/models", tags=["models"])
_RECORD = {"type": "object", "additionalProperties": True}
KeyPath = Annotated[str, "the natural key value, or a JSON object for a composite key"]


def _describe(model: ModelDef) -> ModelOut:
    return ModelOut(
        name=model.name,
        table_name=model.table_name,
        natural_key=list(model.natural_key),
        fields=[FieldOut(name=f.name, type=f.type, nullable=f.nullable) for f in model.fields],
        children=[c.name for c in model.children],
        links=[link.name for link in model.links],
        search_fields=list(model.search_fields),
    )


@router.get("", summary="The declared models", response_model=list[ModelOut])
def list_models(services: ServicesDep, _: Reader) -> list[ModelOut]:
    declaration = services.app.declaration
    return [_describe(model) for model in declaration.models.values()]


@router.get(
    "/{model}", summary="One model's declaration", response_model=ModelOut, responses=errors(404)
)
def show_model(services: ServicesDep, model: str, _: Reader) -> ModelOut:
    return _describe(services.model(model))


def _save(services: Services, model: str, body: list[Any], job: str | None) -> JSONResponse:
    records = [(f"[{i}]", record) for i, record in enumerate(body)]
    with services.job_run(job, None) as run:
        summary = services.models().save(model, records, track=True)
        run.add(summary)
    return written(summary)


@router.post(
    "/{model}/records",
    summary="Save records (one object, or an array): upsert on the natural key",
    response_model=WriteResponse,
    responses={202: {"model": WriteResponse}, **errors(400, 401, 403, 404, 413, 415, 422)},
    openapi_extra=json_request(
        {"oneOf": [_RECORD, {"type": "array", "items": _RECORD}]},
    ),
)
async def save_records(
    request: Request,
    services: ServicesDep,
    model: str,
    _: Writer,
    job: Annotated[
        str | None, Query(description="Record this request as a run of the job.")
    ] = None,
) -> JSONResponse:
    """A new or changed record is ``stored``; one identical to what PostgreSQL holds is
    ``unchanged``; in one request the last record of a key wins (the earlier are
    ``duplicate``). Children and links are replaced to match the record."""
    services.model(model)
    body = records_of(await json_body(request), services.settings.api_max_batch, single=True)
    return await run_in_threadpool(_save, services, model, body, job)


@router.get(
    "/{model}/records",
    summary="List records (their own fields; ?children=true for whole records): filters, "
    "sort, keyset pagination",
    response_model=ModelPageOut,
    responses=errors(400, 401, 403, 404, 422),
)
def list_records(
    services: ServicesDep,
    model: str,
    _: Reader,
    models: Models,  # after the key check: it applies the declaration on first use
    where: Annotated[
        list[str] | None,
        Query(description="FIELD OP VALUE, OP one of = != < <= > >= ~; e.g. quality_score>=0.8"),
    ] = None,
    sort: Annotated[str | None, Query(description="field, or -field for descending")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
    after: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
    children: Annotated[
        bool, Query(description="whole records, with their children and links")
    ] = False,
) -> ModelPageOut:
    declared = services.model(model)
    page = models.list(
        declared,
        filters=parse_filters(where or []),
        sort=sort,
        limit=limit,
        after=after,
        children=children,
    )
    return ModelPageOut(records=page.records, next_cursor=page.next_cursor)


@router.get(
    "/{model}/records/{key:path}",
    summary="One record with its children and links",
    response_model=dict[str, Any],
    responses=errors(400, 401, 403, 404, 422),
)
def get_record(services: ServicesDep, model: str, key: str, _: Reader) -> dict[str, Any]:
    services.model(model)
    record = services.models().get(model, parse_key(key))
    if record is None:
        raise NotFound(f"no {model} record with key {key!r}")
    return record


@router.patch(
    "/{model}/records/{key:path}",
    summary="Change some fields of a record",
    response_model=dict[str, Any],
    responses=errors(400, 401, 403, 404, 415, 422),
    openapi_extra=json_request(_RECORD),
)
async def update_record(
    request: Request,
    services: ServicesDep,
    model: str,
    key: str,
    _: Writer,
) -> dict[str, Any]:
    """The fields given replace the stored ones; a child or link list given replaces the old
    list. Answers the record as stored."""
    services.model(model)
    changes = await json_body(request)
    if not isinstance(changes, dict):
        raise HTTPException(422, "the body must be a JSON object of fields to change")
    return await run_in_threadpool(services.models().update, model, parse_key(key), changes)


@router.delete(
    "/{model}/records/{key:path}",
    summary="Delete a record with its children and links",
    response_model=DeleteResponse,
    responses=errors(400, 401, 403, 404, 422),
)
def delete_record(
    services: ServicesDep,
    model: str,
    key: str,
    principal: Writer,
) -> DeleteResponse:
    """Removed from PostgreSQL (and from every answer); the CSV history keeps it, marked
    deleted, until ``compact``. Audited."""
    services.model(model)
    target = f"{model}/{key}"
    service = services.models()
    if service.get(model, parse_key(key)) is None:
        services.record_audit(principal, "delete", target, "not found")
        raise NotFound(f"no {model} record with key {key!r}")
    summary = service.delete(model, [parse_key(key)])
    outcome = "pending" if summary.pending else "deleted"
    services.record_audit(principal, "delete", target, outcome)
    return DeleteResponse(deleted=summary.primary_report.stored, pending=summary.pending)


@router.get(
    "/{model}/search",
    summary="Ranked full-text search over the model's search fields",
    response_model=list[SearchHitOut],
    responses=errors(401, 403, 404, 422),
)
def search_records(
    services: ServicesDep,
    model: str,
    q: Annotated[str, Query(min_length=1, max_length=1000)],
    _: Reader,
    models: Models,  # after the key check: it applies the declaration on first use
    limit: Annotated[int, Query(ge=1, le=1000)] = 20,
) -> list[SearchHitOut]:
    declared = services.model(model)
    hits = models.search(declared, q, limit=limit)
    return [SearchHitOut(rank=h.rank, record=h.record) for h in hits]


@router.get(
    "/{model}/stats",
    summary="Counts, rates of boolean fields, averages and ranges",
    response_model=dict[str, Any],
    responses=errors(401, 403, 404),
)
def model_stats(services: ServicesDep, model: str, _: Reader, models: Models) -> dict[str, Any]:
    declared = services.model(model)
    return models.stats(declared)

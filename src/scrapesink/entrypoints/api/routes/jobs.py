"""ETL jobs over HTTP: list, show, runs (read); create, enable, disable (admin, audited)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from scrapesink.application.job_specs import check_job
from scrapesink.entrypoints.api.deps import Admin, Reader, ServicesDep
from scrapesink.entrypoints.api.routes.common import errors, json_body, json_request
from scrapesink.entrypoints.api.schemas import JobOut, RunOut
from scrapesink.entrypoints.api.services import Principal, Services

router = APIRouter(prefix="/api/v1/jobs", tags=["jobs"])
_JOB_BODY = {
    "type": "object",
    "required": ["name"],
    "properties": {
        "name": {"type": "string"},
        "kind": {"type": "string", "enum": ["ingest", "scrape", "export"]},
        "source": {"type": ["string", "null"]},
        "config": {"type": "object"},
        "enabled": {"type": "boolean"},
        "components": {"type": "array", "items": {"type": "object"}},
    },
}


@router.get("", summary="Every job", response_model=list[JobOut], responses=errors(401, 403))
def list_jobs(services: ServicesDep, _: Reader) -> list[JobOut]:
    return [JobOut.model_validate(j.as_dict()) for j in services.app.jobs.list()]


@router.post(
    "",
    summary="Define a job (config checked against its kind)",
    status_code=201,
    response_model=JobOut,
    responses=errors(400, 401, 403, 409, 415, 422),
    openapi_extra=json_request(_JOB_BODY),
)
async def create_job(
    request: Request,
    services: ServicesDep,
    principal: Admin,
    replace: Annotated[bool, Query(description="Redefine an existing job.")] = False,
) -> JSONResponse:
    spec = check_job(await json_body(request))
    job = await run_in_threadpool(services.app.jobs.create, spec, replace=replace)
    services.record_audit(principal, "jobs create", job.name, "replaced" if replace else "created")
    return JSONResponse(JobOut.model_validate(job.as_dict()).model_dump(mode="json"), 201)


@router.get(
    "/{name}", summary="One job with its components", response_model=JobOut,
    responses=errors(401, 403, 404),
)  # fmt: skip
def show_job(services: ServicesDep, name: str, _: Reader) -> JobOut:
    return JobOut.model_validate(services.app.jobs.get(name).as_dict())


@router.get(
    "/{name}/runs", summary="A job's runs, newest first", response_model=list[RunOut],
    responses=errors(401, 403, 404, 422),
)  # fmt: skip
def job_runs(
    services: ServicesDep, name: str, _: Reader, limit: Annotated[int, Query(ge=1, le=1000)] = 50
) -> list[RunOut]:
    runs = services.app.jobs.runs(name, limit=limit)
    return [RunOut.model_validate(run.as_dict()) for run in runs]


def _set_enabled(services: Services, principal: Principal, name: str, enabled: bool) -> Any:
    job = services.app.jobs.set_enabled(name, enabled)
    services.record_audit(principal, "jobs enable" if enabled else "jobs disable", name, "ok")
    return JobOut.model_validate(job.as_dict())


@router.post(
    "/{name}/disable", summary="Disable a job (its runs are refused)", response_model=JobOut,
    responses=errors(401, 403, 404),
)  # fmt: skip
def disable_job(services: ServicesDep, name: str, principal: Admin) -> JobOut:
    result: JobOut = _set_enabled(services, principal, name, False)
    return result


@router.post(
    "/{name}/enable", summary="Enable a job again", response_model=JobOut,
    responses=errors(401, 403, 404),
)  # fmt: skip
def enable_job(services: ServicesDep, name: str, principal: Admin) -> JobOut:
    result: JobOut = _set_enabled(services, principal, name, True)
    return result

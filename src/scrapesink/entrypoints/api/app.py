"""The FastAPI application factory: ``create_app(settings)``; ``scrapesink serve`` runs it.

The lifespan builds the services (connection pool, journal, keys) before the first request and
closes them after the last: what is journaled is delivered or kept for replay.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool

import scrapesink
from scrapesink.config import Settings, get_settings
from scrapesink.entrypoints.api import errors
from scrapesink.entrypoints.api.middleware import BodyLimit, Idempotency, RequestMetrics
from scrapesink.entrypoints.api.routes import events, jobs, models, ops
from scrapesink.entrypoints.api.services import Services

DESCRIPTION = """\
Ingest raw events and declared model records into PostgreSQL and CSV, exactly once, and query
them. Every request under `/api/v1` needs an API key (`Authorization: Bearer <key>` or
`X-API-Key`) with the scope the operation names: `ingest`, `read` or `admin` (admin may do
everything). POST, PATCH and DELETE honour an `Idempotency-Key` header: the same key and
request replay the first answer (header `Idempotent-Replayed: true`), the same key with another
request is refused (422), a retry while the first is still running gets 409; keys are kept for
`SCRAPESINK_API_IDEMPOTENCY_TTL` (24 h). Every error answers with one JSON shape:
`status, error_type, message, table_name, query, errors[{path, message}]`.
"""


NO_AUTH_ENV = "SCRAPESINK_API_NO_AUTH"  # set by `serve` for its worker processes, "0" or "1"


def from_environment() -> FastAPI:
    """The factory `serve --workers N` hands uvicorn: settings from the environment."""
    return create_app(get_settings(), auth=os.environ.get(NO_AUTH_ENV) != "1")


def create_app(settings: Settings | None = None, *, auth: bool = True) -> FastAPI:
    """The HTTP service on ``settings`` (default: environment and ``.env``).

    ``auth=False`` lets every caller do everything: for a server bound to loopback only.
    """
    config = settings or get_settings()
    holder: dict[str, Services] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        services = await run_in_threadpool(Services, config, auth=auth)
        holder["services"] = services
        app.state.services = services
        try:
            yield
        finally:
            await run_in_threadpool(services.close)

    app = FastAPI(
        title="scrapesink",
        version=scrapesink.__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    errors.install(app)
    app.include_router(events.router)
    app.include_router(models.router)
    app.include_router(jobs.router)
    app.include_router(ops.router)
    app.include_router(ops.probes)

    def metrics() -> Any:
        services = holder.get("services")
        return services.metrics if services else None

    # Added innermost first. Metrics outermost, so refusals (413) and idempotent replays are
    # counted too; then the size limit sees the body before idempotency spools it.
    app.add_middleware(Idempotency, services=lambda: holder["services"])
    app.add_middleware(BodyLimit, limit=config.api_max_body_bytes)
    app.add_middleware(RequestMetrics, metrics=metrics)
    return app

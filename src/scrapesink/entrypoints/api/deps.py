"""What route handlers are given (FastAPI dependencies as ``Annotated`` aliases).

    def list_events(_: Reader, events: Events) -> EventPageOut: ...

``ServicesDep`` is what the server holds for its lifetime; ``Events`` and ``Models`` are the read
ports; ``Reader``, ``Writer`` and ``Admin`` are the caller, who must hold the ``read``,
``ingest`` or ``admin`` scope (401/403 otherwise). FastAPI resolves a handler's dependencies in
the order of its parameters: the caller comes before ``Models``, whose first use applies the
model declaration to the database.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from scrapesink.application.ports import EventReader, ModelReader
from scrapesink.entrypoints.api.auth import require, services_of
from scrapesink.entrypoints.api.services import Principal, Services


def get_services(request: Request) -> Services:
    return services_of(request)


def get_events(request: Request) -> EventReader:
    return services_of(request).app.event_reader


def get_models(request: Request) -> ModelReader:
    return services_of(request).model_reader()


ServicesDep = Annotated[Services, Depends(get_services)]
Events = Annotated[EventReader, Depends(get_events)]
Models = Annotated[ModelReader, Depends(get_models)]
Reader = Annotated[Principal, Depends(require("read"))]
Writer = Annotated[Principal, Depends(require("ingest"))]
Admin = Annotated[Principal, Depends(require("admin"))]

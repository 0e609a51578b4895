"""One error shape for every answer that is not a success, and the map from errors to statuses.

Every error body is the seed 001 report ``{"error_type", "table_name", "query", "message"}``
plus ``status`` and, for validation, ``errors``: each bad field with its path. A traceback never
reaches a client: whatever was not foreseen is logged here and answered with a plain 500.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException

from scrapesink.errors import (
    ConfigError,
    Conflict,
    ConstraintError,
    DeclarationError,
    InputError,
    NotFound,
    RecordError,
    SchemaError,
    ScrapesinkError,
    StorageError,
    TransientStorageError,
)

log = logging.getLogger(__name__)


class FieldProblem(BaseModel):
    path: str
    message: str


class ErrorBody(BaseModel):
    """The body of every error answer."""

    status: int
    error_type: str
    message: str
    table_name: str | None = None
    query: str | None = None
    errors: list[FieldProblem] = []


_STATUS: list[tuple[type[ScrapesinkError], int]] = [
    (NotFound, 404),
    (Conflict, 409),
    (RecordError, 422),
    (DeclarationError, 404),  # an unknown model name in a path
    (InputError, 400),
    (TransientStorageError, 503),
    (SchemaError, 503),
    (ConfigError, 422),
    # On this path a value the database refuses came from the request (a NUL character, a
    # number out of range): the client's to fix. Writes never raise it (dead letters).
    (ConstraintError, 422),
]
_TITLES = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    409: "Conflict",
    413: "PayloadTooLarge",
    415: "UnsupportedMediaType",
    422: "ValidationError",
    503: "ServiceUnavailable",
}


def error_body(
    status: int,
    message: str,
    *,
    error_type: str | None = None,
    errors: list[dict[str, str]] | None = None,
    report: dict[str, Any] | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "status": status,
        "error_type": error_type or _TITLES.get(status, "Error"),
        "message": message,
        "table_name": None,
        "query": None,
        "errors": errors or [],
    }
    if report:
        body.update(
            {k: report[k] for k in ("error_type", "table_name", "query", "message") if k in report}
        )
    return body


def error_response(
    status: int, message: str, *, headers: dict[str, str] | None = None, **kwargs: Any
) -> JSONResponse:
    return JSONResponse(error_body(status, message, **kwargs), status, headers=headers)


def error_bytes(status: int, message: str, **kwargs: Any) -> bytes:
    """The same body for the raw ASGI middlewares."""
    return json.dumps(error_body(status, message, **kwargs)).encode()


def status_of(error: ScrapesinkError) -> int:
    for kind, status in _STATUS:
        if isinstance(error, kind):
            return status
    return 500


def _path(location: tuple[Any, ...]) -> str:
    parts = [str(p) for p in location]
    return ".".join(parts)


def install(app: FastAPI) -> None:
    @app.exception_handler(ScrapesinkError)
    async def scrapesink_error(request: Request, exc: ScrapesinkError) -> JSONResponse:
        status = status_of(exc)
        if status >= 500:
            log.error("%s %s: %s", request.method, request.url.path, exc.message)
            store = exc.store if isinstance(exc, StorageError) else "the database"
            what = "did not answer" if isinstance(exc, TransientStorageError) else "refused"
            return error_response(status, f"{store} {what}; see the server log")
        errors = []
        if isinstance(exc, RecordError):
            errors = [{"path": exc.path or "body", "message": exc.message}]
        if isinstance(exc, DeclarationError):
            errors = [{"path": "model", "message": p} for p in exc.problems]
        return error_response(status, exc.message, errors=errors, report=exc.report())

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = exc.errors()
        if any(p.get("type") == "json_invalid" for p in problems):
            return error_response(400, "the body is not valid JSON")
        errors = [{"path": _path(p.get("loc", ())), "message": str(p.get("msg"))} for p in problems]
        message = "; ".join(f"{e['path']}: {e['message']}" for e in errors)
        return error_response(422, message or "invalid request", errors=errors)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return error_response(
            exc.status_code, str(exc.detail), headers=getattr(exc, "headers", None)
        )

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error answering %s %s", request.method, request.url.path)
        return error_response(500, "internal error; see the server log", error_type="InternalError")

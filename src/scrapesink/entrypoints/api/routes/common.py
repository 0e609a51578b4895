"""What every router uses: JSON bodies read with clear errors, and write answers."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from scrapesink.adapters.readers import loads
from scrapesink.application.summary import WriteSummary
from scrapesink.entrypoints.api.errors import ErrorBody
from scrapesink.entrypoints.api.schemas import write_response

MAX_PAGE = 1000  # records or events in one page (documented in the OpenAPI as the maximum)
JSON = "application/json"
NDJSON = "application/x-ndjson"


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def require_media(request: Request, *accepted: str) -> None:
    media = media_type(request)
    if media not in accepted and not (JSON in accepted and media.endswith("+json")):
        raise HTTPException(415, f"send {' or '.join(accepted)}, not {media or 'no content type'}")


def json_only(request: Request) -> None:
    """A dependency for routes with a pydantic body: 415 before the body is judged."""
    require_media(request, JSON)


def json_if_any(request: Request) -> None:
    """For routes whose body is optional (every field has a default): none at all is fine, one
    that is sent must be JSON (415 otherwise)."""
    if request.headers.get("content-length", "0") != "0" or "transfer-encoding" in request.headers:
        require_media(request, JSON)


async def json_body(request: Request) -> Any:
    """The body as JSON: 415 for another content type, 400 when it is not JSON (with where)."""
    require_media(request, JSON)
    raw = await request.body()
    if not raw.strip():
        raise HTTPException(400, "the body is empty; send JSON")
    try:
        return loads(raw)
    except UnicodeDecodeError:
        raise HTTPException(400, "the body is not valid UTF-8") from None
    except ValueError as exc:
        raise HTTPException(400, f"the body is not valid JSON: {exc}") from None


def records_of(body: Any, limit: int, *, single: bool = False) -> list[Any]:
    """A JSON array of records (or, with ``single``, one object), at most ``limit`` of them."""
    if single and isinstance(body, dict):
        return [body]
    if not isinstance(body, list):
        expected = "a JSON array of records or one record" if single else "a JSON array"
        raise HTTPException(422, f"the body must be {expected}")
    if len(body) > limit:
        raise HTTPException(413, f"{len(body)} records in one request; the limit is {limit}")
    return body


def written(summary: WriteSummary) -> JSONResponse:
    """200 when PostgreSQL answered for every record; 202 when some wait in the journal."""
    response = write_response(summary)
    return JSONResponse(response.model_dump(mode="json"), 202 if response.pending else 200)


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI: these statuses answer with the error body."""
    return {status: {"model": ErrorBody} for status in statuses}


def json_request(schema: dict[str, Any], *, ndjson: bool = False) -> dict[str, Any]:
    """OpenAPI for a body read by hand (``json_body``)."""
    content = {NDJSON if ndjson else JSON: {"schema": schema}}
    return {"requestBody": {"required": True, "content": content}}

"""API keys on requests: ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

from fastapi import Request
from starlette.exceptions import HTTPException

from scrapesink.entrypoints.api.services import ANONYMOUS, Principal, Services

CHALLENGE = {"WWW-Authenticate": 'Bearer realm="scrapesink"'}


def credential(headers: dict[str, str] | object) -> str | None:
    """The key a request presents, if any (from Starlette headers or an ASGI header dict)."""
    get = getattr(headers, "get", None)
    if get is None:
        return None
    header = get("authorization")
    if header and header.lower().startswith("bearer "):
        return str(header[7:].strip()) or None
    key = get("x-api-key")
    return str(key).strip() or None if key else None


def owner_of(token: str | None) -> str:
    """Whose Idempotency-Key records these are: a digest of the key, never the key."""
    if token is None:
        return "anonymous"
    return hashlib.sha256(token.encode()).hexdigest()[:32]


def services_of(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


def require(scope: str) -> Callable[[Request], Principal]:
    """A dependency: the caller, who must hold ``scope`` (``admin`` holds every scope)."""

    def check(request: Request) -> Principal:
        services = services_of(request)
        if not services.auth:
            return ANONYMOUS
        token = credential(request.headers)
        if token is None:
            raise HTTPException(401, "an API key is required", headers=CHALLENGE)
        key = services.key_cache.authenticate(token)
        if key is None:
            raise HTTPException(401, "invalid or revoked API key", headers=CHALLENGE)
        if not key.allows(scope):
            raise HTTPException(403, f"this key lacks the {scope!r} scope")
        return Principal(f"{key.name} ({key.prefix})", key.scopes, owner_of(token))

    check.__name__ = f"require_{scope}"
    return check

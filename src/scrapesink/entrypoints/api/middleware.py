"""Raw ASGI middlewares: body size limit, Idempotency-Key, request metrics.

They are plain ASGI (not ``BaseHTTPMiddleware``) so a body streams through them chunk by chunk
and nothing is read into memory that the route would not read itself.
"""

from __future__ import annotations

import hashlib
import tempfile
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import anyio
from starlette.exceptions import HTTPException

from scrapesink.adapters.idempotency import MISMATCH, NEW, REPLAY, RUNNING, StoredAnswer
from scrapesink.entrypoints.api.auth import credential, owner_of
from scrapesink.entrypoints.api.errors import error_bytes

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` once a body passes the limit (an HTTPException, so FastAPI's
    body parsing lets it through as 413 instead of calling it a parse error)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body is larger than {limit} bytes")


async def _send_json(
    send: Send, status: int, body: bytes, headers: tuple[tuple[bytes, bytes], ...] = ()
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return bytes(value).decode("latin-1")
    return None


class BodyLimit:
    """413 for a body over ``limit`` bytes: at once from Content-Length, or while streaming
    (the body is counted as it arrives, never gathered to be measured). Also 422 for a NUL
    character in the path or query, which PostgreSQL cannot compare with anything."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if "\x00" in scope["path"] or b"%00" in scope.get("query_string", b""):
            message = "NUL characters are not allowed in the path or the query"
            await _send_json(send, 422, error_bytes(422, message))
            return
        declared = _header(scope, b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            message = f"the request body is larger than {self.limit} bytes"
            await _send_json(send, 413, error_bytes(413, message), ((b"connection", b"close"),))
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise BodyTooLarge(self.limit)
            return message

        await self.app(scope, counted, send)


class Idempotency:
    """The Idempotency-Key header on POST, PATCH and DELETE (see adapters/idempotency.py).

    The body is spooled (to disk past 1 MiB) while its fingerprint is computed, then handed to
    the route; the answer is stored as it is sent. Answers of 5xx are not kept: the key is
    released so the client may retry.
    """

    METHODS = frozenset({"POST", "PATCH", "DELETE"})

    def __init__(self, app: ASGIApp, services: Callable[[], Any]) -> None:
        self.app = app
        self.services = services

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        key = _header(scope, b"idempotency-key") if scope["type"] == "http" else None
        if key is None or scope["method"] not in self.METHODS:
            await self.app(scope, receive, send)
            return
        if not key or len(key) > 255 or not key.isprintable():
            message = "Idempotency-Key must be 1 to 255 printable characters"
            await _send_json(send, 400, error_bytes(400, message))
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        owner = owner_of(credential(headers))
        store = self.services().idempotency
        spool = tempfile.SpooledTemporaryFile(max_size=1 << 20)  # noqa: SIM115 - closed below
        try:
            digest = hashlib.sha256()
            for part in (scope["method"], scope["path"], scope.get("query_string", b"").decode()):
                digest.update(part.encode() + b"\0")
            try:
                while True:
                    received = await receive()
                    if received["type"] == "http.disconnect":
                        return
                    chunk = received.get("body", b"")
                    digest.update(chunk)
                    spool.write(chunk)
                    if not received.get("more_body", False):
                        break
            except BodyTooLarge as exc:
                await _send_json(send, 413, error_bytes(413, str(exc.detail)))
                return
            verdict, stored = await anyio.to_thread.run_sync(
                store.begin, owner, key, digest.hexdigest()
            )
            if verdict == MISMATCH:
                message = "this Idempotency-Key was used with another request (method, path, body)"
                await _send_json(send, 422, error_bytes(422, message))
                return
            if verdict == RUNNING:
                message = "a request with this Idempotency-Key is still being processed"
                await _send_json(send, 409, error_bytes(409, message))
                return
            if verdict == REPLAY and stored is not None:
                await _replay(send, stored)
                return
            assert verdict == NEW
            await self._run(scope, spool, send, store, owner, key)
        finally:
            spool.close()

    async def _run(
        self, scope: Scope, spool: Any, send: Send, store: Any, owner: str, key: str
    ) -> None:
        spool.seek(0)
        done = False

        async def replayed() -> Message:
            nonlocal done
            if done:
                return {"type": "http.disconnect"}
            chunk = spool.read(1 << 16)
            more = bool(chunk) and spool.tell() < _size(spool)
            done = not more
            return {"type": "http.request", "body": chunk, "more_body": more}

        status = 500
        content_type = "application/json"
        body = bytearray()

        async def capture(message: Message) -> None:
            nonlocal status, content_type
            if message["type"] == "http.response.start":
                status = message["status"]
                for name, value in message.get("headers", ()):
                    if name.lower() == b"content-type":
                        content_type = value.decode("latin-1")
            elif message["type"] == "http.response.body":
                body.extend(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, replayed, capture)
        except BaseException:
            await anyio.to_thread.run_sync(store.abandon, owner, key)
            raise
        if status >= 500:
            await anyio.to_thread.run_sync(store.abandon, owner, key)
        else:
            answer = StoredAnswer(status, content_type, bytes(body))
            await anyio.to_thread.run_sync(store.finish, owner, key, answer)


def _size(spool: Any) -> int:
    position = spool.tell()
    spool.seek(0, 2)
    size = int(spool.tell())
    spool.seek(position)
    return size


async def _replay(send: Send, stored: StoredAnswer) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": stored.status,
            "headers": [
                (b"content-type", stored.content_type.encode("latin-1")),
                (b"content-length", str(len(stored.body)).encode()),
                (b"idempotent-replayed", b"true"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": stored.body})


class RequestMetrics:
    """Counts and times every request by route template (not by raw path: bounded labels)."""

    def __init__(self, app: ASGIApp, metrics: Callable[[], Any]) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def watch(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, watch)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            metrics = self.metrics()
            if metrics is not None:
                metrics.requests.labels(scope["method"], route, str(status)).inc()
                metrics.latency.labels(scope["method"], route).observe(
                    time.perf_counter() - started
                )

"""`scrapesink serve` (the REST API), `scrapesink keys ...` and `scrapesink audit`."""

from __future__ import annotations

import errno
import getpass
import ipaddress
import json
import os
import socket
from typing import Any

import typer
from rich.table import Table

from scrapesink.adapters.postgres.api_access import SCOPES
from scrapesink.entrypoints.cli.common import (
    EXIT_ADDRESS,
    err,
    escape,
    fail,
    handle_errors,
    open_app,
    out,
)
from scrapesink.errors import TransientStorageError

keys_app = typer.Typer(
    help="API keys of the REST API: create, list, revoke. Keys are stored hashed.",
    no_args_is_help=True,
)


def _cli_actor() -> str:
    """Who ran a CLI admin command, for the audit log: ``cli (user@host)``."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"cli ({user}@{socket.gethostname()})"


def _listen(host: str, port: int) -> socket.socket:
    """The listening socket, bound as uvicorn binds it, or one line and exit code 5."""
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        listener = socket.socket(family, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((host, port))
        listener.listen(2048)  # now: two sockets may bind one port until one listens
    except OSError as exc:
        reason = "is in use (pass --port N)" if exc.errno == errno.EADDRINUSE else exc.strerror
        fail(f"cannot listen on {host}:{port}: the address {reason}", EXIT_ADDRESS)
    listener.set_inheritable(True)
    return listener


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@handle_errors
def serve(
    host: str = typer.Option("127.0.0.1", help="Address to listen on (0.0.0.0: every one)."),
    port: int = typer.Option(8000, min=1, max=65535, help="TCP port."),
    no_auth: bool = typer.Option(
        False, "--no-auth", help="Let every caller do everything (only on a loopback address)."
    ),
    log_level: str = typer.Option("info", help="uvicorn's log level."),
    workers: int = typer.Option(
        1,
        min=1,
        max=64,
        help="Worker processes. Each has its own journal; all share the database, the data "
        "directory, the keys and the Idempotency-Key records.",
    ),
) -> None:
    """Serve the REST API (OpenAPI docs at /docs) on the embedded database or a server.

    Every request under /api/v1 needs an API key. With none yet, the first start creates an
    admin key and prints it once. /api/health and /metrics need no key (with several workers,
    /metrics shows the worker that answered).
    """
    import uvicorn

    from scrapesink.entrypoints.api.app import NO_AUTH_ENV, create_app
    from scrapesink.entrypoints.cli.common import overrides_as_env, settings

    if no_auth and not _loopback(host):
        fail(f"--no-auth is only allowed on a loopback address, not {host}")
    config = settings()
    listener = _listen(host, port)  # before anything is said or made: a busy port is one line
    if not no_auth:
        _first_key()
    where = f"http://{host}:{port}"
    extra = f"; {workers} workers" if workers > 1 else ""
    err.print(f"serving on {where} (docs: {where}/docs){'; no auth' if no_auth else ''}{extra}")
    options: dict[str, Any] = {
        "host": host,
        "port": port,
        "log_level": log_level,
        "access_log": False,
    }
    if workers == 1:
        server = uvicorn.Server(uvicorn.Config(create_app(config, auth=not no_auth), **options))
        server.run(sockets=[listener])
        return
    listener.close()  # uvicorn's supervisor binds it again for its workers
    # Worker processes import the app by name and read their settings from the environment:
    # hand them this command's overrides, and the auth decision made (and checked) here.
    os.environ.update(overrides_as_env())
    os.environ[NO_AUTH_ENV] = "1" if no_auth else "0"
    uvicorn.run(
        "scrapesink.entrypoints.api.app:from_environment", factory=True, workers=workers, **options
    )


def _first_key() -> None:
    """No active key at all: make an admin key and print it, once."""
    try:
        with open_app(announce=False) as app:
            keys = app.api_keys
            if keys.list():
                return
            key, token = keys.create("admin (first start)", ["admin"])
    except TransientStorageError as exc:
        err.print(f"[yellow]warning:[/] keys not checked: {escape(exc.message)}")
        return
    err.print(
        f"[bold]No API key existed; created admin key {key.prefix}. It is shown only now:[/]\n"
        f"  {token}\n"
        "Create narrower keys with `scrapesink keys create NAME --scope ingest`.",
        highlight=False,
    )


@keys_app.command("create")
@handle_errors
def keys_create(
    name: str = typer.Argument(..., help="Who or what uses the key (a scraper, a team)."),
    scope: list[str] = typer.Option(
        ["ingest", "read"], "--scope", "-s", help=f"Repeatable: {', '.join(SCOPES)}."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Create a key; it is printed this once and only its hash is stored."""
    with open_app(announce=False) as app:
        key, token = app.api_keys.create(name, scope)
        app.audit.record(
            _cli_actor(), "keys create", f"{key.prefix} ({name})", "created", {"scopes": scope}
        )
    if as_json:
        print(json.dumps({**key.as_dict(), "key": token}))
        return
    out.print(f"created key {key.prefix} ({', '.join(key.scopes)}) for {escape(name)}:")
    print(token)
    err.print("store it now: it cannot be shown again")


@keys_app.command("list")
@handle_errors
def keys_list(
    all_: bool = typer.Option(False, "--all", help="Revoked keys too."),
) -> None:
    """Keys by prefix (the secret is never shown again)."""
    with open_app(announce=False) as app:
        keys = app.api_keys.list(include_revoked=all_)
    table = Table("prefix", "name", "scopes", "created", "revoked")
    for key in keys:
        table.add_row(
            key.prefix,
            escape(key.name),
            ", ".join(key.scopes),
            key.created_at.strftime("%Y-%m-%d %H:%M"),
            key.revoked_at.strftime("%Y-%m-%d %H:%M") if key.revoked_at else "",
        )
    out.print(table)


@keys_app.command("revoke")
@handle_errors
def keys_revoke(name_or_prefix: str = typer.Argument(..., help="A key's name or prefix.")) -> None:
    """Revoke keys by name or prefix (a running server stops accepting them within
    SCRAPESINK_API_KEY_REFRESH_SECONDS)."""
    with open_app(announce=False) as app:
        revoked = app.api_keys.revoke(name_or_prefix)
        app.audit.record(
            _cli_actor(),
            "keys revoke",
            name_or_prefix,
            f"{len(revoked)} revoked",
            {"prefixes": [key.prefix for key in revoked]},
        )
    for key in revoked:
        out.print(f"revoked {key.prefix} ({escape(key.name)})")


@handle_errors
def audit(limit: int = typer.Option(50, min=1, max=100_000)) -> None:
    """The audit log of the REST API (admin actions and deletes), newest first."""
    with open_app(announce=False) as app:
        entries = app.audit.list(limit=limit)
    table = Table("at", "actor", "action", "target", "outcome")
    for entry in entries:
        table.add_row(
            entry.at.strftime("%Y-%m-%d %H:%M:%S"),
            escape(entry.actor),
            escape(entry.action),
            escape(entry.target),
            escape(entry.outcome),
        )
    out.print(table)

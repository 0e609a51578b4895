"""The connection pool and the one place psycopg errors become scrapesink errors."""

from __future__ import annotations

import json
import time
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import msgspec
import psycopg
from psycopg import errors as pgerrors
from psycopg.types.json import set_json_loads
from psycopg_pool import ConnectionPool, PoolTimeout

from scrapesink.errors import (
    ConstraintError,
    QueryError,
    StorageError,
    TransientStorageError,
)

# SQLSTATE classes worth a retry: connection exceptions, operator intervention (shutdown),
# insufficient resources (disk full, out of memory, too many connections).
_TRANSIENT_CLASSES = ("08", "57", "53")
_TRANSIENT_STATES = {"40001", "40P01", "55P03"}  # serialization, deadlock, lock not available
_CONSTRAINT_CLASSES = ("22", "23")  # data exception, integrity constraint violation
_QUICK_WAIT = 2.0  # seconds to wait for a pooled connection before checking the server is up
PING_AFTER_IDLE = 10.0  # seconds; a pooled connection idle longer is pinged before use
_JSON_DECODE = msgspec.json.decode


def translate(exc: BaseException, *, query: str | None = None) -> StorageError:
    """Map a driver exception onto the scrapesink error tree: ``raise translate(e) from e``."""
    if isinstance(exc, StorageError):
        return exc
    table = getattr(getattr(exc, "diag", None), "table_name", None)
    message = _first_line(exc)
    if isinstance(exc, PoolTimeout):
        return TransientStorageError(f"no database connection available: {message}", query=query)
    if isinstance(exc, psycopg.Error):
        state = exc.sqlstate or ""
        if (
            (isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError) and not state)
            or state.startswith(_TRANSIENT_CLASSES)
            or state in _TRANSIENT_STATES
            or isinstance(exc, pgerrors.QueryCanceled)
        ):
            error: StorageError = TransientStorageError(message, table_name=table, query=query)
        elif state.startswith(_CONSTRAINT_CLASSES) or (
            isinstance(exc, psycopg.DataError) and not state
        ):  # psycopg refuses some values itself (a NUL in text) before the server sees them
            error = ConstraintError(message, table_name=table, query=query)
        else:
            error = QueryError(message, table_name=table, query=query)
        error.sqlstate = state or None
        error.constraint_name = getattr(getattr(exc, "diag", None), "constraint_name", None)
        return error
    if isinstance(exc, OSError):
        return TransientStorageError(f"{type(exc).__name__}: {exc}", query=query)
    return QueryError(f"{type(exc).__name__}: {exc}", query=query)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


def _json_loads(data: bytes | bytearray | memoryview | str) -> Any:
    try:
        return _JSON_DECODE(data)
    except msgspec.DecodeError:  # a number beyond a float (jsonb holds any numeric)
        return json.loads(bytes(data) if isinstance(data, memoryview) else data)


def _configure(conn: psycopg.Connection[Any]) -> None:
    """Each pooled connection decodes json/jsonb with msgspec (C, several times faster than
    the standard library's decoder on the documents that reads return)."""
    set_json_loads(_json_loads, conn)


def describe_url(conninfo: str) -> str:
    """The URL without its password, for humans and logs."""
    if conninfo.startswith(("postgresql://", "postgres://")):
        parts = urlsplit(conninfo)
        user = f"{parts.username}@" if parts.username else ""
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
        return f"postgresql://{user}{host}{port}{parts.path}"
    return "postgresql (DSN)"


@dataclass(frozen=True, slots=True)
class PoolOptions:
    """Pool sizing in the seeds' vocabulary, mapped onto psycopg_pool."""

    size: int = 10
    max_overflow: int = 20
    timeout: float = 30.0
    recycle: float = 3600.0
    pre_ping: bool = True
    connect_timeout: int = 10
    min_size: int | None = None  # default: size (a server); the CLI keeps one warm connection


class Database:
    """A psycopg connection pool plus error translation for everything that goes through it."""

    def __init__(self, conninfo: str, options: PoolOptions, *, label: str | None = None) -> None:
        self.conninfo = conninfo
        self.label = label or describe_url(conninfo)
        self._options = options
        self._pool: ConnectionPool | None = None
        self._suspect = False  # the last attempt could not connect
        self._returned: weakref.WeakKeyDictionary[psycopg.Connection[Any], float] = (
            weakref.WeakKeyDictionary()
        )  # connection -> when it last went back to the pool

    def open(self, *, check: bool = True, suspect: bool = False) -> None:
        """Check the server answers (one clear error if not), then open the pool.

        With ``check=False`` the pool opens even if the server is down; it connects in the
        background and callers get a TransientStorageError until the server is back.
        ``suspect`` says the caller saw it down: the first user pings before waiting on the pool.
        """
        opts = self._options
        if check:
            self.ping()
        self._suspect = suspect
        min_size = opts.size if opts.min_size is None else min(opts.min_size, opts.size)
        self._pool = ConnectionPool(
            self.conninfo,
            min_size=min_size,
            max_size=opts.size + opts.max_overflow,
            timeout=opts.timeout,
            max_lifetime=opts.recycle,
            check=self._check_if_idle if opts.pre_ping else None,
            configure=_configure,
            kwargs={
                "connect_timeout": opts.connect_timeout,
                "application_name": "scrapesink",
                # JIT compiles a plan whose estimate is large (a page of documents with their
                # children, a ranked search) for tens of milliseconds: more than such a query
                # takes to run. scrapesink's statements are all short or set-based.
                "options": "-c jit=off",
            },
            name="scrapesink",
            open=False,
        )
        self._pool.open(wait=False)

    def _check_if_idle(self, conn: psycopg.Connection[Any]) -> None:
        """The pool's pre-ping, for connections that sat idle: one handed back within the last
        ``PING_AFTER_IDLE`` seconds served a query then, and a ping is a round trip (a third of
        a point read). A connection that fails anyway costs a retry: lanes retry transient
        errors, and :meth:`fetch` runs a read again on a fresh connection."""
        if time.monotonic() - self._returned.get(conn, 0.0) >= PING_AFTER_IDLE:
            ConnectionPool.check_connection(conn)

    def ping(self) -> None:
        """Raises TransientStorageError, one line, when the server does not answer."""
        try:
            with psycopg.connect(self.conninfo, connect_timeout=self._options.connect_timeout):
                pass
        except psycopg.Error as exc:
            raise TransientStorageError(
                f"cannot connect to PostgreSQL at {self.label}: {_first_line(exc)}"
            ) from exc

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    @property
    def pool(self) -> ConnectionPool:
        if self._pool is None:
            raise RuntimeError("Database.open() was not called")
        return self._pool

    @contextmanager
    def connection(self, *, transaction: bool = True) -> Iterator[psycopg.Connection[Any]]:
        """A pooled connection inside a transaction (or, ``transaction=False``, in autocommit);
        psycopg errors leave as StorageError.

        After a connection failure the server is *suspect*: the next caller pings it first, so
        while it is down every attempt fails within connect_timeout (at once when refused)
        instead of waiting pool_timeout for the pool's background reconnection.
        """
        if self._suspect:
            self.ping()
            self._suspect = False
            # The server answers again: the pooled connections that died with it (a restart)
            # are replaced now, not handed out one failure at a time.
            self.pool.check()
        try:
            with self._pooled(transaction) as conn:
                yield conn
        except (psycopg.Error, PoolTimeout) as exc:
            error = translate(exc)
            if isinstance(error, TransientStorageError) and (
                not error.sqlstate or error.sqlstate.startswith(("08", "57"))
            ):  # the connection itself failed (refused, lost, server shutting down)
                self._suspect = True
            raise error from exc

    @contextmanager
    def _pooled(self, transaction: bool = True) -> Iterator[psycopg.Connection[Any]]:
        """Wait for a pooled connection: briefly, then, if the server still answers a ping,
        for the rest of pool_timeout (a busy pool). A server that died while connections were
        in use fails here within seconds instead of after the whole pool_timeout."""
        quick = min(self._options.timeout, _QUICK_WAIT)
        try:
            conn = self.pool.getconn(timeout=quick)
        except PoolTimeout:
            self.ping()
            conn = self.pool.getconn(timeout=max(self._options.timeout - quick, 0.001))
        try:
            if transaction:
                with conn:  # what pool.connection() does: commit, or roll back on error
                    yield conn
            else:
                conn.autocommit = True
                try:
                    yield conn
                finally:
                    if not conn.closed:
                        conn.autocommit = False
        finally:
            self._returned[conn] = time.monotonic()
            self.pool.putconn(conn)

    def fetch(
        self, query: str, params: Sequence[Any] = (), *, binary: bool = False
    ) -> list[tuple[Any, ...]]:
        """The rows of one read-only statement, run in autocommit (no BEGIN and COMMIT round
        trips around it). A connection that turns out broken (the server restarted while it
        sat in the pool unpinged) is replaced and the statement run once more."""

        def run() -> list[tuple[Any, ...]]:
            with self.connection(transaction=False) as conn:
                return conn.cursor(binary=binary).execute(query, params).fetchall()

        try:
            return run()
        except TransientStorageError as exc:
            if exc.sqlstate and not exc.sqlstate.startswith(("08", "57")):
                raise  # not a lost connection: running it again would fail alike
        return run()

    @contextmanager
    def direct(self, *, autocommit: bool = False) -> Iterator[psycopg.Connection[Any]]:
        """A connection of its own (outside the pool), for migrations and maintenance."""
        try:
            with psycopg.connect(
                self.conninfo,
                autocommit=autocommit,
                connect_timeout=self._options.connect_timeout,
                application_name="scrapesink",
            ) as conn:
                yield conn
        except psycopg.Error as exc:
            raise translate(exc) from exc

    def stats(self) -> dict[str, int]:
        return dict(self.pool.get_stats())

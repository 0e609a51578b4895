"""Structured logs (structlog): JSON lines when stderr is not a terminal, readable lines on one.

scrapesink's modules log through the standard library (``logging.getLogger(__name__)``) or
through structlog with fields (``structlog.get_logger(__name__).info("ingest done", read=10)``);
both are rendered by one ``ProcessorFormatter``, so every line has the same shape: ``timestamp``
(UTC, ISO 8601), ``level``, ``logger``, ``event``, the fields, and whatever is bound for the
current job run (``job``, ``run``) through ``structlog.contextvars``.

Only the entrypoints (CLI, ``serve``) configure logging; the Python API leaves it to the
application that imports it, as a library should. Secrets never reach a line: payloads are
never logged, and passwords in connection URLs are masked by the ``redact`` processor.
"""

from __future__ import annotations

import logging
import re
import sys
import time
from collections.abc import MutableMapping
from typing import IO, Any, Literal

import structlog

LogFormat = Literal["auto", "json", "console"]
_PASSWORD_IN_URL = re.compile(r"(://[^:/@\s]+:)[^@\s]+@")
_PASSWORD_KV = re.compile(r"(password\s*=\s*)\S+", re.IGNORECASE)


def _mask(text: str) -> str:
    return _PASSWORD_KV.sub(r"\1***", _PASSWORD_IN_URL.sub(r"\1***@", text))


def redact(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Mask passwords in URLs and ``password=...`` in every string field."""
    for key, value in event.items():
        if isinstance(value, str) and ("://" in value or "password" in value.lower()):
            event[key] = _mask(value)
    return event


def configure(
    level: str = "WARNING", fmt: LogFormat = "auto", stream: IO[str] | None = None
) -> None:
    """Send scrapesink's log lines to ``stream`` (stderr) at ``level``, as JSON or text."""
    stream = stream or sys.stderr
    json_lines = fmt == "json" or (fmt == "auto" and not _isatty(stream))
    renderer: Any = (
        structlog.processors.JSONRenderer(default=str)
        if json_lines
        else structlog.dev.ConsoleRenderer(colors=_isatty(stream))
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            structlog.contextvars.merge_contextvars,
            structlog.stdlib.ExtraAdder(),
            structlog.stdlib.add_log_level,
            structlog.stdlib.add_logger_name,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            redact,
        ],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    logger = logging.getLogger("scrapesink")
    for old in list(logger.handlers):
        logger.removeHandler(old)
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
    # The connection pool's lines in the same shape (they reached stderr raw, through the
    # logging module's last resort), each said once a minute: a pool retrying a server that is
    # down says the same thing for every connection and every attempt.
    pool = logging.getLogger("psycopg.pool")
    for old in list(pool.handlers):
        pool.removeHandler(old)
    for stale in [f for f in pool.filters if isinstance(f, Repeats)]:
        pool.removeFilter(stale)
    pool.addHandler(handler)
    pool.addFilter(Repeats(60.0))
    pool.propagate = False


class Repeats(logging.Filter):
    """Drops a line said already in the last ``seconds``. Hand-written: neither the logging
    module nor structlog has a filter for repeated lines."""

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds
        self._said: dict[str, float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        text, now = record.getMessage(), time.monotonic()
        said = self._said.get(text)
        if said is not None and now - said < self.seconds:
            return False
        if len(self._said) >= 1000:  # bounded: old lines are forgotten
            self._said.clear()
        self._said[text] = now
        return True


def _isatty(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def get_logger(name: str) -> Any:
    """A structlog logger over the standard ``logging`` logger ``name``: fields travel as the
    record's extras, so an application's own handlers see a plain message, and ``configure``
    renders them all. No global structlog configuration is touched (we are a library too)."""
    return structlog.wrap_logger(
        logging.getLogger(name),
        processors=[structlog.contextvars.merge_contextvars, _to_log_kwargs],
        wrapper_class=structlog.stdlib.BoundLogger,
    )


def _to_log_kwargs(_: Any, __: str, event: MutableMapping[str, Any]) -> dict[str, Any]:
    message = event.pop("event", "")
    exc_info = event.pop("exc_info", None)
    # LogRecord attributes cannot be overwritten by extras: prefix a clashing field
    extra = {(f"f_{k}" if k in _RECORD_ATTRS else k): v for k, v in event.items()}
    return {"msg": message, "extra": extra, "exc_info": exc_info}


_RECORD_ATTRS = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}

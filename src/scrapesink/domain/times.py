"""Times as scrapers write them, read as aware UTC datetimes: ISO 8601 text (without an offset:
UTC, noted as naive) or a Unix epoch number (seconds; above 10^11, milliseconds, as JavaScript
writes them). Used by raw events' ``occurred_at`` and by models' datetime fields.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any, Protocol

from scrapesink.domain.values import json_type
from scrapesink.errors import RecordError


class NaiveNote(Protocol):
    """Where a time without a UTC offset is noted (``events.Cleaning``)."""

    naive_timestamp: bool


EPOCH_MILLIS_THRESHOLD = 10**11


def parse_timestamp(
    value: Any, name: str, location: str | None, cleaning: NaiveNote | None = None
) -> datetime:
    """Read ISO 8601 text or an epoch number as an aware UTC datetime."""
    if type(value) is str and value:  # the common case, without the checks below
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            pass  # maybe padded with spaces; the full path below says what is wrong
        else:
            if parsed.tzinfo is UTC:
                return parsed
    if value is None or value == "":
        raise RecordError(f"missing field {name}", location=location, path=name)
    if isinstance(value, bool):
        raise RecordError(f"bad timestamp: {value!r} is a boolean", location=location, path=name)
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise RecordError(f"bad timestamp: {value!r}", location=location, path=name)
        seconds = value / 1000 if abs(value) >= EPOCH_MILLIS_THRESHOLD else value
        try:
            return datetime.fromtimestamp(seconds, tz=UTC)
        except (OverflowError, OSError, ValueError):
            raise RecordError(
                f"bad timestamp: epoch value {value!r} is out of range",
                location=location,
                path=name,
            ) from None
    if not isinstance(value, str):
        raise RecordError(
            f"bad timestamp: expected text or a number, got {json_type(value)}",
            location=location,
            path=name,
        )
    text = value.strip()
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise RecordError(
            f"bad timestamp {value[:60]!r}: expected ISO 8601 such as 2025-05-15T13:45:00Z",
            location=location,
            path=name,
        ) from None
    if parsed.tzinfo is None:
        if cleaning is not None:
            cleaning.naive_timestamp = True
        parsed = parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC)
    except OverflowError:
        raise RecordError(
            f"bad timestamp {value!r}: out of range in UTC", location=location, path=name
        ) from None

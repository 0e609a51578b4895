"""Times as scrapers write them, read as aware UTC datetimes: ISO 8601 text (without an offset:
UTC, noted as naive) or a Unix epoch number (seconds; above 10^11, milliseconds, as JavaScript
writes them). Used by raw events' ``occurred_at`` and by models' datetime fields.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Protocol

from scrapesink.domain.values import json_type
from scrapesink.errors import RecordError


class NaiveNote(Protocol):
    """Where a time without a UTC offset is noted (``events.Cleaning``)."""

    naive_timestamp: bool


EPOCH_MILLIS_THRESHOLD = 10**11


AUTO = "auto"
# What `--time-format auto` tries after ISO 8601, in order (RFC 2822 and epoch numbers too).
_AUTO_PATTERNS = (
    "%Y/%m/%d",
    "%Y/%m/%d %H:%M",
    "%Y/%m/%d %H:%M:%S",
    "%b %d %Y",
    "%B %d %Y",
    "%b %d, %Y",
    "%B %d, %Y",
    "%d %b %Y",
    "%d %B %Y",
)


def parse_timestamp(
    value: Any,
    name: str,
    location: str | None,
    cleaning: NaiveNote | None = None,
    time_format: str | None = None,
) -> datetime:
    """Read ISO 8601 text or an epoch number as an aware UTC datetime.

    ``time_format`` reads text of another shape: a ``strptime`` pattern (``%d.%m.%Y``), or
    ``auto``, which also tries RFC 2822, ``YYYY/MM/DD``, ``Mon D YYYY`` and epoch seconds or
    milliseconds given as text. A time without a UTC offset is read as UTC (and noted)."""
    if time_format is not None and isinstance(value, str) and value.strip():
        parsed = _other_format(value.strip(), time_format)
        if parsed is not None:
            return _utc(parsed, value, name, location, cleaning)

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
            f"bad timestamp {value[:60]!r}: expected ISO 8601 such as 2025-05-15T13:45:00Z"
            + (f" or {time_format!r}" if time_format and time_format != AUTO else ""),
            location=location,
            path=name,
        ) from None
    return _utc(parsed, value, name, location, cleaning)


def _utc(
    parsed: datetime, value: Any, name: str, location: str | None, cleaning: NaiveNote | None
) -> datetime:
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


def _other_format(text: str, time_format: str) -> datetime | None:
    """``text`` read with a strptime pattern, or by ``auto``'s shapes; None when none fits."""
    if time_format != AUTO:
        try:
            return datetime.strptime(text, time_format)
        except ValueError:
            return None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        pass
    # epoch seconds (10 digits) or milliseconds (13), as scrapers write them since 2001, given
    # as text: "2026" or "202501011230" is not one
    if text.isascii() and text.isdigit() and len(text) in (10, 13):
        number = int(text)
        seconds = number / 1000 if number >= EPOCH_MILLIS_THRESHOLD else number
        try:
            return datetime.fromtimestamp(seconds, tz=UTC)
        except (OverflowError, OSError, ValueError):
            return None
    try:
        return parsedate_to_datetime(text)  # RFC 2822: Tue, 01 Dec 2026 10:00:00 +0000
    except (TypeError, ValueError, IndexError):
        pass
    for pattern in _AUTO_PATTERNS:
        try:
            return datetime.strptime(text, pattern)
        except ValueError:
            continue
    return None

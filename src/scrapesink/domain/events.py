"""Raw events: the record type and the rules that turn a scraped object into one.

Standard library only. The rules, in the order they are checked:

* the record must be a JSON object;
* *canonical* records carry ``source``, ``source_id``, ``occurred_at`` and ``payload``; any other
  object is a *flat* scraped record: its id and time fields are named by ``id_field`` and
  ``time_field`` and the whole object becomes the payload;
* ``source`` and ``source_id`` are non-empty text (an integer id is accepted and kept as text);
* ``occurred_at`` is ISO 8601 text or a Unix epoch number (seconds; values above 10^11 are read as
  milliseconds, as JavaScript scrapers write them); a value without a UTC offset is read as UTC
  and counted as *naive*;
* ``occurred_at`` must lie inside the accepted window (by default: not more than one day ahead);
* the payload is a JSON object whose UTF-8 serialization is at most ``max_payload_bytes``,
  nested at most ``max_depth`` levels deep (default 256: deep enough for any real document,
  shallow enough for every encoder and store on the way);
* ``source`` becomes a directory name in the CSV mirror (``values.source_dir_name``): unsafe
  bytes are percent-encoded and the name must fit a file name, 255 bytes; ``source_id`` is at most
  1000 bytes of UTF-8 (PostgreSQL indexes it, and an index entry has a size limit).

NUL policy: PostgreSQL rejects U+0000 in ``text`` and ``jsonb``, so every NUL character is removed
from source, source_id and from every string in the payload before anything is stored; a NUL in
an object key rejects the record (removing it could merge two keys). ``-0.0`` is stored as
``0.0`` (PostgreSQL's numeric has no negative zero). The CSV copy holds the same cleaned values.
Each record that lost a NUL is counted.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

from scrapesink.domain.times import parse_timestamp
from scrapesink.domain.values import (
    MAX_DEPTH,
    MAX_KEY_BYTES,
    MAX_NAME_BYTES,
    check_depth,
    check_name,
    dumps,
    json_type,
    positive_zeros,
    raw_is_safe,
    strip_nul,
    text_has_negative_zero,
)
from scrapesink.errors import RecordError

CANONICAL_FIELDS = ("source", "source_id", "occurred_at", "payload")


class RawEvent(NamedTuple):
    """One validated raw event, ready to store. ``payload_json`` is the exact stored text.

    A named tuple, not a frozen dataclass: one is built per record on the hot path, and a
    frozen dataclass's ``__init__`` (``object.__setattr__`` per field) cost several times more.
    """

    source: str
    source_id: str
    occurred_at: datetime
    payload_json: str
    #: ``occurred_at.isoformat()`` (UTC), computed once: the journal, COPY and CSV all need it
    occurred_iso: str = ""

    @property
    def key(self) -> tuple[str, str]:
        return (self.source, self.source_id)

    def iso(self) -> str:
        """The UTC time as ISO 8601 text (``2025-05-15T10:00:00+00:00``)."""
        return self.occurred_iso or self.occurred_at.astimezone(UTC).isoformat()

    @property
    def payload(self) -> dict[str, Any]:
        value: dict[str, Any] = json.loads(self.payload_json)
        return value


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """A raw event as PostgreSQL holds it."""

    id: int
    source: str
    source_id: str
    occurred_at: datetime
    payload: dict[str, Any]
    created_at: datetime
    processed: bool


@dataclass(frozen=True, slots=True)
class EventRules:
    """How flat records are read and which ones are accepted."""

    id_field: str = "id"
    time_field: str = "timestamp"
    default_source: str | None = None
    max_payload_bytes: int = 1024 * 1024
    future_tolerance: timedelta = timedelta(days=1)
    max_age: timedelta | None = None
    max_depth: int = MAX_DEPTH
    #: the shape of time text besides ISO 8601: a strptime pattern, or "auto" (times.py)
    time_format: str | None = None


class Cleaning:
    """What validation changed, to be counted in the summary (plain class: cheap to create)."""

    naive_timestamp = False
    nul_removed = False


class Validated(NamedTuple):
    event: RawEvent
    cleaning: Cleaning


def validate_event(
    record: Any,
    rules: EventRules,
    *,
    now: datetime | None = None,
    location: str | None = None,
    raw: str | None = None,
) -> Validated:
    """Turn one parsed record into a :class:`RawEvent` or raise :class:`RecordError`.

    Args:
        record: the decoded JSON value (or CSV row as a dict).
        rules: field names, defaults and limits.
        now: the reference time for the accepted window (default: the current time).
        location: where the record came from (``line 12``), copied into the error.
        raw: the JSON text ``record`` was decoded from, when the reader has it. A flat record's
            payload is the whole object, so this text is stored as is instead of encoding the
            object again (the costliest step of ingest); it is checked like an encoding would be.
    """
    if type(record) is not dict and not isinstance(record, Mapping):  # the ABC check is slow
        raise RecordError(f"not an object: got {json_type(record)}", location=location)
    try:
        return _validate(record, rules, now, location, raw)
    except RecordError as exc:
        exc.location = exc.location or location
        raise
    except RecursionError:  # a value deeper than anything recursive on the way can take
        raise RecordError(
            f"nested deeper than {rules.max_depth} levels", location=location, path="payload"
        ) from None


def _validate(
    record: Mapping[str, Any],
    rules: EventRules,
    now: datetime | None,
    location: str | None,
    raw: str | None,
) -> Validated:
    cleaning = Cleaning()
    canonical = "payload" in record and "source_id" in record
    if canonical:
        source_value = record.get("source", rules.default_source)
        id_value, id_name = record.get("source_id"), "source_id"
        time_value, time_name = record.get("occurred_at"), "occurred_at"
        payload = record.get("payload")
        if not isinstance(payload, Mapping):
            raise RecordError(
                f"payload must be an object, got {json_type(payload)}",
                location=location,
                path="payload",
            )
    else:
        source_value = record.get("source", rules.default_source)
        if rules.default_source is not None:
            source_value = rules.default_source
        id_value, id_name = record.get(rules.id_field), rules.id_field
        time_value, time_name = record.get(rules.time_field), rules.time_field
        payload = record

    source = _key_text(source_value, "source", location, cleaning, hint="(or pass --source)")
    if not source.isascii() or len(source) > MAX_NAME_BYTES // 3:  # else it always fits
        check_name(source, "source", location)
    source_id = _key_text(id_value, id_name, location, cleaning, hint="")
    occurred_at = parse_timestamp(time_value, time_name, location, cleaning, rules.time_format)
    check_window(occurred_at, rules, now=now, location=location, path=time_name)
    if (
        raw is not None
        and payload is record
        and raw_is_safe(raw)
        and not text_has_negative_zero(raw)
    ):
        # UTF-8 needs at most 4 bytes a character: only text near the limit is measured exactly.
        if 4 * len(raw) > rules.max_payload_bytes:
            size = len(raw.encode("utf-8"))
            if size > rules.max_payload_bytes:
                raise _too_large(size, rules.max_payload_bytes, location)
        payload_json = raw
    else:
        payload_json = _serialize_payload(payload, rules, location, cleaning)
    # Every level of nesting opens a bracket, so text with few brackets is shallow enough;
    # only the rare text with many is walked (the walk builds nothing and never recurses).
    if (
        len(payload_json) > 2 * rules.max_depth  # each level takes two characters at least
        and payload_json.count("{") + payload_json.count("[") > rules.max_depth
    ):
        check_depth(payload, rules.max_depth, location)
    # Text already in the canonical UTC form (what isoformat() would print, as most scrapers
    # and scrapesink's own exports write it) is kept as is: formatting costs more than parsing.
    if (
        type(time_value) is str
        and len(time_value) in (25, 32)
        and time_value[10] == "T"
        and (time_value.endswith("+00:00"))
    ):
        iso = time_value
    else:
        iso = occurred_at.isoformat()
    event = RawEvent(source, source_id, occurred_at, payload_json, iso)
    return Validated(event, cleaning)


def check_window(
    occurred_at: datetime,
    rules: EventRules,
    *,
    now: datetime | None = None,
    location: str | None = None,
    path: str = "occurred_at",
) -> None:
    """Reject timestamps outside the accepted window."""
    now = now or datetime.now(UTC)
    if occurred_at > now + rules.future_tolerance:
        raise RecordError(
            f"occurred_at {occurred_at.isoformat()} is more than "
            f"{_human(rules.future_tolerance)} in the future",
            location=location,
            path=path,
        )
    if rules.max_age is not None and occurred_at < now - rules.max_age:
        raise RecordError(
            f"occurred_at {occurred_at.isoformat()} is older than the accepted "
            f"{_human(rules.max_age)}",
            location=location,
            path=path,
        )


def _key_text(value: Any, name: str, location: str | None, cleaning: Cleaning, *, hint: str) -> str:
    if type(value) is str:  # the common case first: this runs twice for every record
        text = value
    elif value is None:
        raise RecordError(f"missing field {name} {hint}".rstrip(), location=location, path=name)
    elif isinstance(value, bool) or not isinstance(value, str | int):
        raise RecordError(
            f"{name} must be text or an integer, got {json_type(value)}",
            location=location,
            path=name,
        )
    else:
        text = str(value)
    if "\x00" in text:
        text = text.replace("\x00", "")
        cleaning.nul_removed = True
    text = text.strip()
    if not text:
        raise RecordError(f"empty {name}", location=location, path=name)
    if len(text) > MAX_KEY_BYTES // 4 and len(size := text.encode("utf-8", "replace")) > (
        MAX_KEY_BYTES
    ):
        raise RecordError(
            f"{name} is {len(size):,} bytes of UTF-8 (at most {MAX_KEY_BYTES:,})",
            location=location,
            path=name,
        )
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise RecordError(
                f"{name} holds invalid Unicode", location=location, path=name
            ) from None
    return text


def _serialize_payload(
    payload: Mapping[str, Any], rules: EventRules, location: str | None, cleaning: Cleaning
) -> str:
    limit = rules.max_payload_bytes
    try:
        text = dumps(payload)
        # The encoder writes U+0000 as the escape \u0000 even with ensure_ascii=False, so one
        # substring test finds every NUL; the slow walk runs only for payloads that need it (or
        # hold a literal backslash-u0000, which the walk then leaves alone).
        if "\\u0000" in text:
            cleaned, changed = strip_nul(payload, "payload")
            if changed:
                cleaning.nul_removed = True
                text = dumps(cleaned)
        if text_has_negative_zero(text):  # jsonb keeps no sign on zero: neither does the CSV copy
            text = dumps(positive_zeros(json.loads(text)))
        size = len(text.encode("utf-8"))
    except ValueError as exc:
        if isinstance(exc, UnicodeEncodeError):
            reason = "payload holds invalid Unicode (a lone surrogate such as \\ud800)"
        else:
            reason = "payload holds NaN or Infinity, which JSON cannot store"
        raise RecordError(reason, location=location, path="payload") from None
    except TypeError as exc:
        raise RecordError(
            f"payload is not JSON: {exc}", location=location, path="payload"
        ) from None
    except RecursionError:  # deeper than the encoder goes: far deeper than allowed
        check_depth(payload, rules.max_depth, location)
        raise
    if size > limit:
        raise _too_large(size, limit, location)
    return text


def _too_large(size: int, limit: int, location: str | None) -> RecordError:
    return RecordError(
        f"payload too large: {size:,} bytes (limit {limit:,})", location=location, path="payload"
    )


def _human(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds and seconds % size == 0:
            count = seconds // size
            return f"{count} {unit}{'s' if count != 1 else ''}"
    return f"{seconds} seconds"

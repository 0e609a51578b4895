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
* ``source`` becomes a directory name in the CSV mirror (:func:`source_dir_name`): unsafe bytes
  are percent-encoded and the name must fit a file name, 255 bytes; ``source_id`` is at most
  1000 bytes of UTF-8 (PostgreSQL indexes it, and an index entry has a size limit).

NUL policy: PostgreSQL rejects U+0000 in ``text`` and ``jsonb``, so every NUL character is removed
from source, source_id and from every string in the payload before anything is stored; a NUL in
an object key rejects the record (removing it could merge two keys). ``-0.0`` is stored as
``0.0`` (PostgreSQL's numeric has no negative zero). The CSV copy holds the same cleaned values.
Each record that lost a NUL is counted.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

from scrapesink.errors import RecordError

MAX_KEY_BYTES = 1000  # source_id, and model keys: UTF-8 bytes (an index entry must fit a page)
MAX_NAME_BYTES = 255  # one file or directory name on Linux, macOS and Windows filesystems
MAX_DEPTH = 256
EPOCH_MILLIS_THRESHOLD = 10**11
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
        raise RecordError(f"not an object: got {_json_type(record)}", location=location)
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
                f"payload must be an object, got {_json_type(payload)}",
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
    occurred_at = parse_timestamp(time_value, time_name, location, cleaning)
    check_window(occurred_at, rules, now=now, location=location, path=time_name)
    if raw is not None and payload is record and _raw_is_safe(raw) and not _negative_zero(raw):
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


def parse_timestamp(
    value: Any, name: str, location: str | None, cleaning: Cleaning | None = None
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
            f"bad timestamp: expected text or a number, got {_json_type(value)}",
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


def scan(value: Any) -> tuple[bool, int, bool]:
    """What a JSON value needs before it is stored, found in one walk that builds nothing:

    * whether it holds U+0000 in any string or key (True also for a value of a type this cannot
      see into, so that :func:`strip_nul` decides) — records are nearly always clean, and this
      is four times cheaper than ``strip_nul``;
    * how many objects and arrays it holds: no value can nest deeper than that;
    * whether it holds -0.0 (see :func:`positive_zeros`).

    The walk stops where a NUL is found."""
    stack = [value]
    pop, push, extend = stack.pop, stack.append, stack.extend
    containers = 0
    negative_zero = False
    while stack:
        item = pop()
        kind = type(item)
        if kind is str:
            if "\x00" in item or (not item.isascii() and _unencodable(item)):
                return True, containers, negative_zero  # strip_nul cleans or refuses it
        elif kind is dict:
            containers += 1
            for key, inner in item.items():
                if type(key) is not str or "\x00" in key or not key.isascii():
                    return True, containers, negative_zero
                push(inner)
        elif kind is list:
            containers += 1
            extend(item)
        elif kind is float:
            if item == 0 and math.copysign(1.0, item) < 0:
                negative_zero = True
        elif not (item is None or kind is int or kind is bool):
            return True, containers, negative_zero  # tuples, datetimes...: strip_nul looks
    return False, containers, negative_zero


def strip_nul(value: Any, path: str = "") -> tuple[Any, bool]:
    """Remove U+0000 from every string in a JSON value; say whether any was found.

    A key holding NUL is refused instead (:class:`RecordError` at its path, under ``path``):
    without the NUL it could equal another key of the same object, and one of the two values
    would be lost. So is text no store can write (a lone surrogate). The path is put together
    only then, on the way out, so a clean value costs nothing for it."""
    try:
        return _strip_nul(value)
    except _Refused as found:
        shown = path
        for part in reversed(found.parts):
            if part:
                shown += part if part.startswith("[") or not shown else f".{part}"
        shown = shown.replace("\x00", "\\u0000").encode("utf-8", "backslashreplace").decode()
        raise RecordError(found.reason, path=shown) from None


class _Refused(Exception):
    """A key or text no store can take, at the path ``parts`` names (innermost first; an
    empty part stands for the value itself)."""

    def __init__(self, reason: str, part: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.parts = [part]


_NUL_KEY = "NUL in a key (it cannot be stored, and removing it could merge two keys)"
_SURROGATE = "holds invalid Unicode (a lone surrogate such as \\ud800)"


def _unencodable(text: str) -> bool:
    """Text that is not valid UTF-8 once encoded (a lone surrogate): no store can write it."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _strip_nul(value: Any) -> tuple[Any, bool]:
    if isinstance(value, str):
        if not value.isascii() and _unencodable(value):
            raise _Refused(_SURROGATE, "")
        return (value.replace("\x00", ""), True) if "\x00" in value else (value, False)
    if isinstance(value, Mapping):
        changed = False
        cleaned: dict[str, Any] = {}
        for key, item in value.items():
            if isinstance(key, str):
                if "\x00" in key:
                    raise _Refused(_NUL_KEY, key)
                if not key.isascii() and _unencodable(key):
                    raise _Refused(_SURROGATE, key)
            try:
                new_item, item_changed = _strip_nul(item)
            except _Refused as found:
                found.parts.append(str(key))
                raise
            cleaned[key] = new_item
            changed = changed or item_changed
        return cleaned, changed
    if isinstance(value, list | tuple):  # a tuple is a JSON array too (it is stored as one)
        items = []
        for i, item in enumerate(value):
            try:
                items.append(_strip_nul(item))
            except _Refused as found:
                found.parts.append(f"[{i}]")
                raise
        return [item for item, _ in items], any(flag for _, flag in items)
    return value, False


def _key_text(value: Any, name: str, location: str | None, cleaning: Cleaning, *, hint: str) -> str:
    if type(value) is str:  # the common case first: this runs twice for every record
        text = value
    elif value is None:
        raise RecordError(f"missing field {name} {hint}".rstrip(), location=location, path=name)
    elif isinstance(value, bool) or not isinstance(value, str | int):
        raise RecordError(
            f"{name} must be text or an integer, got {_json_type(value)}",
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
        text = _dumps(payload)
        # The encoder writes U+0000 as the escape \u0000 even with ensure_ascii=False, so one
        # substring test finds every NUL; the slow walk runs only for payloads that need it (or
        # hold a literal backslash-u0000, which the walk then leaves alone).
        if "\\u0000" in text:
            cleaned, changed = strip_nul(payload, "payload")
            if changed:
                cleaning.nul_removed = True
                text = _dumps(cleaned)
        if _negative_zero(text):  # jsonb keeps no sign on zero: neither does the CSV copy
            text = _dumps(positive_zeros(json.loads(text)))
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


# \u escapes that PostgreSQL's jsonb refuses: NUL and the surrogate range (lone or not; a valid
# pair is re-encoded as the character itself on the slow path).
_UNSAFE_ESCAPE = re.compile(r"\\u(?:0000|[dD][89a-fA-F][0-9a-fA-F]{2})")


def source_dir_name(source: str) -> str:
    """A source as one safe directory name: bytes other than ``A-Za-z0-9._-`` percent-encoded
    (``a/b`` -> ``a%2Fb``), and ``.``/``..`` too. One-to-one, so the name says the source."""
    name = _UNSAFE_NAME.sub(lambda m: "".join(f"%{b:02X}" for b in m.group().encode()), source)
    return name if name not in (".", "..") else name.replace(".", "%2E")


def check_name(value: str, name: str, location: str | None) -> None:
    """A value that becomes a directory name must fit one once encoded (255 bytes)."""
    size = len(source_dir_name(value))
    if size > MAX_NAME_BYTES:
        raise RecordError(
            f"{name} is too long for a file name: {size:,} bytes once unsafe characters are"
            f" percent-encoded (at most {MAX_NAME_BYTES}; each byte outside A-Z a-z 0-9 . _ -"
            " takes 3)",
            location=location,
            path=name,
        )


def check_depth(value: Any, limit: int, location: str | None, path: str = "payload") -> None:
    """Refuse a JSON value nested deeper than ``limit`` levels (an object or array is one).
    Iterative, level by level, visiting only containers: cheap on the shallow values of most
    records (this runs for every json field of every model record)."""
    kind = type(value)
    if kind in _SCALARS or not (kind in _CONTAINERS or _is_container(value)):
        return
    level = [value]
    depth = 0
    while level:
        depth += 1
        if depth > limit:
            raise RecordError(f"nested deeper than {limit} levels", location=location, path=path)
        below = []
        for item in level:
            kind = type(item)
            children = item if kind is list else item.values() if kind is dict else _items(item)
            for inner in children:
                kind = type(inner)
                if kind is dict or kind is list or (kind not in _SCALARS and _is_container(inner)):
                    below.append(inner)
        level = below


def _items(value: Any) -> Any:
    return value.values() if isinstance(value, Mapping) else value


_CONTAINERS = frozenset({dict, list})
_SCALARS = frozenset({str, int, float, bool, type(None)})


def _is_container(value: Any) -> bool:
    return isinstance(value, Mapping | list | tuple)


_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


# A number token -0, -0.0, -0e3 ... ends at a delimiter (a match inside a string only sends the
# record down the slower, exact path).
_ZERO_TOKEN = re.compile(r"-0(?:\.0*)?(?:[eE][+-]?\d+)?\s*[,\]}]")


def _negative_zero(text: str) -> bool:
    """Whether JSON text may hold a negative zero: "-0" in a value position. Hand-rolled
    around ``str.find``: "-0" is common inside strings (ids, dates), and a regex scanning
    for the value position cost more than the rest of validating a record."""
    at = text.find("-0")
    while at != -1:
        # "-0" then a digit is never a zero (JSON has no leading zeros): ids, dates, offsets.
        if text[at + 2 : at + 3] not in _DIGITS:
            before = at - 1
            while before >= 0 and text[before] in " \t\r\n":
                before -= 1
            if before >= 0 and text[before] in ":[," and _ZERO_TOKEN.match(text, at):
                return True
        at = text.find("-0", at + 2)
    return False


_DIGITS = frozenset("0123456789")


def positive_zeros(value: Any) -> Any:
    """The value with every -0.0 as 0.0: PostgreSQL's numeric (hence jsonb) has no negative
    zero, and both stores must hold the same value."""
    if type(value) is float:
        return 0.0 if value == 0 else value
    if isinstance(value, dict):
        return {key: positive_zeros(item) for key, item in value.items()}
    if isinstance(value, list):
        return [positive_zeros(item) for item in value]
    return value


def _raw_is_safe(raw: str) -> bool:
    """True when decoder-checked JSON text can be stored verbatim.

    The decoder already refused NaN, Infinity and invalid UTF-8; text holding an escape that
    jsonb refuses takes the slow path, which strips NULs and rejects lone surrogates.
    """
    return "\\u" not in raw or _UNSAFE_ESCAPE.search(raw) is None


def _dumps(value: Any) -> str:
    # allow_nan=False: PostgreSQL's jsonb has no NaN or Infinity.
    return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def _json_type(value: Any) -> str:
    match value:
        case None:
            return "null"
        case bool():
            return "a boolean"
        case int() | float():
            return "a number"
        case str():
            return "a string"
        case list():
            return "an array"
        case Mapping():
            return "an object"
    return type(value).__name__


def _human(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds and seconds % size == 0:
            count = seconds // size
            return f"{count} {unit}{'s' if count != 1 else ''}"
    return f"{seconds} seconds"

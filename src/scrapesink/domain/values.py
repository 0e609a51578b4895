"""What a value must be to be stored alike in every store: no NUL, no lone surrogate, no -0.0,
not nested too deep, names that fit a file name and keys that fit an index entry.

Standard library only; used by raw events (``events.py``) and model records (``records.py``).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any

from scrapesink.errors import RecordError

MAX_KEY_BYTES = 1000  # source_id, and model keys: UTF-8 bytes (an index entry must fit a page)


MAX_NAME_BYTES = 255  # one file or directory name on Linux, macOS and Windows filesystems


MAX_DEPTH = 256


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


def text_has_negative_zero(text: str) -> bool:
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


def raw_is_safe(raw: str) -> bool:
    """True when decoder-checked JSON text can be stored verbatim.

    The decoder already refused NaN, Infinity and invalid UTF-8; text holding an escape that
    jsonb refuses takes the slow path, which strips NULs and rejects lone surrogates.
    """
    return "\\u" not in raw or _UNSAFE_ESCAPE.search(raw) is None


def dumps(value: Any) -> str:
    # allow_nan=False: PostgreSQL's jsonb has no NaN or Infinity.
    return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def json_type(value: Any) -> str:
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

"""Model records: a scraped entity checked against its model and brought to one canonical form.

Standard library only. :func:`validate_record` returns the record as JSON-native values that
PostgreSQL (``jsonb_to_recordset``), the journal (msgpack) and the CSV files all read the same way:

* ``integer``/``bigint``: ``int`` (integral numbers and digit strings are accepted; range checked);
* ``float``: finite ``float``; ``numeric``: decimal text (``"7.50"`` keeps its digits);
* ``string``/``text``: ``str`` (numbers are accepted and kept as text); ``boolean``: ``bool``
  (also ``"true"``/``"false"``, ``1``/``0``); ``date``: ``"YYYY-MM-DD"``; ``datetime``: ISO 8601
  in UTC (a value without an offset is read as UTC, like raw events); ``json``: any JSON value.

A missing field takes its declared default, else null; null in a ``nullable: false`` field, a
missing natural key, a child without its key or a link without the linked model's key is an error
whose path names the field (``actors[2].name``). With ``strict: true`` unknown fields are errors,
otherwise they are dropped. NUL characters are removed (the raw-event policy, same reason).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, NamedTuple

from scrapesink.domain.models import Declaration, FieldDef, ModelDef
from scrapesink.domain.times import parse_timestamp
from scrapesink.domain.values import (
    MAX_DEPTH,
    MAX_KEY_BYTES,
    check_depth,
    positive_zeros,
    scan,
    strip_nul,
)
from scrapesink.errors import RecordError

UPSERT, DELETE = "upsert", "delete"
_RANGES = {"integer": 2**31, "bigint": 2**63}
_TRUE = {"true", "t", "yes", "y", "1"}
_FALSE = {"false", "f", "no", "n", "0"}


class RecordOp(NamedTuple):
    """One journaled model operation: ``upsert`` a whole record, or ``delete`` one by its key."""

    op: str
    record: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Checked:
    record: dict[str, Any]
    nul_removed: bool


def key_of(model: ModelDef, record: Mapping[str, Any]) -> tuple[Any, ...]:
    return tuple(record[name] for name in model.natural_key)


def validate_record(
    declaration: Declaration, model: ModelDef, data: Any, location: str | None = None
) -> Checked:
    """Check ``data`` against ``model``; raise :class:`RecordError` naming the first bad path."""
    try:
        return _validate(declaration, model, data, location)
    except RecordError as exc:
        exc.location = exc.location or location
        raise
    except RecursionError:  # deeper than anything recursive on the way can take
        raise RecordError(f"nested deeper than {MAX_DEPTH} levels", location=location) from None


def _validate(
    declaration: Declaration, model: ModelDef, data: Any, location: str | None
) -> Checked:
    # The record's own dicts and lists are built anew below; json values are kept as given
    # (the sinks encode them when the batch is handed over, see CsvModelSink.stage).
    nul, containers, negative_zero = scan(data)
    if negative_zero or nul:  # the scan stops at a NUL: it may not have seen every zero
        data = positive_zeros(data)
    if (nul or containers > MAX_DEPTH) and isinstance(data, Mapping):
        # Perhaps nested too deep: say which field, before anything recursive reads it.
        for name, value in data.items():
            check_depth(value, MAX_DEPTH - 1, location, str(name))
    cleaned, nul = strip_nul(data) if nul else (data, False)
    record = _object(model.fields, cleaned, model.strict, "", location, _extra(model))
    for name in model.natural_key:
        if record.get(name) is None:
            raise RecordError(f"missing natural key field {name}", location=location, path=name)
        _key_size(record[name], name, location)
    for child in model.children:
        value = cleaned.get(child.name)
        if child.relation == "one":
            record[child.name] = (
                None
                if value is None
                else _object(child.fields, value, model.strict, f"{child.name}.", location)
            )
        else:
            record[child.name] = _items(
                value, child.name, child.fields, child.key, child.name, model.strict, location
            )
    for link in model.links:
        target = declaration.model(link.model)
        record[link.name] = _items(
            cleaned.get(link.name),
            link.name,
            target.fields + link.fields,
            target.natural_key,
            link.model,
            model.strict,
            location,
        )
    return Checked(record, nul)


def validate_key(model: ModelDef, key: Mapping[str, Any] | Any) -> dict[str, Any]:
    """A natural key given as a mapping, or as the bare value of a one-field key."""
    if not isinstance(key, Mapping):
        if len(model.natural_key) != 1:
            raise RecordError(
                f"model {model.name} has a composite key: give " + ", ".join(model.natural_key),
                path=model.natural_key[0],
            )
        key = {model.natural_key[0]: key}
    cleaned, _ = strip_nul(dict(key))
    out: dict[str, Any] = {}
    for name in model.natural_key:
        spec = model.field(name)
        assert spec is not None  # the declaration checks guarantee it
        if cleaned.get(name) is None:
            raise RecordError(f"missing natural key field {name}", path=name)
        out[name] = convert(spec, cleaned[name], name, None)
    return out


def _extra(model: ModelDef) -> set[str]:
    """Record keys that are not fields but are still known: children and links."""
    return {c.name for c in model.children} | {link.name for link in model.links}


def _object(
    fields: tuple[FieldDef, ...],
    data: Any,
    strict: bool,
    prefix: str,
    location: str | None,
    extra: set[str] | frozenset[str] = frozenset(),
) -> dict[str, Any]:
    if type(data) is not dict and not isinstance(data, Mapping):
        raise RecordError(
            f"expected an object, got {_kind(data)}", location=location, path=prefix.rstrip(".")
        )
    if strict:
        known = {f.name for f in fields} | extra
        unknown = sorted(set(data) - known)
        if unknown:
            raise RecordError(
                f"unknown field {unknown[0]!r} (the model is strict)",
                location=location,
                path=prefix + unknown[0],
            )
    out: dict[str, Any] = {}
    get = data.get
    for spec in fields:
        name = spec.name
        value = get(name)
        if value is None and spec.default is not None and name not in data:
            value = spec.default
        if value is None:
            if not spec.nullable:
                raise RecordError(f"missing field {name}", location=location, path=prefix + name)
            out[name] = None
        elif _canonical(spec.type, value):
            out[name] = value
        else:
            out[name] = convert(spec, value, prefix + name, location)
    return out


def _canonical(kind: str, value: Any) -> bool:
    """Whether ``value`` already is its canonical form (the common case, decided without the
    general conversion: this runs for every field of every record)."""
    if kind == "json":
        return True
    vtype = type(value)
    if vtype is str:
        return kind == "string" or kind == "text"
    if vtype is bool:
        return kind == "boolean"
    if vtype is int:
        limit = _RANGES.get(kind)
        return limit is not None and -limit <= value < limit
    if vtype is float:
        return kind == "float" and math.isfinite(value)
    return False


def _items(
    value: Any,
    name: str,
    fields: tuple[FieldDef, ...],
    key: tuple[str, ...],
    owner: str,
    strict: bool,
    location: str | None,
) -> list[dict[str, Any]]:
    """A list of child rows or link items, each checked, each with its ``key`` present."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise RecordError(f"expected a list, got {_kind(value)}", location=location, path=name)
    rows = []
    for i, item in enumerate(value):
        prefix = f"{name}[{i}]."
        row = _object(fields, item, strict, prefix, location)
        for field_name in key:
            if row.get(field_name) is None:
                raise RecordError(
                    f"missing key field {field_name} of {owner}",
                    location=location,
                    path=prefix + field_name,
                )
            _key_size(row[field_name], prefix + field_name, location)
        rows.append(row)
    return rows


def _key_size(value: Any, path: str, location: str | None) -> None:
    """A key PostgreSQL indexes, as raw events' source_id: at most 1000 bytes of UTF-8."""
    if type(value) is str and len(value) > MAX_KEY_BYTES // 4:
        size = len(value.encode("utf-8", "replace"))
        if size > MAX_KEY_BYTES:
            raise RecordError(
                f"key is {size:,} bytes of UTF-8 (at most {MAX_KEY_BYTES:,})",
                location=location,
                path=path,
            )


def convert(spec: FieldDef, value: Any, path: str, location: str | None) -> Any:
    """One value in its canonical form for ``spec.type``."""
    kind = spec.type

    def bad(expected: str) -> RecordError:
        return RecordError(
            f"expected {expected}, got {_kind(value)} {_short(value)}",
            location=location,
            path=path,
        )

    if kind in ("integer", "bigint"):
        number: Any = value
        if isinstance(value, bool):
            raise bad("an integer")
        if isinstance(value, str):
            try:
                number = int(value.strip())
            except ValueError:
                raise bad("an integer") from None
        elif isinstance(value, float):
            if not value.is_integer():
                raise bad("an integer")
            number = int(value)
        elif not isinstance(value, int):
            raise bad("an integer")
        limit = _RANGES[kind]
        if not -limit <= number < limit:
            raise RecordError(f"{number} is out of range for {kind}", location=location, path=path)
        return number
    if kind == "float":
        if isinstance(value, bool):
            raise bad("a number")
        try:
            number = float(value) if isinstance(value, int | float | str | Decimal) else None
        except ValueError:
            number = None
        if number is None or not math.isfinite(number):
            raise bad("a finite number")
        return number if number else 0.0  # "-0.0" and -1e-400 too: PostgreSQL's is unsigned
    if kind == "numeric":
        if isinstance(value, bool) or not isinstance(value, int | float | str | Decimal):
            raise bad("a decimal number")
        try:
            exact = Decimal(repr(value) if isinstance(value, float) else str(value).strip())
        except InvalidOperation:
            raise bad("a decimal number") from None
        if not exact.is_finite():
            raise bad("a finite decimal number")
        if exact.is_zero():
            exact = abs(exact)  # PostgreSQL's numeric has no -0: "-0.0" is "0.0" in both stores
        return format(exact, "f")
    if kind in ("string", "text"):
        if isinstance(value, str):
            return value
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
        raise bad("text")
    if kind == "boolean":
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        raise bad("a boolean")
    if kind == "date":
        if isinstance(value, datetime):
            raise bad("a date")
        if isinstance(value, date):
            return value.isoformat()
        if isinstance(value, str):
            try:
                return date.fromisoformat(value.strip()).isoformat()
            except ValueError:
                pass
        raise bad("a date such as 2024-05-31")
    if kind == "datetime":
        if isinstance(value, datetime):
            aware = value if value.tzinfo else value.replace(tzinfo=UTC)
            return aware.astimezone(UTC).isoformat()
        return parse_timestamp(value, path, location).isoformat()
    return value  # json: any JSON value (depth and -0.0 were seen to with the record's)


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, Mapping):
        return "an object"
    return type(value).__name__


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."

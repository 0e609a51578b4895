"""Model records: canonical values, defaults, NUL removal and the path of every rejection.

The validator takes a fast path for values already in canonical form and for records without
NUL characters; these tests pin that both paths give the same record.
"""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal

import pytest

from scrapesink.domain.declarations import parse_declaration
from scrapesink.domain.records import validate_record
from scrapesink.domain.values import scan
from scrapesink.errors import RecordError

DECLARATION = parse_declaration(
    {
        "models": {
            "things": {
                "table_name": "things",
                "natural_key": ["url"],
                "fields": [
                    {"name": "url", "type": "string", "nullable": False},
                    {"name": "n", "type": "integer"},
                    {"name": "big", "type": "bigint"},
                    {"name": "x", "type": "float"},
                    {"name": "price", "type": "numeric"},
                    {"name": "body", "type": "text"},
                    {"name": "ok", "type": "boolean", "default": True},
                    {"name": "day", "type": "date"},
                    {"name": "at", "type": "datetime"},
                    {"name": "doc", "type": "json"},
                ],
                "children": [
                    {
                        "name": "parts",
                        "table_name": "thing_parts",
                        "relation": "many",
                        "key": ["code"],
                        "fields": [
                            {"name": "code", "type": "string", "nullable": False},
                            {"name": "size", "type": "integer"},
                        ],
                    }
                ],
            },
            "strict_things": {
                "table_name": "strict_things",
                "natural_key": ["url"],
                "strict": True,
                "fields": [{"name": "url", "type": "string", "nullable": False}],
            },
        }
    }
)
THINGS = DECLARATION.model("things")


def check(data, model=THINGS):
    return validate_record(DECLARATION, model, data, "line 7")


def reason(data, model=THINGS) -> tuple[str, str]:
    with pytest.raises(RecordError) as info:
        check(data, model)
    return info.value.path or "", info.value.message


def test_canonical_values_pass_through_and_others_are_converted():
    given = {
        "url": "u",
        "n": 5,
        "big": 2**40,
        "x": 1.5,
        "price": "7.50",
        "body": "text",
        "ok": False,
        "day": "2024-05-31",
        "at": "2024-05-31T12:00:00+02:00",
        "doc": {"a": [1, {"b": None}]},
    }
    expected = given | {"at": "2024-05-31T10:00:00+00:00", "parts": []}  # UTC; no children
    assert check(given).record == expected
    converted = check(
        {
            "url": 12,
            "n": "6",
            "big": 3.0,
            "x": 2,
            "price": 0.1,
            "body": 4.5,
            "ok": "yes",
            "day": date(2024, 1, 2),
            "at": datetime(2024, 1, 2, 3, 4, tzinfo=timezone(timedelta(hours=-5))),
            "parts": [{"code": 1, "size": "3"}],
        }
    ).record
    assert converted["url"] == "12" and converted["n"] == 6 and converted["big"] == 3
    assert converted["x"] == 2.0 and type(converted["x"]) is float
    assert converted["price"] == "0.1" and converted["body"] == "4.5" and converted["ok"] is True
    assert converted["day"] == "2024-01-02" and converted["at"] == "2024-01-02T08:04:00+00:00"
    assert converted["parts"] == [{"code": "1", "size": 3}]
    assert check({"url": "u", "at": datetime(2024, 1, 2, 3, 4)}).record["at"] == (
        datetime(2024, 1, 2, 3, 4, tzinfo=UTC).isoformat()
    )


def test_defaults_fill_absent_fields_only():
    assert check({"url": "u"}).record["ok"] is True
    assert check({"url": "u", "ok": None}).record["ok"] is None  # an explicit null stays null
    assert check({"url": "u", "ok": False}).record["ok"] is False


@pytest.mark.parametrize(
    ("data", "path", "words"),
    [
        ({"n": 1}, "url", "missing field url"),
        ({"url": "u", "n": 2**31}, "n", "out of range for integer"),
        ({"url": "u", "big": 2**63}, "big", "out of range for bigint"),
        ({"url": "u", "n": True}, "n", "expected an integer, got a boolean"),
        ({"url": "u", "n": 1.5}, "n", "expected an integer"),
        ({"url": "u", "x": math.nan}, "x", "expected a finite number"),
        ({"url": "u", "x": math.inf}, "x", "expected a finite number"),
        ({"url": "u", "x": True}, "x", "expected a number"),
        ({"url": "u", "price": "lots"}, "price", "expected a decimal number"),
        ({"url": "u", "body": ["a"]}, "body", "expected text, got a list"),
        ({"url": "u", "ok": 2}, "ok", "expected a boolean"),
        ({"url": "u", "day": "31/05/2024"}, "day", "expected a date"),
        ({"url": "u", "parts": {"code": "a"}}, "parts", "expected a list, got an object"),
        ({"url": "u", "parts": [{"code": "a"}, {"size": 1}]}, "parts[1].code", "missing field"),
        ({"url": "u", "parts": [{"code": "a", "size": "big"}]}, "parts[0].size", "an integer"),
        ({"url": "u", "parts": ["a"]}, "parts[0]", "expected an object, got text"),
    ],
)
def test_each_rejection_names_its_path(data, path, words):
    got_path, message = reason(data)
    assert got_path == path
    assert words in message


def test_a_strict_model_rejects_unknown_fields():
    model = DECLARATION.model("strict_things")
    assert reason({"url": "u", "extra": 1}, model) == (
        "extra",
        "unknown field 'extra' (the model is strict)",
    )
    assert check({"url": "u", "extra": 1}).record.get("extra") is None  # dropped elsewhere


def test_nul_characters_are_removed_from_fields_children_and_json_values():
    checked = check(
        {
            "url": "u\x00rl",
            "body": "a\x00b",
            "doc": {"key": ["v\x00", {"deep": "x\x00y"}]},
            "parts": [{"code": "c\x00"}],
        }
    )
    assert checked.nul_removed
    assert checked.record["url"] == "url" and checked.record["body"] == "ab"
    assert checked.record["doc"] == {"key": ["v", {"deep": "xy"}]}
    assert checked.record["parts"] == [{"code": "c", "size": None}]
    clean = check({"url": "u", "doc": {"a": "b"}})
    assert not clean.nul_removed


def test_a_nul_in_a_json_key_rejects_the_record_with_its_path():
    with pytest.raises(RecordError, match="NUL in a key") as error:
        check({"url": "u", "doc": {"a\x00b": 1, "ab": 2}})
    assert error.value.path == "doc.a\\u0000b"


def test_negative_zero_becomes_zero_in_numeric_and_json_values():
    checked = check({"url": "u", "doc": {"v": [-0.0]}})
    assert str(checked.record["doc"]["v"][0]) == "0.0"


def test_nul_inside_a_value_of_another_type_is_still_found():
    # a tuple is not scanned by the fast check: the full one decides, and stores an array
    checked = check({"url": "u", "doc": {"t": ("a\x00",)}})
    assert checked.nul_removed
    assert checked.record["doc"] == {"t": ["a"]}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({"a": [1, 2.5, None, True, {"b": "c"}]}, False),
        ({"a": [{"b": "c\x00"}]}, True),
        ({"k\x00": 1}, True),
        ({1: "a"}, True),  # a key that is not text: let strip_nul look
        ({"a": ("x",)}, True),  # a tuple: let strip_nul look
        ({"a": Decimal("1.5")}, True),
        ("\x00", True),
        ("clean", False),
    ],
)
def test_scan_finds_nul(value, expected):
    assert scan(value)[0] is expected


def test_scan_counts_the_objects_and_arrays_no_value_can_nest_deeper_than():
    assert scan({"a": [1, {"b": []}], "c": "x"}) == (False, 4, False)
    assert scan("text") == (False, 0, False)
    assert scan({"a": [0.0, -0.0]}) == (False, 2, True)


def test_a_decimal_is_a_number_for_a_float_field():
    # What PostgreSQL's JSON gives back for 0.92 (verify read every workflow with a fractional
    # quality_score as "not valid" and reported it missing), and what a DB-fed scraper sends.
    assert check({"url": "u", "x": Decimal("0.92")}).record["x"] == 0.92
    assert reason({"url": "u", "x": Decimal("NaN")})[0] == "x"

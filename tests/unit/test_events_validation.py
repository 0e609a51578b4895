"""Validation rules for raw events: what is accepted, what is rejected and why."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest

from scrapesink.domain.events import EventRules, validate_event
from scrapesink.domain.times import parse_timestamp
from scrapesink.domain.values import strip_nul
from scrapesink.errors import RecordError

NOW = datetime(2025, 5, 15, 12, 0, tzinfo=UTC)
RULES = EventRules(default_source=None)


def check(record, rules=RULES, **kw):
    return validate_event(record, rules, now=NOW, location="line 7", **kw)


def rejected(record, rules=RULES) -> RecordError:
    with pytest.raises(RecordError) as info:
        check(record, rules)
    assert info.value.location == "line 7"
    return info.value


def test_canonical_record_is_accepted_as_is():
    v = check(
        {
            "source": "s",
            "source_id": "a",
            "occurred_at": "2025-05-15T01:02:03Z",
            "payload": {"x": 1},
        }
    )
    assert v.event.key == ("s", "a")
    assert v.event.occurred_at == datetime(2025, 5, 15, 1, 2, 3, tzinfo=UTC)
    assert v.event.payload == {"x": 1}


def test_flat_record_uses_id_and_time_fields_and_keeps_the_whole_object():
    rules = EventRules(id_field="sku", time_field="seen", default_source="shop")
    record = {"sku": 42, "seen": "2025-05-15T10:00:00+02:00", "price": 9.5}
    v = check(record, rules)
    assert v.event.source == "shop"
    assert v.event.source_id == "42"
    assert v.event.occurred_at == datetime(2025, 5, 15, 8, 0, tzinfo=UTC)
    assert v.event.payload == record


def test_explicit_source_wins_over_a_flat_records_own_source_field():
    v = check(
        {"id": 1, "timestamp": "2025-05-15T00:00:00Z", "source": "Reuters"},
        EventRules(default_source="news"),
    )
    assert v.event.source == "news"
    assert v.event.payload["source"] == "Reuters"


@pytest.mark.parametrize(
    ("record", "reason", "path"),
    [
        ([1, 2], "not an object: got an array", ""),
        ("text", "not an object: got a string", ""),
        ({"id": 1, "timestamp": "2025-05-15T00:00:00Z"}, "missing field source", "source"),
        ({"source": "s", "timestamp": "2025-05-15T00:00:00Z"}, "missing field id", "id"),
        ({"source": " ", "id": 1, "timestamp": "2025-05-15"}, "empty source", "source"),
        ({"source": "s", "id": "", "timestamp": "2025-05-15"}, "empty id", "id"),
        ({"source": "s", "id": True, "timestamp": "2025-05-15"}, "id must be text", "id"),
        ({"source": "s", "id": 1}, "missing field timestamp", "timestamp"),
        (
            {"source": "s", "id": 1, "timestamp": "yesterday"},
            "bad timestamp 'yesterday'",
            "timestamp",
        ),
        (
            {"source": "s", "id": 1, "timestamp": [2025]},
            "bad timestamp: expected text",
            "timestamp",
        ),
        (
            {"source": "s", "source_id": "a", "occurred_at": "2025-05-15", "payload": [1]},
            "payload must be an object, got an array",
            "payload",
        ),
    ],
)
def test_bad_records_are_rejected_with_reason_and_path(record, reason, path):
    error = rejected(record)
    assert reason in error.message
    assert error.path == path
    assert str(error).startswith("line 7")


def test_naive_timestamps_are_read_as_utc_and_counted():
    v = check({"source": "s", "id": 1, "timestamp": "2025-05-15T10:00:00"})
    assert v.event.occurred_at == datetime(2025, 5, 15, 10, tzinfo=UTC)
    assert v.cleaning.naive_timestamp
    aware = check({"source": "s", "id": 1, "timestamp": "2025-05-15T10:00:00Z"})
    assert not aware.cleaning.naive_timestamp


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1747303200, datetime(2025, 5, 15, 10, tzinfo=UTC)),
        (1747303200.5, datetime(2025, 5, 15, 10, 0, 0, 500000, tzinfo=UTC)),
        (1747303200000, datetime(2025, 5, 15, 10, tzinfo=UTC)),  # milliseconds
        ("2025-05-15T23:59:59.999999+14:00", datetime(2025, 5, 15, 9, 59, 59, 999999, tzinfo=UTC)),
        ("2025-05-15T00:00:00-12:00", datetime(2025, 5, 15, 12, tzinfo=UTC)),
        ("2025-05-15 10:00:00+05:30", datetime(2025, 5, 15, 4, 30, tzinfo=UTC)),
    ],
)
def test_timestamps_in_every_shape_become_utc(value, expected):
    assert parse_timestamp(value, "t", None) == expected


def test_future_events_beyond_tolerance_are_rejected():
    ok = check({"source": "s", "id": 1, "timestamp": (NOW + timedelta(hours=23)).isoformat()})
    assert ok.event.occurred_at > NOW
    error = rejected({"source": "s", "id": 1, "timestamp": (NOW + timedelta(days=2)).isoformat()})
    assert "more than 1 day in the future" in error.message


def test_max_age_rejects_old_events_when_configured():
    rules = EventRules(max_age=timedelta(days=30))
    error = rejected({"source": "s", "id": 1, "timestamp": "2020-01-01T00:00:00Z"}, rules)
    assert "older than the accepted 30 days" in error.message


def test_payload_over_the_limit_is_rejected_with_its_size():
    rules = EventRules(max_payload_bytes=100)
    error = rejected({"source": "s", "id": 1, "timestamp": "2025-05-15", "blob": "x" * 200}, rules)
    assert "payload too large" in error.message
    assert "limit 100" in error.message


def test_nul_characters_are_removed_from_keys_and_values_and_counted():
    record = {
        "source": "s\x00",
        "id": "a\x00b",
        "timestamp": "2025-05-15",
        "key": ["v\x00", {"deep": "x\x00y"}],
    }
    v = check(record)
    assert v.cleaning.nul_removed
    assert v.event.source == "s"
    assert v.event.source_id == "ab"
    assert "\\u0000" not in v.event.payload_json and "\x00" not in v.event.payload_json
    assert v.event.payload["key"] == ["v", {"deep": "xy"}]


def test_a_nul_in_an_object_key_rejects_the_record_instead_of_merging_two_keys():
    # Without its NUL "a\x00b" would be "ab", and one of the two values would be lost.
    error = rejected({"source": "s", "id": 1, "timestamp": "2025-05-15", "a\x00b": "x", "ab": "y"})
    assert error.path == "payload.a\\u0000b" and "NUL in a key" in error.message
    nested = {"source": "s", "id": 1, "timestamp": "2025-05-15", "v": [{"k\x00": 1}]}
    assert rejected(nested).path == "payload.v[0].k\\u0000"


def test_negative_zero_is_stored_as_zero_so_both_stores_agree():
    import json

    flat = {"source": "s", "id": 1, "timestamp": "2025-05-15", "v": -0.0, "w": [-0.0, "-0"]}
    for raw in (None, json.dumps(flat)):
        event = validate_event(flat, EventRules(), now=NOW, raw=raw).event
        assert json.loads(event.payload_json)["w"] == [0.0, "-0"]
        assert "-0.0" not in event.payload_json


def test_strip_nul_reports_no_change_for_clean_values():
    assert strip_nul({"a": [1, "b"]}) == ({"a": [1, "b"]}, False)


def test_nan_and_lone_surrogates_are_rejected_not_stored():
    error = rejected({"source": "s", "id": 1, "timestamp": "2025-05-15", "v": float("nan")})
    assert "NaN" in error.message
    error = rejected({"source": "s", "id": 1, "timestamp": "2025-05-15", "v": "\ud800"})
    assert "invalid Unicode" in error.message


def test_payload_json_is_compact_and_keeps_unicode():
    v = check({"source": "s", "id": 1, "timestamp": "2025-05-15", "t": "ünï 😀"})
    assert json.loads(v.event.payload_json)["t"] == "ünï 😀"
    assert "ünï" in v.event.payload_json


def test_non_utc_offsets_do_not_change_the_day_logic():
    tz = timezone(timedelta(hours=14))
    moment = datetime(2025, 5, 16, 0, 30, tzinfo=tz)  # 2025-05-15 10:30 UTC
    v = check({"source": "s", "id": 1, "timestamp": moment.isoformat()})
    assert v.event.occurred_at.date().isoformat() == "2025-05-15"


RAW_RECORD = '{"source": "s", "id": 1, "timestamp": "2025-05-15T10:00:00Z", "t": "x"}'


def test_flat_record_text_is_stored_verbatim_when_safe():
    v = check(json.loads(RAW_RECORD), raw=RAW_RECORD)
    assert v.event.payload_json == RAW_RECORD


@pytest.mark.parametrize(
    ("escape", "stored"),
    [
        ("a\\u0000b", "ab"),  # NUL: stripped on the slow path, counted
        ("\\ud83d\\ude00", "\U0001f600"),  # a valid pair: stored as the character
        ("caf\\u00e9", "café"),  # harmless escapes stay verbatim
    ],
)
def test_escapes_postgresql_refuses_take_the_slow_path(escape, stored):
    raw = RAW_RECORD.replace('"x"', f'"{escape}"')
    v = check(json.loads(raw), raw=raw)
    assert v.event.payload["t"] == stored
    assert "\\u0000" not in v.event.payload_json
    assert v.cleaning.nul_removed == ("0000" in escape)


def test_lone_surrogate_escape_is_rejected_even_with_raw_text():
    raw = RAW_RECORD.replace('"x"', '"\\ud800"')
    with pytest.raises(RecordError, match="invalid Unicode"):
        check(json.loads(raw), raw=raw)


def test_raw_text_is_held_to_the_size_limit():
    raw = RAW_RECORD.replace('"x"', '"' + "y" * 500 + '"')
    with pytest.raises(RecordError, match="payload too large"):
        check(json.loads(raw), EventRules(max_payload_bytes=200), raw=raw)


def test_canonical_records_never_store_the_outer_text():
    record = {"source": "s", "source_id": "a", "occurred_at": "2025-05-15", "payload": {"x": 1}}
    v = check(record, raw=json.dumps(record))
    assert v.event.payload == {"x": 1}


@pytest.mark.parametrize(
    "text",
    [
        "2025-05-15T10:00:00+00:00",
        "2025-05-15T10:00:00.123456+00:00",
        "2025-05-15T10:00:00Z",
        "2025-05-15T12:00:00+02:00",
        "2025-05-15 10:00:00+00:00",
        "2025-05-15T10:00:00.000000+00:00",
    ],
)
def test_the_iso_text_always_names_the_same_instant_in_utc(text):
    v = check({"source": "s", "id": 1, "timestamp": text})
    assert datetime.fromisoformat(v.event.iso()) == v.event.occurred_at
    assert v.event.iso().endswith("+00:00")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2012/01/01", "2012-01-01T00:00:00+00:00"),
        ("2012/01/01 13:45", "2012-01-01T13:45:00+00:00"),
        ("Jan 5 2012", "2012-01-05T00:00:00+00:00"),
        ("January 5, 2012", "2012-01-05T00:00:00+00:00"),
        ("Tue, 01 Dec 2026 10:00:00 +0100", "2026-12-01T09:00:00+00:00"),
        ("1700000000", "2023-11-14T22:13:20+00:00"),
        ("1700000000000", "2023-11-14T22:13:20+00:00"),
        ("2025-05-15T10:00:00Z", "2025-05-15T10:00:00+00:00"),
    ],
)
def test_time_format_auto_reads_what_real_datasets_write(text, expected):
    assert parse_timestamp(text, "t", None, time_format="auto").isoformat() == expected


def test_a_time_format_pattern_and_iso_both_read_and_the_rest_says_what_was_expected():
    pattern = "%d.%m.%Y %H:%M"
    assert parse_timestamp("15.05.2025 10:30", "t", None, time_format=pattern).hour == 10
    assert parse_timestamp("2025-05-15T10:00:00Z", "t", None, time_format=pattern).day == 15
    with pytest.raises(RecordError, match=r"or '%d.%m.%Y %H:%M'"):
        parse_timestamp("2012/01/01", "t", None, time_format=pattern)
    with pytest.raises(RecordError, match="expected ISO 8601"):
        parse_timestamp("2012/01/01", "t", None)  # without one: as before


@pytest.mark.parametrize(
    "text", ["2026", "202501011230", "\u00b2\u00b3", "\u0661\u0667" + "\u0660" * 8]
)
def test_time_format_auto_never_takes_a_short_or_foreign_number_for_an_epoch(text):
    with pytest.raises(RecordError):
        parse_timestamp(text, "t", None, time_format="auto")

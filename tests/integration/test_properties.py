"""Property-based (hypothesis): over arbitrary Unicode sources, ids and payloads, whatever the
validator accepts is stored in both stores and reads back equal; whatever it refuses gets a
reason; the CSV directory of any source is one safe, reversible file name."""

from __future__ import annotations

import csv
import json
import tempfile
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from urllib.parse import unquote

import psycopg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scrapesink.adapters.csv_sink import CsvEventSink
from scrapesink.adapters.verify import canonical_json
from scrapesink.application.ports import Batch
from scrapesink.bootstrap import App
from scrapesink.domain.events import EventRules, RawEvent, validate_event
from scrapesink.domain.values import source_dir_name
from scrapesink.errors import RecordError

NOW = datetime(2026, 1, 10, 12, tzinfo=UTC)
RULES = EventRules()
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)
records = st.fixed_dictionaries(
    {
        "source": st.text(min_size=0, max_size=120),
        "source_id": st.text(min_size=0, max_size=300) | st.integers(),
        "occurred_at": st.just("2026-01-10T10:00:00Z"),
        "payload": st.dictionaries(st.text(max_size=10), json_values, max_size=5),
    }
)


def as_values(text: str) -> object:
    """JSON as values: numbers exactly (jsonb writes 1.5e17 as 150000000000000000), key order
    and spacing aside — what ``scrapesink verify`` compares."""
    return canonical_json(json.loads(text, parse_float=Decimal, parse_int=Decimal))


@given(st.text(max_size=300))
def test_a_source_always_becomes_one_safe_reversible_directory_name(source: str):
    name = source_dir_name(source)
    assert name not in ("", ".", "..") or source == ""
    assert all(c.isascii() and (c.isalnum() or c in "._-%") for c in name)
    assert unquote(name) == source


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(st.lists(records, min_size=1, max_size=8))
def test_what_is_accepted_reads_back_equal_from_both_stores(app: App, batch: list[dict]):
    accepted: dict[tuple[str, str], RawEvent] = {}
    for record in batch:
        try:
            event = validate_event(record, RULES, now=NOW).event
        except RecordError as error:
            assert error.message  # a reason, never another exception
            continue
        accepted.setdefault(event.key, event)  # the first copy of a key wins
    with psycopg.connect(app.database.conninfo, autocommit=True) as conn:
        conn.execute("TRUNCATE raw_events, raw_event_keys")
    events = list(accepted.values())
    if not events:
        return
    app.events.stage(Batch("", 0, len(events) - 1, events))()
    with tempfile.TemporaryDirectory() as tmp:
        sink = CsvEventSink(Path(tmp))
        sink.stage(Batch("j", 1, len(events), events))()
        from_csv = {}
        for path in sink.files():
            with path.open(encoding="utf-8", newline="") as handle:
                for row in csv.DictReader(handle):
                    from_csv[(row["source"], row["source_id"])] = as_values(row["payload"])
    with psycopg.connect(app.database.conninfo) as conn:
        rows = conn.execute("SELECT source, source_id, payload::text FROM raw_events")
        from_pg = {(s, i): as_values(p) for s, i, p in rows}
    expected = {key: as_values(event.payload_json) for key, event in accepted.items()}
    assert from_csv == expected
    assert from_pg == expected

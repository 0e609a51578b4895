"""Raw events in real PostgreSQL: dedup across days, partitions, queries, the processed flag."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from scrapesink.bootstrap import App
from scrapesink.entrypoints.python import Sink


def ev(source_id, at, source="s", **payload):
    return {"source": source, "source_id": source_id, "occurred_at": at, "payload": payload}


def rows(url, sql="SELECT source, source_id, occurred_at, payload FROM raw_events ORDER BY 1, 2"):
    with psycopg.connect(url) as conn:
        return conn.execute(sql).fetchall()


def partition_of(url, source_id):
    sql = "SELECT tableoid::regclass::text FROM raw_events WHERE source_id = %s"
    with psycopg.connect(url) as conn:
        return conn.execute(sql, (source_id,)).fetchone()[0]


def test_same_key_with_a_different_day_stays_one_row_first_write_wins(sink: Sink, database_url):
    first = sink.write_events([ev("a", "2025-05-15T10:00:00Z", v=1)])
    again = sink.write_events([ev("a", "2025-05-20T10:00:00Z", v=2), ev("b", "2025-05-20T10:00Z")])
    assert (first.inserted, first.duplicates) == (1, 0)
    assert (again.inserted, again.duplicates) == (1, 1)
    stored = rows(database_url)
    assert [(r[1], r[3]) for r in stored] == [("a", {"v": 1}), ("b", {})]
    assert stored[0][2] == datetime(2025, 5, 15, 10, tzinfo=UTC)
    with psycopg.connect(database_url) as conn:
        keys = conn.execute("SELECT count(*) FROM raw_event_keys").fetchone()[0]
    assert keys == 2


def test_duplicates_inside_one_batch_keep_the_first(sink: Sink, database_url):
    result = sink.write_events(
        [ev("a", "2025-05-15T10:00Z", v=1), ev("a", "2025-05-16T10:00Z", v=2)]
    )
    assert (result.inserted, result.duplicates) == (1, 1)
    assert rows(database_url)[0][3] == {"v": 1}


def test_late_and_backfilled_days_get_their_partitions(sink: Sink, app: App, database_url):
    result = sink.write_events(
        [ev("old", "2019-02-03T04:05:06Z"), ev("older", "2001-09-09T01:46:40Z")]
    )
    assert result.inserted == 2
    names = {p.name for p in app.partitions.existing()}
    assert {"raw_events_2019_02_03", "raw_events_2001_09_09"} <= names
    assert partition_of(database_url, "old") == "raw_events_2019_02_03"


def test_premake_makes_today_and_seven_days_ahead(app: App):
    app.events.prepare()
    today = datetime.now(UTC).date()
    names = {p.name for p in app.partitions.existing()}
    for offset in range(8):
        assert f"raw_events_{(today + timedelta(days=offset)):%Y_%m_%d}" in names


def test_no_default_partition_exists(app: App, sink: Sink, database_url):
    sink.write_events([ev("a", "2025-05-15T10:00Z")])
    with psycopg.connect(database_url) as conn:
        defaults = conn.execute(
            "SELECT count(*) FROM pg_partitioned_table pt JOIN pg_class c ON c.oid = pt.partrelid"
            " WHERE c.relname = 'raw_events' AND pt.partdefid <> 0"
        ).fetchone()[0]
    assert defaults == 0


def test_out_of_window_events_are_rejected_and_the_rest_stored(sink: Sink, database_url):
    future = (datetime.now(UTC) + timedelta(days=3)).isoformat()
    result = sink.write_events([ev("ok", "2025-05-15T00:00Z"), ev("future", future)])
    assert (result.inserted, result.rejected) == (1, 1)
    assert "in the future" in result.rejections[0].message
    assert result.rejections[0].location == "[1]"
    assert [r[1] for r in rows(database_url)] == ["ok"]


@pytest.mark.parametrize(
    "session_tz", ["UTC", "Pacific/Kiritimati", "Etc/GMT+12", "America/St_Johns"]
)
def test_day_bounds_are_utc_whatever_the_session_time_zone(
    server_url, database_url, session_tz, data_dir
):
    from scrapesink.bootstrap import bootstrap
    from scrapesink.config import Settings

    with psycopg.connect(database_url, autocommit=True) as conn:
        dbname = conn.info.dbname
        conn.execute(f"ALTER DATABASE \"{dbname}\" SET timezone = '{session_tz}'")
    app = bootstrap(Settings(database_url=database_url, data_dir=data_dir), schema="check")
    try:
        with app.database.connection() as conn:
            assert conn.execute("SHOW timezone").fetchone()[0] == session_tz
        cases = {
            "a": ("2025-05-15T23:59:59.999999Z", "raw_events_2025_05_15"),
            "b": ("2025-05-16T00:00:00Z", "raw_events_2025_05_16"),
            "c": ("2025-05-16T13:59:59.999999+14:00", "raw_events_2025_05_15"),
            "d": ("2025-05-16T14:00:00+14:00", "raw_events_2025_05_16"),
            "e": ("2025-05-15T11:59:59.999999-12:00", "raw_events_2025_05_15"),
            "f": ("2025-05-15T12:00:00-12:00", "raw_events_2025_05_16"),
        }
        result = Sink(app).write_events([ev(k, at) for k, (at, _) in cases.items()])
        assert result.inserted == 6
        for key, (_, partition) in cases.items():
            assert partition_of(database_url, key) == partition, key
        with psycopg.connect(database_url) as conn:
            bound = conn.execute(
                "SELECT pg_get_expr(c.relpartbound, c.oid) FROM pg_class c"
                " WHERE c.relname = 'raw_events_2025_05_16'"
            ).fetchone()[0]
            conn.execute("SET timezone = 'UTC'")
            bound_utc = conn.execute(
                "SELECT pg_get_expr(c.relpartbound, c.oid) FROM pg_class c"
                " WHERE c.relname = 'raw_events_2025_05_16'"
            ).fetchone()[0]
        assert "2025-05-16 00:00:00+00" in bound_utc, bound_utc
        assert bound  # rendered in the session zone, but the same instants
    finally:
        app.close()


def test_get_list_with_keyset_pagination_and_filters(sink: Sink):
    base = datetime(2025, 5, 10, tzinfo=UTC)
    records = [
        ev(
            f"k{i:03d}",
            (base + timedelta(hours=7 * i)).isoformat(),
            source="a" if i % 3 else "b",
            n=i,
            lang="en" if i % 2 else "de",
        )
        for i in range(60)
    ]
    sink.write_events(records)
    got = sink.get_event("a", "k001")
    assert got is not None and got.payload == {"n": 1, "lang": "en"} and not got.processed
    assert sink.get_event("a", "nope") is None

    seen, cursor = [], None
    while True:
        page = sink.list_events(source="a", limit=7, after=cursor)
        seen += [e.source_id for e in page.events]
        cursor = page.next_cursor
        if cursor is None:
            break
    expected = [r["source_id"] for r in records if r["source"] == "a"]
    assert seen == expected  # every event exactly once, in time order

    window = sink.list_events(since=base + timedelta(days=2), until=base + timedelta(days=3))
    assert all(
        base + timedelta(days=2) <= e.occurred_at < base + timedelta(days=3) for e in window.events
    )
    assert len(window.events) == len([i for i in range(60) if 48 <= 7 * i < 72])
    english = sink.list_events(contains={"lang": "en"}, limit=1000)
    assert len(english.events) == 30


def test_processed_flag_can_be_set_queried_and_cleared(sink: Sink):
    sink.write_events([ev(str(i), "2025-05-15T10:00Z") for i in range(5)])
    assert sink.mark_processed([("s", "1"), ("s", "3"), ("s", "missing")]) == 2
    assert sink.mark_processed([("s", "1")]) == 0  # already processed: nothing changes
    done = sink.list_events(processed=True)
    assert [e.source_id for e in done.events] == ["1", "3"]
    assert len(sink.list_events(processed=False).events) == 3
    stats = sink.event_stats()
    assert [(s.source, s.day.isoformat(), s.events, s.processed) for s in stats] == [
        ("s", "2025-05-15", 5, 2)
    ]
    assert sink.mark_processed([("s", "1")], processed=False) == 1


def test_stats_per_source_and_utc_day(sink: Sink):
    sink.write_events(
        [
            ev("1", "2025-05-15T23:30:00-02:00", source="x"),  # = 16th UTC
            ev("2", "2025-05-15T10:00Z", source="x"),
            ev("3", "2025-05-15T10:00Z"),
        ]
    )
    assert [(s.source, s.day.isoformat(), s.events) for s in sink.event_stats()] == [
        ("s", "2025-05-15", 1),
        ("x", "2025-05-15", 1),
        ("x", "2025-05-16", 1),
    ]
    assert len(sink.event_stats(source="x")) == 2


def test_nul_characters_are_stripped_before_postgresql_sees_them(sink: Sink, database_url):
    result = sink.write_events(
        [
            ev("n\x00ul", "2025-05-15T10:00Z", text="a\x00b", k=1),
            ev("key", "2025-05-15T10:00Z", **{"k\x00": 1, "k": 2}),  # a NUL key: refused
        ]
    )
    assert (result.inserted, result.nul_cleaned, result.rejected) == (1, 1, 1)
    assert result.rejections[0].path == "payload.k\\u0000"
    assert "NUL in a key" in result.rejections[0].message
    assert rows(database_url)[0][1:] == (
        "nul",
        datetime(2025, 5, 15, 10, tzinfo=UTC),
        {"k": 1, "text": "ab"},
    )


def test_large_payload_is_rejected_the_rest_stored(app: App, database_url):
    app.settings = app.settings.model_copy(update={"max_payload_bytes": 1000})
    sink = Sink(app)
    result = sink.write_events(
        [
            ev("big", "2025-05-15T10:00Z", blob="x" * 2000),
            ev("small", "2025-05-15T10:00Z", blob="x"),
        ]
    )
    assert (result.inserted, result.rejected) == (1, 1)
    assert "payload too large" in result.rejections[0].message
    assert [r[1] for r in rows(database_url)] == ["small"]


def test_huge_payload_within_limit_round_trips(sink: Sink):
    blob = "é" * 400_000  # ~800 kB of UTF-8, under the 1 MiB default
    assert sink.write_events([ev("big", "2025-05-15T10:00Z", blob=blob)]).inserted == 1
    assert sink.get_event("s", "big").payload["blob"] == blob


def test_hostile_text_round_trips_through_copy(sink: Sink, app: App):
    nasty = 'tab\there, newline\nthere, cr\r, backslash \\ and \\N, quote " and comma ,'
    record = {
        "source": "s\\x",
        "source_id": nasty,
        "occurred_at": "2025-05-15T10:00Z",
        "payload": {nasty: nasty, "ü": "日本語 😀"},
    }
    raw_line = '{"source": "raw", "id": "t\\\\u0009", "timestamp": "2025-05-15",\t"v": "a\\\\b"}'
    import json as _json

    service = app.ingest_service()
    summary = service.ingest([("[0]", record), ("line 1", _json.loads(raw_line), raw_line)])
    assert summary.inserted == 2, summary.rejections
    got = sink.get_event("s\\x", nasty)
    assert got is not None and got.payload == {nasty: nasty, "ü": "日本語 😀"}
    raw = sink.get_event("raw", "t\\u0009")
    assert raw is not None and raw.payload["v"] == "a\\b"


def test_the_first_delivery_premakes_today_and_the_days_ahead(app: App):
    # A writer that started while PostgreSQL was down never ran start-up's premake: its first
    # delivery does, so `health` does not fail on a missing partition for today.
    from scrapesink.domain.events import RawEvent
    from scrapesink.domain.partitions import days_ahead

    at = datetime(2025, 5, 15, 10, tzinfo=UTC)
    app.events.write([RawEvent("s", "1", at, "{}", at.isoformat())])
    present = {p.day for p in app.partitions.existing()}
    wanted = days_ahead(datetime.now(UTC).date(), app.settings.partition_premake_days)
    assert {p.day for p in wanted} <= present

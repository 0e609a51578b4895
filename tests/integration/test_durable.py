"""The durable dual write against real PostgreSQL and real files."""

from __future__ import annotations

import csv
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest

from scrapesink.adapters.export import export_excel
from scrapesink.adapters.journal import Journal
from scrapesink.bootstrap import App, bootstrap
from scrapesink.config import Settings
from scrapesink.entrypoints.python import Sink


def ev(source_id, at="2025-05-15T10:00:00Z", source="s", **payload):
    return {"source": source, "source_id": str(source_id), "occurred_at": at, "payload": payload}


def csv_rows(data_dir: Path) -> list[dict[str, str]]:
    rows = []
    for path in sorted((data_dir / "raw_events").rglob("*.csv")):
        with open(path, encoding="utf-8", newline="") as fh:
            rows += list(csv.DictReader(fh))
    return rows


def pg_count(url: str) -> int:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT count(*) FROM raw_events").fetchone()[0]


def test_every_event_lands_in_postgresql_and_csv_once(sink: Sink, data_dir, database_url):
    records = [
        ev(i, f"2025-05-{10 + i % 3}T10:00:00Z", source="a/b" if i % 2 else "s") for i in range(30)
    ]
    first = sink.write_events(records)
    assert first.sinks["postgres"].stored == first.sinks["csv"].stored == 30
    again = sink.write_events([*records, ev(99)])
    assert again.sinks["csv"].stored == again.sinks["postgres"].stored == 1
    assert again.sinks["csv"].duplicates == 30
    rows = csv_rows(data_dir)
    assert len(rows) == pg_count(database_url) == 31
    assert (data_dir / "raw_events" / "a%2Fb" / "2025-05-11.csv").exists()  # a safe dir name
    assert sorted(p.name for p in (data_dir / "raw_events" / "s").iterdir()) == [
        "2025-05-10.csv",
        "2025-05-11.csv",
        "2025-05-12.csv",
        "2025-05-15.csv",
    ]


def test_csv_values_equal_postgresql_values(sink: Sink, data_dir):
    nasty = 'multi\nline, "quoted", tab\there, ünïcode 😀 and a NUL\x00 gone'
    sink.write_events([ev("n", text=nasty, number=1.5, nested={"a": [1, None]})])
    (row,) = csv_rows(data_dir)
    stored = sink.get_event("s", "n")
    import json

    assert json.loads(row["payload"]) == stored.payload
    assert row["occurred_at"] == "2025-05-15T10:00:00+00:00"
    assert "\x00" not in row["payload"]


def test_journal_is_removed_once_everything_is_delivered(settings: Settings, data_dir):
    app = bootstrap(settings, schema="check")
    sink = Sink(app)
    sink.write_events([ev(i) for i in range(10)])
    assert len(Journal.files(data_dir / "journal")) == 1  # ours, compacted but open
    reports = sink.close()
    assert reports["postgres"].stored == reports["csv"].stored == 10
    assert Journal.files(data_dir / "journal") == []


def test_torn_csv_line_is_repaired_on_start_up(settings: Settings, data_dir):
    with Sink(bootstrap(settings, schema="check")) as sink:
        sink.write_events([ev(i) for i in range(3)])
    path = data_dir / "raw_events" / "s" / "2025-05-15.csv"
    good = path.read_bytes()
    with open(path, "ab") as fh:  # a crash mid-append: half a row, no newline
        fh.write(b's,99,2025-05-15T10:00:00+00:00,"{""tor')
    with Sink(bootstrap(settings, schema="check")) as sink:
        assert path.read_bytes() == good  # cut back at start-up
        sink.write_events([ev(3)])
    text = path.read_text(encoding="utf-8")
    assert text.count("source,source_id") == 1
    assert [r["source_id"] for r in csv_rows(data_dir)] == ["0", "1", "2", "3"]


def test_csv_directory_not_writable_leaves_csv_pending_and_postgresql_complete(
    settings: Settings, data_dir, database_url
):
    (data_dir / "raw_events").write_text("not a directory")  # even root cannot write below it
    app = bootstrap(settings.model_copy(update={"retry_seconds": 0.2}), schema="check")
    with Sink(app) as sink:
        summary = sink.write_events([ev(i) for i in range(50)])
    assert summary.sinks["postgres"].stored == 50
    assert summary.sinks["csv"].pending == 50
    assert "not writable" in summary.sinks["csv"].error
    assert pg_count(database_url) == 50
    assert len(Journal.files(data_dir / "journal")) == 1  # kept for the csv sink

    (data_dir / "raw_events").unlink()
    app = bootstrap(settings, schema="check")
    result = app.replay()
    app.close()
    assert result.reports["csv"].stored == 50
    assert result.reports["postgres"].stored == 0  # postgres had it all already
    assert len(csv_rows(data_dir)) == 50
    assert Journal.files(data_dir / "journal") == []


def test_refused_record_goes_to_dead_letters_and_retry_stores_it(app: App, database_url):
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("ALTER TABLE raw_events ADD CONSTRAINT no_poison CHECK (source <> 'poison')")
    sink = Sink(app)
    records = (
        [ev(i) for i in range(40)] + [ev("p", source="poison")] + [ev(i) for i in range(40, 80)]
    )
    summary = sink.write_events(records)
    assert summary.sinks["postgres"].stored == 80
    assert summary.sinks["postgres"].dead_letters == 1
    assert summary.sinks["csv"].stored == 81  # the CSV mirror had no reason to refuse it
    (letter,) = app.dead_letters.list()
    assert (letter.sink, letter.record.source, letter.error_type) == (
        "postgres",
        "poison",
        "ConstraintError",
    )
    assert "no_poison" in letter.message

    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("ALTER TABLE raw_events DROP CONSTRAINT no_poison")
    retried = sink.retry_dead_letters()
    assert retried.stored == [letter.id] and not retried.refused
    assert sink.get_event("poison", "p") is not None
    assert app.dead_letters.list() == []


def test_background_delivery_acknowledges_on_journal_and_flushes_on_close(
    settings, data_dir, database_url
):
    import scrapesink

    with pytest.raises(scrapesink.ConfigError, match="deliver must be"):
        scrapesink.open(deliver="later", database_url="postgresql://x@127.0.0.1:9/none")
    sink = scrapesink.open(
        deliver="background",
        database_url=settings.database_url.get_secret_value(),
        data_dir=data_dir,
    )
    assert sink.deliver == "background"
    for n in range(5):
        summary = sink.write_events([ev(f"{n}-{i}") for i in range(100)])
        assert summary.accepted == 100 and summary.rejected == 0
    assert sink.drain(30)  # the feeder hands the journaled writes on by itself
    assert sink.pending() == {"postgres": 0, "csv": 0}
    assert sink.reports()["postgres"].stored == 500
    flushed = sink.flush()
    assert flushed["postgres"].stored == flushed["csv"].stored == 500
    reports = sink.close()
    assert reports["postgres"].stored == reports["csv"].stored == 500
    assert pg_count(database_url) == len(csv_rows(data_dir)) == 500


def test_a_journal_only_sink_leaves_delivery_to_a_replaying_process(
    settings, data_dir, database_url
):
    import scrapesink

    url = settings.database_url.get_secret_value()
    sink = scrapesink.open(deliver="journal", database_url=url, data_dir=data_dir)
    sink.write_events([ev(f"a-{i}") for i in range(50)])
    sink.save("movies", [{"url": "https://m/1", "title": "Heat"}])
    assert pg_count(database_url) == 0 and csv_rows(data_dir) == []  # journaled only
    deliverer = scrapesink.open(database_url=url, data_dir=data_dir)  # another process
    assert deliverer.replay().journals == 0  # the writer's journals are in use
    sink.rotate()  # closed: the deliverer may take them
    sink.write_events([ev(f"b-{i}") for i in range(50)])  # a new journal, still in use
    first = deliverer.replay()
    assert first.reports["postgres"].stored == first.reports["csv"].stored == 51
    assert first.busy == 1
    assert sink.status().sinks["postgres"].pending == 50
    sink.close()  # the last journal is kept, never delivered by the writer itself
    second = deliverer.replay()
    assert second.reports["postgres"].stored == 50 and second.removed == 1
    assert pg_count(database_url) == len(csv_rows(data_dir)) == 100
    assert deliverer.get("movies", "https://m/1") is not None
    deliverer.close()


def test_excel_export_neutralises_formulas_and_adds_a_bom(sink: Sink, data_dir, tmp_path):
    sink.write_events([ev("=1+1", text="@SUM(A1)"), ev("-2", text="plain")])
    root = data_dir / "raw_events"
    written = export_excel([(f, f.relative_to(root)) for f in root.rglob("*.csv")], tmp_path / "xl")
    raw = written[0].read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")
    rows = list(csv.reader(raw.decode("utf-8-sig").splitlines()))
    ids = [r[1] for r in rows[1:]]
    assert ids == ["'=1+1", "'-2"]
    original = (data_dir / "raw_events" / "s" / "2025-05-15.csv").read_bytes()
    assert not original.startswith(b"\xef\xbb\xbf") and b"'=1+1" not in original


def test_replay_drains_a_journal_left_by_a_dead_process(settings, data_dir):
    # simulate a crash: a journal with entries nobody delivered
    journal = Journal.create(data_dir / "journal")
    from scrapesink.domain.events import EventRules, validate_event

    event = validate_event(ev("orphan"), EventRules()).event
    journal.append([event])
    journal.close()
    app = bootstrap(settings, schema="check")
    try:
        result = app.replay()
    finally:
        app.close()
    assert result.reports["postgres"].stored == result.reports["csv"].stored == 1
    assert (result.journals, result.removed) == (1, 1)
    assert Journal.files(data_dir / "journal") == []


def test_writing_to_a_closed_sink_is_a_clear_error(sink: Sink):
    import scrapesink

    sink.close()
    with pytest.raises(scrapesink.ScrapesinkError, match="this sink is closed"):
        sink.write_events([ev(1)])


def test_a_retried_dead_letter_keeps_its_stamp_and_does_not_undo_a_newer_save(
    app: App, database_url, data_dir
):
    # PostgreSQL refuses v1 (the CSV mirror takes it); v2 is saved once the cause is gone;
    # retrying v1 afterwards must not make it the newest version in PostgreSQL.
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("ALTER TABLE movies ADD CONSTRAINT no_draft CHECK (title <> 'draft')")
    sink = Sink(app)
    first = sink.save("movies", [{"url": "https://m/x", "title": "draft"}])
    assert first.sinks["postgres"].dead_letters == 1 and first.sinks["csv"].stored == 1
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("ALTER TABLE movies DROP CONSTRAINT no_draft")
    sink.save("movies", [{"url": "https://m/x", "title": "final"}])
    (letter,) = app.dead_letters.list()
    assert letter.accepted_us is not None
    retried = sink.retry_dead_letters()
    assert retried.stored == [letter.id]
    assert sink.get("movies", "https://m/x")["title"] == "final"
    with (data_dir / "movies.csv").open(encoding="utf-8", newline="") as handle:
        assert [row["title"] for row in csv.DictReader(handle)] == ["draft", "final"]


def test_a_journaled_record_whose_csv_path_cannot_exist_goes_to_dead_letters_alone(
    app: App, database_url, data_dir
):
    # Validation now refuses such a source; a journal written by an earlier version may hold
    # one. Its CSV file cannot exist: that record alone is dead-lettered, the others stored,
    # and the next start is clean.
    from scrapesink.adapters.journal import Journal
    from scrapesink.domain.events import RawEvent

    at = datetime(2025, 5, 15, 10, tzinfo=UTC)
    journal = Journal.create(data_dir / "journal")
    records = [RawEvent("s", str(i), at, "{}", at.isoformat()) for i in range(10)]
    records.insert(5, RawEvent("😀" * 90, "x", at, "{}", at.isoformat()))
    journal.append(records)
    journal.close(remove_if_empty=False)
    result = app.replay()
    assert result.reports["csv"].stored == 10 and result.reports["csv"].dead_letters == 1
    assert result.reports["postgres"].stored == 11  # PostgreSQL can hold it
    (letter,) = app.dead_letters.list()
    assert letter.sink == "csv" and "cannot exist" in letter.message
    assert len(csv_rows(data_dir)) == 10
    again = bootstrap(Settings(database_url=database_url, data_dir=data_dir), schema="check")
    try:
        again.start_writing()  # no OSError, no traceback
        assert Sink(again).write_events([ev("after")]).sinks["csv"].stored == 1
    finally:
        again.close()


def test_a_bad_state_entry_never_stops_a_start_and_health_names_it(settings, data_dir):
    # What an earlier version left: the state names a file whose name the filesystem refuses.
    import sqlite3

    app = bootstrap(settings, schema="check")
    try:
        Sink(app).write_events([ev("before")])
    finally:
        app.close()
    bad = "%F0%9F%98%80" * 90 + "/2025-05-15.csv"
    with sqlite3.connect(data_dir / "csv_state.sqlite") as db:
        db.execute("INSERT INTO files VALUES (?, 120)", (bad,))
    again = bootstrap(settings, schema="check")
    try:
        again.start_writing()  # logs and skips it: no OSError, no traceback
        assert Sink(again).write_events([ev("after")]).sinks["csv"].stored == 1
        checks = {check.name: check for check in again.operations.health().checks}
        assert not checks["csv files"].ok and "File name too long" in checks["csv files"].detail
        status = again.status()
        assert status.csv_problems and "File name too long" in status.csv_problems[0]
    finally:
        again.close()


def test_a_value_the_journal_cannot_store_rejects_its_record_alone(sink: Sink, database_url):
    # an arbitrary object in a JSON field passes validation (any JSON value goes there) but
    # not the journal: it used to fail the whole batch, every good record of it unjournaled
    summary = sink.save(
        "movies",
        [
            {"url": "https://m/ok", "title": "Fine"},
            {"url": "https://m/bad", "title": "Bad", "genres": [object()]},
            {"url": "https://m/ok2", "title": "Fine too"},
        ],
    )
    assert (summary.stored, summary.rejected) == (2, 1)
    (error,) = summary.rejections
    assert (error.location, error.path) == ("[1]", "genres")
    assert "cannot store" in error.message
    assert sink.get("movies", "https://m/ok2") is not None

"""Jobs, components and runs against real PostgreSQL: lifecycle, counts, transitions, config."""

from __future__ import annotations

import psycopg
import pytest

from scrapesink.application.job_specs import check_job
from scrapesink.domain.declarations import load_models
from scrapesink.domain.jobs import RunCounts
from scrapesink.entrypoints.python import Sink
from scrapesink.errors import Conflict, NotFound, RecordError


def events(*ids: str, bad: int = 0) -> list[dict[str, object]]:
    good = [
        {"source": "shop", "source_id": i, "occurred_at": "2026-11-20T10:00:00Z", "payload": {}}
        for i in ids
    ]
    return good + [{"source": "shop", "occurred_at": "later"} for _ in range(bad)]


def test_run_counts_ingests_with_duplicates_and_rejections(sink: Sink) -> None:
    sink.write_events(events("1"))
    with sink.run("daily-shop") as run:
        sink.write_events(events("1", "2", "3", "3", bad=2))
        sink.write_events(events("4"))
    assert run.run is not None
    recorded = sink._app.jobs.run(run.run.id)
    assert recorded.status == "partial" and recorded.origin == "python"
    assert recorded.counts == RunCounts(
        read=7, stored=3, duplicate=2, unchanged=0, rejected=2, pending=0
    )
    assert recorded.error_summary == "2 rejected"
    assert recorded.finished_at is not None and recorded.duration_seconds is not None
    job = sink._app.jobs.get("daily-shop")
    assert (job.kind, job.source, job.enabled) == ("ingest", "shop", True)


def test_clean_run_succeeds_and_a_raising_block_fails(sink: Sink) -> None:
    with sink.run("clean") as ok:
        sink.write_events(events("a"))
    assert ok.run is not None and ok.run.status == "succeeded"
    with pytest.raises(RuntimeError), sink.run("clean") as broken:
        sink.write_events(events("b"))
        raise RuntimeError("scraper crashed")
    assert broken.run is not None and broken.run.status == "failed"
    assert broken.run.error_summary == "RuntimeError: scraper crashed"
    assert broken.run.counts.stored == 1  # what was written before the crash is kept
    runs = sink._app.jobs.runs("clean")
    assert [r.status for r in runs] == ["failed", "succeeded"]


def test_model_saves_count_unchanged_records(sink: Sink) -> None:
    sink._app.use_declaration(load_models())
    movie = {"url": "https://m/1", "title": "Heat"}
    sink.save("movies", [movie])
    with sink.run("movies-nightly") as run:
        sink.save("movies", [movie, {"url": "https://m/2", "title": "Ronin"}])
    assert run.run is not None and run.run.status == "succeeded"
    assert (run.run.counts.stored, run.run.counts.unchanged) == (1, 1)


def test_finished_runs_never_change_status(sink: Sink, database_url: str) -> None:
    with sink.run("once") as run:
        pass
    assert run.run is not None
    store = sink._app.jobs
    with pytest.raises(Conflict, match="succeeded: it cannot become failed"):
        store.finish(run.run.id, "failed", RunCounts())
    with psycopg.connect(database_url) as conn, pytest.raises(psycopg.errors.CheckViolation):
        conn.execute("UPDATE etl_runs SET status = 'running' WHERE id = %s", (run.run.id,))
    assert store.run(run.run.id).status == "succeeded"
    with pytest.raises(NotFound):
        store.finish(999_999, "failed", RunCounts())


def test_disabled_job_refuses_runs(sink: Sink) -> None:
    store = sink._app.jobs
    store.ensure("paused")
    store.set_enabled("paused", False)
    with pytest.raises(Conflict, match="disabled"), sink.run("paused"):
        sink.write_events(events("never"))
    assert sink.get_event("shop", "never") is None
    assert store.runs("paused") == []


def test_job_definitions_and_config_schemas(sink: Sink) -> None:
    store = sink._app.jobs
    spec = check_job(
        {
            "name": "crawl-shop",
            "kind": "scrape",
            "source": "shop",
            "config": {"start_urls": ["https://shop.example/"], "schedule": "0 3 * * *"},
            "components": [
                {"name": "fetch", "kind": "scraper", "config": {"depth": 2}},
                {"name": "store", "kind": "writer"},
            ],
        }
    )
    job = store.create(spec)
    assert job.config["concurrency"] == 4  # the kind's default, filled in
    assert [(c.name, c.kind, c.config) for c in store.get("crawl-shop").components] == [
        ("fetch", "scraper", {"depth": 2}),
        ("store", "writer", {}),
    ]
    with pytest.raises(Conflict, match="exists"):
        store.create(spec)
    with pytest.raises(RecordError) as bad:
        check_job(
            {
                "name": "x",
                "kind": "scrape",
                "config": {"start_urls": ["ftp://nope"], "schedul": "daily"},
            }
        )
    assert "config.start_urls" in bad.value.message and "config.schedul" in bad.value.message
    with pytest.raises(RecordError, match="kind"):
        check_job({"name": "x", "kind": "cron"})
    with pytest.raises(RecordError, match="unique"):
        check_job({"name": "x", "components": [{"name": "a", "kind": "reader"}] * 2})


def test_hostile_job_names_are_refused_before_anything_is_written(sink: Sink) -> None:
    for name in ("a b", "../etc", "x" * 200, "'; DROP TABLE etl_jobs; --"):
        with pytest.raises(RecordError, match="job name"), sink.run(name):
            sink.write_events(events("hostile"))
    assert sink.get_event("shop", "hostile") is None
    assert sink._app.jobs.list() == []

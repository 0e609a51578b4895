"""Tracked writes: concurrent callers sharing one writer each learn what became of their own
records (what the REST API answers), against real PostgreSQL and CSV."""

from __future__ import annotations

import threading
from typing import Any

from scrapesink.bootstrap import App
from scrapesink.domain.declarations import load_models


def events(prefix: str, n: int) -> list[tuple[str, dict[str, Any]]]:
    return [
        (
            f"[{i}]",
            {
                "source": "tracked",
                "source_id": f"{prefix}-{i}",
                "occurred_at": "2026-11-20T10:00:00Z",
                "payload": {"i": i},
            },
        )
        for i in range(n)
    ]


def test_concurrent_tracked_ingests_count_only_their_own_records(app: App) -> None:
    app.start_writing()
    service = app.ingest_service()
    service.ingest(events("shared", 100))  # already stored: duplicates for everyone below
    summaries: dict[int, Any] = {}

    def ingest(worker: int) -> None:
        records = events(f"w{worker}", 700) + events("shared", 100)
        summaries[worker] = service.ingest(records, track=True)

    threads = [threading.Thread(target=ingest, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for summary in summaries.values():
        assert summary.sinks["postgres"].stored == 700
        assert summary.sinks["postgres"].duplicates == 100
        assert summary.sinks["csv"].stored == 700
        assert summary.results is not None and len(summary.results) == 800
        assert {r.status for r in summary.results[:700]} == {"stored"}
        assert {r.status for r in summary.results[700:]} == {"duplicate"}


def test_tracked_model_save_answers_per_record(app: App) -> None:
    app.use_declaration(load_models())
    app.start_writing()
    service = app.models()
    movie = {"url": "https://m/alien", "title": "Alien", "actors": [{"name": "S. Weaver"}]}
    first = service.save("movies", [("[0]", movie)], track=True)
    assert first.results is not None and [r.status for r in first.results] == ["stored"]
    records = [
        ("[0]", movie),  # unchanged
        ("[1]", {**movie, "url": "https://m/heat", "title": "Heat"}),
        ("[2]", {"title": "no key"}),
        ("[3]", {**movie, "url": "https://m/heat", "title": "Heat (1995)"}),  # last one wins
    ]
    again = service.save("movies", records, track=True)
    assert again.results is not None
    assert [r.status for r in again.results] == ["unchanged", "duplicate", "rejected", "stored"]
    assert again.results[2].path == "url"
    assert again.sinks["postgres"].unchanged == 1 and again.sinks["csv"].unchanged == 1

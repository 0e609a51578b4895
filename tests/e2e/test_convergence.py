"""Both stores agree after any outage: the acceptance stamp decides, never the arrival order."""

from __future__ import annotations

import csv
import json
import subprocess
from pathlib import Path

import psycopg

import scrapesink
from tests.conftest import env_for
from tests.support import SCRAPESINK, ApiServer, StoppablePostgres, fresh_db

MOVIE = "https://x/1"


def event(value: str) -> dict[str, object]:
    return {
        "source": "ord",
        "source_id": "k1",
        "occurred_at": "2026-01-10T10:00:00Z",
        "payload": {"v": value},
    }


def csv_event(data_dir: Path) -> list[str]:
    with (data_dir / "raw_events" / "ord" / "2026-01-10.csv").open(newline="") as handle:
        return [json.loads(row["payload"])["v"] for row in csv.DictReader(handle)]


def csv_movie(data_dir: Path) -> str:
    with (data_dir / "movies.csv").open(newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if row["url"] == MOVIE]
    return rows[-1]["title"]  # the latest version


def pg_state(url: str) -> tuple[str, list[str]]:
    with psycopg.connect(url) as conn:
        title = conn.execute("SELECT title FROM movies WHERE url = %s", (MOVIE,)).fetchone()
        payloads = conn.execute("SELECT payload->>'v' FROM raw_events ORDER BY 1").fetchall()
    return title[0], [p[0] for p in payloads]


def verify(url: str, data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*SCRAPESINK, "verify", *args],
        env=env_for(url, data_dir),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_records_caught_up_after_an_outage_never_overwrite_newer_ones(
    stoppable: StoppablePostgres, tmp_path: Path
):
    url = fresh_db(stoppable.url, "converge_one_process")
    data_dir = tmp_path / "data"
    options = {"retry_seconds": 0.5, "cooldown_seconds": 0.2, "connect_timeout": 2}
    with scrapesink.open(database_url=url, data_dir=data_dir, **options) as sink:
        sink.write_events([{**event("warm-up"), "source": "warm"}])  # the process is up and writing
        stoppable.stop()
        try:
            saved = sink.save("movies", [{"url": MOVIE, "title": "older"}])
            written = sink.write_events([event("first")])
        finally:
            stoppable.start()
        assert saved.sinks["postgres"].pending == 1 and saved.sinks["csv"].stored == 1
        assert written.sinks["postgres"].pending == 1 and written.sinks["csv"].stored == 1
        newer = sink.save("movies", [{"url": MOVIE, "title": "newer"}])
        second = sink.write_events([event("second")])
        for summary in (newer, second):
            assert all(report.pending >= 0 for report in summary.sinks.values())
    assert pg_state(url) == ("newer", ["first", "warm-up"])
    assert csv_movie(data_dir) == "newer"
    assert csv_event(data_dir) == ["first"]
    result = verify(url, data_dir)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "agree" in result.stdout


def test_the_same_over_http_and_saves_are_acknowledged_while_postgresql_is_down(
    stoppable: StoppablePostgres, tmp_path: Path
):
    url = fresh_db(stoppable.url, "converge_http")
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    server = ApiServer(
        url,
        data_dir,
        "--no-auth",
        SCRAPESINK_RETRY_SECONDS="0.5",
        SCRAPESINK_COOLDOWN_SECONDS="0.2",
        SCRAPESINK_CONNECT_TIMEOUT="2",
    )
    try:
        with server.client() as client:
            warm = client.post("/api/v1/events", json=[{**event("warm-up"), "source": "warm"}])
            assert warm.status_code == 200
            stoppable.stop()
            try:
                saved = client.post(
                    "/api/v1/models/movies/records", json=[{"url": MOVIE, "title": "older"}]
                )
                written = client.post("/api/v1/events", json=[event("first")])
            finally:
                stoppable.start()
            assert saved.status_code == 202, saved.text  # journaled: PostgreSQL gets it later
            assert saved.json()["sinks"]["csv"]["stored"] == 1
            assert written.status_code == 202, written.text
            newer = client.post(
                "/api/v1/models/movies/records", json=[{"url": MOVIE, "title": "newer"}]
            )
            second = client.post("/api/v1/events", json=[event("second")])
            assert newer.status_code in (200, 202) and second.status_code in (200, 202)
            for answer in (saved, written, newer, second):
                assert all(
                    v >= 0
                    for v in answer.json()["sinks"]["postgres"].values()
                    if isinstance(v, int)
                )
    finally:
        server.stop()  # delivers what is still pending before it exits
    assert pg_state(url) == ("newer", ["first", "warm-up"])
    assert csv_movie(data_dir) == "newer"
    assert csv_event(data_dir) == ["first"]
    result = verify(url, data_dir)
    assert result.returncode == 0, result.stdout + result.stderr

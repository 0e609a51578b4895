"""Both stores agree after any outage: the acceptance stamp decides, never the arrival order."""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

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
            during = status(url, data_dir)  # from outside, with PostgreSQL down
        finally:
            stoppable.start()
        assert during["sinks"]["postgres"]["pending"] == 2, during
        assert during["sinks"]["csv"]["pending"] == 0, during
        assert saved.sinks["postgres"].pending == 1 and saved.sinks["csv"].stored == 1
        assert written.sinks["postgres"].pending == 1 and written.sinks["csv"].stored == 1
        newer = sink.save("movies", [{"url": MOVIE, "title": "newer"}])
        second = sink.write_events([event("second")])
        for summary in (newer, second):
            assert all(report.pending >= 0 for report in summary.sinks.values())
    # Closing delivered what it could; anything a store still lacked is replay's (none, mostly).
    replay = subprocess.run(
        [*SCRAPESINK, "replay"], env=env_for(url, data_dir), capture_output=True
    )
    assert replay.returncode == 0, replay.stderr
    assert pg_state(url) == ("newer", ["first", "warm-up"])
    assert csv_movie(data_dir) == "newer"
    assert csv_event(data_dir) == ["first"]
    result = verify(url, data_dir)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "agree" in result.stdout
    after = status(url, data_dir)
    assert {name: s["pending"] for name, s in after["sinks"].items()} == {"postgres": 0, "csv": 0}


def status(url: str, data_dir: Path) -> dict[str, Any]:
    done = subprocess.run(
        [*SCRAPESINK, "status", "--json"],
        env=env_for(url, data_dir, SCRAPESINK_CONNECT_TIMEOUT="2"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode in (0, 4), done.stderr
    report: dict[str, Any] = json.loads(done.stdout)
    return report


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
        log = server.stop()  # delivers what it can before it exits, the rest is for replay
    replay = subprocess.run(
        [*SCRAPESINK, "replay"], env=env_for(url, data_dir), capture_output=True
    )
    assert replay.returncode == 0, replay.stderr
    assert pg_state(url) == ("newer", ["first", "warm-up"]), log
    assert csv_movie(data_dir) == "newer"
    assert csv_event(data_dir) == ["first"]
    result = verify(url, data_dir)
    assert result.returncode == 0, result.stdout + result.stderr


def test_verify_finds_lines_added_removed_or_changed_by_hand_and_repair_fixes_them(
    database_url: str, tmp_path: Path
):
    data_dir = tmp_path / "data"
    with scrapesink.open(database_url=database_url, data_dir=data_dir) as sink:
        sink.write_events(
            [{**event(str(i)), "source_id": f"k{i}"} for i in range(5)]
            + [{**event("x"), "source": "other"}]
        )
        sink.save("movies", [{"url": f"https://x/{i}", "title": f"t{i}"} for i in range(3)])
    assert verify(database_url, data_dir).returncode == 0
    day = data_dir / "raw_events" / "ord" / "2026-01-10.csv"
    lines = day.read_bytes().split(b"\r\n")
    # a line removed, a value changed in place (same length), a line added
    day.write_bytes(
        b"\r\n".join([lines[0], lines[2], lines[3].replace(b'""2""', b'""8""'), *lines[4:]])
    )
    with day.open("ab") as handle:
        handle.write(b'ord,k99,2026-01-10T10:00:00+00:00,"{""v"": ""hand""}"\r\n')
    movies = data_dir / "movies.csv"
    movies.write_text(movies.read_text().replace(",t1,", ",T1,"))  # same length, other title

    found = verify(database_url, data_dir, "--json")
    assert found.returncode == 1
    report = json.loads(found.stdout)
    problems = {(d["what"], d["key"], d["problem"]) for d in report["first"]}
    assert ("events", "ord/k0", "missing in csv") in problems
    assert ("events", "ord/k2", "differs") in problems
    assert ("events", "ord/k99", "missing in postgres") in problems
    assert any(what == "movies" and problem == "differs" for what, _, problem in problems)
    assert report["differences"]["events"] == 3
    assert any("appended" in line or "removed" in line for line in report["files_changed"])

    repaired = verify(database_url, data_dir, "--repair", "csv")
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    assert "rebuilt the CSV files of movies" in repaired.stderr
    assert verify(database_url, data_dir).returncode == 0
    assert verify(database_url, data_dir, "--source", "other").returncode == 0
    # the repaired files are the mirror's own again: later writes append to them as before
    with scrapesink.open(database_url=database_url, data_dir=data_dir) as sink:
        again = sink.write_events([{**event("late"), "source_id": "k7"}, event("dup")])
        assert again.sinks["csv"].stored == 1 and again.sinks["csv"].duplicates == 1
        assert sink.save("movies", [{"url": "https://x/1", "title": "t1"}]).unchanged == 1
    assert verify(database_url, data_dir).returncode == 0


WRITER = r"""
import json, sys, time
import scrapesink

name, rounds, keys = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
options = {"retry_seconds": 0.5, "cooldown_seconds": 0.5, "connect_timeout": 2}
with scrapesink.open(**options) as sink:
    for r in range(rounds):
        before = time.time()
        sink.write_events([
            {"source": "race", "source_id": f"k{i}", "occurred_at": "2026-01-10T10:00:00Z",
             "payload": {"w": name, "r": r}}
            for i in range(keys)
        ])
        sink.save("movies", [{"url": f"https://race/{i}", "title": f"{name}-{r}"}
                             for i in range(keys)])
        print(json.dumps([r, before, time.time()]), flush=True)
        time.sleep(0.2)
"""


@pytest.mark.slow
def test_two_processes_racing_through_outages_and_a_kill_converge_by_stamp(
    stoppable: StoppablePostgres, tmp_path: Path
):
    url = fresh_db(stoppable.url, "converge_race")
    data_dir = tmp_path / "data"
    keys, rounds = 1000, 30
    env = env_for(url, data_dir)
    writers = {
        name: subprocess.Popen(
            [sys.executable, "-c", WRITER, name, str(rounds), str(keys)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in ("a", "b")
    }
    killed_at = None
    try:
        time.sleep(3)
        for _ in range(2):
            stoppable.stop()
            time.sleep(1.5)
            stoppable.start()
            time.sleep(1.5)
            if killed_at is None:
                writers["a"].send_signal(signal.SIGKILL)
                killed_at = time.time()
        out_b, err_b = writers["b"].communicate(timeout=300)
        assert writers["b"].returncode == 0, err_b
    finally:
        for process in writers.values():
            if process.poll() is None:
                process.kill()
        if _down(stoppable):
            stoppable.start()
    out_a, _ = writers["a"].communicate(timeout=30)
    calls = {
        "a": [json.loads(line) for line in out_a.splitlines()],
        "b": [json.loads(line) for line in out_b.splitlines()],
    }
    assert calls["b"] and len(calls["a"]) < rounds, calls  # a was killed mid-run
    # a's call in flight when it was killed may have been journaled: it ran until the kill
    last_a = calls["a"][-1][2] if calls["a"] else 0.0
    calls["a"].append([len(calls["a"]), last_a, killed_at])
    window = {
        (name, r): (before, after) for name, runs in calls.items() for r, before, after in runs
    }

    replay = subprocess.run([*SCRAPESINK, "replay"], env=env, capture_output=True, text=True)
    assert replay.returncode == 0, replay.stdout + replay.stderr
    result = verify(url, data_dir)
    assert result.returncode == 0, result.stdout + result.stderr

    with psycopg.connect(url) as conn:
        events = conn.execute(
            "SELECT source_id, payload->>'w', (payload->>'r')::int FROM raw_events"
        ).fetchall()
        movies = conn.execute("SELECT url, title FROM movies WHERE url LIKE 'https://race/%'")
        titles = dict(movies.fetchall())
    assert len(events) == len({e[0] for e in events}) == keys
    assert len(titles) == keys
    for _, writer, r in events:  # the oldest accepted copy: nothing began and ended before it
        assert window[(writer, r)][0] <= min(after for _, after in window.values()), (writer, r)
    newest_start = max(before for before, _ in window.values())
    for title in titles.values():  # the newest: it ended after every other one began
        writer, r = title.split("-")
        assert window[(writer, int(r))][1] >= newest_start, title


def _down(pg: StoppablePostgres) -> bool:
    try:
        psycopg.connect(pg.url, connect_timeout=2).close()
        return False
    except psycopg.OperationalError:
        return True

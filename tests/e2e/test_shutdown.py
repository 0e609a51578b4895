"""`scrapesink serve` stopped the way systemd, docker and kill stop it: SIGTERM."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import psutil
import psycopg

from tests.conftest import env_for
from tests.support import SCRAPESINK, ApiServer, StoppablePostgres, fresh_db, stop_if_running


def event(source: str, source_id: str) -> dict[str, object]:
    return {
        "source": source,
        "source_id": source_id,
        "occurred_at": "2026-01-10T10:00:00Z",
        "payload": {"n": source_id},
    }


def postgres_of(pgdata: Path) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["name", "cmdline"]):
        cmdline = process.info["cmdline"] or []
        if process.info["name"] == "postgres" and str(pgdata) in " ".join(cmdline):
            found.append(process)
    return found


def test_sigterm_on_the_embedded_database_stops_it_and_the_next_command_starts_cleanly(
    tmp_path: Path,
):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    pgdata = (data_dir / "pgdata").resolve()
    try:
        server = ApiServer("", data_dir, "--no-auth")
        with server.client() as client:
            assert client.post("/api/v1/events", json=[event("emb", "1")]).status_code == 200
        assert postgres_of(pgdata)
        server.stop()  # SIGTERM
        deadline = time.monotonic() + 20
        while postgres_of(pgdata) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not postgres_of(pgdata), "the embedded PostgreSQL outlived the server"
        holders = pgdata / ".handle_pids.json"
        assert not holders.exists() or json.loads(holders.read_text()) == []

        # A holder that died without letting go (kill -9) is forgotten by the next start.
        holders.write_text(json.dumps([2**22 + 12345]))  # no such process
        env = env_for("", data_dir)
        del env["SCRAPESINK_DATABASE_URL"]
        result = subprocess.run(
            [*SCRAPESINK, "events", "get", "emb", "1"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr
        assert '"n": "1"' in result.stdout or "'n': '1'" in result.stdout or "1" in result.stdout
        deadline = time.monotonic() + 20
        while postgres_of(pgdata) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not postgres_of(pgdata), "a dead holder kept the server running"
    finally:
        stop_if_running(pgdata)


def test_sigterm_with_postgresql_down_ends_quickly_and_loses_nothing(
    stoppable: StoppablePostgres, tmp_path: Path
):
    url = fresh_db(stoppable.url, "sigterm_down")
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    server = ApiServer(
        url,
        data_dir,
        "--no-auth",
        SCRAPESINK_CONNECT_TIMEOUT="2",
        SCRAPESINK_RETRY_SECONDS="3",
        SCRAPESINK_COOLDOWN_SECONDS="0.5",  # up again for the shutdown's catch-up: it fails
    )
    try:
        with server.client() as client:
            assert client.post("/api/v1/events", json=[event("up", "0")]).status_code == 200
            stoppable.stop()
            answer = client.post("/api/v1/events", json=[event("down", str(i)) for i in range(50)])
            assert answer.status_code == 202
            saved = client.post("/api/v1/models/movies/records", json=[{"url": "u", "title": "t"}])
            assert saved.status_code == 202
        time.sleep(1)  # past the cool-down: closing tries PostgreSQL once more
        started = time.monotonic()
        server.stop()
        assert time.monotonic() - started < 10, server.log.read_text()
    finally:
        stoppable.start()
    replay = subprocess.run(
        [*SCRAPESINK, "replay"], env=env_for(url, data_dir), capture_output=True, text=True
    )
    assert replay.returncode == 0, replay.stderr
    with psycopg.connect(url) as conn:
        count = conn.execute("SELECT count(*) FROM raw_events WHERE source = 'down'").fetchone()
        movie = conn.execute("SELECT title FROM movies WHERE url = 'u'").fetchone()
    assert count == (50,) and movie == ("t",)

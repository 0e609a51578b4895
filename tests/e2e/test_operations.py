"""maintain, health and stats as a user runs them, against real PostgreSQL."""

from __future__ import annotations

import json
import time
from pathlib import Path

import psycopg
import pytest

from tests.conftest import env_for
from tests.e2e.test_cli_ingest import run, write_jsonl
from tests.support import fresh_db


def checks(result) -> dict[str, bool]:  # type: ignore[no-untyped-def]
    return {c["name"]: c["ok"] for c in json.loads(result.stdout)["checks"]}


def test_maintain_premakes_prunes_vacuums_and_health_follows(cli_env, database_url):
    old = {"source": "shop", "id": 1, "timestamp": "2020-01-05T10:00:00Z"}
    recent = {"source": "shop", "id": 2, "timestamp": "2026-11-20T10:00:00Z"}
    path = write_jsonl(Path(cli_env["SCRAPESINK_DATA_DIR"]).parent / "e.jsonl", [old, recent])
    assert run(cli_env, "ingest", str(path)).returncode == 0
    with psycopg.connect(database_url, autocommit=True) as conn:  # lose a premade partition
        conn.execute("DROP TABLE raw_events_" + time.strftime("%Y_%m_%d", time.gmtime()))
    unhealthy = run(cli_env, "health", "--json")
    assert unhealthy.returncode == 1
    assert checks(unhealthy) == {
        "database": True,
        "migrations": True,
        "partitions": False,
        "pending postgres": True,
        "pending csv": True,
        "disk": True,
        "csv files": True,
    }
    env = {**cli_env, "SCRAPESINK_RETENTION": "3650d"}
    maintained = run(env, "maintain")
    assert maintained.returncode == 0, maintained.stderr
    assert "partitions created: 1" in maintained.stdout
    assert "raw_events_2020_01_05" in maintained.stdout.split("vacuumed:")[1]
    assert "partitions dropped: 0" in maintained.stdout
    again = run(env, "maintain")  # vacuumed already: not again
    assert "partitions vacuumed: 0" in again.stdout
    assert run(cli_env, "health").returncode == 0
    pruned = run({**cli_env, "SCRAPESINK_RETENTION": "365d"}, "maintain")
    assert "partitions dropped: 1 raw_events_2020_01_05" in pruned.stdout
    starved = run({**cli_env, "SCRAPESINK_HEALTH_MIN_FREE_BYTES": str(10**18)}, "health", "--json")
    assert starved.returncode == 1 and checks(starved)["disk"] is False


def test_stats_of_the_installation(cli_env, tmp_path):
    records = [{"source": "shop", "id": i, "timestamp": "2026-11-20T10:00:00Z"} for i in range(5)]
    run(cli_env, "ingest", str(write_jsonl(tmp_path / "e.jsonl", records)), "--job", "daily")
    run(cli_env, "ingest", str(write_jsonl(tmp_path / "b.jsonl", ["{bad"])), "--job", "daily")
    result = run(cli_env, "stats", "--json")
    assert result.returncode == 0, result.stderr
    stats = json.loads(result.stdout)
    assert {"raw_events", "raw_event_keys", "etl_runs"} <= {t["name"] for t in stats["tables"]}
    assert stats["events"] == [{"source": "shop", "day": "2026-11-20", "events": 5, "processed": 0}]
    assert stats["jobs"]["daily"] == {
        "runs": 2,
        "succeeded": 1,
        "partial": 1,
        "failed": 0,
        "success_rate": 0.5,
    }
    assert "pool_size" in stats["pool"]
    assert run(cli_env, "maintain").returncode == 0  # ANALYZE: the estimates are exact now
    rows = {
        t["name"]: t["rows"] for t in json.loads(run(cli_env, "stats", "--json").stdout)["tables"]
    }
    assert (rows["raw_events"], rows["raw_event_keys"], rows["etl_runs"]) == (5, 5, 2)
    text = run(cli_env, "stats")
    assert "success rate" in text.stdout and "raw_events" in text.stdout


@pytest.mark.slow
def test_health_fails_while_postgres_is_down_and_recovers(stoppable, tmp_path):
    url = fresh_db(stoppable.url, "ops_health")
    data_dir = tmp_path / "data"
    env = env_for(
        url,
        data_dir,
        SCRAPESINK_HEALTH_MAX_PENDING_AGE="0s",
        SCRAPESINK_RETRY_SECONDS="0.2",
        SCRAPESINK_CONNECT_TIMEOUT="2",
    )
    assert run(env, "maintain").returncode == 0
    assert run(env, "health").returncode == 0
    stoppable.stop()
    try:
        down = run(env, "health", "--json")
        assert down.returncode == 1
        assert checks(down)["database"] is False
        record = {"source": "shop", "id": 1, "timestamp": "2026-11-20T10:00:00Z"}
        ingested = run(env, "ingest", str(write_jsonl(tmp_path / "e.jsonl", [record])))
        assert ingested.returncode == 4  # pending, safe in the journal
    finally:
        stoppable.start()
    late = run(env, "health", "--json")  # back, but a record waits longer than allowed
    assert late.returncode == 1
    assert checks(late)["database"] is True and checks(late)["pending postgres"] is False
    assert run(env, "replay").returncode == 0
    assert run(env, "health").returncode == 0


def test_a_new_server_database_is_healthy_after_upgrade_and_replay(empty_database_url, tmp_path):
    env = env_for(empty_database_url, tmp_path / "data")
    assert run(env, "db", "upgrade").returncode == 0
    assert run(env, "replay").returncode == 0  # nothing to replay: it premakes all the same
    health = run(env, "health", "--json")
    checks = {c["name"]: c for c in json.loads(health.stdout)["checks"]}
    assert checks["partitions"]["ok"], checks["partitions"]["detail"]
    assert health.returncode == 0


def test_the_embedded_database_from_outside_shell_start_and_stop(tmp_path):
    from tests.support import stop_if_running

    data_dir = tmp_path / "data"
    env = env_for("", data_dir)  # no server configured: the embedded one
    try:
        shell = run(env, "db", "shell", "-At", "-c", "SELECT 41 + 1")
        assert shell.returncode == 0, shell.stderr
        assert shell.stdout.strip() == "42"
        failing = run(env, "db", "shell", "-c", "SELECT nope")
        assert failing.returncode != 0  # psql's own exit code
        # `db url` alone: the server stops with the command, and it says so
        url = run(env, "db", "url")
        assert "db start" in url.stderr
        started = run(env, "db", "start")
        assert started.returncode == 0, started.stderr
        uri = started.stdout.strip().splitlines()[-1]
        with psycopg.connect(uri) as conn:  # another client, after the command ended
            assert conn.execute("SELECT 1").fetchone() == (1,)
        stopped = run(env, "db", "stop")
        assert "stopped" in stopped.stdout, stopped.stdout + stopped.stderr
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(uri, connect_timeout=3).close()
        assert "not running" in run(env, "db", "stop").stdout
    finally:
        stop_if_running(data_dir / "pgdata")


def test_tables_fit_80_columns_and_never_cut_an_id(cli_env, tmp_path):
    narrow = {**cli_env, "COLUMNS": "80"}
    records = [{"source": "shop", "id": i, "timestamp": "2026-11-20T10:00:00Z"} for i in range(3)]
    path = str(write_jsonl(tmp_path / "e.jsonl", records))
    assert run(cli_env, "ingest", path, "--job", "nightly-import").returncode == 0
    made = run(cli_env, "backup")
    assert made.returncode == 0, made.stderr
    backup_id = made.stdout.split()[1]
    for command in (["jobs", "runs"], ["partitions", "list"], ["backup", "list"]):
        shown = run(narrow, *command)
        assert shown.returncode == 0, shown.stderr
        lines = shown.stdout.splitlines()
        assert all(len(line) <= 80 for line in lines), shown.stdout
        assert "…" not in shown.stdout, shown.stdout  # no header or id cut short
    assert backup_id in run(narrow, "backup", "list").stdout
    assert "nightly-import" in run(narrow, "jobs", "runs").stdout
    assert "raw_events_2026_11_20" in run(narrow, "partitions", "list").stdout

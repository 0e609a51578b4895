"""Hostile records through the CLI and over HTTP: each is refused alone, with its reason, no
traceback, and the records around it land in both stores; the data directory keeps working."""

from __future__ import annotations

import csv
import json
import subprocess
from pathlib import Path

import psycopg

from tests.conftest import env_for
from tests.support import SCRAPESINK, ApiServer

AT = "2026-01-10T10:00:00Z"


def deep(depth: int) -> str:
    return '{"a":' * depth + "1" + "}" * depth


def stored(url: str, data_dir: Path) -> tuple[list[str], list[str]]:
    with psycopg.connect(url) as conn:
        pg = sorted(r[0] for r in conn.execute("SELECT source_id FROM raw_events"))
    rows = []
    for path in sorted((data_dir / "raw_events").rglob("*.csv")):
        with path.open(encoding="utf-8", newline="") as handle:
            rows += [row["source_id"] for row in csv.DictReader(handle)]
    return pg, sorted(rows)


def test_cli_refuses_a_long_source_and_a_deep_payload_alone(database_url, tmp_path: Path):
    data_dir = tmp_path / "data"
    lines = [
        json.dumps({"source": "s", "id": "good-1", "timestamp": AT}),
        json.dumps({"source": "😀" * 90, "id": "long", "timestamp": AT}),  # 360 bytes
        '{"source": "s", "id": "deep", "timestamp": "' + AT + '", "doc": ' + deep(10_000) + "}",
        '{"source": "s", "id": "deep-ish", "timestamp": "' + AT + '", "doc": ' + deep(300) + "}",
        json.dumps({"source": "s", "id": "nul-key", "timestamp": AT, "a\x00b": 1, "ab": 2}),
        json.dumps({"source": "s", "id": "good-2", "timestamp": AT, "zero": -0.0}),
    ]
    path = tmp_path / "hostile.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    env = env_for(database_url, data_dir)
    result = subprocess.run(
        [*SCRAPESINK, "ingest", str(path)], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 3, result.stderr  # finished, some records rejected
    assert "Traceback" not in result.stderr
    assert "line 2" in result.stderr and "too long for a file name" in result.stderr
    assert "line 3" in result.stderr and "nested deeper than 256 levels" in result.stderr
    assert "line 4" in result.stderr
    assert "line 5" in result.stderr and "NUL in a key" in result.stderr
    assert stored(database_url, data_dir) == (["good-1", "good-2"], ["good-1", "good-2"])
    with psycopg.connect(database_url) as conn:  # -0.0: the same zero in both stores
        zero = conn.execute("SELECT payload->>'zero' FROM raw_events WHERE source_id = 'good-2'")
        assert zero.fetchone() == ("0.0",)
    (day,) = (data_dir / "raw_events" / "s").glob("*.csv")
    assert '""zero"":0.0' in day.read_text(encoding="utf-8")
    agree = subprocess.run(
        [*SCRAPESINK, "verify"], env=env, capture_output=True, text=True, timeout=120
    )
    assert agree.returncode == 0, agree.stdout + agree.stderr
    again = tmp_path / "again.jsonl"
    again.write_text(json.dumps({"source": "s", "id": "good-3", "timestamp": AT}) + "\n")
    after = subprocess.run(
        [*SCRAPESINK, "ingest", str(again)], env=env, capture_output=True, text=True, timeout=120
    )
    assert after.returncode == 0, after.stderr
    assert stored(database_url, data_dir)[1] == ["good-1", "good-2", "good-3"]


def test_http_refuses_a_deep_record_alone_in_every_write_route(database_url, tmp_path: Path):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    server = ApiServer(database_url, data_dir, "--no-auth")
    try:
        with server.client() as client:
            good = {"source": "s", "source_id": "h1", "occurred_at": AT, "payload": {}}
            body = "[" + json.dumps(good) + ',{"source": "s", "source_id": "h2", "occurred_at": '
            body += f'"{AT}", "payload": {deep(10_000)}}}]'
            answer = client.post(
                "/api/v1/events", content=body, headers={"Content-Type": "application/json"}
            )
            assert answer.status_code == 200, answer.text
            results = answer.json()["results"]
            assert results[0]["status"] == "stored"
            assert results[1]["status"] == "rejected" and results[1]["path"] == "payload"
            assert "nested deeper" in results[1]["reason"]

            lines = json.dumps({**good, "source_id": "h3"}) + "\n"
            lines += '{"source": "s", "source_id": "h4", "occurred_at": "' + AT + '", "payload": '
            lines += deep(10_000) + "}\n"
            stream = client.post(
                "/api/v1/events/stream",
                content=lines,
                headers={"Content-Type": "application/x-ndjson"},
            )
            assert stream.status_code == 200, stream.text
            assert stream.json()["rejected"] == 1 and stream.json()["stored"] == 1

            record = '[{"workflow_id": "ok"}, {"workflow_id": "deep", "structure": '
            record += '{"workflow_json": ' + deep(10_000) + "}}]"
            saved = client.post(
                "/api/v1/models/workflows/records",
                content=record,
                headers={"Content-Type": "application/json"},
            )
            assert saved.status_code == 200, saved.text
            outcome = saved.json()["results"]
            assert outcome[0]["status"] == "stored"
            assert outcome[1]["status"] == "rejected" and outcome[1]["path"] == "structure"

            patch = '{"structure": {"workflow_json": ' + deep(10_000) + "}}"
            patched = client.patch(
                "/api/v1/models/workflows/records/ok",
                content=patch,
                headers={"Content-Type": "application/json"},
            )
            assert patched.status_code == 422, patched.text  # one record: the request fails
            assert patched.json()["errors"][0]["path"].endswith("structure")
    finally:
        log = server.stop()
    assert "Traceback" not in log
    assert stored(database_url, data_dir) == (["h1", "h3"], ["h1", "h3"])


def test_files_holding_keys_or_response_bodies_are_readable_by_their_owner_alone(
    database_url, tmp_path: Path
):
    import stat

    data_dir = tmp_path / "data"
    data_dir.mkdir()
    old = data_dir / "idempotency.sqlite"
    old.touch(mode=0o644)  # as an earlier version left it
    old.chmod(0o644)
    server = ApiServer(database_url, data_dir)  # with keys: the key cache is written
    try:
        headers = {"Idempotency-Key": "k-1"}
        with server.client(server.token, headers) as client:
            good = {"source": "s", "source_id": "p1", "occurred_at": AT, "payload": {}}
            assert client.post("/api/v1/events", json=[good]).status_code == 200
    finally:
        server.stop()
    for name in ("idempotency.sqlite", "api_keys.cache.json"):
        mode = stat.S_IMODE((data_dir / name).stat().st_mode)
        assert mode == 0o600, f"{name}: {oct(mode)}"
    for extra in data_dir.glob("idempotency.sqlite-*"):
        assert stat.S_IMODE(extra.stat().st_mode) & 0o077 == 0, extra


def test_models_check_refuses_system_tables_and_collisions_in_one_line_each(
    database_url, tmp_path: Path
):
    def declaration(**tables: str) -> Path:
        path = tmp_path / f"{'-'.join(tables.values())}.json"
        models = {
            name: {
                "table_name": table,
                "natural_key": ["url"],
                "fields": [{"name": "url", "type": "string", "nullable": False}],
            }
            for name, table in tables.items()
        }
        path.write_text(json.dumps({"models": models}))
        return path

    env = env_for(database_url, tmp_path / "data")
    for path, expected in (
        (declaration(keys="raw_event_keys"), "models.keys.table_name: table name 'raw_event_keys'"),
        (declaration(films="movies"), "models.films: table 'movies' is already the table of"),
        (declaration(meta="pg_class"), "names starting with 'pg_' are reserved"),
    ):
        result = subprocess.run(
            [*SCRAPESINK, "models", "check", str(path)],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 1, result.stdout
        assert expected in result.stderr + result.stdout
        assert "Traceback" not in result.stderr

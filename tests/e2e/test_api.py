"""The REST API end to end: a real `scrapesink serve` process, real PostgreSQL, HTTP clients."""

from __future__ import annotations

import json
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from tests.conftest import create_database, drop_database, env_for, with_database
from tests.support import SCRAPESINK, ApiServer, StoppablePostgres, fresh_db, stop_if_running

DAY = "2026-11-20T10:00:00Z"


def event(source: str, source_id: str, **payload: Any) -> dict[str, Any]:
    return {"source": source, "source_id": source_id, "occurred_at": DAY, "payload": payload}


@pytest.fixture(scope="module")
def api_db(server_url: str, template_db: str) -> Iterator[str]:
    name = create_database(server_url, template=template_db)
    yield with_database(server_url, name)
    drop_database(server_url, name)


@pytest.fixture(scope="module")
def server(api_db: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    data_dir = tmp_path_factory.mktemp("api") / "data"
    data_dir.mkdir()
    running = ApiServer(
        api_db,
        data_dir,
        SCRAPESINK_API_MAX_BODY_BYTES="3000000",
        SCRAPESINK_API_MAX_BATCH="20000",
        SCRAPESINK_API_KEY_REFRESH_SECONDS="0.3",
    )
    yield running
    running.stop()


@pytest.fixture(scope="module")
def admin(server: ApiServer) -> str:
    assert server.token is not None, "the first start prints an admin key"
    return server.token


def make_key(server: ApiServer, api_db: str, name: str, *scopes: str) -> str:
    data_dir = server.log.parent / "data"
    result = subprocess.run(
        [*SCRAPESINK, "keys", "create", name, *(f"--scope={s}" for s in scopes), "--json"],
        env=env_for(api_db, data_dir),
        capture_output=True,
        text=True,
        check=True,
    )
    return str(json.loads(result.stdout)["key"])


@pytest.fixture(scope="module")
def keys(server: ApiServer, api_db: str) -> dict[str, str]:
    return {
        "ingest": make_key(server, api_db, "scraper", "ingest"),
        "read": make_key(server, api_db, "dashboard", "read"),
    }


def count_events(url: str, source: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM raw_events WHERE source = %s", (source,)
        ).fetchone()
    assert row is not None
    return int(row[0])


# -- auth --------------------------------------------------------------------------------------
def test_keys_and_scopes(server: ApiServer, admin: str, keys: dict[str, str], api_db: str) -> None:
    with server.client() as anonymous:
        missing = anonymous.get("/api/v1/events")
        assert missing.status_code == 401
        assert missing.json()["error_type"] == "Unauthorized"
        assert missing.headers["www-authenticate"].startswith("Bearer")
        wrong = anonymous.get("/api/v1/events", headers={"X-API-Key": "ss_00000000_nope"})
        assert wrong.status_code == 401
        assert anonymous.get("/api/health").status_code == 200  # probes need no key
    with server.client(keys["read"]) as reader:
        assert reader.get("/api/v1/events").status_code == 200
        refused = reader.post("/api/v1/events", json=[event("auth", "1")])
        assert refused.status_code == 403 and "ingest" in refused.json()["message"]
    with server.client(keys["ingest"]) as scraper:
        assert scraper.post("/api/v1/events", json=[event("auth", "1")]).status_code == 200
        assert scraper.get("/api/v1/status").status_code == 403
        assert scraper.get("/api/v1/events").status_code == 403
    with server.client(admin) as root:  # admin holds every scope
        assert root.get("/api/v1/events/auth/1").status_code == 200
        assert root.get("/api/v1/status").status_code == 200
    # revoked: refused within the refresh interval (0.3 s here)
    doomed = make_key(server, api_db, "doomed", "read")
    with server.client(doomed) as client:
        # a new key, too, is seen at the next refresh (a loaded machine flaked on this)
        deadline = time.monotonic() + 10
        while client.get("/api/v1/events").status_code == 401 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert client.get("/api/v1/events").status_code == 200
        subprocess.run(
            [*SCRAPESINK, "keys", "revoke", "doomed"],
            env=env_for(api_db, server.log.parent / "data"),
            check=True,
            capture_output=True,
        )
        deadline = time.monotonic() + 10
        while client.get("/api/v1/events").status_code == 200 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert client.get("/api/v1/events").status_code == 401
    with psycopg.connect(api_db) as conn:
        stored = [r[0] for r in conn.execute("SELECT secret_hash FROM api_keys")]
        audit = conn.execute(
            "SELECT actor, action, target, detail::text FROM audit_log WHERE action LIKE 'keys %'"
        ).fetchall()
    assert admin not in stored and all(len(h) == 64 for h in stored)  # hashes only
    assert ("keys revoke", "doomed") in {(a[1], a[2]) for a in audit}
    assert all(a[0].startswith("cli (") for a in audit)
    assert not any(k in str(audit) for k in (admin, doomed, *keys.values()))  # no secrets


def test_serve_refuses_no_auth_off_loopback(api_db: str, tmp_path: Path) -> None:
    result = subprocess.run(
        [*SCRAPESINK, "serve", "--host", "0.0.0.0", "--no-auth"],
        env=env_for(api_db, tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "loopback" in result.stderr


# -- raw events ----------------------------------------------------------------------------------
def test_event_ingest_reports_each_record(server: ApiServer, keys: dict[str, str]) -> None:
    with server.client(keys["ingest"]) as client:
        first = client.post("/api/v1/events", json=[event("ev", "1", n=1)])
        assert first.status_code == 200
        response = client.post(
            "/api/v1/events",
            json=[
                event("ev", "2", n=2),
                event("ev", "2", n=2),  # again in the same batch
                event("ev", "1", n=1),  # already stored
                {"source": "ev", "source_id": "3", "occurred_at": "not a time", "payload": {}},
                {"id": "f1", "timestamp": "2026-11-20T12:00:00+05:30", "price": 3},
            ],
            params={"source": "flat"},
        )
    assert response.status_code == 200
    body = response.json()
    assert [r["status"] for r in body["results"]] == [
        "stored",
        "duplicate",
        "duplicate",
        "rejected",
        "stored",
    ]
    assert body["results"][3]["path"] == "occurred_at"
    assert body["results"][3]["reason"]
    assert (body["read"], body["stored"], body["duplicates"], body["rejected"]) == (5, 2, 2, 1)
    assert body["sinks"]["csv"]["stored"] == 2


def test_event_queries(server: ApiServer, keys: dict[str, str], admin: str) -> None:
    with server.client(keys["ingest"]) as writer:
        records = [event("q", str(i), kind="a" if i % 2 else "b") for i in range(25)]
        assert writer.post("/api/v1/events", json=records).json()["stored"] == 25
        marked = writer.post(
            "/api/v1/events/processed",
            json={"keys": [{"source": "q", "source_id": "1"}, {"source": "q", "source_id": "2"}]},
        )
        assert marked.json() == {"changed": 2}
    with server.client(keys["read"]) as reader:
        got = reader.get("/api/v1/events/q/3").json()
        assert got["payload"] == {"kind": "a"} and got["occurred_at"] == DAY
        assert reader.get("/api/v1/events/q/404").status_code == 404
        seen, cursor = [], None
        while True:
            params: dict[str, Any] = {"source": "q", "limit": 10}
            if cursor:
                params["after"] = cursor
            page = reader.get("/api/v1/events", params=params).json()
            seen += [e["source_id"] for e in page["events"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert sorted(seen, key=int) == [str(i) for i in range(25)]
        kind_a = reader.get(
            "/api/v1/events", params={"source": "q", "contains": '{"kind": "a"}', "limit": 100}
        ).json()
        assert len(kind_a["events"]) == 12
        processed = reader.get("/api/v1/events", params={"source": "q", "processed": "true"})
        assert {e["source_id"] for e in processed.json()["events"]} == {"1", "2"}
        stats = reader.get("/api/v1/events/stats", params={"source": "q"}).json()
        assert stats == [{"source": "q", "day": "2026-11-20", "events": 25, "processed": 2}]
        bad = reader.get("/api/v1/events", params={"limit": "abc", "since": "yesterday"})
        assert bad.status_code == 422
        assert {e["path"] for e in bad.json()["errors"]} == {"query.limit", "query.since"}
        too_big = reader.get("/api/v1/events", params={"limit": 100_000})
        assert too_big.status_code == 422


def test_ndjson_stream(server: ApiServer, keys: dict[str, str], api_db: str) -> None:
    lines = [json.dumps(event("nd", str(i))) for i in range(300)]
    lines.insert(5, "{not json")
    body = ("\n".join(lines) + "\n").encode()

    def chunks() -> Iterator[bytes]:  # streamed (chunked), not one buffer
        for start in range(0, len(body), 4096):
            yield body[start : start + 4096]

    with server.client(keys["ingest"]) as client:
        response = client.post(
            "/api/v1/events/stream",
            content=chunks(),
            headers={"Content-Type": "application/x-ndjson"},
        )
        assert response.status_code == 200, response.text
        result = response.json()
        assert (result["read"], result["stored"], result["rejected"]) == (301, 300, 1)
        assert result["results"][5]["status"] == "rejected"
        wrong = client.post("/api/v1/events/stream", content=body)
        assert wrong.status_code == 415
    assert count_events(api_db, "nd") == 300


# -- models --------------------------------------------------------------------------------------
def workflow(n: int, **extra: Any) -> dict[str, Any]:
    title = f"Workflow {n} sends slack alerts" if n % 2 else f"Workflow {n} syncs sheets"
    return {
        "workflow_id": f"wf-{n}",
        "url": f"https://n8n.io/workflows/{n}",
        "quality_score": n / 10,
        "layer1_success": True,
        "metadata": {"title": title, "categories": ["ops"], "tags": ["t"]},
        "transcripts": [{"video_url": f"https://v/{n}", "transcript_text": "hello"}],
        **extra,
    }


def test_models_crud(server: ApiServer, keys: dict[str, str], admin: str, api_db: str) -> None:
    with server.client(keys["ingest"]) as writer:
        one = writer.post("/api/v1/models/workflows/records", json=workflow(1))
        assert one.status_code == 200 and one.json()["results"] == [
            {"index": 0, "status": "stored", "path": None, "reason": None}
        ]
        batch = [workflow(n) for n in range(2, 8)] + [{"title": "no key"}, workflow(1)]
        saved = writer.post("/api/v1/models/workflows/records", json=batch).json()
        statuses = [r["status"] for r in saved["results"]]
        assert statuses == ["stored"] * 6 + ["rejected", "unchanged"]
        assert saved["results"][6]["path"] == "workflow_id"
        changed = writer.patch(
            "/api/v1/models/workflows/records/wf-3", json={"quality_score": 0.99}
        )
        assert changed.status_code == 200 and changed.json()["quality_score"] == 0.99
        assert writer.patch("/api/v1/models/workflows/records/wf-404", json={}).status_code == 404
        unknown = writer.post("/api/v1/models/nope/records", json={"a": 1})
        assert unknown.status_code == 404 and "workflows" in unknown.json()["message"]
    with server.client(keys["read"]) as reader:
        got = reader.get("/api/v1/models/workflows/records/wf-2").json()
        assert got["transcripts"][0]["video_url"] == "https://v/2"
        page = reader.get(
            "/api/v1/models/workflows/records",
            params={"where": "quality_score>=0.4", "sort": "-quality_score", "limit": 3},
        ).json()
        assert [r["workflow_id"] for r in page["records"]] == ["wf-3", "wf-7", "wf-6"]
        rest = reader.get(
            "/api/v1/models/workflows/records",
            params={
                "where": "quality_score>=0.4",
                "sort": "-quality_score",
                "limit": 3,
                "after": page["next_cursor"],
            },
        ).json()
        assert [r["workflow_id"] for r in rest["records"]] == ["wf-5", "wf-4"]
        hits = reader.get("/api/v1/models/workflows/search", params={"q": "slack"}).json()
        assert {h["record"]["workflow_id"] for h in hits} == {"wf-1", "wf-3", "wf-5", "wf-7"}
        stats = reader.get("/api/v1/models/workflows/stats").json()
        assert stats["records"] == 7
        models = reader.get("/api/v1/models").json()
        assert {"movies", "workflows"} <= {m["name"] for m in models}
        bad = reader.get("/api/v1/models/workflows/records", params={"where": "nope"})
        assert bad.status_code == 400
        assert reader.delete("/api/v1/models/workflows/records/wf-2").status_code == 403
    with server.client(keys["ingest"]) as writer:
        deleted = writer.delete("/api/v1/models/workflows/records/wf-2")
        assert deleted.status_code == 200 and deleted.json() == {"deleted": 1, "pending": 0}
        assert writer.delete("/api/v1/models/workflows/records/wf-2").status_code == 404
    with server.client(keys["read"]) as reader:
        assert reader.get("/api/v1/models/workflows/records/wf-2").status_code == 404
    with psycopg.connect(api_db) as conn:
        audit = conn.execute(
            "SELECT actor, action, target, outcome, detail::text FROM audit_log"
            " WHERE action = 'delete' ORDER BY id"
        ).fetchall()
    assert [(a[1], a[2], a[3]) for a in audit] == [
        ("delete", "workflows/wf-2", "deleted"),
        ("delete", "workflows/wf-2", "not found"),
    ]
    assert all(a[0].startswith("scraper (") for a in audit)
    assert keys["ingest"] not in str(audit)


def test_movie_keys_with_slashes(server: ApiServer, admin: str) -> None:
    movie = {"url": "https://m/heat", "title": "Heat", "actors": [{"name": "Al Pacino"}]}
    with server.client(admin) as client:
        assert client.post("/api/v1/models/movies/records", json=[movie]).status_code == 200
        got = client.get("/api/v1/models/movies/records/https%3A%2F%2Fm%2Fheat")
        assert got.status_code == 200 and got.json()["actors"][0]["name"] == "Al Pacino"


# -- operations ------------------------------------------------------------------------------------
def test_operations(server: ApiServer, admin: str, api_db: str) -> None:
    with server.client(admin) as client:
        assert client.post("/api/v1/events", json=[event("ops", "1")]).status_code == 200
        status = client.get("/api/v1/status").json()
        assert set(status["sinks"]) == {"postgres", "csv"}
        assert client.get("/api/v1/dead-letters").json() == []
        assert client.post("/api/v1/dead-letters/retry", json={}).json() == {
            "stored": [],
            "refused": {},
        }
        ensured = client.post("/api/v1/partitions/ensure", json={"days": 3})
        assert ensured.status_code == 200
        # Admin POSTs whose body is all defaults work without one (curl -X POST ...)
        bare = client.post("/api/v1/partitions/ensure")
        assert bare.status_code == 200, bare.text
        assert client.post("/api/v1/dead-letters/retry").json() == {"stored": [], "refused": {}}
        text = client.post(
            "/api/v1/partitions/ensure", content=b"days=3", headers={"content-type": "text/plain"}
        )
        assert text.status_code == 415  # a body that is sent must still be JSON
        names = {p["name"] for p in client.get("/api/v1/partitions").json()}
        assert "raw_events_2026_11_20" in names
        dry = client.post("/api/v1/partitions/prune", json={"older_than": "1d", "dry_run": True})
        assert "raw_events_2026_11_20" in {p["name"] for p in dry.json()}
        assert "raw_events_2026_11_20" in {
            p["name"] for p in client.get("/api/v1/partitions").json()
        }
        bad = client.post("/api/v1/partitions/prune", json={"older_than": "soon"})
        assert bad.status_code == 422
        assert client.post("/api/v1/replay").status_code == 200
        metrics = httpx.get(server.base + "/metrics").text
    assert 'scrapesink_http_requests_total{method="GET",route="/api/v1/status",status="200"}' in (
        metrics
    )
    assert 'scrapesink_sink_pending_records{sink="postgres"} 0.0' in metrics
    assert "scrapesink_partitions " in metrics
    with psycopg.connect(api_db) as conn:
        actions = {r[0] for r in conn.execute("SELECT action FROM audit_log")}
    assert {"dead-letters retry", "partitions ensure", "partitions prune", "replay"} <= actions


# -- idempotency ---------------------------------------------------------------------------------
def test_idempotency_key(server: ApiServer, keys: dict[str, str], api_db: str) -> None:
    records = [event("idem", str(i)) for i in range(10)]
    with server.client(keys["ingest"]) as client:
        headers = {"Idempotency-Key": "batch-1"}
        first = client.post("/api/v1/events", json=records, headers=headers)
        again = client.post("/api/v1/events", json=records, headers=headers)
        assert first.status_code == again.status_code == 200
        assert again.headers["idempotent-replayed"] == "true"
        assert again.json() == first.json()  # the first answer, not "10 duplicates"
        assert again.json()["stored"] == 10
        other = client.post("/api/v1/events", json=records[:5], headers=headers)
        assert other.status_code == 422 and "Idempotency-Key" in other.json()["message"]
    with server.client(keys["read"]) as reader:  # another caller's key space
        refused = reader.post("/api/v1/events", json=records, headers=headers)
        assert refused.status_code == 403
    assert count_events(api_db, "idem") == 10


def test_idempotency_key_while_running(server: ApiServer, keys: dict[str, str]) -> None:
    records = [event("race", str(i), text="x" * 40) for i in range(12_000)]
    body = json.dumps(records).encode()
    statuses: list[tuple[int, str | None]] = []

    def send() -> None:
        with server.client(keys["ingest"]) as client:
            response = client.post(
                "/api/v1/events",
                content=body,
                headers={"Idempotency-Key": "race-1", "Content-Type": "application/json"},
            )
            statuses.append((response.status_code, response.headers.get("idempotent-replayed")))

    threads = [threading.Thread(target=send) for _ in range(6)]
    for thread in threads:
        thread.start()
        time.sleep(0.05)
    for thread in threads:
        thread.join()
    executed = [s for s in statuses if s == (200, None)]
    assert len(executed) == 1, statuses
    assert {code for code, _ in statuses} <= {200, 409}
    assert any(code == 409 for code, _ in statuses), statuses


# -- limits and errors ---------------------------------------------------------------------------
def test_limits_and_error_shape(server: ApiServer, keys: dict[str, str], api_db: str) -> None:
    huge = json.dumps([event("huge", str(i), text="y" * 300) for i in range(10_000)]).encode()
    assert len(huge) > 3_000_000
    with server.client(keys["ingest"]) as client:
        declared = client.post(
            "/api/v1/events", content=huge, headers={"Content-Type": "application/json"}
        )
        assert declared.status_code == 413

        def streamed() -> Iterator[bytes]:  # no Content-Length: counted while it arrives
            for start in range(0, len(huge), 65536):
                yield huge[start : start + 65536]

        chunked = client.post(
            "/api/v1/events", content=streamed(), headers={"Content-Type": "application/json"}
        )
        assert chunked.status_code == 413
        ndjson = b"\n".join(json.dumps(e).encode() for e in json.loads(huge))
        stream = client.post(
            "/api/v1/events/stream",
            content=iter([ndjson]),
            headers={"Content-Type": "application/x-ndjson"},
        )
        assert stream.status_code == 413
        too_many = client.post(
            "/api/v1/events", json=[event("many", str(i)) for i in range(20_001)]
        )
        assert too_many.status_code == 413
        wrong_type = client.post(
            "/api/v1/events", content=b"[]", headers={"Content-Type": "text/csv"}
        )
        assert wrong_type.status_code == 415
        malformed = client.post(
            "/api/v1/events", content=b'[{"a": ', headers={"Content-Type": "application/json"}
        )
        assert malformed.status_code == 400
        not_array = client.post("/api/v1/events", json={"source": "x"})
        assert not_array.status_code == 422
        nul = client.post("/api/v1/events", json=[event("nul", "1", text="a\u0000b")])
        assert nul.json()["nul_cleaned"] == 1
        bad_model = client.post(
            "/api/v1/events/processed", json={"keys": [{"source": ""}], "processed": "maybe"}
        )
        assert bad_model.status_code == 422
        paths = {e["path"] for e in bad_model.json()["errors"]}
        assert {"body.keys.0.source", "body.keys.0.source_id", "body.processed"} <= paths
        for response in (declared, chunked, stream, too_many, wrong_type, malformed, bad_model):
            body = response.json()
            assert set(body) == {
                "status",
                "error_type",
                "message",
                "table_name",
                "query",
                "errors",
            }
            assert body["status"] == response.status_code
            assert "Traceback" not in response.text
    assert count_events(api_db, "huge") == 0  # a refused body stores nothing
    assert count_events(api_db, "many") == 0


# -- PostgreSQL down -------------------------------------------------------------------------------
@pytest.mark.slow
def test_health_and_ingest_while_postgres_is_down(
    stoppable: StoppablePostgres, tmp_path: Path
) -> None:
    """A client keeps posting while PostgreSQL stops and starts: health turns 503 and back,
    every acknowledged record ends up in PostgreSQL exactly once, without a restart."""
    url = fresh_db(stoppable.url, "api_outage")
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    server = ApiServer(
        url,
        data_dir,
        "--no-auth",
        SCRAPESINK_RETRY_SECONDS="0.5",
        SCRAPESINK_COOLDOWN_SECONDS="1",
        SCRAPESINK_CONNECT_TIMEOUT="2",
    )
    acknowledged: list[str] = []
    answers: list[int] = []
    stop = threading.Event()

    def scraper() -> None:
        with server.client() as client:
            batch = 0
            while not stop.is_set():
                ids = [f"{batch}-{i}" for i in range(20)]
                response = client.post("/api/v1/events", json=[event("out", i) for i in ids])
                answers.append(response.status_code)
                if response.status_code in (200, 202):
                    acknowledged.extend(ids)
                batch += 1
                time.sleep(0.05)

    writer = threading.Thread(target=scraper)
    try:
        with server.client() as client:
            assert client.get("/api/health").json()["status"] == "ok"
            writer.start()
            time.sleep(1)
            stoppable.stop()
            health = client.get("/api/health")
            assert health.status_code == 503
            assert health.json()["database_ok"] is False
            assert {c["name"]: c["ok"] for c in health.json()["checks"]}["database"] is False
            assert client.get("/api/v1/events/out/0-1").status_code == 503
            during = client.post("/api/v1/events", json=[event("down", str(i)) for i in range(5)])
            assert during.status_code == 202  # acknowledged: journaled, PostgreSQL later
            body = during.json()
            assert body["pending"] == 5 and body["sinks"]["csv"]["stored"] == 5
            assert {r["status"] for r in body["results"]} == {"pending"}
            time.sleep(1)
            stoppable.start()
            deadline = time.monotonic() + 30
            while client.get("/api/health").status_code != 200 and time.monotonic() < deadline:
                time.sleep(0.2)
            assert client.get("/api/health").status_code == 200
            time.sleep(1)
            stop.set()
            writer.join()
            # delivered by the server itself once PostgreSQL is back (no replay, no restart)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                health = client.get("/api/health").json()
                if health["pending"]["postgres"] == 0:
                    break
                time.sleep(0.3)
            assert health["pending"] == {"postgres": 0, "csv": 0}
    finally:
        stop.set()
        if writer.is_alive():
            writer.join()
        if _stopped(stoppable):
            stoppable.start()
        server.stop()
    assert 202 in answers and set(answers) <= {200, 202}, answers
    with psycopg.connect(url) as conn:
        stored = [
            r[0] for r in conn.execute("SELECT source_id FROM raw_events WHERE source = 'out'")
        ]
    assert sorted(stored) == sorted(acknowledged)  # every acknowledged record, exactly once
    assert count_events(url, "down") == 5
    # the pool's connection errors are log lines like the others (JSON here), each said once
    # in a minute (ten connections retrying said it dozens of times, raw)
    pool = [line for line in server.log.read_text().splitlines() if "error connecting" in line]
    assert pool, "the outage is in the log"
    assert all(json.loads(line)["logger"] == "psycopg.pool" for line in pool)
    assert len(pool) == len(set(json.loads(line)["event"] for line in pool))


def test_serve_on_the_embedded_database(tmp_path: Path) -> None:
    """No database configured: the server starts the embedded PostgreSQL in its data dir."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    server = ApiServer("", data_dir)
    try:
        assert server.token is not None
        with server.client(server.token) as client:
            health = client.get("/api/health").json()
            assert health["database_ok"] and "embedded" in health["database"]
            assert client.post("/api/v1/events", json=[event("emb", "1")]).json()["stored"] == 1
            assert client.get("/api/v1/events/emb/1").status_code == 200
            assert client.get("/docs").status_code == 200
            assert "/api/v1/events" in client.get("/openapi.json").json()["paths"]
    finally:
        server.stop()
    assert (data_dir / "pgdata").is_dir()
    stop_if_running(data_dir / "pgdata")  # not left running after the tests


def _stopped(pg: StoppablePostgres) -> bool:
    try:
        psycopg.connect(pg.url, connect_timeout=2).close()
        return False
    except psycopg.OperationalError:
        return True


def test_jobs_and_runs_over_http(server: ApiServer, admin: str, keys: dict[str, str]) -> None:
    with server.client(keys["ingest"]) as writer:
        answer = writer.post(
            "/api/v1/events", params={"job": "api-feed"}, json=[event("jobs", "1"), {"x": 1}]
        )
        assert answer.status_code == 200
        saved = writer.post(
            "/api/v1/models/movies/records",
            params={"job": "api-movies"},
            json={"url": "https://m/job", "title": "Job"},
        )
        assert saved.status_code == 200
        assert writer.post("/api/v1/jobs", json={"name": "x"}).status_code == 403
    with server.client(keys["read"]) as reader:
        runs = reader.get("/api/v1/jobs/api-feed/runs").json()
        assert len(runs) == 1 and runs[0]["origin"] == "api"
        assert runs[0]["status"] == "partial" and runs[0]["records"]["rejected"] == 1
        assert runs[0]["records"]["stored"] == 1
        assert reader.get("/api/v1/jobs/api-movies/runs").json()[0]["status"] == "succeeded"
        assert reader.get("/api/v1/jobs/nope/runs").status_code == 404
    with server.client(admin) as root:
        bad = root.post("/api/v1/jobs", json={"name": "c", "kind": "scrape", "config": {}})
        assert bad.status_code == 422 and "start_urls" in bad.json()["message"]
        made = root.post(
            "/api/v1/jobs",
            json={"name": "c", "kind": "scrape", "config": {"start_urls": ["https://a/"]}},
        )
        assert made.status_code == 201 and made.json()["config"]["concurrency"] == 4
        assert root.post("/api/v1/jobs", json={"name": "c"}).status_code == 409
        assert root.post("/api/v1/jobs/api-feed/disable").json()["enabled"] is False
        refused = root.post("/api/v1/events", params={"job": "api-feed"}, json=[event("j", "2")])
        assert refused.status_code == 409
        assert {j["name"] for j in root.get("/api/v1/jobs").json()} >= {"api-feed", "c"}


def scrape(server: ApiServer) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """/metrics parsed: (sample name, sorted labels) -> value."""
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(server.base + "/metrics").text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_metrics_after_known_ingests(server: ApiServer, keys: dict[str, str]) -> None:
    with server.client(keys["ingest"]) as client:
        client.post("/api/v1/events", json=[event("metered", str(i)) for i in range(7)])
        client.post(
            "/api/v1/events",
            json=[event("metered", "1"), event("metered", "7"), {"source": "metered"}],
        )
        client.post("/api/v1/models/movies/records", json=[{"title": "no key"}])
    values = scrape(server)

    def records(sink: str, outcome: str) -> float:
        labels = (("kind", "events"), ("name", "metered"), ("outcome", outcome), ("sink", sink))
        return values[("scrapesink_records_total", labels)]

    assert records("postgres", "stored") == 8 and records("postgres", "duplicate") == 1
    assert records("csv", "stored") == 8 and records("csv", "duplicate") == 1
    rejected = ("scrapesink_records_rejected_total", (("kind", "events"), ("name", "metered")))
    assert values[rejected] == 1
    assert (
        values[("scrapesink_records_rejected_total", (("kind", "model"), ("name", "movies")))] >= 1
    )
    batches = ("scrapesink_batch_duration_seconds_count", (("sink", "postgres"),))
    assert values[batches] >= 2
    route = (("method", "POST"), ("route", "/api/v1/events"), ("status", "200"))
    assert values[("scrapesink_http_requests_total", route)] >= 2
    assert values[("scrapesink_pool_connections", (("state", "idle"),))] >= 0


def test_several_worker_processes_share_one_installation(
    server_url: str, template_db: str, tmp_path: Path
) -> None:
    name = create_database(server_url, template=template_db)
    url = with_database(server_url, name)
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    server = ApiServer(url, data_dir, "--workers", "2")
    try:
        assert server.token is not None
        with server.client(server.token, headers={"Connection": "close"}) as client:
            for batch in range(8):  # a new connection each: the kernel spreads them
                records = [event("workers", f"{batch}-{i}") for i in range(25)]
                assert client.post("/api/v1/events", json=records).json()["stored"] == 25
            again = client.post("/api/v1/events", json=[event("workers", "0-0")]).json()
            assert again["duplicates"] == 1  # whichever worker answers, the key is known
            assert client.get("/api/v1/events/workers/7-24").status_code == 200
    finally:
        server.stop()
    assert count_events(url, "workers") == 200
    csv_rows = sum(
        len(path.read_text().splitlines()) - 1
        for path in (data_dir / "raw_events" / "workers").glob("*.csv")
    )
    assert csv_rows == 200
    drop_database(server_url, name)


def test_a_caller_without_a_key_never_makes_the_server_touch_the_schema(
    database_url: str, tmp_path: Path
) -> None:
    # The model read port applies the declaration on its first use: a request without a key
    # must be refused before that (it ran first, and created the declared model's tables).
    declaration = tmp_path / "gizmos.json"
    declaration.write_text(
        json.dumps(
            {
                "models": {
                    "gizmos": {
                        "table_name": "gizmos",
                        "natural_key": ["sku"],
                        "fields": [
                            {"name": "sku", "type": "string", "nullable": False},
                            {"name": "name", "type": "text", "search": True},
                        ],
                    }
                }
            }
        )
    )
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    running = ApiServer(database_url, data_dir, SCRAPESINK_MODELS=str(declaration))

    def gizmos_table() -> bool:
        with psycopg.connect(database_url) as conn:
            return conn.execute("SELECT to_regclass('gizmos') IS NOT NULL").fetchone()[0]

    try:
        for path in ("records", "search?q=x", "stats"):
            answer = httpx.get(f"{running.base}/api/v1/models/gizmos/{path}", timeout=30)
            assert answer.status_code == 401, path
        assert not gizmos_table()
        token = running.token or make_key(running, database_url, "reader", "read")
        answer = httpx.get(
            f"{running.base}/api/v1/models/gizmos/records",
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        )
        assert answer.status_code == 200 and gizmos_table()
    finally:
        running.stop()


def test_serve_on_a_port_in_use_is_one_line_and_its_own_exit_code(
    database_url: str, tmp_path: Path
) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run(
            [*SCRAPESINK, "serve", "--port", str(port)],
            env=env_for(database_url, tmp_path / "data"),
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 5
    assert (
        result.stderr.strip()
        == f"error: cannot listen on 127.0.0.1:{port}: the address is in use (pass --port N)"
    )
    assert "serving on" not in result.stderr and "Traceback" not in result.stderr


def test_the_readme_rest_example_answers_what_the_readme_shows(
    server: ApiServer, keys: dict[str, str]
) -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    block = readme.split("curl -s -X POST localhost:8000/api/v1/events", 1)[1].split("```", 1)[0]
    body = json.loads(block.split("-d '", 1)[1].split("'", 1)[0])
    shown = re.search(r'"path": "([^"]+)", "reason": "([^"]+)"', block)
    assert shown is not None
    with server.client(keys["ingest"]) as client:
        answer = client.post("/api/v1/events", json=body).json()
    rejected = answer["results"][1]
    assert (rejected["status"], rejected["path"], rejected["reason"]) == (
        "rejected",
        *shown.groups(),
    )

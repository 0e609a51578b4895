"""Operator commands as a user runs them: status, replay, dead letters, export."""

from __future__ import annotations

import csv
import json

import psycopg

from tests.e2e.test_cli_ingest import run, write_jsonl

EVENTS = [
    {"source": "shop", "id": i, "timestamp": "2025-05-15T10:00:00Z", "n": i} for i in range(10)
]


def test_dead_letters_from_ingest_to_retry(cli_env, database_url, tmp_path):
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("ALTER TABLE raw_events ADD CONSTRAINT no_seven CHECK (source_id <> '7')")
    path = write_jsonl(tmp_path / "e.jsonl", EVENTS)
    ingest = run(cli_env, "ingest", str(path))
    assert ingest.returncode == 0, ingest.stderr  # refused records are handled, not pending
    assert "dead letters 1 record(s) refused by postgres" in ingest.stderr

    listed = run(cli_env, "deadletters", "list")
    assert "ConstraintError" in listed.stdout and "1 dead letter(s)" in listed.stdout
    (line,) = run(cli_env, "deadletters", "list", "--json").stdout.splitlines()
    shown = run(cli_env, "deadletters", "show", str(json.loads(line)["id"]))
    record = json.loads(shown.stdout)
    assert "no_seven" in record["message"]
    assert record["record"]["source_id"] == "7" and record["sink"] == "postgres"
    assert record["error_type"] == "ConstraintError" and record["attempts"] == 1

    still = run(cli_env, "deadletters", "retry")
    assert still.returncode == 1 and "still refused" in still.stderr
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("ALTER TABLE raw_events DROP CONSTRAINT no_seven")
    fixed = run(cli_env, "deadletters", "retry")
    assert fixed.returncode == 0 and "1 stored and removed" in fixed.stdout
    assert "0 dead letter(s)" in run(cli_env, "deadletters", "list").stdout
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT count(*) FROM raw_events").fetchone()[0] == 10


def test_purge_asks_unless_told(cli_env, database_url, tmp_path):
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("ALTER TABLE raw_events ADD CONSTRAINT no_seven CHECK (source_id <> '7')")
    run(cli_env, "ingest", str(write_jsonl(tmp_path / "e.jsonl", EVENTS)))
    refused = run(cli_env, "deadletters", "purge", stdin="n\n")
    assert refused.returncode == 1
    purged = run(cli_env, "deadletters", "purge", "--yes")
    assert "1 dead letter(s) deleted" in purged.stdout


def test_status_and_replay_when_csv_cannot_be_written(cli_env, data_dir, tmp_path):
    (data_dir / "raw_events").write_text("blocking file")
    env = {**cli_env, "SCRAPESINK_RETRY_SECONDS": "0.2"}
    ingest = run(env, "ingest", str(write_jsonl(tmp_path / "e.jsonl", EVENTS)))
    assert ingest.returncode == 4, ingest.stderr
    assert "pending 10 record(s) for csv" in ingest.stderr
    assert "not writable" in ingest.stderr

    status = run(env, "status", "--json")
    assert status.returncode == 4
    report = json.loads(status.stdout)
    assert report["sinks"]["csv"]["pending"] == 10
    assert report["sinks"]["postgres"]["pending"] == 0
    assert report["journals"] == 1 and report["sinks"]["csv"]["oldest_pending"]

    still = run(env, "replay")
    assert still.returncode == 4
    (data_dir / "raw_events").unlink()
    done = run(env, "replay")
    assert done.returncode == 0, done.stderr
    assert "1 drained and removed" in done.stdout
    assert run(env, "status").returncode == 0


def test_excel_export(cli_env, data_dir, tmp_path):
    events = [{"source": "shop", "id": "=HYPERLINK(1)", "timestamp": "2025-05-15T10:00:00Z"}]
    assert run(cli_env, "ingest", str(write_jsonl(tmp_path / "e.jsonl", events))).returncode == 0
    without = run(cli_env, "export")
    assert without.returncode == 2 and "--excel" in without.stderr
    result = run(cli_env, "export", "--excel", "--out", str(tmp_path / "xl"))
    assert result.returncode == 0 and "1 file(s) written" in result.stdout
    exported = tmp_path / "xl" / "shop" / "2025-05-15.csv"
    raw = exported.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")
    rows = list(csv.reader(raw.decode("utf-8-sig").splitlines()))
    assert rows[1][1] == "'=HYPERLINK(1)"
    assert "0 raw-event file(s)" not in without.stderr and "model file(s)" in without.stderr
    flows = tmp_path / "w.jsonl"
    flows.write_text(json.dumps({"workflow_id": "w1", "url": "https://x", "error_message": "=1+1"}))
    assert run(cli_env, "ingest", "--model", "workflows", str(flows)).returncode == 0
    both = run(cli_env, "export", "--excel", "--out", str(tmp_path / "xl2"))
    assert "(1 of raw events," in both.stdout, both.stdout
    model_rows = list(
        csv.DictReader(
            (tmp_path / "xl2" / "models" / "workflows.csv").read_text("utf-8-sig").splitlines()
        )
    )
    assert model_rows[0]["error_message"] == "'=1+1"


def test_ingest_with_a_job_records_its_run(cli_env, tmp_path):
    good = {"source": "shop", "id": 1, "timestamp": "2026-11-20T10:00:00Z"}
    path = write_jsonl(tmp_path / "e.jsonl", [good, good, "{broken"])
    result = run(cli_env, "ingest", str(path), "--job", "nightly")
    assert result.returncode == 3
    assert "of job nightly: partial" in result.stderr
    runs = run(cli_env, "jobs", "runs", "nightly", "--json")
    [recorded] = [json.loads(line) for line in runs.stdout.splitlines()]
    assert recorded["records"] == {
        "read": 3,
        "stored": 1,
        "duplicate": 1,
        "unchanged": 0,
        "rejected": 1,
        "pending": 0,
    }
    assert recorded["origin"] == "cli" and recorded["duration_seconds"] >= 0
    bad = run(cli_env, "jobs", "create", "crawl", "--kind", "scrape", "--config", '{"urls": 1}')
    assert bad.returncode == 1
    assert "config.start_urls" in bad.stderr and "config.urls" in bad.stderr
    made = run(
        cli_env,
        "jobs", "create", "crawl", "--kind", "scrape",
        "--config", '{"start_urls": ["https://shop.example/"]}',
        "-c", "fetch=scraper", "-c", 'clean=transform:{"strip": true}',
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    shown = json.loads(run(cli_env, "jobs", "show", "crawl").stdout)
    assert [c["name"] for c in shown["components"]] == ["fetch", "clean"]
    assert run(cli_env, "jobs", "disable", "nightly").returncode == 0
    refused = run(cli_env, "ingest", str(path), "--job", "nightly")
    assert refused.returncode == 1 and "disabled" in refused.stderr
    listed = run(cli_env, "jobs", "list")
    assert "nightly" in listed.stdout and "crawl" in listed.stdout


def test_metrics_command_prints_and_writes_a_textfile(cli_env, tmp_path):
    good = {"source": "shop", "id": 1, "timestamp": "2026-11-20T10:00:00Z"}
    run(cli_env, "ingest", str(write_jsonl(tmp_path / "e.jsonl", [good])))
    printed = run(cli_env, "metrics")
    assert printed.returncode == 0
    assert 'scrapesink_sink_pending_records{sink="postgres"} 0.0' in printed.stdout
    assert "scrapesink_partitions" in printed.stdout
    target = tmp_path / "node" / "scrapesink.prom"
    target.parent.mkdir()
    written = run(cli_env, "metrics", "--textfile", str(target))
    assert written.returncode == 0
    assert 'scrapesink_dead_letters{sink="csv"} 0.0' in target.read_text()

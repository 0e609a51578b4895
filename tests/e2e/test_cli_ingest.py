"""`scrapesink` as a user runs it: a subprocess, its output and its exit codes."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

SCRAPESINK = [sys.executable, "-m", "scrapesink.entrypoints.cli"]


def run(env, *args, stdin: str | None = None, timeout=120):
    return subprocess.run(
        [*SCRAPESINK, *args], env=env, input=stdin, capture_output=True, text=True, timeout=timeout
    )


def count(url, sql="SELECT count(*) FROM raw_events"):
    with psycopg.connect(url) as conn:
        return conn.execute(sql).fetchone()[0]


def write_jsonl(path: Path, records) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return path


GOOD = [
    {"source": "shop", "id": i, "timestamp": f"2025-05-{10 + i % 5}T10:00:00Z", "p": i}
    for i in range(20)
]


def test_ingest_stores_then_counts_duplicates_on_rerun(cli_env, database_url, tmp_path):
    path = write_jsonl(tmp_path / "events.jsonl", GOOD)
    first = run(cli_env, "ingest", str(path), "--json")
    assert first.returncode == 0, first.stderr
    sink = {
        "stored": 20,
        "duplicates": 0,
        "unchanged": 0,
        "pending": 0,
        "dead_letters": 0,
        "error": None,
    }
    assert json.loads(first.stdout) == {
        "file": str(path),
        "read": 20,
        "inserted": 20,
        "duplicates": 0,
        "rejected": 0,
        "pending": 0,
        "dead_letters": 0,
        "naive_timestamps": 0,
        "nul_cleaned": 0,
        "sinks": {"postgres": sink, "csv": sink},
    }
    assert "database: postgresql://" in first.stderr
    second = run(cli_env, "ingest", str(path))
    assert second.returncode == 0
    assert "duplicates" in second.stdout and "20" in second.stdout
    assert count(database_url) == 20
    # The same keys twice in one input: counted duplicates in the summary, and said to be the
    # input's (the sinks never saw them, so their rows say 0).
    twice = write_jsonl(tmp_path / "twice.jsonl", [*GOOD[:3], *GOOD[:3]])
    repeated = run(cli_env, "ingest", str(twice), "--source", "other")
    assert "of which repeated in this input" in repeated.stdout


def test_rejected_records_are_listed_with_line_numbers_and_exit_3(cli_env, database_url, tmp_path):
    path = write_jsonl(
        tmp_path / "mixed.jsonl",
        [
            GOOD[0],
            '{"source": "shop", "id": 1, "timestamp": ',  # line 2: malformed JSON
            '"just a string"',  # line 3: not an object
            {"source": "shop", "timestamp": "2025-05-15"},  # line 4: missing id
            {"source": "shop", "id": 9, "timestamp": "soon"},  # line 5: bad timestamp
            {"source": "", "id": 9, "timestamp": "2025-05-15"},  # line 6: empty source
            {"source": "shop", "id": 9, "timestamp": "2999-01-01T00:00:00Z"},  # line 7: future
            {"source": "shop", "id": 10, "timestamp": "2025-05-15", "t": "nul\u0000"},
            GOOD[1],
            GOOD[1],  # duplicate inside the batch
        ],
    )
    result = run(cli_env, "ingest", str(path))
    assert result.returncode == 3, result.stderr
    err = result.stderr
    for needle in [
        "line 2: malformed JSON",
        "line 3: not an object",
        "line 4, id: missing field id",
        "line 5, timestamp: bad timestamp",
        "line 6, source: empty source",
        "line 7, timestamp: occurred_at 2999-01-01T00:00:00+00:00 is more than 1 day",
    ]:
        assert needle in err, (needle, err)
    assert "Traceback" not in err
    assert "records with NUL removed" in result.stdout
    assert count(database_url) == 3


def test_stdin_csv_and_flat_field_names(cli_env, database_url):
    csv_text = 'sku,seen,title\nA1,2025-05-15T10:00:00+02:00,"Hat, ""red"""\nA2,2025-05-15,x\n'
    result = run(
        cli_env,
        "ingest",
        "-",
        "--format",
        "csv",
        "--source",
        "shop",
        "--id-field",
        "sku",
        "--time-field",
        "seen",
        stdin=csv_text,
    )
    assert result.returncode == 0, result.stderr
    with psycopg.connect(database_url) as conn:
        payload = conn.execute("SELECT payload FROM raw_events WHERE source_id = 'A1'").fetchone()[
            0
        ]
    assert payload == {"sku": "A1", "seen": "2025-05-15T10:00:00+02:00", "title": 'Hat, "red"'}


def test_json_array_and_gzip(cli_env, database_url, tmp_path):
    (tmp_path / "a.json").write_text(json.dumps(GOOD[:5]))
    with gzip.open(tmp_path / "b.jsonl.gz", "wt") as fh:
        fh.write("\n".join(json.dumps(r) for r in GOOD[5:]))
    assert run(cli_env, "ingest", str(tmp_path / "a.json")).returncode == 0
    assert run(cli_env, "ingest", str(tmp_path / "b.jsonl.gz")).returncode == 0
    assert count(database_url) == 20


@pytest.mark.parametrize(
    ("setup", "args", "message"),
    [
        (None, ["ingest", "{tmp}/missing.jsonl"], "no such file"),
        ("", ["ingest", "{tmp}/empty.jsonl"], "the file is empty"),
        (
            "id,when\n1,2\n",
            ["ingest", "{tmp}/bad.csv", "--source", "s"],
            "missing column 'timestamp'",
        ),
        ("x", ["ingest", "{tmp}/f.txt"], "pass --format"),
    ],
)
def test_unreadable_input_is_one_line_and_exit_1(cli_env, tmp_path, setup, args, message):
    name = args[1].rsplit("/", 1)[1]
    if setup is not None:
        (tmp_path / name).write_text(setup)
    result = run(cli_env, *[a.format(tmp=tmp_path) for a in args])
    assert result.returncode == 1
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) <= 2  # database line + the error


def test_unreachable_database_at_start_journals_and_replays_later(
    cli_env, database_url, data_dir, tmp_path
):
    path = write_jsonl(tmp_path / "e.jsonl", GOOD)
    down = {
        **cli_env,
        "SCRAPESINK_DATABASE_URL": "postgresql://x@127.0.0.1:9/db",
        "SCRAPESINK_CONNECT_TIMEOUT": "2",
        # a refused server must fail fast, not wait for the pool: run() times out at 120 s
        "SCRAPESINK_POOL_TIMEOUT": "600",
        "SCRAPESINK_RETRY_SECONDS": "0.5",
    }
    result = run(down, "ingest", str(path))
    assert result.returncode == 4, result.stderr  # pending, not lost
    assert "Traceback" not in result.stderr
    assert "cannot connect to PostgreSQL at postgresql://x@127.0.0.1:9/db" in result.stderr
    assert "pending 20 record(s) for postgres" in result.stderr
    assert len(list((data_dir / "raw_events").rglob("*.csv"))) == 5  # the CSV mirror has them
    # the outage is said once at the start and once in the report: no pool messages, no log
    # lines of the delivery lanes saying it again
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2, result.stderr
    assert "records are journaled and delivered when it is back" in lines[0]
    # other commands need the database and say so in one line
    query = run(down, "events", "stats")
    assert query.returncode == 1 and "cannot connect" in query.stderr
    assert len(query.stderr.strip().splitlines()) == 1
    # the server "comes back" (here: the right URL) and replay delivers the journal
    replay = run(cli_env, "replay")
    assert replay.returncode == 0, replay.stderr
    assert count(database_url) == 20


def test_invalid_setting_names_the_variable(cli_env):
    result = run({**cli_env, "SCRAPESINK_BATCH_SIZE": "lots"}, "events", "stats")
    assert result.returncode == 1
    assert "SCRAPESINK_BATCH_SIZE" in result.stderr
    assert "Traceback" not in result.stderr


def test_usage_errors_exit_2(cli_env, tmp_path):
    result = run(cli_env, "ingest", str(tmp_path / "x.jsonl"), "--format", "xml")
    assert result.returncode == 2
    assert "unknown format 'xml'" in result.stderr


def test_outdated_external_schema_tells_the_user_to_upgrade(cli_env, empty_database_url, tmp_path):
    env = {**cli_env, "SCRAPESINK_DATABASE_URL": empty_database_url}
    path = write_jsonl(tmp_path / "e.jsonl", GOOD)
    result = run(env, "ingest", str(path))
    assert result.returncode == 1
    assert "run `scrapesink db upgrade`" in result.stderr
    upgraded = run(env, "db", "upgrade")
    assert upgraded.returncode == 0, upgraded.stderr
    assert "upgraded <empty> -> 0006" in upgraded.stdout
    assert run(env, "ingest", str(path)).returncode == 0
    current = run(env, "db", "current")
    assert "up to date" in current.stdout


def test_events_and_partitions_commands(cli_env, tmp_path):
    path = write_jsonl(tmp_path / "e.jsonl", GOOD)
    assert run(cli_env, "ingest", str(path)).returncode == 0
    got = run(cli_env, "events", "get", "shop", "3")
    assert json.loads(got.stdout)["payload"]["p"] == 3
    missing = run(cli_env, "events", "get", "shop", "nope")
    assert missing.returncode == 1 and "no event" in missing.stderr
    listed = run(cli_env, "events", "list", "--source", "shop", "--limit", "8")
    lines = [json.loads(line) for line in listed.stdout.splitlines()]
    assert len(lines) == 8 and "next page: --after" in listed.stderr
    cursor = listed.stderr.split("--after ")[1].split()[0]
    rest = run(cli_env, "events", "list", "--source", "shop", "--limit", "100", "--after", cursor)
    assert len(rest.stdout.splitlines()) == 12
    # a duration ago, as everywhere else: these events are from 2025, older than 7 days
    assert run(cli_env, "events", "list", "--since", "7d").stdout.strip() == ""
    old = run(cli_env, "events", "list", "--until", "7d", "--limit", "100")
    assert len(old.stdout.splitlines()) == 20
    bad = run(cli_env, "events", "list", "--since", "last week")
    assert bad.returncode == 2 and "duration such as 7d" in bad.stderr
    marked = run(cli_env, "events", "mark-processed", "shop", "1", "2")
    assert "2 event(s) marked processed" in marked.stdout
    again = run(cli_env, "events", "mark-processed", "shop", "2", "3", "nope")
    assert again.returncode == 1
    assert "1 event(s) marked processed, 1 already processed" in again.stdout
    assert "not found shop/nope" in again.stderr
    stats = run(cli_env, "events", "stats", "--json")
    days = [json.loads(line) for line in stats.stdout.splitlines()]
    assert sum(d["events"] for d in days) == 20 and sum(d["processed"] for d in days) == 3
    parts = run(cli_env, "partitions", "list")
    assert "raw_events_2025_05_10" in parts.stdout
    ensure = run(cli_env, "partitions", "ensure", "--days", "3")
    assert ensure.returncode == 0 and "3 day(s) ahead present" in ensure.stdout
    dry = run(cli_env, "partitions", "prune", "--older-than", "30d", "--dry-run")
    assert "would drop raw_events_2025_05_10" in dry.stdout
    assert "raw_events_2025_05_10" in run(cli_env, "partitions", "list").stdout
    pruned = run(cli_env, "partitions", "prune", "--older-than", "30d")
    assert "dropped raw_events_2025_05_10 (4 rows)" in pruned.stdout
    bad = run(cli_env, "partitions", "prune", "--older-than", "yesterday")
    assert bad.returncode == 2


def test_help_explains_every_command(cli_env):
    for args in (
        ["--help"],
        ["ingest", "--help"],
        ["events", "list", "--help"],
        ["partitions", "prune", "--help"],
        ["db", "--help"],
    ):
        result = run(cli_env, *args)
        assert result.returncode == 0, args
        assert "Usage" in result.stdout


@pytest.mark.slow
def test_demo_on_a_fresh_data_dir_uses_the_embedded_database(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SCRAPESINK_", "PG"))}
    env.update(NO_COLOR="1", COLUMNS="200")
    result = subprocess.run(
        [*SCRAPESINK, "demo"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert "database: embedded PostgreSQL in data/pgdata" in result.stderr
    assert "inserted 3,060" in result.stdout and "rejected 4" in result.stdout
    assert "3 movies (3 new or changed) sharing 2 actors" in result.stdout
    for hint in ("scrapesink get movies", "scrapesink search movies pacino", "db shell"):
        assert hint in result.stdout
    searched = subprocess.run(
        [*SCRAPESINK, "search", "movies", "pacino"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert "Heat" in searched.stdout and "Irishman" in searched.stdout, searched.stderr
    again = subprocess.run(
        [*SCRAPESINK, "demo"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert "inserted 0, duplicates 3,310" in again.stdout
    assert "3 movies (0 new or changed)" in again.stdout


def test_json_array_broken_midway_keeps_what_came_before(cli_env, database_url, tmp_path):
    text = json.dumps(GOOD[:3])[:-1] + ', {"source": "shop", "id": 99, '  # cut mid-object
    (tmp_path / "broken.json").write_text(text)
    result = run(cli_env, "ingest", str(tmp_path / "broken.json"))
    assert result.returncode == 1
    assert "malformed JSON after item [2]" in result.stderr
    assert "Traceback" not in result.stderr
    assert count(database_url) == 3


def test_log_level_setting_shows_what_happened(cli_env, tmp_path):
    path = write_jsonl(tmp_path / "e.jsonl", GOOD[:1])
    quiet = run(cli_env, "ingest", str(path))
    assert "created partition" not in quiet.stderr
    loud = run({**cli_env, "SCRAPESINK_LOG_LEVEL": "info"}, "ingest", str(path))
    assert loud.returncode == 0
    done = [line for line in log_lines(loud.stderr) if line["event"] == "ingest done"]
    assert len(done) == 1 and (done[0]["read"], done[0]["inserted"]) == (1, 0)


def log_lines(stderr: str) -> list[dict]:
    """The structured log lines among a command's stderr (the rest is its console output)."""
    return [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]


def test_logs_are_json_lines_naming_rejected_records_without_their_payload(cli_env, tmp_path):
    secret = "hunter2-do-not-log"
    path = write_jsonl(
        tmp_path / "e.jsonl",
        [
            GOOD[0],
            {"source": "shop", "id": "bad-1", "timestamp": "yesterday", "token": secret},
            "{broken",
        ],
    )
    env = {**cli_env, "SCRAPESINK_LOG_LEVEL": "info"}
    result = run(env, "ingest", str(path))
    assert result.returncode == 3  # some records rejected
    lines = log_lines(result.stderr)
    assert lines and all({"timestamp", "level", "logger", "event"} <= set(x) for x in lines)
    rejected = [x for x in lines if x["event"] == "record rejected"]
    assert [(x["source"], x["source_id"], x["location"]) for x in rejected] == [
        ("shop", "bad-1", "line 2"),
        (None, None, "line 3"),
    ]
    assert rejected[0]["path"] == "timestamp" and rejected[0]["reason"]
    done = next(x for x in lines if x["event"] == "ingest done")
    assert (done["read"], done["rejected"], done["sources"]) == (3, 2, ["shop"])
    assert secret not in result.stderr
    text = run({**env, "SCRAPESINK_LOG_FORMAT": "console"}, "ingest", str(path))
    assert "record rejected" in text.stderr and not log_lines(text.stderr)


def test_history_needs_no_database(cli_env):
    env = {**cli_env, "SCRAPESINK_DATABASE_URL": "postgresql://x@127.0.0.1:9/none"}
    result = run(env, "db", "history")
    assert result.returncode == 0
    assert "0006 (head)" in result.stdout


def test_list_rejects_a_contains_filter_that_is_not_an_object(cli_env):
    result = run(cli_env, "events", "list", "--contains", "[1]")
    assert result.returncode == 2
    assert "must be a JSON object" in result.stderr


def test_progress_bar_is_drawn_on_a_terminal_only(cli_env, tmp_path):
    import pty

    path = write_jsonl(tmp_path / "e.jsonl", GOOD * 1)
    parent, child = pty.openpty()
    proc = subprocess.Popen(
        [*SCRAPESINK, "ingest", str(path)],
        env={**cli_env, "TERM": "xterm", "NO_COLOR": ""},
        stdout=subprocess.PIPE,
        stderr=child,
        text=True,
    )
    os.close(child)
    chunks = []
    while True:
        try:
            data = os.read(parent, 4096)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    proc.communicate(timeout=60)
    os.close(parent)
    terminal = b"".join(chunks).decode(errors="replace")
    assert proc.returncode == 0
    assert "━" in terminal  # rich drew (and then erased) a live progress bar
    piped = run(cli_env, "ingest", str(path))
    assert "━" not in piped.stderr and "\x1b[" not in piped.stderr  # nothing for logs, pipes


def test_configured_url_never_starts_the_embedded_server(cli_env, data_dir, tmp_path):
    path = write_jsonl(tmp_path / "e.jsonl", GOOD[:2])
    assert run(cli_env, "ingest", str(path)).returncode == 0
    assert not (data_dir / "pgdata").exists()


def test_rejections_are_capped_on_the_terminal_and_kept_whole_in_a_file(cli_env, tmp_path):
    bad = [{"source": "shop", "id": f"b{i}", "timestamp": "yesterday"} for i in range(25)]
    path = write_jsonl(tmp_path / "bad.jsonl", [*GOOD[:2], *bad])
    rejects = tmp_path / "rejects.jsonl"
    result = run(cli_env, "ingest", str(path), "--rejects", str(rejects))
    assert result.returncode == 3
    assert result.stderr.count("rejected line") == 20
    assert "and 5 more rejected — all in" in result.stderr
    kept = [json.loads(line) for line in rejects.read_text().splitlines()]
    assert len(kept) == 25 and kept[0] == {
        "location": "line 3",
        "path": "timestamp",
        "reason": kept[0]["reason"],
    }
    quiet = run(cli_env, "ingest", str(path), "-q")
    assert quiet.returncode == 3
    assert quiet.stdout.strip().count("\n") == 0  # one summary line
    assert "read 27, inserted 0, duplicates 2, rejected 25, pending 0" in quiet.stdout
    assert "rejected line" not in quiet.stderr and "database:" not in quiet.stderr


def test_csv_on_stdin_without_format_is_told_to_pass_it(cli_env):
    result = run(cli_env, "ingest", "-", stdin="source,id,timestamp\nshop,1,2025-05-15T10:00:00Z\n")
    assert result.returncode == 1
    assert "looks like CSV: pass --format csv" in result.stderr
    ok = run(
        cli_env,
        "ingest",
        "-",
        "--format",
        "csv",
        stdin="source,id,timestamp\nshop,c1,2025-05-15T10:00:00Z\n",
    )
    assert ok.returncode == 0, ok.stderr


def test_time_format_reads_the_dates_real_datasets_write(cli_env, tmp_path):
    rows = "source,id,day\nkaggle,1,2012/01/01\nkaggle,2,2012/01/02\n"
    (tmp_path / "k.csv").write_text(rows)
    strict = run(cli_env, "ingest", str(tmp_path / "k.csv"), "--time-field", "day")
    assert strict.returncode == 3 and "expected ISO 8601" in strict.stderr
    auto = run(
        cli_env, "ingest", str(tmp_path / "k.csv"), "--time-field", "day", "--time-format", "auto"
    )
    assert auto.returncode == 0, auto.stderr
    pattern = run(
        cli_env,
        "ingest",
        str(tmp_path / "k.csv"),
        "--time-field",
        "day",
        "--time-format",
        "%Y/%m/%d",
        "--source",
        "again",
    )
    assert pattern.returncode == 0, pattern.stderr
    got = json.loads(run(cli_env, "events", "get", "kaggle", "1").stdout)
    assert got["occurred_at"] == "2012-01-01T00:00:00+00:00"


def test_rejects_file_that_is_the_input_is_refused_before_it_is_emptied(cli_env, tmp_path):
    path = write_jsonl(tmp_path / "e.jsonl", [GOOD[0], {"bad": 1}])
    before = path.read_bytes()
    result = run(cli_env, "ingest", str(path), "--rejects", str(tmp_path / "." / "e.jsonl"))
    assert result.returncode == 1 and "is the input file" in result.stderr
    assert path.read_bytes() == before  # the user's data is still there

"""Migrations, schema checks, the embedded server and unreachable databases."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from scrapesink.adapters.postgres.database import Database, PoolOptions
from scrapesink.adapters.postgres.migrate import Migrator
from scrapesink.bootstrap import bootstrap
from scrapesink.config import Settings
from scrapesink.errors import SchemaError, TransientStorageError


def tables(url):
    with psycopg.connect(url) as conn:
        return {
            r[0]
            for r in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
            ).fetchall()
        }


def test_upgrade_and_downgrade_round_trip(empty_database_url):
    migrator = Migrator(Database(empty_database_url, PoolOptions()))
    assert migrator.current() is None
    before, after = migrator.upgrade()
    assert (before, after) == (None, migrator.head())
    assert {"raw_events", "raw_event_keys", "alembic_version"} <= tables(empty_database_url)
    assert migrator.upgrade() == (after, after)  # idempotent
    migrator.downgrade("base")
    assert migrator.current() is None
    assert not {"raw_events", "raw_event_keys"} & tables(empty_database_url)
    migrator.upgrade()
    assert migrator.is_current()
    assert "raw_events" in migrator.history()


def test_external_server_without_schema_is_refused_with_what_to_run(empty_database_url, tmp_path):
    with pytest.raises(SchemaError, match="run `scrapesink db upgrade`"):
        bootstrap(Settings(database_url=empty_database_url, data_dir=tmp_path))
    assert "raw_events" not in tables(empty_database_url)  # nothing was applied behind our back


def test_unreachable_server_is_one_clear_transient_error(tmp_path):
    settings = Settings(
        database_url="postgresql://nobody@127.0.0.1:9/none", data_dir=tmp_path, connect_timeout=2
    )
    with pytest.raises(TransientStorageError) as info:
        bootstrap(settings)
    assert (
        "cannot connect to PostgreSQL at postgresql://nobody@127.0.0.1:9/none" in info.value.message
    )
    assert "\n" not in info.value.message


INGEST_SCRIPT = """
import sys, scrapesink
n = int(sys.argv[1])
with scrapesink.open() as sink:
    records = [{"source": "p", "id": i, "timestamp": "2025-05-15T10:00:00Z", "writer": n}
               for i in range(n * 500, n * 500 + 1000)]
    summary = sink.write_events(records)
    print(summary.inserted, summary.duplicates, sink.database)
"""


@pytest.mark.slow
def test_embedded_database_is_shared_by_two_processes_at_once(tmp_path: Path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SCRAPESINK_", "PG"))}
    env["SCRAPESINK_DATA_DIR"] = str(tmp_path / "data")
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", INGEST_SCRIPT, str(n)],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in (0, 1)
    ]
    outputs = [p.communicate(timeout=180) for p in procs]
    for proc, (out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err
        assert "embedded PostgreSQL" in out
    inserted = sum(int(out.split()[0]) for out, _ in outputs)
    duplicates = sum(int(out.split()[1]) for out, _ in outputs)
    # Keys 500..999 were sent by both, and the copy accepted first holds each: when it was
    # delivered second it took the key over, so both writers were told "stored" for it.
    assert inserted + duplicates == 2000 and inserted >= 1500, (inserted, duplicates)
    # a third process joins the same data directory and sees everything
    check = subprocess.run(
        [
            sys.executable,
            "-c",
            "import scrapesink\n"
            "with scrapesink.open() as s: print(sum(d.events for d in s.event_stats()))",
        ],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert check.returncode == 0, check.stderr
    assert check.stdout.strip() == "1500"
    assert (tmp_path / "data" / "pgdata" / "PG_VERSION").exists()
    agree = subprocess.run(
        [sys.executable, "-m", "scrapesink", "verify"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert agree.returncode == 0, agree.stdout + agree.stderr  # both stores hold the same copy


def test_head_constant_matches_alembic(empty_database_url):
    migrator = Migrator(Database(empty_database_url, PoolOptions()))
    assert migrator.head() == migrator.alembic_head()


def test_a_key_name_in_use_is_refused_until_that_key_is_revoked(app):
    import threading

    from scrapesink.errors import Conflict

    keys = app.api_keys
    keys.create("reader", ["read"])
    with pytest.raises(Conflict, match="'reader' exists already"):
        keys.create("reader", ["ingest"])
    keys.revoke("reader")
    keys.create("reader", ["read"])  # the old one is revoked: the name is free again
    # Concurrent creates of one new name: exactly one wins.
    results: list[str] = []

    def create() -> None:
        try:
            keys.create("twice", ["read"])
            results.append("created")
        except Conflict:
            results.append("refused")

    threads = [threading.Thread(target=create) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == ["created", "refused", "refused", "refused"]
    assert [k.name for k in keys.list()].count("twice") == 1


REOPEN_SCRIPT = """
import sys, time
import scrapesink
first = scrapesink.open()   # open, close, open again in one process (serve does: its first key)
first.close()
with scrapesink.open() as sink:
    print("ready", flush=True)
    sys.stdin.readline()        # the holder process has exited meanwhile
    print(sum(d.events for d in sink.event_stats()), flush=True)
"""


def test_a_process_that_reopens_the_embedded_server_still_holds_it(tmp_path: Path):
    # pgserver took a re-opening process off its list of holders for good, so the last other
    # process to exit stopped the server under it.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SCRAPESINK_", "PG"))}
    env["SCRAPESINK_DATA_DIR"] = str(tmp_path / "data")
    holder = subprocess.Popen(
        [sys.executable, "-c", "import scrapesink, sys\ns = scrapesink.open()\nprint('up', "
         "flush=True)\nsys.stdin.readline()\ns.close()"],
        env=env, cwd=tmp_path, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert holder.stdout is not None and holder.stdout.readline().strip() == "up"
    reopener = subprocess.Popen(
        [sys.executable, "-c", REOPEN_SCRIPT],
        env=env, cwd=tmp_path, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert reopener.stdout is not None and reopener.stdout.readline().strip() == "ready"
        holder.communicate("\n", timeout=120)  # the holder closes and exits
        out, err = reopener.communicate("\n", timeout=120)
        assert reopener.returncode == 0, err
        assert out.strip() == "0"  # its database still answered
    finally:
        for proc in (holder, reopener):
            if proc.poll() is None:
                proc.kill()

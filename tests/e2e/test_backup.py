"""Backup and restore with real PostgreSQL and files: round trip, damage refused, disk full."""

from __future__ import annotations

import json
import resource
import signal
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import pytest

from tests.conftest import drop_database
from tests.e2e.test_cli_ingest import run, write_jsonl
from tests.support import SCRAPESINK

EVENTS = [
    {"source": "shop", "id": i, "timestamp": f"2026-11-{10 + i % 5}T10:00:00Z", "p": "x" * i}
    for i in range(40)
]
MOVIES = [
    {"url": f"https://m/{i}", "title": f"Movie {i}", "actors": [{"name": f"A{i % 3}"}]}
    for i in range(10)
]
TABLES = {
    "raw_events": "source, source_id, occurred_at, payload, processed",
    "raw_event_keys": "source, source_id, occurred_at",
    "movies": "url, title, content_hash",
    "actors": "name",
    "movie_actor": "movies_id, actors_id",
    "etl_runs": "id, status, records_stored",
}


def snapshot(url: str, data_dir: Path) -> dict[str, object]:
    """What must survive a round trip: table contents and every data file's bytes."""
    state: dict[str, object] = {}
    with psycopg.connect(url) as conn:
        for table, columns in TABLES.items():
            rows = conn.execute(f"SELECT {columns} FROM {table} ORDER BY {columns}").fetchall()  # noqa: S608
            state[table] = rows
    for path in sorted(data_dir.rglob("*")):
        relative = path.relative_to(data_dir)
        skipped = relative.parts[0] in ("backups", "pgdata")
        if path.is_file() and path.suffix == ".csv" and not skipped:
            state[str(relative)] = path.read_bytes()
    return state


@pytest.fixture
def filled(cli_env, tmp_path, database_url, data_dir):
    events = write_jsonl(tmp_path / "e.jsonl", EVENTS)
    assert run(cli_env, "ingest", str(events), "--job", "j").returncode == 0
    movies = write_jsonl(tmp_path / "m.jsonl", MOVIES)
    assert run(cli_env, "ingest", str(movies), "--model", "movies").returncode == 0
    before = snapshot(database_url, data_dir)
    assert len(before["raw_events"]) == 40 and len(before["movies"]) == 10  # type: ignore[arg-type]
    return before


def backup_id(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    return result.stdout.split()[1]


def wipe(server_url: str, url: str, data_dir: Path) -> None:
    name = urlsplit(url).path.lstrip("/")
    drop_database(server_url, name)
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    for path in sorted(data_dir.rglob("*"), reverse=True):
        relative = path.relative_to(data_dir)
        if relative.parts[0] == "backups":
            continue
        path.unlink() if path.is_file() else path.rmdir()


def test_backup_wipe_restore_gives_identical_data(
    cli_env, filled, server_url, database_url, data_dir
):
    made = backup_id(run(cli_env, "backup"))
    listed = [json.loads(x) for x in run(cli_env, "backup", "list", "--json").stdout.splitlines()]
    assert [m["id"] for m in listed] == [made]
    assert set(listed[0]["files"]) == {"database.dump", "files.tar"}
    assert all(len(f["sha256"]) == 64 for f in listed[0]["files"].values())
    assert run(cli_env, "backup", "verify", made).returncode == 0

    wipe(server_url, database_url, data_dir)
    assert not (data_dir / "movies.csv").exists()
    restored = run(cli_env, "restore", made)
    assert restored.returncode == 0, restored.stderr
    assert snapshot(database_url, data_dir) == filled
    # the restored installation works: a re-ingest is all duplicates
    again = run(cli_env, "ingest", str(write_jsonl(data_dir.parent / "again.jsonl", EVENTS)))
    assert again.returncode == 0 and "inserted" in again.stdout
    assert snapshot(database_url, data_dir)["raw_events"] == filled["raw_events"]

    refused = run(cli_env, "restore", made)
    assert refused.returncode == 1 and "the database is not empty" in refused.stderr
    forced = run(cli_env, "restore", made, "--force")
    assert forced.returncode == 0, forced.stderr
    assert snapshot(database_url, data_dir) == filled


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_damaged_backup_is_refused_and_nothing_changes(
    cli_env, filled, database_url, data_dir, damage
):
    made = backup_id(run(cli_env, "backup"))
    target = data_dir / "backups" / made / ("database.dump" if damage == "flip" else "files.tar")
    raw = bytearray(target.read_bytes())
    if damage == "flip":
        raw[len(raw) // 2] ^= 0xFF
        target.write_bytes(bytes(raw))
    else:
        target.write_bytes(bytes(raw[: len(raw) // 2]))
    verified = run(cli_env, "backup", "verify", made)
    assert verified.returncode == 1
    assert ("SHA-256" if damage == "flip" else "bytes") in verified.stderr
    refused = run(cli_env, "restore", made, "--force")
    assert refused.returncode == 1 and "damaged, nothing was restored" in refused.stderr
    assert snapshot(database_url, data_dir) == filled
    outside = run(cli_env, "restore", f"../backups/{made}", "--force")  # an id, not a path
    assert outside.returncode == 1 and "no backup" in outside.stderr


def test_backup_into_a_full_or_unusable_directory_leaves_nothing(cli_env, filled, tmp_path):
    def tiny_disk() -> None:  # every file this process (and pg_dump) writes stops at 4 kB
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))

    full_dir = tmp_path / "full"
    result = subprocess.run(
        [*SCRAPESINK, "backup"],
        env={**cli_env, "SCRAPESINK_BACKUP_DIR": str(full_dir)},
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=tiny_disk,
    )
    assert result.returncode == 1
    assert "error:" in result.stderr and "Traceback" not in result.stderr
    assert list(full_dir.iterdir()) == []  # no partial set left behind
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    unusable = run({**cli_env, "SCRAPESINK_BACKUP_DIR": str(blocker / "sub")}, "backup")
    assert unusable.returncode == 1 and "cannot write backups" in unusable.stderr


def test_retention_keeps_the_newest(cli_env, filled, data_dir):
    made = [backup_id(run(cli_env, "backup")) for _ in range(3)]
    pruned = run(cli_env, "backup", "prune", "--keep-last", "1")
    assert pruned.returncode == 0 and "2 set(s) removed" in pruned.stdout
    assert [p.name for p in (data_dir / "backups").iterdir()] == [made[-1]]
    kept = run(cli_env, "backup", "--keep", "30d")
    assert kept.returncode == 0 and "removed" not in kept.stdout
    assert len(list((data_dir / "backups").iterdir())) == 2
    # the options before the command, as `backup --help` shows them
    before = run(cli_env, "backup", "--keep-last", "1", "prune")
    assert before.returncode == 0 and "1 set(s) removed" in before.stdout, before.stdout
    (latest,) = [p.name for p in (data_dir / "backups").iterdir()]
    assert "is whole" in run(cli_env, "backup", "verify", "latest").stdout
    assert f"backup {latest} is whole" in run(cli_env, "backup", "verify", latest[:12]).stdout
    second = backup_id(run(cli_env, "backup"))
    common = next(i for i in range(len(second)) if second[i] != latest[i])
    ambiguous = run(cli_env, "backup", "verify", latest[:common])
    assert ambiguous.returncode == 1 and "give more of the id" in ambiguous.stderr
    nothing = run(cli_env, "backup", "prune")
    assert nothing.returncode == 2 and "say what to keep" in nothing.stderr


def _tamper(backup: Path, member: str, data: bytes) -> None:
    """Add a member to files.tar and recompute the manifest, as an attacker could."""
    import hashlib
    import io
    import tarfile

    with tarfile.open(backup / "files.tar", "a") as tar:
        info = tarfile.TarInfo(member)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    manifest = json.loads((backup / "manifest.json").read_text())
    raw = (backup / "files.tar").read_bytes()
    manifest["files"]["files.tar"] = {"bytes": len(raw), "sha256": hashlib.sha256(raw).hexdigest()}
    (backup / "manifest.json").write_text(json.dumps(manifest))


def test_a_tampered_backup_is_refused_whole_and_the_target_stays_as_it_was(
    cli_env, filled, server_url, database_url, data_dir, tmp_path
):
    made = backup_id(run(cli_env, "backup"))
    _tamper(data_dir / "backups" / made, "../../../outside.txt", b"escaped")
    verified = run(cli_env, "backup", "verify", made)
    assert verified.returncode == 1 and "outside the data directory" in verified.stderr
    wipe(server_url, database_url, data_dir)
    refused = run(cli_env, "restore", made)
    assert refused.returncode == 1 and "damaged, nothing was restored" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert not (tmp_path.parent / "outside.txt").exists()
    assert not list(tmp_path.rglob("outside.txt"))
    with psycopg.connect(database_url) as conn:  # the database was not loaded half-way
        tables = conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
        assert tables.fetchone() == (0,)


def test_with_a_backup_key_sets_are_signed_and_unsigned_or_changed_ones_refused(
    cli_env, filled, data_dir
):
    unsigned = backup_id(run(cli_env, "backup"))
    keyed = {**cli_env, "SCRAPESINK_BACKUP_KEY": "correct horse battery staple"}
    signed = backup_id(run(keyed, "backup"))
    assert "hmac" in json.loads((data_dir / "backups" / signed / "manifest.json").read_text())
    assert run(keyed, "backup", "verify", signed).returncode == 0
    refused = run(keyed, "backup", "verify", unsigned)
    assert refused.returncode == 1 and "not signed" in refused.stderr
    _tamper(data_dir / "backups" / signed, "extra.txt", b"x")  # checksums recomputed
    changed = run(keyed, "backup", "verify", signed)
    assert changed.returncode == 1 and "signature does not match" in changed.stderr
    other = {**cli_env, "SCRAPESINK_BACKUP_KEY": "another key"}
    assert run(other, "backup", "verify", unsigned).returncode == 1

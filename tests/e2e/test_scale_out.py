"""Past one machine, as processes: producers publish to a Redis stream, workers deliver.

Each test has a redis-server of its own (AOF, appendfsync always) so it can be killed with -9
and started again; workers are real `scrapesink worker` processes killed with SIGKILL.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import httpx
import psycopg
import pytest

from tests.conftest import env_for
from tests.support import (
    SCRAPESINK,
    ApiServer,
    RedisServer,
    StoppablePostgres,
    free_port,
    fresh_db,
)

PRODUCERS = 4
EVENTS_EACH = 50_000
MOVIES_EACH = 5_000


def write_inputs(directory: Path) -> list[tuple[Path, Path]]:
    """Per producer an events file and a movies file; half of each producer's keys are also
    the next producer's (overlapping keys)."""
    files = []
    for p in range(PRODUCERS):
        events, movies = directory / f"events-{p}.jsonl", directory / f"movies-{p}.jsonl"
        start = p * EVENTS_EACH // 2
        with events.open("w") as out:
            for i in range(start, start + EVENTS_EACH):
                record = {"source": f"shop-{i % 3}", "source_id": f"e{i}", "payload": {"p": p}}
                record["occurred_at"] = f"2026-12-0{1 + i % 3}T10:00:00Z"
                out.write(json.dumps(record) + "\n")
        start = p * MOVIES_EACH // 2
        with movies.open("w") as out:
            for i in range(start, start + MOVIES_EACH):
                movie = {"url": f"https://m/{i}", "title": f"Movie {i} by {p}", "year": 1990 + p}
                movie["actors"] = [{"name": f"Actor {i % 50}", "role": "lead"}]
                out.write(json.dumps(movie) + "\n")
        files.append((events, movies))
    return files


class Workers:
    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.env = env
        self.log_dir = log_dir
        self.running: dict[str, subprocess.Popen[bytes]] = {}
        self.logs: list[IO[bytes]] = []
        self.started = 0

    def start(self, sink: str, *args: str) -> str:
        self.started += 1
        name = f"{sink}-{self.started}"
        log = open(self.log_dir / f"{name}.log", "wb")  # noqa: SIM115 - closed by close()
        self.logs.append(log)
        self.running[name] = subprocess.Popen(
            [*SCRAPESINK, "worker", "--sink", sink, "--name", name, *args],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        return name

    def said(self, name: str) -> str:
        return (self.log_dir / f"{name}.log").read_text(errors="replace")

    def check(self) -> None:
        """Every worker still runs (one that exited is said with its log)."""
        for name, process in self.running.items():
            if process.poll() is not None:
                raise AssertionError(f"{name} exited {process.returncode}:\n{self.said(name)}")

    def kill(self, name: str) -> None:
        process = self.running.pop(name)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)

    def stop_all(self) -> None:
        for name, process in list(self.running.items()):
            process.terminate()
            assert process.wait(timeout=60) == 0, self.said(name)
        self.running.clear()

    def close(self) -> None:
        for process in self.running.values():
            process.kill()
            process.wait(timeout=30)
        self.running.clear()
        for log in self.logs:
            log.close()


def status(env: dict[str, str]) -> dict[str, object]:
    done = subprocess.run(
        [*SCRAPESINK, "status", "--json"], env=env, capture_output=True, text=True, timeout=120
    )
    return json.loads(done.stdout)


def wait_drained(env: dict[str, str], timeout: float = 240) -> None:
    """Until every group of every stream has delivered and acknowledged everything."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        groups = status(env).get("groups") or []
        assert isinstance(groups, list)
        if groups and all((g["lag"] or 0) == 0 and g["pending"] == 0 for g in groups):
            return
        time.sleep(1)
    raise AssertionError(f"not drained: {status(env)}")


def scalar(url: str, query: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(query).fetchone()
    assert row is not None
    return int(row[0])


def csv_rows(data_dir: Path, pattern: str) -> list[str]:
    rows = []
    for path in sorted(data_dir.glob(pattern)):
        text = path.read_text(encoding="utf-8")
        assert text.endswith("\n"), f"torn last line in {path}"
        rows += text.splitlines()[1:]
    return rows


def verify(env: dict[str, str]) -> None:
    done = subprocess.run(
        [*SCRAPESINK, "verify"], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_producers_and_workers_killed_mid_batch_store_every_record_once(
    database_url: str,
    data_dir: Path,
    redis_server: RedisServer,
    tmp_path: Path,
    launched: list[Workers],
) -> None:
    env = env_for(
        database_url,
        data_dir,
        SCRAPESINK_JOURNAL_URL=redis_server.url,
        SCRAPESINK_WORKER_CLAIM_IDLE="1",
        SCRAPESINK_WORKER_BATCH="20",  # small reads: a kill lands mid-way through many
        SCRAPESINK_LOG_LEVEL="INFO",  # a worker says when it takes entries over
    )
    workers = Workers(env, tmp_path)
    launched.append(workers)
    pg = [workers.start("postgres") for _ in range(3)]
    csv = workers.start("csv")
    producers = []
    for events, movies in write_inputs(tmp_path):
        script = f"{' '.join(SCRAPESINK)} ingest {events} --quiet"
        script += f" && {' '.join(SCRAPESINK)} ingest {movies} --model movies --quiet"
        producers.append(subprocess.Popen(script, shell=True, env=env))
    rng = random.Random(7)
    for _ in range(3):  # a PostgreSQL worker killed mid-batch, three times, a new one started
        time.sleep(rng.uniform(1.0, 2.0))
        victim = pg.pop(rng.randrange(len(pg)))
        workers.kill(victim)
        pg.append(workers.start("postgres"))
    time.sleep(rng.uniform(0.5, 1.5))
    workers.kill(csv)  # and the CSV worker
    workers.start("csv")
    for producer in producers:
        assert producer.wait(timeout=300) == 0
    wait_drained(env)
    workers.stop_all()

    logs = "".join(p.read_text() for p in tmp_path.glob("postgres-*.log"))
    assert "entries taken over" in logs  # the killed workers' entries went to the others
    events_total = EVENTS_EACH // 2 * (PRODUCERS + 1)
    movies_total = MOVIES_EACH // 2 * (PRODUCERS + 1)
    assert scalar(database_url, "SELECT count(*) FROM raw_events") == events_total
    assert scalar(database_url, "SELECT count(*) FROM movies") == movies_total
    rows = csv_rows(data_dir, "raw_events/*/*.csv")
    assert len(rows) == len(set(rows)) == events_total  # no torn line, no duplicate
    verify(env)


PRODUCER = textwrap.dedent(
    """
    import os, sys
    from scrapesink import open as sink_open
    from scrapesink.errors import ScrapesinkError

    acked = open(sys.argv[1], "a")
    with sink_open() as sink:
        for batch in range(int(sys.argv[2])):
            events = [
                {"source": "s", "source_id": f"{batch}-{i}", "occurred_at": "2026-12-01T00:00:00Z",
                 "payload": {"batch": batch}}
                for i in range(50)
            ]
            try:
                sink.write_events(events)
            except ScrapesinkError as exc:
                print("not accepted:", exc.message, file=sys.stderr, flush=True)
                continue
            acked.write(f"{batch}\\n")  # only once write_events returned: acknowledged
            acked.flush()
            os.fsync(acked.fileno())
    """
)


def test_redis_killed_mid_run_loses_nothing_acknowledged(
    database_url: str,
    data_dir: Path,
    redis_server: RedisServer,
    tmp_path: Path,
    launched: list[Workers],
) -> None:
    env = env_for(database_url, data_dir, SCRAPESINK_JOURNAL_URL=redis_server.url)
    acked = tmp_path / "acked.txt"
    producer = subprocess.Popen(
        [sys.executable, "-c", PRODUCER, str(acked), "400"],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while (not acked.exists() or len(acked.read_text().split()) < 50) and (
        time.monotonic() < deadline
    ):
        time.sleep(0.05)
    redis_server.kill()  # kill -9 mid-run: only the AOF survives
    time.sleep(0.5)
    redis_server.start()
    _, errors = producer.communicate(timeout=300)
    assert producer.returncode == 0, errors
    batches = {int(b) for b in acked.read_text().split()}
    assert len(batches) < 400 and "not accepted" in errors  # the kill was felt
    workers = Workers(env, tmp_path)
    launched.append(workers)
    workers.start("all")
    wait_drained(env)
    workers.stop_all()
    with psycopg.connect(database_url) as conn:
        stored = {
            int(row[0])
            for row in conn.execute("SELECT DISTINCT split_part(source_id, '-', 1) FROM raw_events")
        }
    assert batches <= stored  # every acknowledged batch is stored
    verify(env)


def test_postgres_stopped_its_group_lags_csv_goes_on(
    stoppable: StoppablePostgres,
    data_dir: Path,
    redis_server: RedisServer,
    tmp_path: Path,
    launched: list[Workers],
) -> None:
    url = fresh_db(stoppable.url, "scale_out")
    env = env_for(
        url,
        data_dir,
        SCRAPESINK_JOURNAL_URL=redis_server.url,
        SCRAPESINK_RETRY_SECONDS="1",
        SCRAPESINK_COOLDOWN_SECONDS="1",
    )
    workers = Workers(env, tmp_path)
    launched.append(workers)
    port = free_port()
    workers.start("all", "--metrics-port", str(port))
    (events, _movies), *_ = write_inputs(tmp_path)
    stoppable.stop()
    try:
        # the producer needs no database: it only publishes
        done = subprocess.run(
            [*SCRAPESINK, "ingest", str(events), "--quiet"], env=env, capture_output=True
        )
        assert done.returncode == 0, done.stderr
        deadline = time.monotonic() + 120
        while len(csv_rows(data_dir, "raw_events/*/*.csv")) < EVENTS_EACH:
            workers.check()
            if time.monotonic() > deadline:
                said = "\n".join(workers.said(name) for name in workers.running)
                raise AssertionError(f"CSV did not go on without PostgreSQL:\n{said}")
            time.sleep(0.5)
        groups = {g["group"]: g for g in status(env)["groups"] if g["kind"] == "events"}  # type: ignore[union-attr]
        lagging = groups["postgres"]
        assert (lagging["lag"] or 0) + lagging["pending"] > 0
        health = subprocess.run([*SCRAPESINK, "health"], env=env, capture_output=True)
        assert health.returncode != 0
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        assert (
            'scrapesink_records_total{kind="events",name="shop-0",outcome="stored",sink="csv"}'
            in metrics
        )
        assert 'scrapesink_stream_group_lag{group="csv",stream="events"} 0.0' in metrics
    finally:
        stoppable.start()
    wait_drained(env)
    workers.stop_all()
    assert scalar(url, "SELECT count(*) FROM raw_events") == EVENTS_EACH
    verify(env)


@pytest.fixture
def launched() -> Iterator[list[Workers]]:
    """Workers a failed test left running are killed when it ends."""
    groups: list[Workers] = []
    yield groups
    for group in groups:
        group.close()


def api_event(i: int) -> dict[str, object]:
    return {"source": "api", "source_id": str(i), "occurred_at": "2026-12-01T00:00:00Z",
            "payload": {"i": i}}  # fmt: skip


def test_serve_answers_each_record_with_what_the_workers_did(
    database_url: str,
    data_dir: Path,
    redis_server: RedisServer,
    tmp_path: Path,
    launched: list[Workers],
) -> None:
    shared = {"SCRAPESINK_JOURNAL_URL": redis_server.url, "SCRAPESINK_WORKER_OUTCOME_WAIT": "2"}
    server = ApiServer(database_url, data_dir, "--no-auth", **shared)
    try:
        with server.client() as client:
            # no worker runs: published (acknowledged), pending after the bounded wait
            early = client.post("/api/v1/events", json=[api_event(1), api_event(2)])
            assert early.status_code == 202, early.text
            assert [r["status"] for r in early.json()["results"]] == ["pending", "pending"]
            workers = Workers(env_for(database_url, data_dir, **shared), tmp_path)
            launched.append(workers)
            workers.start("all")
            wait_drained(workers.env)
            late = client.post("/api/v1/events", json=[api_event(1), api_event(3)])
            assert late.status_code == 200, late.text
            body = late.json()
            assert [r["status"] for r in body["results"]] == ["duplicate", "stored"]
            assert body["sinks"]["csv"]["stored"] == 1 and body["sinks"]["postgres"]["stored"] == 1
            workers.stop_all()
    finally:
        server.stop()
    assert scalar(database_url, "SELECT count(*) FROM raw_events") == 3


def test_a_csv_worker_refuses_a_second_home_for_the_csv_files(
    database_url: str, data_dir: Path, redis_server: RedisServer, tmp_path: Path
) -> None:
    shared = {"SCRAPESINK_JOURNAL_URL": redis_server.url}
    first = subprocess.Popen(
        [*SCRAPESINK, "worker", "--sink", "csv"],
        env=env_for(database_url, data_dir, **shared),
        stderr=subprocess.PIPE,
    )
    try:
        assert first.stderr is not None
        assert b"delivering" in first.stderr.readline() + first.stderr.readline()
        other = env_for(database_url, tmp_path / "elsewhere", **shared)
        refused = subprocess.run(
            [*SCRAPESINK, "worker", "--sink", "csv"], env=other, capture_output=True, text=True
        )
        assert refused.returncode == 1
        assert "live in" in refused.stderr and "--csv-here" in refused.stderr
        assert "Traceback" not in refused.stderr
    finally:
        first.terminate()
        first.wait(timeout=60)
        assert first.stderr is not None
        first.stderr.close()

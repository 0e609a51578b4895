"""Past one machine, as processes: producers publish to a Redis stream, workers deliver.

Each test has a redis-server of its own (AOF, appendfsync always) so it can be killed with -9
and started again; workers are real `scrapesink worker` processes killed with SIGKILL.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO

import httpx
import psycopg
import pytest

from tests.conftest import env_for
from tests.support import (
    SCRAPESINK,
    ApiServer,
    Namespace,
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
    """``scrapesink worker`` processes, each logging to ``<log_dir>/<tag><sink>-<n>.log`` (its
    consumer name), run through ``prefix`` (a network namespace's ``ip netns exec``)."""

    def __init__(
        self, env: dict[str, str], log_dir: Path, *, prefix: Sequence[str] = (), tag: str = ""
    ) -> None:
        self.env = env
        self.log_dir = log_dir
        self.prefix = list(prefix)
        self.tag = tag
        self.running: dict[str, subprocess.Popen[bytes]] = {}
        self.logs: list[IO[bytes]] = []
        self.started = 0

    def start(self, sink: str, *args: str) -> str:
        self.started += 1
        name = f"{self.tag}{sink}-{self.started}"
        log = open(self.log_dir / f"{name}.log", "wb")  # noqa: SIM115 - closed by close()
        self.logs.append(log)
        self.running[name] = subprocess.Popen(
            [*self.prefix, *SCRAPESINK, "worker", "--sink", sink, "--name", name, *args],
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
        for process in self.running.values():
            process.terminate()
        for name, process in self.running.items():
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
    from pathlib import Path
    from scrapesink import open as sink_open
    from scrapesink.errors import ScrapesinkError

    # acked file, source, batches to write; then until a stop file exists
    acked, source, batches = open(sys.argv[1], "a"), sys.argv[2], int(sys.argv[3])
    stop = Path(sys.argv[4]) if len(sys.argv) > 4 else None
    with sink_open() as sink:
        batch = 0
        while batch < batches or (stop is not None and not stop.exists()):
            batch += 1
            events = [
                {"source": source, "source_id": f"{batch}-{i}",
                 "occurred_at": "2026-12-01T00:00:00Z", "payload": {"batch": batch}}
                for i in range(20)
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
        [sys.executable, "-c", PRODUCER, str(acked), "s", "400"],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for(lambda: len(acked_batches(acked)) >= 50, "the producer started")
    redis_server.kill()  # kill -9 mid-run: only the AOF survives
    time.sleep(0.5)
    redis_server.start()
    _, errors = producer.communicate(timeout=300)
    assert producer.returncode == 0, errors
    batches = acked_batches(acked)
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
    name = workers.start("all", "--metrics-port", str(port))
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
    # the outage is over: the worker's last line does not say its error any more
    assert "last error" not in workers.said(name).strip().splitlines()[-1]


def test_a_worker_started_while_redis_is_down_waits_for_it(
    database_url: str,
    data_dir: Path,
    redis_server: RedisServer,
    tmp_path: Path,
    launched: list[Workers],
) -> None:
    # a supervisor (systemd, a Procfile) starts workers in any order: one that finds Redis
    # down waits for it, as a running one does, and delivers once it answers (it exited 1)
    env = env_for(database_url, data_dir, SCRAPESINK_JOURNAL_URL=redis_server.url)
    redis_server.kill()
    workers = Workers(env, tmp_path)
    launched.append(workers)
    name = workers.start("all")
    wait_for(lambda: workers.check() or "waiting for Redis" in workers.said(name), "waiting")
    time.sleep(3)  # more than one attempt
    workers.check()
    redis_server.start()
    events = tmp_path / "events.jsonl"
    events.write_text("".join(json.dumps(api_event(i)) + "\n" for i in range(100)))
    done = subprocess.run([*SCRAPESINK, "ingest", str(events), "--quiet"], env=env)
    assert done.returncode == 0
    wait_drained(env)
    workers.stop_all()
    assert scalar(database_url, "SELECT count(*) FROM raw_events") == 100
    assert len(csv_rows(data_dir, "raw_events/*/*.csv")) == 100
    assert workers.said(name).count("waiting for Redis") == 1  # said once, not per attempt


def test_a_worker_started_while_postgres_is_down_says_its_records_wait(
    data_dir: Path, redis_server: RedisServer, tmp_path: Path, launched: list[Workers]
) -> None:
    env = env_for("postgresql://x@127.0.0.1:9/db", data_dir, SCRAPESINK_CONNECT_TIMEOUT="2")
    workers = Workers({**env, "SCRAPESINK_JOURNAL_URL": redis_server.url}, tmp_path)
    launched.append(workers)
    name = workers.start("postgres")
    wait_for(lambda: workers.check() or "delivering" in workers.said(name), "started")
    first = workers.said(name).splitlines()[0]
    assert "cannot connect to PostgreSQL at postgresql://x@127.0.0.1:9/db" in first
    # a worker journals nothing: it does not say what a producer says
    assert first.endswith("its records wait in the stream until it is back"), first
    workers.stop_all()


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
            # Redis gone: nothing is acknowledged, and the answer names the journal (it blamed
            # the database, which was up)
            redis_server.kill()
            refused = client.post("/api/v1/events", json=[api_event(4)])
            assert refused.status_code == 503, refused.text
            assert refused.json()["message"] == (
                "the shared journal (Redis) did not answer; see the server log"
            )
            read = client.get("/api/v1/events/out/0-1")  # the database answers meanwhile
            assert read.status_code == 404, read.text
    finally:
        server.stop()
    assert scalar(database_url, "SELECT count(*) FROM raw_events") == 3
    assert "Redis at 127.0.0.1" in server.log.read_text()  # the cause, for the operator


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


@pytest.fixture
def hosts() -> Iterator[tuple[Namespace, Namespace]]:
    """Two hosts of the test's own (network namespaces), for producers and for workers."""
    tag = f"ss{os.getpid() % 100_000}"
    subnet = os.getpid() % 120 * 2
    if os.geteuid() != 0:  # CI runs as root; elsewhere the other tests cover the same paths
        pytest.skip("network namespaces (ip netns add) need root")
    made: list[Namespace] = []
    try:
        for i, role in enumerate("pw"):
            made.append(Namespace(f"{tag}{role}", subnet + i))
        yield made[0], made[1]
    finally:
        for namespace in made:
            namespace.close()


def far_held(url: str) -> int:
    """Raw-event entries pending with a far worker, in either group."""
    import redis

    from scrapesink.adapters.redis_streams import stream_key

    client = redis.Redis.from_url(url)
    try:
        summaries = [client.xpending(stream_key("events"), g) for g in ("postgres", "csv")]
    finally:
        client.close()
    return sum(
        int(c["pending"])
        for summary in summaries
        for c in summary["consumers"]
        if c["name"].startswith(b"far-")
    )


def acked_batches(path: Path) -> set[int]:
    return {int(b) for b in path.read_text().split()} if path.exists() else set()


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def test_a_link_to_redis_cut_and_restored_loses_and_doubles_nothing(
    stoppable: StoppablePostgres,
    hosts: tuple[Namespace, Namespace],
    data_dir: Path,
    tmp_path: Path,
    launched: list[Workers],
) -> None:
    # Producers on one host, two PostgreSQL workers and the CSV writer on another, one more
    # PostgreSQL worker and a standby CSV worker beside Redis. The workers' link is cut for
    # longer than the claim period: the workers beside Redis take their entries and the CSV
    # lease over, while the cut-off ones may still commit (PostgreSQL and the files are not
    # behind the cut); then the producers' link is cut, and both come back.
    producers, far = hosts
    redis_server = RedisServer(
        tmp_path / "redis", bind=("127.0.0.1", producers.host_ip, far.host_ip)
    )
    try:
        url = fresh_db(stoppable.url, "netns")
        common = {"SCRAPESINK_WORKER_CLAIM_IDLE": "2", "SCRAPESINK_LOG_LEVEL": "INFO"}
        env = env_for(url, data_dir, SCRAPESINK_JOURNAL_URL=redis_server.url, **common)
        far_env = {**env, "SCRAPESINK_JOURNAL_URL": redis_server.url_at(far.host_ip)}
        producer_env = {**env, "SCRAPESINK_JOURNAL_URL": redis_server.url_at(producers.host_ip)}
        remote = Workers(far_env, tmp_path, prefix=far.command(), tag="far-")
        near = Workers(env, tmp_path, tag="near-")
        launched += [remote, near]
        far_csv = remote.start("csv")
        wait_for(
            lambda: remote.check() or "lease taken" in remote.said(far_csv),
            "the far CSV worker's lease",
        )
        remote.start("postgres")
        remote.start("postgres")
        near.start("postgres")
        near_csv = near.start("csv")

        stop = tmp_path / "stop"
        acked = [tmp_path / f"acked-{p}.txt" for p in range(2)]
        streams = [
            subprocess.Popen(
                producers.command(
                    sys.executable, "-c", PRODUCER, str(acked[p]), f"p{p}", "0", str(stop)
                ),
                env=producer_env,
                stderr=subprocess.PIPE,
                text=True,
            )
            for p in range(2)
        ]
        wait_for(lambda: all(len(acked_batches(a)) >= 50 for a in acked), "producers started")
        before = sum(len(acked_batches(a)) for a in acked)
        far.cut()
        time.sleep(1)
        held = far_held(redis_server.url)  # entries handed to the far workers before the cut
        time.sleep(7)  # 4 claim periods: the lease and the far workers' entries lapse
        during = sum(len(acked_batches(a)) for a in acked)
        far.join()
        wait_for(
            lambda: near.check() or "lease taken" in near.said(near_csv),
            "the near CSV worker's lease",
        )
        assert during > before  # the producers went on while the workers were cut off
        time.sleep(2)
        producers.cut()
        time.sleep(5)
        producers.join()
        time.sleep(2)
        stop.touch()
        errors = ""
        for stream in streams:
            errors += stream.communicate(timeout=120)[1]
            assert stream.returncode == 0, errors
        wait_drained(env)
        remote.check()
        near.check()
        taken = "".join(near.said(name) for name in near.running)
        assert "entries taken over" in taken or not held  # what the cut-off ones held moved
        near.stop_all()
        far.cut()  # workers stopped while Redis does not answer stop at once (took 30 s)
        stopping = time.monotonic()
        remote.stop_all()
        assert time.monotonic() - stopping < 15

        with psycopg.connect(url) as conn:
            stored = {
                (source, int(source_id.split("-")[0]))
                for source, source_id in conn.execute("SELECT source, source_id FROM raw_events")
            }
        for p, path in enumerate(acked):
            assert {(f"p{p}", b) for b in acked_batches(path)} <= stored  # nothing acked lost
        total = scalar(url, "SELECT count(*) FROM raw_events")
        acknowledged = 20 * sum(len(acked_batches(path)) for path in acked)
        # cuts shorter than the Redis timeout: every publish waited and went through
        assert "not accepted" not in errors and total == acknowledged
        rows = csv_rows(data_dir, "raw_events/*/*.csv")
        assert len(rows) == len(set(rows)) == total  # no CSV line twice, none missing
        verify(env)
    finally:
        redis_server.close()

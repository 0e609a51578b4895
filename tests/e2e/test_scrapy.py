"""Real Scrapy crawls of the example movie site, offline: each crawl is a subprocess (a Twisted
reactor starts once per process) against the site served on a local port."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import psycopg
import pytest

from tests.conftest import env_for
from tests.support import RedisServer, StoppablePostgres, free_port, fresh_db

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "scrapy_movies"
DRIVER = Path(__file__).with_name("scrapy_crawl.py")
sys.path.insert(0, str(EXAMPLE))
import make_site  # noqa: E402

SCRAPESINK = [sys.executable, "-m", "scrapesink"]


class Site:
    """A directory served over HTTP on a free local port by a subprocess."""

    def __init__(self, root: Path) -> None:
        self.root = root
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.process = subprocess.Popen(
            [sys.executable, str(EXAMPLE / "serve.py"), str(root), "--port", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                import urllib.request

                urllib.request.urlopen(self.url + "/index.html", timeout=1).read()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(10)


@pytest.fixture(scope="module")
def site() -> Iterator[Site]:
    served = Site(EXAMPLE / "site")
    yield served
    served.close()


@pytest.fixture(scope="module")
def big_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """1,500 movies and 150 listing pages: a crawl long enough to interrupt."""
    root = tmp_path_factory.mktemp("big_site")
    make_site.write_site(root, 1500)
    served = Site(root)
    yield served
    served.close()


def crawl(
    site: Site, url: str, data_dir: Path, *args: str, check: bool = True, **env: str
) -> dict[str, Any]:
    stats = Path(tempfile.mkdtemp()) / "stats.json"
    result = subprocess.run(
        [sys.executable, str(DRIVER), site.url, str(stats), *args],
        env=env_for(url, data_dir, **env),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    found: dict[str, Any] = json.loads(stats.read_text())
    found["log"] = result.stderr
    return found


def expected(movies: int = make_site.DEFAULT_MOVIES) -> dict[str, int]:
    made = [m for m in make_site.movies(movies) if m["n"] != make_site.MALFORMED]
    casts = [name for m in made for name, _ in m["cast"]]  # type: ignore[attr-defined]
    return {
        "movies": len(made),
        "actors": len(set(casts)),
        "movie_actor": len(casts),
        "raw_events": -(-movies // make_site.PER_PAGE),
    }


def pg_counts(url: str) -> dict[str, int]:
    with psycopg.connect(url) as conn:
        return {
            table: conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]  # noqa: S608
            for table in ("movies", "actors", "movie_actor", "raw_events")
        }


def csv_rows(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    assert path.read_bytes().endswith(b"\r\n"), f"{path} ends in a partial line"
    with path.open(encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


def csv_counts(data_dir: Path) -> dict[str, int]:
    """What the CSV files hold: rows per key must be one (a history of versions: an
    unchanged record appends nothing)."""
    movies = csv_rows(data_dir / "movies.csv")
    actors = csv_rows(data_dir / "actors.csv")
    links = csv_rows(data_dir / "movie_actor.csv")
    events = [r for p in (data_dir / "raw_events").rglob("*.csv") for r in csv_rows(p)]
    for rows, key in ((movies, "url"), (actors, "name")):
        keys = [r[key] for r in rows]
        assert len(keys) == len(set(keys)), f"a {key} twice in the CSV"
    assert len({(r["source"], r["source_id"]) for r in events}) == len(events)
    return {
        "movies": len(movies),
        "actors": len(actors),
        "movie_actor": len({(r["movies_url"], r["actors_name"]) for r in links}),
        "raw_events": len(events),
    }


def verify(url: str, data_dir: Path) -> None:
    result = subprocess.run(
        [*SCRAPESINK, "verify"], env=env_for(url, data_dir), capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def replay(url: str, data_dir: Path) -> None:
    result = subprocess.run(
        [*SCRAPESINK, "replay"], env=env_for(url, data_dir), capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def scrapesink_stats(stats: dict[str, Any]) -> dict[str, int]:
    names = ("journaled", "stored", "duplicates", "unchanged", "rejected", "pending")
    return {name: stats.get(f"scrapesink/{name}", 0) for name in names}


# -- a whole crawl ------------------------------------------------------------------------------
@pytest.mark.parametrize("reactor", ["asyncio", "epoll", "none"])
def test_a_crawl_lands_every_movie_actor_and_link_once_in_both_stores(
    site: Site, database_url: str, data_dir: Path, reactor: str
):
    stats = crawl(site, database_url, data_dir, "--reactor", reactor)
    want = expected()
    assert stats["finish_reason"] == "finished"
    assert pg_counts(database_url) == want
    assert csv_counts(data_dir) == want
    verify(database_url, data_dir)
    assert scrapesink_stats(stats) == {
        "journaled": want["movies"] + want["raw_events"],
        "stored": want["movies"] + want["raw_events"],
        "duplicates": 0,
        "unchanged": 0,
        "rejected": 1,
        "pending": 0,
    }
    assert stats["item_scraped_count"] == want["movies"] + want["raw_events"]
    assert stats["item_dropped_count"] == 1
    # the objects alive at open are left out of the cyclic collector's passes while crawling
    # (scrapesink's imports doubled what each full pass walked), and given back at close
    assert stats["gc/frozen_mid_crawl"] > 50_000 and stats["gc/frozen_after"] == 0
    # the malformed movie is dropped with its reason, in one line of the crawl's log
    assert "scrapesink rejected this movies record: year: expected an integer" in stats["log"]
    with psycopg.connect(database_url) as conn:
        run = conn.execute(
            "SELECT j.name, r.status, r.origin, r.records_read, r.records_stored,"
            " r.records_rejected FROM etl_runs r JOIN etl_jobs j ON j.id = r.job_id"
        ).fetchall()
    assert run == [("movies", "partial", "scrapy", 66, 65, 1)]


def test_with_a_shared_journal_the_crawl_publishes_and_a_worker_stores_everything_once(
    site: Site, database_url: str, data_dir: Path, redis_server: RedisServer
):
    shared = {"SCRAPESINK_JOURNAL_URL": redis_server.url}
    stats = crawl(site, database_url, data_dir, **shared)
    want = expected()
    assert stats["finish_reason"] == "finished"
    assert stats["scrapesink/journaled"] == want["movies"] + want["raw_events"]
    assert pg_counts(database_url)["movies"] == 0  # published: the crawl stores nothing itself
    env = env_for(database_url, data_dir, **shared)
    worker = subprocess.Popen([*SCRAPESINK, "worker"], env=env, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while pg_counts(database_url) != want or csv_counts(data_dir) != want:
            assert time.monotonic() < deadline, "the worker did not deliver the crawl"
            time.sleep(0.3)
    finally:
        worker.terminate()
        _, errors = worker.communicate(timeout=60)
    assert worker.returncode == 0 and b"Traceback" not in errors, errors
    verify(database_url, data_dir)


def test_a_second_crawl_stores_nothing_twice(site: Site, database_url: str, data_dir: Path):
    crawl(site, database_url, data_dir)
    stats = crawl(site, database_url, data_dir, "-s", "SCRAPESINK_FREEZE_GC=false")
    assert stats["gc/frozen_mid_crawl"] == 0  # the collector left alone when asked
    want = expected()
    assert pg_counts(database_url) == want
    assert csv_counts(data_dir) == want
    verify(database_url, data_dir)
    assert scrapesink_stats(stats) == {
        "journaled": want["movies"] + want["raw_events"],
        "stored": 0,
        "duplicates": want["raw_events"],  # the listing pages: same request fingerprints
        "unchanged": want["movies"],
        "rejected": 1,
        "pending": 0,
    }


def test_a_crawl_stopped_and_resumed_with_jobdir_stores_everything_once(
    big_site: Site, database_url: str, data_dir: Path, tmp_path: Path
):
    jobdir = ("-s", f"JOBDIR={tmp_path / 'job'}", *SLOW)
    first = crawl(big_site, database_url, data_dir, *jobdir, "-s", "CLOSESPIDER_ITEMCOUNT=100")
    assert first["finish_reason"] == "closespider_itemcount"
    want = expected(1500)
    assert pg_counts(database_url)["movies"] < want["movies"]
    second = crawl(big_site, database_url, data_dir, *jobdir)
    assert second["finish_reason"] == "finished"
    assert pg_counts(database_url) == want
    assert csv_counts(data_dir) == want
    verify(database_url, data_dir)
    # pages whose items were in flight when the first crawl stopped may be scraped again:
    # those are counted unchanged (or duplicate), never stored twice
    total = scrapesink_stats(first)["stored"] + scrapesink_stats(second)["stored"]
    assert total == want["movies"] + want["raw_events"]


@pytest.mark.parametrize("kind", ["scrapy", "dict", "dataclass", "attrs", "pydantic"])
def test_every_item_kind_lands_with_its_nested_actors(
    site: Site, database_url: str, data_dir: Path, kind: str
):
    stats = crawl(site, database_url, data_dir, "--kind", kind)
    want = expected()
    assert pg_counts(database_url) == want
    assert csv_counts(data_dir) == want
    assert scrapesink_stats(stats)["rejected"] == 1
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT a.name, l.role, l.billing_order FROM movie_actor l"
            " JOIN movies m ON m.id = l.movies_id JOIN actors a ON a.id = l.actors_id"
            " WHERE m.url LIKE '%/movie-00009.html' ORDER BY l.billing_order LIMIT 1"
        ).fetchone()
    cast = make_site.movies(9)[8]["cast"]
    assert row == (cast[0][0], cast[0][1], 1)  # type: ignore[index]


def test_a_rejected_item_can_be_passed_on_instead_of_dropped(
    site: Site, database_url: str, data_dir: Path, tmp_path: Path
):
    acked = tmp_path / "acked.txt"
    stats = crawl(
        site,
        database_url,
        data_dir,
        "--acked",
        str(acked),
        "-s",
        "SCRAPESINK_DROP_REJECTED=false",
    )
    assert stats.get("item_dropped_count", 0) == 0
    assert "rejected this movies record (passed on): year" in stats["log"]
    assert any(line.endswith("/movie-00007.html") for line in acked.read_text().splitlines())
    assert pg_counts(database_url)["movies"] == expected()["movies"]


def test_a_hundred_concurrent_items_share_journal_writes(
    site: Site, database_url: str, data_dir: Path
):
    stats = crawl(
        site,
        database_url,
        data_dir,
        "-s",
        "CONCURRENT_ITEMS=100",
        "-s",
        "CONCURRENT_REQUESTS=32",
        "-s",
        "SCRAPESINK_ITEM_BATCH_MS=20",
    )
    want = expected()
    assert scrapesink_stats(stats)["journaled"] == want["movies"] + want["raw_events"]
    # one fsync covers many items: fewer journal writes than items
    assert stats["scrapesink/journal_writes"] < stats["scrapesink/journaled"]
    assert pg_counts(database_url) == want
    verify(database_url, data_dir)


def test_process_item_never_writes_the_journal_or_the_database_on_the_reactor_thread(
    site: Site, database_url: str, data_dir: Path
):
    stats = crawl(site, database_url, data_dir, "--spy")
    assert stats["spy/journal_other"] > 0 and stats["spy/db_other"] > 0  # the spy works
    assert stats["spy/journal_main"] == 0
    assert stats["spy/db_main"] == 0


def test_an_unusable_configuration_closes_the_spider_with_one_line(
    site: Site, database_url: str, tmp_path: Path
):
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("a file where the data directory should be")
    stats = crawl(site, database_url, blocker / "data", "-s", "SCRAPESINK_POOL_SIZE=zero")
    assert stats["finish_reason"].startswith("scrapesink: invalid setting SCRAPESINK_POOL_SIZE")
    assert stats.get("item_scraped_count", 0) == 0
    stats = crawl(site, database_url, blocker / "data")
    assert stats["finish_reason"].startswith("scrapesink: ")
    assert "not_a_dir" in stats["finish_reason"]
    stats = crawl(site, database_url, tmp_path / "d", "-s", "SCRAPESINK_ITEM_BATCH=5000")
    assert stats["finish_reason"] == "scrapesink: SCRAPESINK_ITEM_BATCH must be 1..1000, got 5000"


def test_hostile_items_are_stored_cleaned_or_rejected_alone_and_the_stores_agree(
    site: Site, database_url: str, data_dir: Path
):
    stats = crawl(site, database_url, data_dir, "--nasty")
    want = expected()
    assert stats["finish_reason"] == "finished"
    assert scrapesink_stats(stats)["rejected"] == 1 + 7
    assert stats["finish_reason"] == "finished"  # one unstorable movie did not stop the crawl
    assert scrapesink_stats(stats)["journaled"] == want["movies"] + want["raw_events"] + 4
    for reason in (
        "nested too deeply",
        "payload too large: 2,000,0",
        "payload.k\\u0000: NUL in a key",
        "payload.body: bytes that are not UTF-8 text",
        "genres: a value the journal cannot store",
        "actors[0].name",
        "title",
    ):
        assert reason in stats["log"], reason
    with psycopg.connect(database_url) as conn:
        title = conn.execute("SELECT title FROM movies WHERE url LIKE '%/nul-movie'").fetchone()
        nul = conn.execute("SELECT payload FROM raw_events WHERE payload->>'url' LIKE '%/nul'")
        typed = conn.execute(
            "SELECT payload FROM raw_events WHERE payload->>'url' LIKE '%/typed'"
        ).fetchone()
        payload = nul.fetchone()[0]
    assert title == ("NulTitle",)
    assert (payload["text"], payload["k"]) == ("ab", [""])
    assert typed[0]["price"] == 9.99 and typed[0]["at"] == "2026-01-02T03:04:05+00:00"
    verify(database_url, data_dir)  # NUL removed alike in both stores


# -- interruptions ------------------------------------------------------------------------------
def _start(site: Site, url: str, data_dir: Path, *args: str, **env: str) -> subprocess.Popen[str]:
    stats = data_dir.parent / "stats.json"
    return subprocess.Popen(
        [sys.executable, str(DRIVER), site.url, str(stats), *args],
        env=env_for(url, data_dir, **env),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for_lines(path: Path, count: int, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if path.exists() and len(path.read_text().splitlines()) >= count:
            return
        assert process.poll() is None, "the crawl ended before it could be interrupted"
        time.sleep(0.05)
    raise AssertionError(f"{path} never reached {count} lines")


def _wait_gone(processes: list[psutil.Process], timeout: float = 120) -> None:
    """Wait until each process has exited (a zombie counts: nothing may reap an orphan)."""
    deadline = time.monotonic() + timeout
    for proc in processes:
        while True:
            try:
                if proc.status() == psutil.STATUS_ZOMBIE:
                    break
            except psutil.NoSuchProcess:
                break
            assert time.monotonic() < deadline, f"{proc} still running"
            time.sleep(0.1)


def _stored_urls(url: str, data_dir: Path) -> tuple[set[str], set[str]]:
    """The movie and listing-page URLs each store holds (each once)."""
    with psycopg.connect(url) as conn:
        pg = [r[0] for r in conn.execute("SELECT url FROM movies")]
        pg += [r[0] for r in conn.execute("SELECT payload->>'url' FROM raw_events")]
    rows = csv_rows(data_dir / "movies.csv")
    files = [r for p in (data_dir / "raw_events").rglob("*.csv") for r in csv_rows(p)]
    in_csv = [r["url"] for r in rows] + [json.loads(r["payload"])["url"] for r in files]
    assert len(pg) == len(set(pg)) and len(in_csv) == len(set(in_csv)), "stored twice"
    return set(pg), set(in_csv)


SLOW = ("-s", "CONCURRENT_REQUESTS=4", "-s", "DOWNLOAD_DELAY=0.005")


def test_ctrl_c_once_journals_every_item_yielded_before_it(
    big_site: Site, database_url: str, data_dir: Path, tmp_path: Path
):
    yielded = tmp_path / "yielded.txt"
    process = _start(big_site, database_url, data_dir, "--yielded", str(yielded), *SLOW)
    _wait_for_lines(yielded, 200, process)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 0, err[-2000:]
    stats = json.loads((data_dir.parent / "stats.json").read_text())
    assert stats["finish_reason"] == "shutdown"
    keys = set(yielded.read_text().splitlines())
    keys.discard(f"{big_site.url}/movies/movie-00007.html")  # rejected (malformed)
    assert len(keys) < 1650  # the crawl was really interrupted
    pg, in_csv = _stored_urls(database_url, data_dir)
    assert keys <= pg and keys <= in_csv  # before any replay: the close flushed them
    verify(database_url, data_dir)


@pytest.mark.slow
def test_kill_9_loses_no_acknowledged_item(
    big_site: Site, database_url: str, data_dir: Path, tmp_path: Path
):
    acked = tmp_path / "acked.txt"
    process = _start(big_site, database_url, data_dir, "--acked", str(acked), *SLOW)
    _wait_for_lines(acked, 300, process)
    delivery = psutil.Process(process.pid).children()  # its delivery process
    assert delivery and all("deliverer" in " ".join(p.cmdline()) for p in delivery)
    process.kill()
    process.communicate(timeout=30)
    keys = set(acked.read_text().splitlines())
    # the delivery process outlives the crawl: it finishes what it has, then exits
    _wait_gone(delivery)
    replay(database_url, data_dir)
    pg, in_csv = _stored_urls(database_url, data_dir)
    assert keys <= pg and keys <= in_csv
    verify(database_url, data_dir)


@pytest.mark.slow
def test_postgresql_stopped_during_a_crawl_leaves_items_pending_and_loses_none(
    stoppable: StoppablePostgres, big_site: Site, tmp_path: Path
):
    url = fresh_db(stoppable.url, "scrapy_pg_stopped")
    data_dir = tmp_path / "data"
    acked = tmp_path / "acked.txt"
    fast_fail = {
        "SCRAPESINK_RETRY_SECONDS": "1",
        "SCRAPESINK_CONNECT_TIMEOUT": "2",
        "SCRAPESINK_CLOSE_TIMEOUT": "5",
    }
    process = _start(big_site, url, data_dir, "--acked", str(acked), *SLOW, **fast_fail)
    _wait_for_lines(acked, 200, process)
    stoppable.stop()
    try:
        _, err = process.communicate(timeout=240)
        assert process.returncode == 0, err[-2000:]
        stats = json.loads((data_dir.parent / "stats.json").read_text())
        assert stats["finish_reason"] == "finished"  # the crawl went on to the end
        assert stats["scrapesink/journaled"] == 1649
        assert stats["scrapesink/pending"] > 0
        assert "pending for postgres" in err
    finally:
        stoppable.start()
    _, in_csv = _stored_urls(url, data_dir)
    assert len(in_csv) == 1649  # CSV went on while PostgreSQL was down
    replay(url, data_dir)
    pg, in_csv = _stored_urls(url, data_dir)
    assert len(pg) == len(in_csv) == 1649
    verify(url, data_dir)


def test_a_journal_that_cannot_be_written_stops_the_crawl_and_loses_nothing_acknowledged(
    big_site: Site, database_url: str, data_dir: Path, tmp_path: Path
):
    acked = tmp_path / "acked.txt"
    stats = crawl(
        big_site, database_url, data_dir, "--acked", str(acked), "--break-journal-after", "100"
    )
    assert stats["finish_reason"] == "scrapesink_failed"
    assert "scrapesink cannot journal items (cannot open the journal in" in stats["log"]
    assert stats["scrapesink/failed"] > 0
    assert "scrapesink could not journal this" in stats["log"]
    keys = set(acked.read_text().splitlines())
    assert 100 <= len(keys) < 1649
    # the operator puts the directory back: everything acknowledged is delivered
    (data_dir / "journal").unlink()
    (data_dir / "journal.moved").rename(data_dir / "journal")
    replay(database_url, data_dir)
    pg, in_csv = _stored_urls(database_url, data_dir)
    assert keys <= pg and keys <= in_csv
    verify(database_url, data_dir)


def test_a_killed_delivery_process_is_started_again_and_passwords_stay_off_the_command_line(
    big_site: Site, database_url: str, data_dir: Path
):
    # trust authentication takes any password: this one must appear in no command line
    url = database_url.replace("postgres:@", "postgres:S3cretPW@")
    process = _start(big_site, url, data_dir, *SLOW, "-s", f"SCRAPESINK_DATABASE_URL={url}")
    deadline = time.monotonic() + 60
    while not (children := psutil.Process(process.pid).children()):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert "S3cretPW" not in " ".join(children[0].cmdline())
    time.sleep(1)
    children[0].kill()
    _, err = process.communicate(timeout=240)
    assert process.returncode == 0, err[-2000:]
    assert "the delivery process ended (exit code -9): restarted" in err
    stats = json.loads((data_dir.parent / "stats.json").read_text())
    assert stats["scrapesink/pending"] == 0
    pg, in_csv = _stored_urls(database_url, data_dir)  # no replay: the new one delivered all
    assert len(pg) == len(in_csv) == 1649
    verify(database_url, data_dir)


def test_the_bundled_site_is_what_make_site_writes(tmp_path: Path):
    make_site.write_site(tmp_path)
    bundled = sorted(p.relative_to(EXAMPLE / "site") for p in (EXAMPLE / "site").rglob("*.html"))
    assert bundled == sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*.html"))
    for relative in bundled:
        assert (EXAMPLE / "site" / relative).read_bytes() == (tmp_path / relative).read_bytes()


def test_the_readme_command_runs_the_example_end_to_end(
    database_url: str, data_dir: Path, tmp_path: Path
):
    port = free_port()
    result = subprocess.run(
        [sys.executable, str(EXAMPLE / "run.py"), "--port", str(port), "--data-dir", "data"],
        cwd=tmp_path,
        env={**env_for(database_url, tmp_path / "data"), "PYTHONWARNINGS": "error"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "scrapesink/journaled: 65" in result.stdout
    assert "scrapesink/rejected: 1" in result.stdout
    assert os.path.exists(tmp_path / "data" / "movies.csv")

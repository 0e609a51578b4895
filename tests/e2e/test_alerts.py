"""The operator's side: alert rules (promtool), the Grafana dashboard's queries, and a real
Prometheus scraping a real `scrapesink serve` while its PostgreSQL is stopped and started.

promtool and prometheus come from Debian's `prometheus` package, which `.ci/run` installs; on a
machine without them these tests are skipped, and say so (pytest -ra lists the reason).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from tests.support import SCRAPESINK, ApiServer, StoppablePostgres, free_port, fresh_db

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
DASHBOARD = DEPLOY / "grafana" / "scrapesink.json"
PROMTOOL = shutil.which("promtool")
PROMETHEUS = shutil.which("prometheus")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool is not installed (Debian package prometheus: .ci/run)"
)
needs_prometheus = pytest.mark.skipif(
    PROMETHEUS is None, reason="prometheus is not installed (Debian package prometheus: .ci/run)"
)
_NAME = re.compile(r"\bscrapesink_[a-z_]+")
_SUFFIXES = ("_total", "_count", "_sum", "_bucket", "_created")


@needs_promtool
def test_the_alert_rules_are_valid_and_pass_their_unit_tests():
    checked = subprocess.run(
        [PROMTOOL, "check", "rules", str(ALERTS)], capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = subprocess.run(
        [PROMTOOL, "test", "rules", "alerts_test.yml"],
        cwd=ALERTS.parent,
        capture_output=True,
        text=True,
        check=False,
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


def _families(text: str) -> set[str]:
    """The metric families a /metrics page declares (its # TYPE lines)."""
    return {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")}


def _family(name: str) -> str:
    for suffix in _SUFFIXES:
        if name.endswith(suffix):
            return name.removesuffix(suffix)
    return name


def _used_by_alerts() -> set[str]:
    rules = yaml.safe_load(ALERTS.read_text())["groups"][0]["rules"]
    return {name for rule in rules for name in _NAME.findall(rule["expr"])}


def _used_by_dashboard() -> set[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in _NAME.findall(target["expr"])
    }


@pytest.fixture(scope="module")
def stopped_later(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StoppablePostgres]:
    server = StoppablePostgres(tmp_path_factory.mktemp("alerts") / "pgdata")
    yield server
    server.close()


@pytest.fixture(scope="module")
def served(stopped_later: StoppablePostgres, tmp_path_factory: pytest.TempPathFactory):
    url = fresh_db(stopped_later.url, "alerts")
    data_dir = tmp_path_factory.mktemp("served") / "data"
    data_dir.mkdir()
    running = ApiServer(
        url, data_dir, "--no-auth", SCRAPESINK_CONNECT_TIMEOUT="2", SCRAPESINK_RETRY_SECONDS="1"
    )
    yield running, url, data_dir
    running.stop()


def test_every_series_the_alerts_and_the_dashboard_use_is_exported(served):
    running, _, _ = served
    ingested = httpx.post(
        running.base + "/api/v1/events?source=alerts",
        json=[{"id": 1, "timestamp": "2026-11-20T10:00:00Z"}],
        timeout=30,
    )
    assert ingested.status_code == 200, ingested.text
    exported = _families(httpx.get(running.base + "/metrics", timeout=30).text)
    for name in sorted(_used_by_alerts() | _used_by_dashboard()):
        assert _family(name) in exported or name in exported, name
    # and the dashboard shows every gauge of the pipeline
    assert {"scrapesink_sink_pending_records", "scrapesink_database_up"} <= _used_by_dashboard()


def _alerts(base: str) -> dict[str, str]:
    """alertname -> state (pending, firing) of the alerts Prometheus has now."""
    found = httpx.get(base + "/api/v1/alerts", timeout=10).json()["data"]["alerts"]
    return {a["labels"]["alertname"]: a["state"] for a in found}


def _wait(predicate, what: str, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


@needs_prometheus
@pytest.mark.slow
def test_a_real_prometheus_fires_database_down_and_resolves_it_after_replay(
    served, stopped_later: StoppablePostgres, tmp_path: Path
):
    running, url, data_dir = served
    # The shipped rules, with their `for:` shortened so a test need not wait minutes.
    rules = yaml.safe_load(ALERTS.read_text())
    for rule in rules["groups"][0]["rules"]:
        rule["for"] = "1s"
    (tmp_path / "alerts.yml").write_text(yaml.safe_dump(rules))
    port = free_port()
    (tmp_path / "prometheus.yml").write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "rule_files": ["alerts.yml"],
                "scrape_configs": [
                    {
                        "job_name": "scrapesink",
                        "static_configs": [{"targets": [running.base.removeprefix("http://")]}],
                    }
                ],
            }
        )
    )
    log = (tmp_path / "prometheus.log").open("wb")
    prometheus = subprocess.Popen(
        [
            PROMETHEUS,
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        _wait(lambda: _ready(base), "prometheus to start")
        _wait(
            lambda: _query(base, "scrapesink_database_up") == 1.0,
            "the first scrape of scrapesink",
        )
        assert "ScrapesinkDatabaseDown" not in _alerts(base)
        stopped_later.stop()
        try:
            while_down = httpx.post(
                running.base + "/api/v1/events?source=alerts",
                json=[{"id": 2, "timestamp": "2026-11-20T10:00:00Z"}],
                timeout=60,
            )
            assert while_down.status_code == 202  # journaled, pending for PostgreSQL
            _wait(
                lambda: _alerts(base).get("ScrapesinkDatabaseDown") == "firing",
                "ScrapesinkDatabaseDown to fire",
            )
        finally:
            stopped_later.start()
        replayed = subprocess.run(
            [*SCRAPESINK, "replay"],
            env=_env(url, data_dir),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert replayed.returncode in (0, 4), replayed.stderr  # the server may still hold it
        httpx.post(running.base + "/api/v1/replay", timeout=60)
        _wait(
            lambda: "ScrapesinkDatabaseDown" not in _alerts(base),
            "ScrapesinkDatabaseDown to resolve",
        )
        _wait(
            lambda: _query(base, 'scrapesink_sink_pending_records{sink="postgres"}') == 0.0,
            "nothing pending for PostgreSQL",
        )
    finally:
        prometheus.terminate()
        prometheus.wait(timeout=30)
        log.close()


def _env(url: str, data_dir: Path) -> dict[str, str]:
    from tests.conftest import env_for

    return env_for(url, data_dir)


def _ready(base: str) -> bool:
    try:
        return httpx.get(base + "/-/ready", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _query(base: str, expr: str) -> float | None:
    result = httpx.get(base + "/api/v1/query", params={"query": expr}, timeout=10).json()
    samples = result["data"]["result"]
    return float(samples[0]["value"][1]) if samples else None

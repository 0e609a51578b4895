"""Test helpers shared by several test modules: a PostgreSQL that can be stopped, a server."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import psycopg

from scrapesink.adapters.embedded import EmbeddedPostgres
from scrapesink.adapters.postgres.database import Database, PoolOptions
from scrapesink.adapters.postgres.migrate import Migrator
from tests.conftest import env_for, with_database

SCRAPESINK = [sys.executable, "-m", "scrapesink"]


def pg_ctl(pgdata: Path, *args: str, check: bool = True) -> None:
    """The embedded PostgreSQL's pg_ctl on ``pgdata``."""
    user = "pgserver" if os.geteuid() == 0 else None  # pgserver runs the server as this user
    subprocess.run(
        [str(EmbeddedPostgres.binaries() / "pg_ctl"), "-D", str(pgdata), *args],
        user=user,
        check=check,
        capture_output=True,
        timeout=60,
    )


def stop_if_running(pgdata: Path) -> None:
    """Stop the PostgreSQL server of ``pgdata`` if one runs there (one restarted by pg_ctl, or
    started by a subprocess that was terminated, is nobody's to stop when the tests end)."""
    if (pgdata / "postmaster.pid").exists():
        pg_ctl(pgdata, "-m", "fast", "-w", "stop", check=False)


class StoppablePostgres:
    """An embedded server of the test's own, which the test may stop and start again."""

    def __init__(self, pgdata: Path) -> None:
        self.pgdata = pgdata
        self.url = EmbeddedPostgres(pgdata).start()
        self.socket_dir = parse_qs(urlsplit(self.url).query)["host"][0]

    def stop(self) -> None:
        pg_ctl(self.pgdata, "-m", "fast", "-w", "stop")

    def start(self) -> None:
        pg_ctl(
            self.pgdata,
            "-w",
            "-o",
            '-h ""',
            "-o",
            f"-k {self.socket_dir}",
            "-l",
            str(self.pgdata / "log"),
            "start",
        )

    def close(self) -> None:
        stop_if_running(self.pgdata)


def fresh_db(server_url: str, name: str) -> str:
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    url = with_database(server_url, name)
    Migrator(Database(url, PoolOptions(size=1, min_size=0))).upgrade()
    return url


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ApiServer:
    """``scrapesink serve`` as a real process on a free port; ``token`` is the admin key it
    printed on its first start (None with --no-auth or when keys existed)."""

    def __init__(self, url: str, data_dir: Path, *args: str, **env: str) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = data_dir.parent / f"serve-{self.port}.log"
        self._log_file = open(self.log, "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [*SCRAPESINK, "serve", "--port", str(self.port), "--log-level", "warning", *args],
            env=env_for(url, data_dir, **env),
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
        )
        try:
            self._wait()
        except BaseException:
            self.stop()  # never leave a server process behind a failed start
            raise
        found = re.search(r"ss_[0-9a-f]{8}_[A-Za-z0-9_-]+", self.log.read_text())
        self.token = found.group(0) if found else None

    def _wait(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited: {self.log.read_text()}")
            try:
                httpx.get(self.base + "/api/health", timeout=2)
                return
            except httpx.TransportError:
                time.sleep(0.1)
        raise RuntimeError(f"server did not start: {self.log.read_text()}")

    def client(
        self, token: str | None = None, headers: dict[str, str] | None = None
    ) -> httpx.Client:
        sent = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.base, headers={**sent, **(headers or {})}, timeout=60)

    def stop(self) -> str:
        self.process.terminate()
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._log_file.close()
        return self.log.read_text()


class RedisServer:
    """A ``redis-server`` of the test's own (the machine's package) on a free port, with its
    AOF fsynced on every write, which the test may kill (-9) and start again: the shared Redis
    on 6379 keeps nothing on disk and is never restarted."""

    def __init__(
        self,
        directory: Path,
        *,
        appendfsync: str = "always",
        bind: Sequence[str] = ("127.0.0.1",),
    ) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = self.url_at("127.0.0.1")
        self.appendfsync = appendfsync
        self.bind = bind
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                " ".join(self.bind),
                # addresses beyond loopback are the test's own namespaces' links
                "--protected-mode",
                "yes" if list(self.bind) == ["127.0.0.1"] else "no",
                "--dir",
                str(self.directory),
                "--appendonly",
                "yes",
                "--appendfsync",
                self.appendfsync,
                "--save",
                "",
                "--logfile",
                str(self.directory / "redis.log"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as conn:
                    conn.sendall(b"PING\r\n")
                    if conn.recv(64).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            if self.process.poll() is not None:
                log = (self.directory / "redis.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"redis-server did not start: {log}")
            time.sleep(0.05)
        raise RuntimeError("redis-server did not answer in 30 s")

    def url_at(self, address: str) -> str:
        return f"redis://{address}:{self.port}/0"

    def kill(self) -> None:
        """``kill -9``: what the AOF holds is all that survives."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=30)
            self.process = None

    def close(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()
            self.process = None


class Namespace:
    """A host of the test's own: a network namespace joined to this one by a veth pair (this
    side ``host_ip``, that side ``ip``), which the test cuts off (this side of the link down:
    packets vanish, no connection is reset, as when a cable is pulled) and joins again. Unix
    sockets (the test's PostgreSQL) are files, and reachable from every namespace."""

    def __init__(self, name: str, subnet: int) -> None:
        self.name = name
        self.link = f"{name}h"
        self.host_ip = f"10.213.{subnet}.1"
        self.ip = f"10.213.{subnet}.2"
        peer = f"{name}n"
        _ip("netns", "add", name)
        try:
            _ip("link", "add", self.link, "type", "veth", "peer", "name", peer)
            _ip("link", "set", peer, "netns", name)
            _ip("addr", "add", f"{self.host_ip}/30", "dev", self.link)
            _ip("link", "set", self.link, "up")
            _ip("netns", "exec", name, "ip", "addr", "add", f"{self.ip}/30", "dev", peer)
            _ip("netns", "exec", name, "ip", "link", "set", peer, "up")
            _ip("netns", "exec", name, "ip", "link", "set", "lo", "up")
        except BaseException:
            self.close()
            raise

    def command(self, *argv: str) -> list[str]:
        """``argv`` run inside the namespace."""
        return ["ip", "netns", "exec", self.name, *argv]

    def cut(self) -> None:
        _ip("link", "set", self.link, "down")

    def join(self) -> None:
        _ip("link", "set", self.link, "up")

    def close(self) -> None:
        for argv in (("link", "del", self.link), ("netns", "del", self.name)):
            subprocess.run(["ip", *argv], capture_output=True, timeout=30)


def _ip(*argv: str) -> None:
    done = subprocess.run(["ip", *argv], capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise OSError(f"ip {' '.join(argv)}: {done.stderr.strip()}")

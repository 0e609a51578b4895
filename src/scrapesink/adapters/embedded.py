"""The embedded PostgreSQL: a server from the ``pgserver`` wheel, living in ``<data dir>/pgdata``.

pgserver already makes one data directory safe to share between processes: an inter-process
lock around start-up and a list of the processes holding a handle, so the server is stopped
when the last of them exits. scrapesink adds only the error translation and a quiet import.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import warnings
from pathlib import Path
from typing import Any, ClassVar

from scrapesink.errors import ConfigError, StorageError


def _import_pgserver() -> Any:
    # platformdirs warns at pgserver's import when XDG_RUNTIME_DIR is unset (cron, CI, root
    # shells); its fallback is fine, so the warning is noise to our users.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pgserver

    return pgserver


class EmbeddedPostgres:
    """A handle on the embedded server; the server outlives us while other processes use it.

    pgserver keeps one server object per data directory in a process, and one process entry in
    its list of holders: the handles of one process are counted here, so that closing one of
    two (two ``scrapesink.open()`` at once) does not stop the server under the other."""

    #: in the data directory while `scrapesink db start` keeps the server up for other clients
    KEEP = ".scrapesink_kept_running"
    _handles: ClassVar[dict[Path, int]] = {}
    _handles_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, pgdata: Path) -> None:
        self.pgdata = pgdata.resolve()
        self._server: Any = None

    def start(self) -> str:
        """Start (or join) the server and return a libpq URL for it."""
        try:
            # The directory itself too: pgserver creates it outside its lock with
            # exist_ok=False, so two processes starting in a new data dir at once raced there.
            self.pgdata.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot create data directory {self.pgdata.parent}: {exc}") from exc
        pgserver = _import_pgserver()
        try:
            with self._handles_lock:
                _forget_dead_handles(pgserver, self.pgdata)
                self._server = pgserver.get_server(self.pgdata, cleanup_mode=self._mode())
                self._handles[self.pgdata] = self._handles.get(self.pgdata, 0) + 1
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
            log = self.pgdata / "log"
            raise StorageError(
                f"the embedded PostgreSQL in {self.pgdata} did not start ({exc}); see {log}"
            ) from exc
        uri: str = self._server.get_uri()
        return uri

    def stop(self) -> None:
        """Let go of the server: it stops if no other handle, here or in another process,
        uses it."""
        if self._server is None:
            return
        with self._handles_lock:
            left = self._handles.get(self.pgdata, 1) - 1
            if left > 0:
                self._handles[self.pgdata] = left
            else:
                self._handles.pop(self.pgdata, None)
                # Read now, not at start: `db start` or `db stop` may have run meanwhile.
                self._server.cleanup_mode = self._mode()
                self._server.cleanup()
                # While other processes hold the server, pgserver's cleanup takes this process
                # off its list of holders but keeps its object: a later start here would get
                # it back without joining the list again, and the last other process would
                # stop the server under us. Forget it, so the next start joins anew.
                _import_pgserver().PostgresServer._instances.pop(self.pgdata, None)
        self._server = None

    @property
    def kept_running(self) -> bool:
        return (self.pgdata / self.KEEP).exists()

    def keep_running(self, keep: bool) -> None:
        """Keep the server up when the last scrapesink process lets go of it (for psql,
        pandas, DBeaver, Grafana), or not."""
        marker = self.pgdata / self.KEEP
        if keep:
            self.pgdata.mkdir(parents=True, exist_ok=True)
            marker.touch()
        else:
            marker.unlink(missing_ok=True)

    def holders(self) -> list[int]:
        """The live processes using the server, this one excluded."""
        try:
            pids = json.loads((self.pgdata / ".handle_pids.json").read_text())
        except (OSError, ValueError):
            return []
        return [p for p in pids if isinstance(p, int) and p != os.getpid() and _alive(p)]

    def _mode(self) -> str | None:
        return None if self.kept_running else "stop"

    @property
    def bin_dir(self) -> Path:
        return self.binaries()

    @staticmethod
    def binaries() -> Path:
        """The PostgreSQL programs the pgserver wheel ships (pg_dump, pg_restore, ...)."""
        pgserver = _import_pgserver()
        return Path(pgserver.__file__).parent / "pginstall" / "bin"

    def describe(self) -> str:
        return f"embedded PostgreSQL in {_short(self.pgdata)}"


def _forget_dead_handles(pgserver: Any, pgdata: Path) -> None:
    """Drop the processes that died holding a handle (``kill -9``, a signal that skipped their
    exit handlers) from pgserver's list of holders, under pgserver's own lock: otherwise the
    server counts them forever and the last live process never stops it."""
    holders = pgdata / ".handle_pids.json"
    if not holders.exists():
        return
    with pgserver.PostgresServer._lock:
        try:
            pids = json.loads(holders.read_text())
        except (OSError, ValueError):
            return  # pgserver reads it next and says what is wrong
        alive = [pid for pid in pids if isinstance(pid, int) and _alive(pid)]
        if alive != pids:
            holders.write_text(json.dumps(alive))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive
    return True


def _short(path: Path) -> str:
    try:
        return os.path.relpath(path)
    except ValueError:
        return str(path)

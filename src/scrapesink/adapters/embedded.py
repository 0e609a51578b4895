"""The embedded PostgreSQL: a server from the ``pgserver`` wheel, living in ``<data dir>/pgdata``.

pgserver already makes one data directory safe to share between processes: an inter-process
lock around start-up and a list of the processes holding a handle, so the server is stopped
when the last of them exits. scrapesink adds only the error translation and a quiet import.
"""

from __future__ import annotations

import os
import subprocess
import warnings
from pathlib import Path
from typing import Any

from scrapesink.errors import ConfigError, StorageError


def _import_pgserver() -> Any:
    # platformdirs warns at pgserver's import when XDG_RUNTIME_DIR is unset (cron, CI, root
    # shells); its fallback is fine, so the warning is noise to our users.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pgserver

    return pgserver


class EmbeddedPostgres:
    """A handle on the embedded server; the server outlives us while other processes use it."""

    def __init__(self, pgdata: Path) -> None:
        self.pgdata = pgdata.resolve()
        self._server: Any = None

    def start(self) -> str:
        """Start (or join) the server and return a libpq URL for it."""
        try:
            self.pgdata.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot create data directory {self.pgdata.parent}: {exc}") from exc
        pgserver = _import_pgserver()
        try:
            self._server = pgserver.get_server(self.pgdata, cleanup_mode="stop")
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
            log = self.pgdata / "log"
            raise StorageError(
                f"the embedded PostgreSQL in {self.pgdata} did not start ({exc}); see {log}"
            ) from exc
        uri: str = self._server.get_uri()
        return uri

    def stop(self) -> None:
        """Let go of the server: it stops if no other process uses it."""
        if self._server is not None:
            self._server.cleanup()
            self._server = None

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


def _short(path: Path) -> str:
    try:
        return os.path.relpath(path)
    except ValueError:
        return str(path)

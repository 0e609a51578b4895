"""What the HTTP service holds for its lifetime: the application, keys, audit, idempotency."""

from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from scrapesink.adapters.postgres.api_access import SCOPES, ApiKey, ApiKeys, hash_key
from scrapesink.application.ingest import IngestService
from scrapesink.application.models import ModelService
from scrapesink.application.operations import PipelineStatus
from scrapesink.application.ports import ModelReader
from scrapesink.application.runs import JobRun, NoRun
from scrapesink.bootstrap import App, bootstrap
from scrapesink.config import Settings
from scrapesink.domain.events import EventRules
from scrapesink.domain.models import ModelDef
from scrapesink.entrypoints.api.metrics import Metrics
from scrapesink.entrypoints.python import Sink
from scrapesink.errors import NotFound, ScrapesinkError, StorageError, TransientStorageError

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: an API key, or everyone when the server runs with --no-auth."""

    name: str
    scopes: tuple[str, ...]
    owner: str  # what Idempotency-Key records are kept under

    def allows(self, scope: str) -> bool:
        return scope in self.scopes or "admin" in self.scopes


ANONYMOUS = Principal("anonymous (--no-auth)", SCOPES, "anonymous")


class KeyCache:
    """The active API keys, in memory, refreshed in the background.

    Requests never wait on PostgreSQL to authenticate: while it is down the last known keys
    (also kept in ``<data dir>/api_keys.cache.json``, hashes only) go on working, so ingest keeps
    being accepted into the journal. A token not known yet triggers one refresh (at most one a
    second), so a key made with ``scrapesink keys create`` works at once; a revoked key stops
    working within ``api_key_refresh_seconds``.
    """

    def __init__(self, keys: ApiKeys, cache_file: Path, refresh_seconds: float) -> None:
        self.keys = keys
        self.cache_file = cache_file
        self.refresh_seconds = refresh_seconds
        self._by_hash: dict[str, ApiKey] = self._load_file()
        self._lock = threading.Lock()
        self._last_demand = -1.0e9  # the last refresh an unknown token asked for
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="scrapesink-keys", daemon=True)

    def start(self) -> None:
        self.refresh()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        while not self._stop.wait(self.refresh_seconds):
            self.refresh()

    def refresh(self) -> bool:
        try:
            fresh = self.keys.active_hashes()
        except StorageError as exc:
            log.warning("API keys not refreshed (the last known ones stay valid): %s", exc)
            return False
        self._by_hash = fresh
        self._save_file(fresh)
        return True

    def authenticate(self, token: str) -> ApiKey | None:
        digest = hash_key(token)
        key = self._by_hash.get(digest)
        if key is None and self._refresh_due():
            self.refresh()
            key = self._by_hash.get(digest)
        return key

    def _refresh_due(self) -> bool:
        """At most one refresh a second for unknown tokens, however many arrive at once. The
        periodic refresh does not count: a key created just after it must work at once (it did
        not, for up to the refresh interval, when both shared one clock)."""
        with self._lock:
            if time.monotonic() - self._last_demand <= 1.0:
                return False
            self._last_demand = time.monotonic()
            return True

    def _load_file(self) -> dict[str, ApiKey]:
        try:
            raw = json.loads(self.cache_file.read_text())
            return {
                digest: ApiKey(
                    int(k["id"]),
                    k["name"],
                    k["prefix"],
                    tuple(k["scopes"]),
                    datetime.fromisoformat(k["created"]),
                )
                for digest, k in raw.items()
            }
        except (OSError, ValueError, KeyError, TypeError):
            return {}

    def _save_file(self, keys: dict[str, ApiKey]) -> None:
        data = {
            digest: {
                "id": k.id,
                "name": k.name,
                "prefix": k.prefix,
                "scopes": list(k.scopes),
                "created": k.created_at.isoformat(),
            }
            for digest, k in keys.items()
        }
        try:  # temp + rename: a reader never sees half a file
            fd, tmp = tempfile.mkstemp(dir=self.cache_file.parent, prefix=".api_keys.")
            with os.fdopen(fd, "w") as handle:
                json.dump(data, handle)
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.cache_file)
        except OSError as exc:
            log.warning("API key cache not written: %s", exc)


class Services:
    """Built by the app's lifespan, closed at shutdown; the routes reach it via ``Depends``."""

    def __init__(self, settings: Settings, *, auth: bool) -> None:
        self.settings = settings
        self.auth = auth
        self.app: App = bootstrap(settings, min_connections=None, offline_ok=True)
        try:
            self.sink = Sink(self.app)  # start-up: repair CSV tails, replay old journals
            self.audit = self.app.audit
            self.key_cache = KeyCache(
                self.app.api_keys,
                settings.paths.api_keys_cache,
                settings.api_key_refresh_seconds,
            )
            if auth:
                self.key_cache.start()
            self.idempotency = self.app.idempotency()
            self.metrics = Metrics(self.app.gauges(self._status_for_metrics))
            self._model_service: ModelService | None = None
            self._model_lock = threading.Lock()
            self._stop = threading.Event()
            self._catcher = threading.Thread(
                target=self._catch_up, name="scrapesink-catch-up", daemon=True
            )
            self._catcher.start()
        except BaseException:
            self.app.close()
            raise

    def _catch_up(self) -> None:
        """What a sink left pending while it was down is delivered once it is back, while the
        server runs (a CLI run does this at its end; a server has no end to wait for)."""
        interval = max(1.0, min(self.settings.cooldown_seconds, 5.0))
        while not self._stop.wait(interval):
            try:
                resubmitted = self.app.catch_up()
            except ScrapesinkError as exc:  # the writer closed under us at shutdown
                log.debug("catch-up skipped: %s", exc)
                continue
            if resubmitted:
                log.info("resubmitted %d pending record(s) to sinks that are back", resubmitted)

    def close(self) -> None:
        self._stop.set()
        self.key_cache.stop()
        self._catcher.join(timeout=30)
        self.sink.close()

    # -- writes -----------------------------------------------------------------------------
    def ingest_service(self, rules: EventRules) -> IngestService:
        return self.app.ingest_service(rules)

    def models(self) -> ModelService:
        with self._model_lock:  # the schema check runs once, not once per concurrent request
            if self._model_service is None:
                self._model_service = self.app.models()
            return self._model_service

    def model_reader(self) -> ModelReader:
        """The model read port, once the declaration is applied."""
        self.models()
        return self.app.model_reader

    def model(self, name: str) -> ModelDef:
        model = self.app.declaration.models.get(name)
        if model is None:
            known = ", ".join(sorted(self.app.declaration.models))
            raise NotFound(f"no model {name!r} is declared (declared: {known})")
        return model

    @contextmanager
    def job_run(self, job: str | None, source: str | None) -> Iterator[JobRun | NoRun]:
        """A run of ``job`` around one request's writes (nothing when no job is named)."""
        if job is None:
            yield NoRun()
            return
        with self.app.job_run(job, origin="api", source=source) as run:
            yield run

    # -- operations ---------------------------------------------------------------------------
    def status(self, *, database_up: bool = True) -> PipelineStatus:
        """Pending per sink; with the database down, every journaled record counts as pending
        for PostgreSQL (its progress table cannot be read) and the other sinks still answer."""
        return self.app.operations.status(database_up=database_up)

    def _status_for_metrics(self) -> PipelineStatus:
        try:
            return self.status()
        except TransientStorageError:  # PostgreSQL down: the other sinks still answer
            return self.status(database_up=False)

    def record_audit(
        self,
        principal: Principal,
        action: str,
        target: str,
        outcome: str,
        detail: dict[str, Any] | None = None,
    ) -> None:
        """Best effort, never failing the request it describes: when PostgreSQL cannot take
        the entry it goes to the log (with the same fields) instead."""
        try:
            self.audit.record(principal.name, action, target, outcome, detail or {})
        except ScrapesinkError as exc:
            log.warning(
                "audit entry not stored (%s): actor=%s action=%s target=%s outcome=%s",
                exc.message,
                principal.name,
                action,
                target,
                outcome,
            )

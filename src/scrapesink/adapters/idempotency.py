"""Idempotency-Key records for the REST API (IETF httpapi draft "The Idempotency-Key HTTP Header
Field"), in ``<data dir>/idempotency.sqlite``.

Local SQLite, not PostgreSQL, on purpose: a client retries hardest exactly when PostgreSQL is
down (its first request timed out), and ingest keeps answering then, journaling; a retry must
still find its key. The data directory is one machine's, like the journal the answers refer to.

A key belongs to one caller (the API key that sent it): the same key from two callers is two
records. The first request with a key stores a *running* record; its answer (status, content
type, body) is stored when it ends. A later request with the same key and the same fingerprint
(method, path, query, body) gets that answer again; with another fingerprint it is refused
(422); while the first is still running it is refused (409). A record expires ``ttl`` after it
was made; a running record whose request died with its process is given up after
``stale_after``.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

Verdict = Literal["new", "replay", "running", "mismatch"]
NEW: Verdict = "new"
REPLAY: Verdict = "replay"
RUNNING: Verdict = "running"
MISMATCH: Verdict = "mismatch"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS idempotency (
    owner TEXT NOT NULL,
    key TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    started REAL NOT NULL,
    expires REAL NOT NULL,
    status INTEGER,
    content_type TEXT,
    body BLOB,
    PRIMARY KEY (owner, key)
);
CREATE INDEX IF NOT EXISTS idempotency_expires ON idempotency (expires);
"""


@dataclass(frozen=True, slots=True)
class StoredAnswer:
    status: int
    content_type: str
    body: bytes


class IdempotencyStore:
    def __init__(self, path: Path, *, ttl: float, stale_after: float = 600.0) -> None:
        self.path = path
        self.ttl = ttl
        self.stale_after = stale_after
        self._local = threading.local()
        path.parent.mkdir(parents=True, exist_ok=True)
        # It holds response bodies: readable by the server's user alone (SQLite gives its -wal
        # and -shm files the database file's mode). Earlier versions made it 0644.
        os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
        os.chmod(path, 0o600)
        with self._db() as db:
            db.executescript(_SCHEMA)

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            self._local.db = db
        yield db

    def begin(self, owner: str, key: str, fingerprint: str) -> tuple[Verdict, StoredAnswer | None]:
        """Claim ``key`` for a request, or say why not (and what was answered before)."""
        now = time.time()
        with self._db() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                db.execute("DELETE FROM idempotency WHERE expires < ?", (now,))
                row = db.execute(
                    "SELECT fingerprint, started, status, content_type, body FROM idempotency"
                    " WHERE owner = ? AND key = ?",
                    (owner, key),
                ).fetchone()
                if row is not None:
                    stored_fingerprint, started, status, content_type, body = row
                    if stored_fingerprint != fingerprint:
                        return MISMATCH, None
                    if status is not None:
                        return REPLAY, StoredAnswer(status, content_type, body)
                    if now - started < self.stale_after:
                        return RUNNING, None
                db.execute(
                    "INSERT OR REPLACE INTO idempotency (owner, key, fingerprint, started, expires)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (owner, key, fingerprint, now, now + self.ttl),
                )
                return NEW, None
            finally:
                db.execute("COMMIT")

    def finish(self, owner: str, key: str, answer: StoredAnswer) -> None:
        with self._db() as db:
            db.execute(
                "UPDATE idempotency SET status = ?, content_type = ?, body = ?"
                " WHERE owner = ? AND key = ?",
                (answer.status, answer.content_type, answer.body, owner, key),
            )

    def abandon(self, owner: str, key: str) -> None:
        """Forget a claim whose request failed on our side: the client may retry it."""
        with self._db() as db:
            db.execute("DELETE FROM idempotency WHERE owner = ? AND key = ?", (owner, key))

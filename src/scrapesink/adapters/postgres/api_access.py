"""API keys and the audit log, in PostgreSQL.

A key is ``ss_<prefix>_<secret>``: the prefix (public, shown by ``keys list``) names it, the
secret is 32 random bytes. Only the SHA-256 of the whole key is stored. A slow password hash
(bcrypt, argon2) protects low-entropy secrets people choose; a 256-bit random secret cannot be
guessed from its SHA-256, so the fast hash is enough and keeps every request cheap (the same
reasoning GitHub and Stripe tokens follow).
"""

from __future__ import annotations

import builtins
import hashlib
import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from scrapesink.adapters.postgres.database import Database
from scrapesink.errors import Conflict, ConstraintError, NotFound, RecordError

SCOPES = ("ingest", "read", "admin")


@dataclass(frozen=True, slots=True)
class ApiKey:
    id: int
    name: str
    prefix: str
    scopes: tuple[str, ...]
    created_at: datetime
    revoked_at: datetime | None = None

    def allows(self, scope: str) -> bool:
        """``admin`` may do everything; otherwise the scope itself is needed."""
        return scope in self.scopes or "admin" in self.scopes

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "prefix": self.prefix,
            "scopes": list(self.scopes),
            "created_at": self.created_at.isoformat(),
            "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None,
        }


def hash_key(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def check_scopes(scopes: Sequence[str]) -> tuple[str, ...]:
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown or not scopes:
        raise RecordError(
            f"scopes must be some of {', '.join(SCOPES)}"
            + (f"; unknown: {', '.join(unknown)}" if unknown else ""),
            path="scopes",
        )
    return tuple(s for s in SCOPES if s in scopes)


_COLUMNS = "id, name, prefix, scopes, created_at, revoked_at"


class ApiKeys:
    def __init__(self, database: Database) -> None:
        self.database = database

    def create(self, name: str, scopes: Sequence[str]) -> tuple[ApiKey, str]:
        """A new key; the token is returned this once and never stored."""
        if not name.strip():
            raise RecordError("a key needs a name", path="name")
        checked = check_scopes(scopes)
        prefix = secrets.token_hex(4)
        token = f"ss_{prefix}_{secrets.token_urlsafe(32)}"
        try:
            with self.database.connection() as conn:
                # One active key per name (`keys revoke NAME` revokes by name): concurrent
                # creates of one name are serialized by a lock on it, then checked.
                conn.execute(
                    "SELECT pg_advisory_xact_lock(hashtext('scrapesink.api_keys'), hashtext(%s))",
                    (name,),
                )
                taken = conn.execute(
                    "SELECT 1 FROM api_keys WHERE name = %s AND revoked_at IS NULL", (name,)
                ).fetchone()
                if taken:
                    raise Conflict(
                        f"a key named {name!r} exists already: choose another name, or revoke"
                        " it first (`scrapesink keys revoke NAME`)"
                    )
                row = conn.execute(
                    f"INSERT INTO api_keys (name, prefix, secret_hash, scopes)"  # noqa: S608
                    f" VALUES (%s, %s, %s, %s) RETURNING {_COLUMNS}",
                    (name, prefix, hash_key(token), list(checked)),
                ).fetchone()
        except ConstraintError as exc:  # 32 random bits of prefix collided: try again
            raise Conflict("key prefix collision, try again") from exc
        assert row is not None
        return _key(row), token

    def list(self, *, include_revoked: bool = False) -> list[ApiKey]:
        where = "" if include_revoked else " WHERE revoked_at IS NULL"
        with self.database.connection() as conn:
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM api_keys{where} ORDER BY id"  # noqa: S608
            ).fetchall()
        return [_key(row) for row in rows]

    def active_hashes(self) -> dict[str, ApiKey]:
        """secret hash -> key, for every key not revoked (what the server authenticates with)."""
        with self.database.connection() as conn:
            rows = conn.execute(
                f"SELECT secret_hash, {_COLUMNS} FROM api_keys"  # noqa: S608
                " WHERE revoked_at IS NULL"
            ).fetchall()
        return {row[0]: _key(row[1:]) for row in rows}

    def revoke(self, name_or_prefix: str) -> builtins.list[ApiKey]:
        with self.database.connection() as conn:
            rows = conn.execute(
                "UPDATE api_keys SET revoked_at = now()"  # noqa: S608 - constant columns
                " WHERE (name = %s OR prefix = %s) AND revoked_at IS NULL"
                f" RETURNING {_COLUMNS}",
                (name_or_prefix, name_or_prefix),
            ).fetchall()
        if not rows:
            raise NotFound(f"no active key named {name_or_prefix!r} (or with that prefix)")
        return [_key(row) for row in rows]


def _key(row: Sequence[Any]) -> ApiKey:
    return ApiKey(row[0], row[1], row[2], tuple(row[3]), row[4], row[5])


@dataclass(frozen=True, slots=True)
class AuditEntry:
    at: datetime
    actor: str
    action: str
    target: str
    outcome: str
    detail: dict[str, Any]


class AuditLog:
    def __init__(self, database: Database) -> None:
        self.database = database

    def record(
        self, actor: str, action: str, target: str, outcome: str, detail: dict[str, Any]
    ) -> None:
        with self.database.connection() as conn:
            conn.execute(
                "INSERT INTO audit_log (actor, action, target, outcome, detail)"
                " VALUES (%s, %s, %s, %s, %s::jsonb)",
                (actor, action, target, outcome, json.dumps(detail, default=str)),
            )

    def list(self, *, limit: int = 100) -> list[AuditEntry]:
        with self.database.connection() as conn:
            rows = conn.execute(
                "SELECT at, actor, action, target, outcome, detail FROM audit_log"
                " ORDER BY id DESC LIMIT %s",
                (limit,),
            ).fetchall()
        return [AuditEntry(*row) for row in rows]

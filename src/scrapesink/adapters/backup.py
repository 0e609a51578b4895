"""Backups: a timestamped set of ``database.dump`` (pg_dump custom format), ``files.tar`` (the
CSV tree, the journal and the local state: everything in the data directory but the embedded
database itself and the backups) and ``manifest.json`` (sizes and SHA-256 of both).

A set is written into ``.<id>.partial`` and renamed into place only when whole and fsynced: a
failure (disk full, a directory that cannot be written, pg_dump refusing) leaves nothing behind
but the error. ``verify`` checks sizes, checksums, that pg_restore can list the dump and that every
member of the tar is a plain file or directory inside the data directory; ``restore`` verifies
first, extracts into a staging directory, loads the database, and only then puts the files in
place: a failure at any step leaves the target as it was.

Checksums guard against accidents (a truncated copy, a flipped bit), not against someone who can
write the backup directory: they can recompute them. With ``SCRAPESINK_BACKUP_KEY`` set, the
manifest carries an HMAC-SHA256 of its content under that key, and sets without one, or with a
wrong one, are refused.

pg_dump and pg_restore come from the PostgreSQL binaries the ``pgserver`` wheel ships (16), so
backups need nothing installed, for the embedded database and for servers up to 16.
"""

from __future__ import annotations

import builtins
import hashlib
import hmac
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from scrapesink.errors import ConfigError, Conflict, NotFound, ScrapesinkError
from scrapesink.layout import NOT_BACKED_UP

DUMP, FILES, MANIFEST = "database.dump", "files.tar", "manifest.json"
SKIP = NOT_BACKED_UP  # never inside files.tar
_ID = re.compile(r"\d{8}T\d{12}Z")


class BackupError(ScrapesinkError):
    """A backup could not be written, or a set is not whole (and was not used)."""


@dataclass(frozen=True, slots=True)
class Manifest:
    id: str
    path: Path
    created_at: datetime
    files: dict[str, dict[str, Any]]
    scrapesink_version: str
    schema_revision: str | None
    database: str

    @property
    def bytes(self) -> int:
        return sum(int(f["bytes"]) for f in self.files.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "created_at": self.created_at.isoformat(),
            "files": self.files,
            "scrapesink_version": self.scrapesink_version,
            "schema_revision": self.schema_revision,
            "database": self.database,
        }


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _signature(manifest: dict[str, Any], key: bytes) -> str:
    """HMAC-SHA256 of the manifest's content (everything but the signature itself)."""
    content = {k: v for k, v in manifest.items() if k != "hmac"}
    text = json.dumps(content, sort_keys=True, separators=(",", ":")).encode()
    return hmac.new(key, text, hashlib.sha256).hexdigest()


def member_problems(tar: tarfile.TarFile) -> builtins.list[str]:
    """Members a restore must not write: anything but plain files and directories, absolute
    paths, ``..``, and the embedded database's or the backups' directories."""
    problems = []
    for member in tar.getmembers():
        parts = Path(member.name).parts
        if not (member.isfile() or member.isdir()):
            problems.append(f"{FILES}: {member.name!r} is not a plain file or directory")
        elif member.name.startswith("/") or ".." in parts or not parts:
            problems.append(f"{FILES}: {member.name!r} points outside the data directory")
        elif parts[0] in SKIP:
            problems.append(f"{FILES}: {member.name!r} is in {parts[0]}/, never restored")
    return problems


class Backups:
    def __init__(
        self, root: Path, data_dir: Path, conninfo: str, bin_dir: Path, key: bytes | None = None
    ) -> None:
        self.root = root
        self.data_dir = data_dir
        self.conninfo = conninfo
        self.bin_dir = bin_dir
        self.key = key  # SCRAPESINK_BACKUP_KEY: sign manifests, refuse unsigned sets

    def _tool(self, name: str, *args: str, timeout: float = 3600) -> str:
        try:
            result = subprocess.run(
                [str(self.bin_dir / name), *args],
                capture_output=True,
                text=True,
                timeout=timeout,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise BackupError(f"{name} failed: {exc}") from exc
        if result.returncode != 0:
            lines = (result.stderr or result.stdout).strip().splitlines()
            if lines:
                why = lines[-1]
            elif result.returncode < 0:
                why = f"killed by {signal.Signals(-result.returncode).name}"
            else:
                why = f"exit code {result.returncode}"
            raise BackupError(f"{name} failed: {why}")
        return result.stdout

    # -- writing ------------------------------------------------------------------------------
    def create(self, *, version: str, revision: str | None, database: str) -> Manifest:
        now = datetime.now(UTC)
        backup_id = now.strftime("%Y%m%dT%H%M%S%fZ")
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            partial = self.root / f".{backup_id}.partial"
            partial.mkdir()
        except OSError as exc:
            raise BackupError(f"cannot write backups to {self.root}: {exc.strerror}") from exc
        try:
            dump = partial / DUMP
            self._tool("pg_dump", "--format=custom", "--no-owner", f"--file={dump}", self.conninfo)
            self._archive(partial / FILES)
            files = {
                name: {"bytes": (partial / name).stat().st_size, "sha256": sha256(partial / name)}
                for name in (DUMP, FILES)
            }
            manifest = {
                "id": backup_id,
                "created_at": now.isoformat(),
                "files": files,
                "scrapesink_version": version,
                "schema_revision": revision,
                "database": database,
            }
            if self.key is not None:
                manifest["hmac"] = _signature(manifest, self.key)
            (partial / MANIFEST).write_text(json.dumps(manifest, indent=2))
            for name in (DUMP, FILES, MANIFEST):
                _fsync(partial / name)
            final = self.root / backup_id
            partial.rename(final)
            _fsync(self.root)
        except OSError as exc:
            shutil.rmtree(partial, ignore_errors=True)
            raise BackupError(f"backup not written ({exc.strerror or exc}): nothing kept") from exc
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
        return self.get(backup_id)

    def _archive(self, target: Path) -> None:
        """The data directory's files; SQLite databases copied through SQLite's backup API,
        so a copy is consistent even while a writer has it open."""
        with (
            tempfile.TemporaryDirectory(dir=target.parent) as scratch,
            tarfile.open(target, "w") as tar,
        ):
            for path in self._data_files():
                name = path.relative_to(self.data_dir).as_posix()
                if path.suffix == ".sqlite":
                    copy = Path(scratch) / name.replace("/", "__")
                    with sqlite3.connect(path) as src, sqlite3.connect(copy) as dst:
                        src.backup(dst)
                    tar.add(copy, arcname=name)
                else:
                    tar.add(path, arcname=name)

    def _data_files(self) -> Iterator[Path]:
        if not self.data_dir.is_dir():
            return
        backups = self.root.resolve()
        for path in sorted(self.data_dir.rglob("*")):
            relative = path.relative_to(self.data_dir)
            if relative.parts[0] in SKIP or path.resolve().is_relative_to(backups):
                continue
            if relative.parts[0].startswith(".restore-"):  # a restore's staging, not data
                continue
            if path.is_file() and not path.name.endswith(("-wal", "-shm", "-journal")):
                yield path

    # -- reading ------------------------------------------------------------------------------
    def list(self) -> list[Manifest]:
        if not self.root.is_dir():
            return []
        found = []
        for path in sorted(self.root.iterdir()):
            if path.is_dir() and not path.name.startswith(".") and (path / MANIFEST).exists():
                try:
                    found.append(self.get(path.name))
                except BackupError:
                    continue  # a damaged set is shown by verify, not listed as usable
        return found

    def resolve(self, name: str) -> str:
        """A set's id from ``latest``, the id itself, or a prefix only one id has."""
        ids = (
            sorted(p.name for p in self.root.iterdir() if _ID.fullmatch(p.name))
            if (self.root.is_dir())
            else []
        )
        if name == "latest":
            if not ids:
                raise NotFound(f"no backup in {self.root} yet (scrapesink backup)")
            return ids[-1]
        matching = [i for i in ids if i.startswith(name)] if name else []
        if name in ids or len(matching) == 1:
            return name if name in ids else matching[0]
        if len(matching) > 1:
            raise ConfigError(
                f"{name!r} is the start of {len(matching)} backups ({', '.join(matching[:4])}"
                f"{', ...' if len(matching) > 4 else ''}): give more of the id"
            )
        return name  # get() says what is wrong with it

    def get(self, backup_id: str) -> Manifest:
        if not _ID.fullmatch(backup_id):  # an id, never a path (../ stays out)
            raise NotFound(f"no backup {backup_id!r}: ids look like 20261122T031056123456Z")
        path = self.root / backup_id
        if not (path / MANIFEST).is_file():
            raise NotFound(f"no backup {backup_id!r} in {self.root}")
        try:
            raw = json.loads((path / MANIFEST).read_text())
            return Manifest(
                raw["id"],
                path,
                datetime.fromisoformat(raw["created_at"]),
                raw["files"],
                raw["scrapesink_version"],
                raw.get("schema_revision"),
                raw.get("database", ""),
            )
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise BackupError(f"backup {backup_id}: manifest unreadable ({exc})") from exc

    def verify(self, backup_id: str) -> builtins.list[str]:
        """Every problem of a set (empty: whole and usable)."""
        try:
            manifest = self.get(backup_id)
        except BackupError as exc:
            return [exc.message]
        problems = []
        if self.key is not None:
            raw = json.loads((manifest.path / MANIFEST).read_text())
            if "hmac" not in raw:
                problems.append(f"{MANIFEST}: not signed, and SCRAPESINK_BACKUP_KEY is set")
            elif not hmac.compare_digest(
                str(raw["hmac"]).encode("utf-8", "replace"), _signature(raw, self.key).encode()
            ):
                problems.append(
                    f"{MANIFEST}: the signature does not match (changed, or signed"
                    " with another SCRAPESINK_BACKUP_KEY)"
                )
            if problems:
                return problems
        for name in (DUMP, FILES):
            expected = manifest.files.get(name)
            path = manifest.path / name
            if expected is None or not path.is_file():
                problems.append(f"{name}: missing")
                continue
            size = path.stat().st_size
            if size != int(expected["bytes"]):
                problems.append(f"{name}: {size} bytes, the manifest says {expected['bytes']}")
            elif sha256(path) != expected["sha256"]:
                problems.append(f"{name}: SHA-256 does not match the manifest")
        if problems:
            return problems
        try:
            self._tool("pg_restore", "--list", str(manifest.path / DUMP), timeout=600)
        except BackupError as exc:
            problems.append(exc.message)
        try:
            with tarfile.open(manifest.path / FILES) as tar:
                problems += member_problems(tar)
        except (tarfile.TarError, OSError) as exc:
            problems.append(f"{FILES}: {exc}")
        return problems

    # -- restoring ----------------------------------------------------------------------------
    def restore(self, backup_id: str, *, database_empty: bool, force: bool) -> Manifest:
        """Verify, then load the dump and put the files back. Without ``force`` the database
        must hold no tables and the data directory no files; with it, both are replaced."""
        problems = self.verify(backup_id)
        if problems:
            raise BackupError(
                f"backup {backup_id} is damaged, nothing was restored: " + "; ".join(problems)
            )
        manifest = self.get(backup_id)
        present = list(self._data_files())
        if not force and (not database_empty or present):
            what = "the database" if not database_empty else "the data directory"
            raise Conflict(f"{what} is not empty: restore into an empty one, or --force")
        # The files first, into a staging directory beside their place (same filesystem: the
        # moves below are renames); only then the database; only then the files in place.
        staging = self.data_dir / f".restore-{backup_id}"
        try:
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir(parents=True)
            with tarfile.open(manifest.path / FILES) as tar:
                tar.extractall(staging, filter="data")
        except (OSError, tarfile.TarError) as exc:
            shutil.rmtree(staging, ignore_errors=True)
            raise BackupError(
                f"backup {backup_id}: files not extracted ({exc}), nothing was restored"
            ) from exc
        try:
            parked = None if database_empty else self._park_schema()
            try:
                self._tool(
                    "pg_restore",
                    "--no-owner",
                    "--exit-on-error",
                    "--single-transaction",
                    f"--dbname={self.conninfo}",
                    str(manifest.path / DUMP),
                )
            except BaseException:
                if parked is not None:
                    self._unpark_schema(parked, restore=True)
                raise
            if parked is not None:
                self._unpark_schema(parked, restore=False)
            for path in present:
                path.unlink()
            for path in sorted(staging.rglob("*")):
                if path.is_file():
                    target = self.data_dir / path.relative_to(staging)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    os.replace(path, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return manifest

    def _park_schema(self) -> tuple[str, str]:
        """--force: move the current schema aside (renamed, not dropped) and start empty, so a
        failed restore can put it back untouched."""
        with psycopg.connect(self.conninfo, autocommit=True) as conn:
            row = conn.execute("SELECT current_schema()").fetchone()
            assert row is not None
            schema = str(row[0])
            parked = f"{schema}_before_restore_{datetime.now(UTC):%Y%m%d%H%M%S}"
            with conn.transaction():
                conn.execute(
                    sql.SQL("ALTER SCHEMA {} RENAME TO {}").format(
                        sql.Identifier(schema), sql.Identifier(parked)
                    )
                )
                conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        return schema, parked

    def _unpark_schema(self, names: tuple[str, str], *, restore: bool) -> None:
        """Drop the parked schema (restored), or put it back in place of the new one."""
        schema, parked = names
        with psycopg.connect(self.conninfo, autocommit=True) as conn, conn.transaction():
            if restore:
                conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))
                conn.execute(
                    sql.SQL("ALTER SCHEMA {} RENAME TO {}").format(
                        sql.Identifier(parked), sql.Identifier(schema)
                    )
                )
            else:
                conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(parked)))

    # -- retention ----------------------------------------------------------------------------
    def prune(self, *, keep: timedelta | None, keep_last: int | None) -> builtins.list[Manifest]:
        """Remove sets older than ``keep`` beyond the newest ``keep_last``; returns them."""
        if keep is None and keep_last is None:
            raise ConfigError("say what to keep: --keep 30d and/or --keep-last N")
        sets = sorted(self.list(), key=lambda m: m.created_at, reverse=True)
        now = datetime.now(UTC)
        removed = []
        for index, manifest in enumerate(sets):
            protected = keep_last is not None and index < keep_last
            young = keep is not None and now - manifest.created_at <= keep
            if protected or young:
                continue
            shutil.rmtree(manifest.path)
            removed.append(manifest)
        return removed

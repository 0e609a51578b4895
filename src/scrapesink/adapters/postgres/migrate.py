"""Alembic, driven from code: upgrade, downgrade, current, history, and the at-head check."""

from __future__ import annotations

import io
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import psycopg

from scrapesink.adapters.postgres.database import Database
from scrapesink.errors import SchemaError

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# The newest revision in migrations/versions. Every command checks the schema against it, and
# importing Alembic (with SQLAlchemy) to read it costs half a second per CLI call; a test keeps
# this constant equal to Alembic's own head, and Alembic is imported only to migrate.
HEAD = "0006"
# Serializes migrations between processes sharing a database (e.g. two CLIs on the embedded one).
_MIGRATION_LOCK = 0x5C5A_0001
log = logging.getLogger(__name__)


class Migrator:
    """Applies and inspects the system schema of one database."""

    def __init__(self, database: Database) -> None:
        self.database = database

    def _config(self, stdout: io.StringIO | None = None) -> Config:
        from alembic.config import Config

        config = Config(stdout=stdout or io.StringIO())
        config.set_main_option("script_location", str(MIGRATIONS_DIR))
        return config

    def head(self) -> str:
        return HEAD

    def alembic_head(self) -> str | None:
        """The head as Alembic computes it from the scripts (slow; HEAD must equal it)."""
        from alembic.script import ScriptDirectory

        return ScriptDirectory.from_config(self._config()).get_current_head()

    def current(self) -> str | None:
        """The revision the database is at, or None for an empty database."""
        with self.database.direct() as conn:
            try:
                row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
            except psycopg.errors.UndefinedTable:
                return None
        return row[0] if row else None

    def is_current(self) -> bool:
        return self.current() == self.head()

    def upgrade(self, target: str = "head") -> tuple[str | None, str | None]:
        """Upgrade to ``target``; returns (before, after)."""
        from alembic import command

        return self._run(lambda cfg: command.upgrade(cfg, target))

    def downgrade(self, target: str = "-1") -> tuple[str | None, str | None]:
        from alembic import command

        return self._run(lambda cfg: command.downgrade(cfg, target))

    @staticmethod
    def history() -> str:
        """Every migration, newest first (reads the scripts; needs no database)."""
        from alembic import command
        from alembic.config import Config

        out = io.StringIO()
        config = Config(stdout=out)
        config.set_main_option("script_location", str(MIGRATIONS_DIR))
        command.history(config, verbose=False, indicate_current=False)
        return out.getvalue()

    def ensure_current(self, *, auto_upgrade: bool) -> None:
        """Make sure the schema is at head: upgrade it, or refuse with what to run."""
        current = self.current()
        head = self.head()
        if current == head:
            return
        if auto_upgrade:
            before, after = self.upgrade()
            log.info("migrated %s from %s to %s", self.database.label, before or "empty", after)
            return
        state = "has no scrapesink schema" if current is None else f"is at revision {current}"
        raise SchemaError(
            f"database {self.database.label} {state}, this scrapesink needs {head}: "
            "run `scrapesink db upgrade`"
        )

    def _run(self, action: Callable[[Config], None]) -> tuple[str | None, str | None]:
        from sqlalchemy import create_engine
        from sqlalchemy.pool import NullPool

        engine = create_engine(
            "postgresql+psycopg://",
            creator=lambda: psycopg.connect(self.database.conninfo),
            poolclass=NullPool,
        )
        before = self.current()
        try:
            with engine.connect() as connection:
                # A session-level lock held across Alembic's own transactions.
                connection.exec_driver_sql(f"SELECT pg_advisory_lock({_MIGRATION_LOCK})")
                connection.commit()
                try:
                    config = self._config()
                    config.attributes["connection"] = connection
                    action(config)
                    connection.commit()
                finally:
                    connection.exec_driver_sql(f"SELECT pg_advisory_unlock({_MIGRATION_LOCK})")
                    connection.commit()
        finally:
            engine.dispose()
        return before, self.current()

"""Alembic environment: always run with a connection handed in by scrapesink's migrator."""

from __future__ import annotations

from alembic import context

from scrapesink.adapters.postgres.tables import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through `scrapesink db upgrade`, not the alembic CLI")

context.configure(connection=connection, target_metadata=metadata, transaction_per_migration=True)
with context.begin_transaction():
    context.run_migrations()

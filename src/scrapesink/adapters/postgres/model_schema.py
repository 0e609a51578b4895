"""Applying model declarations to PostgreSQL: compare, classify, apply, record, make functions.

Alembic's ``compare_metadata`` diffs the declared tables (``model_tables.build_metadata``)
against the database. Additive changes — a new model, a nullable (or defaulted) field, a new
index, a relaxed NOT NULL, a new default — are applied by themselves. Everything that can lose
data or fail on existing rows — dropping a model, field or index, a type change, a new NOT NULL
field without a default, a new unique constraint — is refused with one line naming each change,
unless ``allow_destructive``. Each applied change is a row in ``model_history``. The generated
functions are recreated afterwards (``CREATE OR REPLACE``), all in one transaction under an
advisory lock, so concurrent processes apply a declaration once.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

import psycopg

from scrapesink.adapters.postgres.database import Database, translate
from scrapesink.adapters.postgres.model_sql import delete_function, upsert_function
from scrapesink.adapters.postgres.model_tables import build_metadata, table_owner
from scrapesink.domain.models import Declaration
from scrapesink.errors import SchemaError

if TYPE_CHECKING:
    from sqlalchemy import Connection, MetaData

_APPLY_LOCK = 0x5C5A_0002


@dataclass(frozen=True, slots=True)
class Change:
    model: str
    table_name: str
    change: str  # add_table, add_column, drop_column, alter_type, ...
    detail: str
    destructive: bool
    op: Any = None  # Alembic's diff entry, to apply it

    def describe(self) -> str:
        return f"{self.table_name}: {self.change} {self.detail}".rstrip()


@dataclass(frozen=True, slots=True)
class HistoryRow:
    id: int
    applied_at: datetime
    model: str
    table_name: str
    change: str
    detail: str
    destructive: bool


class ModelSchema:
    """The tables and functions of declared models in one database."""

    def __init__(self, database: Database) -> None:
        self.database = database
        self._applied: set[str] = set()  # declarations this process has brought up to date

    def ensure(self, declaration: Declaration) -> list[Change]:
        """Apply what is additive (once per process); refuse when destructive changes wait."""
        # repr, not hash: a declared default may be a JSON list or object (unhashable)
        marker = repr(sorted(declaration.models.items()))
        if marker in self._applied:
            return []
        changes = self.apply(declaration, allow_destructive=False)
        self._applied.add(marker)
        return changes

    def plan(self, declaration: Declaration) -> list[Change]:
        with self._connection() as connection:
            return self._plan(connection, declaration, build_metadata(declaration))

    def apply(self, declaration: Declaration, *, allow_destructive: bool) -> list[Change]:
        """Bring the database to ``declaration``; returns the changes made."""
        metadata = build_metadata(declaration)
        with self._connection() as connection:
            connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_APPLY_LOCK})")
            changes = self._plan(connection, declaration, metadata)
            refused = [c for c in changes if c.destructive and not allow_destructive]
            if refused:
                raise SchemaError(
                    "the declaration would change existing data: "
                    + "; ".join(c.describe() for c in refused)
                    + " — run `scrapesink models apply --allow-destructive` to apply it"
                )
            self._execute(connection, metadata, changes)
            for model in declaration.models.values():
                connection.exec_driver_sql(upsert_function(declaration, model))
                connection.exec_driver_sql(delete_function(model))
            if changes:
                connection.exec_driver_sql(
                    "INSERT INTO model_history (model, table_name, change, detail, destructive)"
                    " SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[],"
                    " %s::boolean[])",
                    (
                        [c.model for c in changes],
                        [c.table_name for c in changes],
                        [c.change for c in changes],
                        [c.detail for c in changes],
                        [c.destructive for c in changes],
                    ),
                )
            connection.commit()
        return changes

    def history(self, *, model: str | None = None, limit: int = 100) -> list[HistoryRow]:
        with self.database.connection() as conn:
            rows = conn.execute(
                "SELECT id, applied_at, model, table_name, change, detail, destructive"
                " FROM model_history WHERE %(m)s::text IS NULL OR model = %(m)s"
                " ORDER BY id DESC LIMIT %(n)s",
                {"m": model, "n": limit},
            ).fetchall()
        return [HistoryRow(*row) for row in rows]

    # -- internals ----------------------------------------------------------------------------
    @contextmanager
    def _connection(self) -> Iterator[Connection]:
        from sqlalchemy import create_engine
        from sqlalchemy.pool import NullPool

        engine = create_engine(
            "postgresql+psycopg://",
            creator=lambda: psycopg.connect(self.database.conninfo),
            poolclass=NullPool,
        )
        try:
            with engine.connect() as connection:
                yield connection
        except Exception as exc:
            origin = getattr(exc, "orig", None)
            if isinstance(origin, psycopg.Error):
                raise translate(origin) from exc
            raise
        finally:
            engine.dispose()

    def _plan(
        self, connection: Connection, declaration: Declaration, metadata: MetaData
    ) -> list[Change]:
        from alembic.autogenerate import compare_metadata
        from alembic.migration import MigrationContext

        owners = table_owner(declaration)
        previously: dict[str, str] = dict(
            connection.exec_driver_sql(
                "SELECT DISTINCT ON (table_name) table_name, model FROM model_history"
                " ORDER BY table_name, id DESC"
            ).fetchall()
        )
        managed = set(owners) | set(previously)

        def include_name(name: str | None, type_: str, parents: dict[str, str | None]) -> bool:
            if type_ == "table":
                return name in managed
            return True

        context = MigrationContext.configure(
            connection,
            opts={
                "include_name": include_name,
                "compare_type": True,
                "compare_server_default": False,
            },
        )
        diff = compare_metadata(context, metadata)
        changes = []
        for entry in diff:
            for op in entry if isinstance(entry, list) else [entry]:
                change = _classify(op)
                if change is None:
                    continue
                table, kind, detail, destructive = change
                model = owners.get(table) or previously.get(table) or "?"
                changes.append(Change(model, table, kind, detail, destructive, op))
        dropped = {c.table_name for c in changes if c.change == "drop_table"}
        changes = [c for c in changes if c.change == "drop_table" or c.table_name not in dropped]
        return _redefined_indexes(changes)

    def _execute(self, connection: Connection, metadata: MetaData, changes: list[Change]) -> None:
        from alembic.migration import MigrationContext
        from alembic.operations import Operations

        ops = Operations(MigrationContext.configure(connection))
        order = {table.name: i for i, table in enumerate(metadata.sorted_tables)}
        creates = sorted(
            (c for c in changes if c.change == "add_table"), key=lambda c: order[c.table_name]
        )
        for change in creates:
            change.op[1].create(connection)
        for change in changes:
            op = change.op
            kind = change.change
            if kind == "drop_table":
                connection.exec_driver_sql(f'DROP TABLE IF EXISTS "{change.table_name}" CASCADE')
            elif kind == "add_column":
                ops.add_column(change.table_name, op[3]._copy())
            elif kind == "drop_column":
                ops.drop_column(change.table_name, op[3].name)
            elif kind == "add_index":
                op[1].create(connection, checkfirst=True)
            elif kind == "drop_index":
                ops.drop_index(op[1].name, table_name=change.table_name)
            elif kind == "alter_index":
                drop, add = op
                ops.drop_index(drop[1].name, table_name=change.table_name)
                add[1].create(connection)
            elif kind == "add_unique":
                ops.create_unique_constraint(
                    op[1].name, change.table_name, [c.name for c in op[1].columns]
                )
            elif kind == "drop_constraint":
                ops.drop_constraint(op[1].name, change.table_name)
            elif kind == "alter_type":
                new = op[6].compile(dialect=connection.dialect)
                ops.alter_column(
                    change.table_name,
                    op[3],
                    type_=op[6],
                    postgresql_using=f'"{op[3]}"::{new}',
                )
            elif kind in ("drop_not_null", "set_not_null"):
                ops.alter_column(change.table_name, op[3], nullable=op[6])


def _redefined_indexes(changes: list[Change]) -> list[Change]:
    """A non-unique index dropped and added again under its name (other columns, e.g. the
    (field, id) indexes that replaced (field)) is one ``alter_index``: rebuilding an index
    loses nothing. It drops the old definition, then creates the new one."""

    def plain(kind: str) -> dict[tuple[str, str], Change]:
        return {
            (c.table_name, c.op[1].name): c
            for c in changes
            if c.change == kind and not c.op[1].unique
        }

    drops, adds = plain("drop_index"), plain("add_index")
    both = drops.keys() & adds.keys()
    result = []
    for c in changes:
        key = (c.table_name, c.op[1].name) if c.change in ("add_index", "drop_index") else None
        if key not in both:
            result.append(c)
        elif c.change == "drop_index":
            pair = (c.op, adds[key].op)
            result.append(replace(c, change="alter_index", destructive=False, op=pair))
    return result


def _classify(op: Any) -> tuple[str, str, str, bool] | None:
    """(table, change, detail, destructive) for one Alembic diff entry; None to ignore."""
    kind = op[0]
    if kind == "add_table":
        return op[1].name, "add_table", "", False
    if kind == "remove_table":
        return op[1].name, "drop_table", "(its rows are lost)", True
    if kind == "add_column":
        column = op[3]
        safe = column.nullable or column.server_default is not None or column.computed is not None
        detail = f"{column.name} {column.type}" + ("" if safe else " NOT NULL without a default")
        return op[2], "add_column", detail, not safe
    if kind == "remove_column":
        return op[2], "drop_column", f"{op[3].name} (its values are lost)", True
    if kind == "add_index":
        return op[1].table.name, "add_index", op[1].name, False
    if kind == "remove_index":
        return op[1].table.name, "drop_index", op[1].name, True
    if kind == "add_constraint":
        return op[1].table.name, "add_unique", op[1].name, True
    if kind == "remove_constraint":
        return op[1].table.name, "drop_constraint", op[1].name, True
    if kind == "modify_type":
        return op[2], "alter_type", f"{op[3]} {op[5]} -> {op[6]}", True
    if kind == "modify_nullable":
        relaxed = op[6] is True
        return op[2], "drop_not_null" if relaxed else "set_not_null", op[3], not relaxed
    return None  # defaults, comments: not schema that holds data

"""Declared models as SQLAlchemy Core tables: what ``models apply`` creates and compares against.

Layout of one model (``movies`` with a link to ``actors``; ``workflows`` with children):

* the model's table: ``id`` (identity), the declared fields, ``content_hash`` (what the last
  upsert stored: the upsert is a no-op when it is unchanged), ``accepted_stamp`` (the newest
  acceptance stamp seen: an older version arriving late changes nothing), ``first_seen_at``,
  ``last_seen_at``, ``updated_at``; a unique constraint on the natural key; declared indexes;
  ``search_vector``, a generated ``tsvector`` over the search fields, with a GIN index;
* a child table: ``id``, ``<parent table>_id`` (foreign key, ``ON DELETE CASCADE``), its fields;
  unique on the parent for ``one``, on parent + key for ``many``;
* a link table: ``<parent table>_id`` and ``<linked table>_id`` (both cascade), the link fields,
  primary key on the pair (a link is stored once).

Names are checked identifiers (``domain.models``), and SQLAlchemy quotes them in DDL.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Computed,
    Date,
    DateTime,
    Double,
    ForeignKey,
    Identity,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Numeric,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, TSVECTOR
from sqlalchemy.types import TypeEngine

from scrapesink.domain.models import ChildDef, Declaration, FieldDef, ModelDef

SEARCH_CONFIG = "english"
_TYPES: dict[str, type[TypeEngine[Any]]] = {
    "integer": Integer,
    "bigint": BigInteger,
    "float": Double,
    "numeric": Numeric,
    "string": String,
    "text": Text,
    "boolean": Boolean,
    "date": Date,
    "datetime": DateTime,
    "json": JSONB,
}
SQL_TYPES = {
    "integer": "integer",
    "bigint": "bigint",
    "float": "double precision",
    "numeric": "numeric",
    "string": "varchar",
    "text": "text",
    "boolean": "boolean",
    "date": "date",
    "datetime": "timestamptz",
    "json": "jsonb",
}


def ref_column(table_name: str) -> str:
    """The column that points at ``table_name``'s id (``workflows`` -> ``workflows_id``)."""
    return f"{table_name}_id"


def sql_literal(spec: FieldDef, value: Any) -> str:
    """A declared default as an SQL literal (values were checked against the type)."""
    if value is None:
        return "NULL"
    if spec.type == "json":
        return _quote(json.dumps(value)) + "::jsonb"
    if spec.type == "boolean":
        return "true" if value else "false"
    if spec.type in ("integer", "bigint", "float", "numeric"):
        return f"{value!r}::{SQL_TYPES[spec.type]}"
    return _quote(str(value)) + f"::{SQL_TYPES[spec.type]}"


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _column(spec: FieldDef) -> Column[Any]:
    kind = _TYPES[spec.type]
    column_type: TypeEngine[Any] = DateTime(timezone=True) if spec.type == "datetime" else kind()
    default = None if spec.default is None else text(sql_literal(spec, spec.default))
    return Column(spec.name, column_type, nullable=spec.nullable, server_default=default)


def search_expression(fields: tuple[FieldDef, ...]) -> str | None:
    """The generated tsvector: the first search field weighs A, the others B."""
    parts = [
        f"setweight(to_tsvector('{SEARCH_CONFIG}'::regconfig, coalesce(\"{f.name}\"::text, '')),"
        f" '{'A' if i == 0 else 'B'}')"
        for i, f in enumerate(f for f in fields if f.search)
    ]
    return " || ".join(parts) if parts else None


def _field_indexes(table: str, fields: tuple[FieldDef, ...]) -> list[Index]:
    """Declared field indexes; a btree one is on (field, id), so that keyset pages sorted by
    the field (ties by id) are read in index order."""
    indexes = []
    for spec in fields:
        if spec.index == "gin":
            indexes.append(Index(f"ix_{table}_{spec.name}", spec.name, postgresql_using="gin"))
        elif spec.index:
            indexes.append(Index(f"ix_{table}_{spec.name}", spec.name, "id"))
    return indexes


def _search(table: str, fields: tuple[FieldDef, ...]) -> list[Any]:
    expression = search_expression(fields)
    if expression is None:
        return []
    return [
        Column("search_vector", TSVECTOR, Computed(expression, persisted=True)),
        Index(f"ix_{table}_search", "search_vector", postgresql_using="gin"),
    ]


def _index_name(table: str, suffix: str) -> str:
    name = f"{table}_{suffix}"
    return name[:63]


def build_metadata(declaration: Declaration) -> MetaData:
    """Every declared model's tables (models first, so links can point at any of them)."""
    metadata = MetaData()
    for model in declaration.models.values():
        _model_table(metadata, model)
    for model in declaration.models.values():
        for child in model.children:
            _child_table(metadata, model, child)
        for link in model.links:
            target = declaration.model(link.model)
            Table(
                link.table_name,
                metadata,
                Column(
                    ref_column(model.table_name),
                    BigInteger,
                    ForeignKey(f"{model.table_name}.id", ondelete="CASCADE"),
                    nullable=False,
                ),
                Column(
                    ref_column(target.table_name),
                    BigInteger,
                    ForeignKey(f"{target.table_name}.id", ondelete="CASCADE"),
                    nullable=False,
                ),
                *[_column(f) for f in link.fields],
                PrimaryKeyConstraint(
                    ref_column(model.table_name),
                    ref_column(target.table_name),
                    name=_index_name(link.table_name, "pkey"),
                ),
                Index(f"ix_{link.table_name}_{target.table_name}", ref_column(target.table_name)),
            )
    return metadata


def _model_table(metadata: MetaData, model: ModelDef) -> Table:
    name = model.table_name
    return Table(
        name,
        metadata,
        Column("id", BigInteger, Identity(), primary_key=True),
        *[_column(f) for f in model.fields],
        Column("content_hash", Text, nullable=False),
        # the acceptance stamp of the version held (ports.stamp): an older one changes nothing
        Column("accepted_stamp", LargeBinary, nullable=True),
        *[
            Column(c, DateTime(timezone=True), nullable=False, server_default=text("now()"))
            for c in ("first_seen_at", "last_seen_at", "updated_at")
        ],
        UniqueConstraint(*model.natural_key, name=_index_name(name, "key")),
        *_field_indexes(name, model.fields),
        *[
            Index(
                f"ix_{name}_{'_'.join(ix.fields)}"[:63],
                *ix.fields,
                unique=ix.unique,
                postgresql_using=ix.using,
            )
            for ix in model.indexes
        ],
        *_search(name, model.fields),
    )


def _child_table(metadata: MetaData, model: ModelDef, child: ChildDef) -> Table:
    parent = ref_column(model.table_name)
    unique = (parent,) if child.relation == "one" else (parent, *child.key)
    constraints: list[Any] = []
    if child.relation == "one" or child.key:
        constraints.append(UniqueConstraint(*unique, name=_index_name(child.table_name, "key")))
    else:
        constraints.append(Index(f"ix_{child.table_name}_{parent}"[:63], parent))
    return Table(
        child.table_name,
        metadata,
        Column("id", BigInteger, Identity(), primary_key=True),
        Column(
            parent,
            BigInteger,
            ForeignKey(f"{model.table_name}.id", ondelete="CASCADE"),
            nullable=False,
        ),
        *[_column(f) for f in child.fields],
        *constraints,
        *_field_indexes(child.table_name, child.fields),
        *_search(child.table_name, child.fields),
    )


def table_owner(declaration: Declaration) -> dict[str, str]:
    """Table name -> the model that owns it."""
    return {table: m.name for m in declaration.models.values() for table in m.tables}

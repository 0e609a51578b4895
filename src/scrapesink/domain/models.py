"""Model declarations: scraped entities described in JSON, checked before anything touches SQL.

The shape is seed 001's ``{"models": {name: {"table_name", "fields": [...]}}}``, extended:

    {"models": {"movies": {
        "table_name": "movies",
        "natural_key": ["url"],                  # upserts match on it (default: primary keys)
        "strict": false,                         # true: unknown record fields are rejected
        "fields": [{"name": "url", "type": "string", "nullable": false},
                   {"name": "title", "type": "text", "search": true},
                   {"name": "genres", "type": "json", "index": "gin"},
                   {"name": "year", "type": "integer", "index": true, "default": null}],
        "indexes": [{"fields": ["year", "title"], "unique": false}],
        "children": [{"name": "transcripts", "relation": "many", "key": ["video_url"],
                      "fields": [...]}],        # 1:1 ("one") or 1:N ("many"), cascade delete
        "links": [{"name": "actors", "model": "actors", "table_name": "movie_actor",
                   "fields": [{"name": "role", "type": "string"}]}]   # M:N, shared entities
    }}}

``declarations.parse_declaration`` (its checks live in ``model_checks.py``) reports *every*
problem at once, each with its path (``models.movies.fields[3].type: unknown type "strng"``).
Identifiers must match ``^[a-z_][a-z0-9_]{0,62}$``, so no hostile name can ever reach SQL (and
the SQL layer quotes them anyway). Standard library only.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from scrapesink.errors import DeclarationError

FIELD_TYPES = (
    "integer",
    "bigint",
    "float",
    "numeric",
    "string",
    "text",
    "boolean",
    "date",
    "datetime",
    "json",
)
IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
# Columns the engine adds to model tables (and the CSV files); declarations may not use them.
SYSTEM_COLUMNS = (
    "id",
    "first_seen_at",
    "last_seen_at",
    "updated_at",
    "deleted_at",
    "content_hash",
    "accepted_stamp",
    "search_vector",
)
BUNDLED = ("movies", "workflows")
# Tables scrapesink itself keeps (a guard test compares them with its migrations' metadata) and
# prefixes of names it generates: a model's table may be none of them.
SYSTEM_TABLES = frozenset(
    {
        "alembic_version",
        "raw_events",
        "raw_event_keys",
        "journal_progress",
        "model_history",
        "api_keys",
        "audit_log",
        "etl_jobs",
        "etl_components",
        "etl_runs",
    }
)
RESERVED_PREFIXES = ("pg_", "raw_events_", "upsert_", "delete_", "deleted_")

FieldType = Literal[
    "integer", "bigint", "float", "numeric", "string", "text", "boolean", "date", "datetime", "json"
]
Relation = Literal["one", "many"]


@dataclass(frozen=True, slots=True)
class FieldDef:
    name: str
    type: FieldType
    nullable: bool = True
    primary_key: bool = False
    default: Any = None
    index: Literal[False, True, "gin"] = False
    search: bool = False


@dataclass(frozen=True, slots=True)
class IndexDef:
    fields: tuple[str, ...]
    unique: bool = False
    using: Literal["btree", "gin"] = "btree"


@dataclass(frozen=True, slots=True)
class ChildDef:
    """Rows that belong to one record: ``one`` (1:1) or ``many`` (1:N, told apart by ``key``)."""

    name: str
    table_name: str
    relation: Relation
    fields: tuple[FieldDef, ...]
    key: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class LinkDef:
    """An M:N relation to another model through a link table (shared entities stored once)."""

    name: str
    model: str
    table_name: str
    fields: tuple[FieldDef, ...] = ()


@dataclass(frozen=True, slots=True)
class ModelDef:
    name: str
    table_name: str
    natural_key: tuple[str, ...]
    fields: tuple[FieldDef, ...]
    indexes: tuple[IndexDef, ...] = ()
    children: tuple[ChildDef, ...] = ()
    links: tuple[LinkDef, ...] = ()
    strict: bool = False

    def field(self, name: str) -> FieldDef | None:
        return next((f for f in self.fields if f.name == name), None)

    @property
    def search_fields(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields if f.search)

    @property
    def tables(self) -> tuple[str, ...]:
        """The tables this model owns: its own first, then its children's and link tables."""
        return (
            self.table_name,
            *(c.table_name for c in self.children),
            *(link.table_name for link in self.links),
        )


def fingerprint(model: ModelDef) -> str:
    """A short digest of everything a model declares (frozen dataclasses: their repr is the
    whole declaration, in order): two processes with the same fingerprint read and store the
    model's records the same way."""
    return hashlib.sha256(repr(model).encode()).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class Declaration:
    models: dict[str, ModelDef] = field(default_factory=dict)

    def model(self, name: str) -> ModelDef:
        try:
            return self.models[name]
        except KeyError:
            known = ", ".join(sorted(self.models)) or "none"
            raise DeclarationError([f"unknown model {name!r} (declared: {known})"]) from None

    def merged(self, other: Declaration) -> Declaration:
        """Both declarations' models; a name declared twice, or a table that two models would
        own, is an error."""
        clash = sorted(set(self.models) & set(other.models))
        if clash:
            raise DeclarationError([f"models.{name}: declared twice" for name in clash])
        owners = {table: model.name for model in self.models.values() for table in model.tables}
        taken = [
            f"models.{model.name}: table {table!r} is already the table of model {owners[table]!r}"
            for model in other.models.values()
            for table in model.tables
            if table in owners
        ]
        if taken:
            raise DeclarationError(taken)
        return Declaration({**self.models, **other.models})

"""Model records out of PostgreSQL: the model read port (get, list, count, search, stats).

Reads build each record as one ``jsonb`` value in one statement (the row, its children and its
links), so a get is a single round trip.
"""

from __future__ import annotations

import base64
import binascii
import builtins
import json
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from scrapesink.adapters.postgres.database import Database
from scrapesink.adapters.postgres.model_sql import q
from scrapesink.adapters.postgres.model_tables import SEARCH_CONFIG, SQL_TYPES, ref_column
from scrapesink.application.ports import (
    Filter,
    ModelPage,
    SearchHit,
)
from scrapesink.domain.models import Declaration, ModelDef
from scrapesink.domain.records import convert
from scrapesink.errors import InputError, RecordError

_TIMES = ("first_seen_at", "last_seen_at", "updated_at")
_SQL_OPS = {"=": "=", "!=": "<>", "<": "<", "<=": "<=", ">": ">", ">=": ">=", "~": "@>"}


class PostgresModelReader:
    """Queries over declared models (``ports.ModelReader``): get, list, search, statistics."""

    def __init__(self, database: Database, declaration: Declaration) -> None:
        self.database = database
        self.declaration = declaration
        self._documents: dict[tuple[str, bool], str] = {}  # the SQL is built once per model

    def _document(self, model: ModelDef, *, children: bool = True) -> str:
        key = (model.name, children)
        sql = self._documents.get(key)
        if sql is None:
            sql = self._documents[key] = self._build_document(model, children=children)
        return sql

    def _build_document(self, model: ModelDef, *, children: bool) -> str:
        """SQL for one row of ``t`` as a record: its fields (and, with ``children``, its
        children and links) as one jsonb value. Columns are named one by one: ``to_jsonb`` of
        the row would also render the generated tsvector, only to drop it again."""
        parts = [_object("t", ("id", *(f.name for f in model.fields), *_TIMES))]
        if not children:
            return parts[0]
        parent = ref_column(model.table_name)
        for child in model.children:
            inner = _object("c", tuple(f.name for f in child.fields))
            if child.relation == "one":
                value = (
                    f"(SELECT {inner} FROM {q(child.table_name)} AS c WHERE c.{q(parent)} = t.id)"
                )
            else:
                value = (
                    f"(SELECT coalesce(jsonb_agg({inner} ORDER BY c.id), '[]')"
                    f" FROM {q(child.table_name)} AS c WHERE c.{q(parent)} = t.id)"
                )
            parts.append(f"jsonb_build_object('{child.name}', {value})")
        for link in model.links:
            target = self.declaration.model(link.model)
            other = ref_column(target.table_name)
            fields = "".join(f", '{f.name}', l.{q(f.name)}" for f in link.fields)
            key = ", ".join(f"'{k}', a.{q(k)}" for k in target.natural_key)
            value = (
                f"(SELECT coalesce(jsonb_agg(jsonb_build_object({key}{fields})"
                f" ORDER BY l.{q(other)}), '[]') FROM {q(link.table_name)} AS l"
                f" JOIN {q(target.table_name)} AS a ON a.id = l.{q(other)}"
                f" WHERE l.{q(parent)} = t.id)"
            )
            parts.append(f"jsonb_build_object('{link.name}', {value})")
        return " || ".join(parts)

    def get(self, model: ModelDef, key: dict[str, Any]) -> dict[str, Any] | None:
        where = " AND ".join(f"t.{q(k)} = %s" for k in model.natural_key)
        sql = f"SELECT {self._document(model)} FROM {q(model.table_name)} AS t WHERE {where}"
        rows = self.database.fetch(sql, [key[k] for k in model.natural_key])
        return in_declared_order(model, rows[0][0]) if rows else None

    def list(
        self,
        model: ModelDef,
        *,
        filters: Sequence[Filter] = (),
        sort: str | None = None,
        limit: int = 50,
        after: str | None = None,
        children: bool = False,
    ) -> ModelPage:
        """A page of records ordered by ``sort`` (``field`` or ``-field``; nulls last; ties by
        id in the same direction), each with its fields, or whole with ``children``.

        Keyset pagination in index order: a field declared with ``"index": true`` has an
        index on (field, id), so a page reads only its own rows whatever the table's size.
        Nulls come last both ways, which one index scan cannot give for descending order:
        the non-null and the null rows are two index scans, each stopping after a page."""
        clauses, params = self._where(model, filters)
        field = (sort or "").lstrip("-") or None
        descending = bool(sort and sort.startswith("-"))
        spec = self._field(model, field, "sort") if field is not None else None
        cursor = _decode_cursor(after) if after is not None else None
        table = q(model.table_name)
        # Without children, plain columns in binary: building a jsonb object per row cost the
        # server twice what the page's index scans did.
        document = self._document(model) if children else self._columns(model)
        if spec is None:
            if cursor is not None:
                clauses.append("t.id > %s")
                params.append(cursor[1])
            condition = f"WHERE {' AND '.join(clauses)}" if clauses else ""
            sql = (
                f"SELECT {document}, NULL, t.id FROM {table} AS t {condition}"
                " ORDER BY t.id LIMIT %s"
            )
            params.append(limit + 1)
        else:
            column = f"t.{q(spec.name)}"
            way, cmp = ("DESC", "<") if descending else ("ASC", ">")
            cast = SQL_TYPES[spec.type]
            branches: builtins.list[str] = []
            values: builtins.list[Any] = []
            if cursor is None or cursor[0] is not None:
                where = [*clauses, f"{column} IS NOT NULL"]
                values += params
                if cursor is not None:
                    value = json.dumps(cursor[0]) if spec.type == "json" else cursor[0]
                    where.append(f"({column}, t.id) {cmp} (%s::{cast}, %s::bigint)")
                    values += [value, cursor[1]]
                branches.append(
                    f"SELECT t.* FROM {table} AS t WHERE {' AND '.join(where)}"
                    f" ORDER BY {column} {way}, t.id {way} LIMIT %s"
                )
                values.append(limit + 1)
            where = [*clauses, f"{column} IS NULL"]
            values += params
            if cursor is not None and cursor[0] is None:
                where.append(f"t.id {cmp} %s::bigint")
                values.append(cursor[1])
            branches.append(
                f"SELECT t.* FROM {table} AS t WHERE {' AND '.join(where)}"
                f" ORDER BY t.id {way} LIMIT %s"
            )
            values.append(limit + 1)
            union = " UNION ALL ".join(f"({b})" for b in branches)
            sql = (
                f"SELECT {document}, {column}, t.id FROM ({union}) AS t"
                f" ORDER BY {column} IS NULL, {column} {way}, t.id {way} LIMIT %s"
            )
            params = [*values, limit + 1]
        rows = self.database.fetch(sql, params, binary=not children)
        page = rows[:limit]
        records = (
            [in_declared_order(model, row[0]) for row in page]
            if children
            else _records(model, page)
        )
        next_cursor = None
        if len(rows) > limit and records:
            next_cursor = _encode_cursor(rows[limit - 1][-2], rows[limit - 1][-1])
        return ModelPage(records, next_cursor)

    def _columns(self, model: ModelDef) -> str:
        """The record's own columns, rendered as its document renders them: times and dates
        by PostgreSQL's JSON encoder (the same text ``get`` gives), numeric as a number."""
        kinds = {f.name: f.type for f in model.fields} | dict.fromkeys(_TIMES, "datetime")
        columns = []
        for name in ("id", *(f.name for f in model.fields), *_TIMES):
            kind = kinds.get(name)
            if kind in ("date", "datetime"):
                columns.append(f"to_jsonb(t.{q(name)}) #>> '{{}}'")
            elif kind == "numeric":
                columns.append(f"t.{q(name)}::float8")
            else:
                columns.append(f"t.{q(name)}")
        return ", ".join(columns)

    def count(self, model: ModelDef, filters: Sequence[Filter] = ()) -> int:
        clauses, params = self._where(model, filters)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = self.database.fetch(
            f"SELECT count(*) FROM {q(model.table_name)} AS t {where}", params
        )
        return int(rows[0][0])

    def search(self, model: ModelDef, text: str, *, limit: int = 20) -> builtins.list[SearchHit]:
        """Records ranked by full-text relevance over the search fields of the model, its
        children and the entities it links to (``websearch_to_tsquery``: words, "phrases",
        -exclusions, OR)."""
        parent = ref_column(model.table_name)
        hits = []
        if model.search_fields:
            hits.append(
                f"SELECT t.id AS root, ts_rank(t.search_vector, query) AS rank"
                f" FROM {q(model.table_name)} AS t WHERE t.search_vector @@ query"
            )
        for child in model.children:
            if any(f.search for f in child.fields):
                hits.append(
                    f"SELECT c.{q(parent)} AS root, ts_rank(c.search_vector, query) AS rank"
                    f" FROM {q(child.table_name)} AS c WHERE c.search_vector @@ query"
                )
        for link in model.links:  # `search movies pacino`: the linked actors' search fields
            target = self.declaration.model(link.model)
            if target.search_fields:
                other = ref_column(target.table_name)
                hits.append(
                    f"SELECT l.{q(parent)} AS root, ts_rank(a.search_vector, query) AS rank"
                    f" FROM {q(link.table_name)} AS l JOIN {q(target.table_name)} AS a"
                    f" ON a.id = l.{q(other)} WHERE a.search_vector @@ query"
                )
        if not hits:
            raise RecordError(f"model {model.name} declares no search fields", path="search")

        union = " UNION ALL ".join(hits)
        sql = f"""
            WITH q AS (SELECT websearch_to_tsquery('{SEARCH_CONFIG}', %s) AS query),
            hits AS (SELECT root, sum(rank) AS rank FROM q, LATERAL ({union}) AS h
                     GROUP BY root ORDER BY sum(rank) DESC, root LIMIT %s)
            SELECT {self._document(model)}, hits.rank
            FROM hits JOIN {q(model.table_name)} AS t ON t.id = hits.root
            ORDER BY hits.rank DESC, t.id
        """
        rows = self.database.fetch(sql, (text, limit))
        return [SearchHit(float(rank), in_declared_order(model, record)) for record, rank in rows]

    def stats(self, model: ModelDef) -> dict[str, Any]:
        """Counts, true-rates of boolean fields, averages and ranges of numeric fields, child
        and link rows, and how many rows changed in the last day."""
        table = q(model.table_name)
        parts = [
            "count(*) AS records",
            "count(*) FILTER (WHERE updated_at > now() - interval '1 day') AS changed_last_day",
        ]
        for f in model.fields:
            if f.type == "boolean":
                parts.append(
                    f"avg(CASE WHEN {q(f.name)} THEN 1.0 ELSE 0.0 END)"
                    f" FILTER (WHERE {q(f.name)} IS NOT NULL) AS {q(f.name + '_rate')}"
                )
            elif f.type in ("integer", "bigint", "float", "numeric"):
                parts.append(f"avg({q(f.name)})::float8 AS {q(f.name + '_avg')}")
                parts.append(f"min({q(f.name)}) AS {q(f.name + '_min')}")
                parts.append(f"max({q(f.name)}) AS {q(f.name + '_max')}")
        with self.database.connection(transaction=False) as conn:
            cur = conn.execute(f"SELECT {', '.join(parts)} FROM {table}")
            row = cur.fetchone()
            names = [d.name for d in cur.description or []]
            result: dict[str, Any] = {"model": model.name}
            for name, value in zip(names, row or (), strict=True):
                result[name] = float(value) if isinstance(value, Decimal) else value
            for table_name in [c.table_name for c in model.children] + [
                link.table_name for link in model.links
            ]:
                count = conn.execute(f"SELECT count(*) FROM {q(table_name)}").fetchone()
                result[f"{table_name}_rows"] = int(count[0]) if count else 0
        return result

    # -- helpers --------------------------------------------------------------------------------
    @staticmethod
    def _field(model: ModelDef, name: str, what: str) -> Any:
        spec = model.field(name)
        if spec is None:
            known = ", ".join(f.name for f in model.fields)
            raise RecordError(
                f"unknown field {name!r} of {model.name} (fields: {known})", path=what
            )
        return spec

    def _where(
        self, model: ModelDef, filters: Sequence[Filter]
    ) -> tuple[builtins.list[str], builtins.list[Any]]:
        clauses: builtins.list[str] = []
        params: builtins.list[Any] = []
        for f in filters:
            spec = self._field(model, f.field, "filter")
            if f.op not in _SQL_OPS:
                raise RecordError(f"unknown filter operator {f.op!r}", path=f.field)
            column = f"t.{q(spec.name)}"
            if f.value is None:
                if f.op not in ("=", "!="):
                    raise RecordError("null compares only with = or !=", path=f.field)
                clauses.append(f"{column} IS {'NOT ' if f.op == '!=' else ''}NULL")
                continue
            if f.op == "~":
                if spec.type != "json":
                    raise RecordError("~ (contains) applies to json fields", path=f.field)
                clauses.append(f"{column} @> %s::jsonb")
                params.append(json.dumps(f.value))
                continue
            value = convert(spec, f.value, f.field, None)
            if spec.type == "json":
                clauses.append(f"{column} {_SQL_OPS[f.op]} %s::jsonb")
                params.append(json.dumps(value))
            else:
                clauses.append(f"{column} {_SQL_OPS[f.op]} %s")
                params.append(value)
        return clauses, params


def in_declared_order(model: ModelDef, record: dict[str, Any]) -> dict[str, Any]:
    """A record's keys as its model declares them (the natural key first, then the fields,
    children and links), the system columns last: jsonb keeps keys by length, then bytes,
    which buried ``workflow_id`` among the timestamps."""
    order = [
        *model.natural_key,
        *(f.name for f in model.fields),
        *(c.name for c in model.children),
        *(link.name for link in model.links),
    ]
    ordered = {name: record[name] for name in dict.fromkeys(order) if name in record}
    ordered.update((k, v) for k, v in record.items() if k not in ordered)
    return ordered


def _records(model: ModelDef, rows: Sequence[tuple[Any, ...]]) -> builtins.list[dict[str, Any]]:
    """Rows of ``_columns`` (id, the fields, the times) as records in declared order."""
    selected = ("id", *(f.name for f in model.fields), *_TIMES)
    names = list(in_declared_order(model, dict.fromkeys(selected)))
    where = [selected.index(name) for name in names]
    return [dict(zip(names, [row[i] for i in where], strict=True)) for row in rows]


def _object(alias: str, columns: tuple[str, ...]) -> str:
    """``jsonb_build_object`` of columns by name (in pieces: a function takes 100 arguments)."""
    pieces = [
        "jsonb_build_object("
        + ", ".join(f"'{c}', {alias}.{q(c)}" for c in columns[i : i + 50])
        + ")"
        for i in range(0, len(columns), 50)
    ]
    return " || ".join(pieces) if pieces else "'{}'::jsonb"


def _encode_cursor(value: Any, last_id: int) -> str:
    raw = json.dumps([value, last_id], default=str).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[Any, int]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        value, last_id = json.loads(base64.urlsafe_b64decode(padded))
        return value, int(last_id)
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError):
        raise InputError(
            f"invalid cursor {cursor!r}: pass the value a previous page returned"
        ) from None

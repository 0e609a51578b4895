"""The functions generated for each model: ``upsert_<model>(jsonb)`` and ``delete_<model>(jsonb)``.

scrapesink's own writes call these functions too, so there is one upsert, with the same integrity
rules for psql, any other client and the Python path. ``upsert_<model>`` takes a JSON array of
records (or one record) and, set-based:

Each record has an acceptance stamp (``stamps[i]``, ``bytea``, see ``ports.stamp``; none given,
as from psql: the server's clock now). The newest stamp wins whatever the order of arrival: a
record whose stamp is older than the stored row's changes nothing (counted unchanged), neither
the row nor its children, links or linked entities.

1. upserts linked models first (shared entities such as actors: created when new; a link item
   updates only the fields it carries, so a movie naming an actor never erases what another
   movie said about them), from the records not older than their stored row;
2. upserts the model's rows on the natural key from ``jsonb_to_record``; duplicate keys in one
   call resolve to the newest stamp, then the last record (``DISTINCT ON``); ``ON CONFLICT ...
   DO UPDATE ... WHERE content_hash IS DISTINCT FROM ... AND accepted_stamp < ...``: an
   unchanged record (fields, children and links alike) writes nothing but ``last_seen_at`` and
   the newer stamp, and ``updated_at`` moves only on a change;
3. replaces the children and links of the inserted and changed rows (delete, insert; link rows
   and keyed children deduplicated, last wins);
4. returns ``{"records", "inserted", "updated", "unchanged", "changed"}``, ``changed`` being
   the positions (1-based) in the array of the records that were inserted or updated.

Every identifier is a checked declaration name, quoted here once more.
"""

from __future__ import annotations

from scrapesink.adapters.postgres.model_tables import SQL_TYPES, ref_column, sql_literal
from scrapesink.domain.models import Declaration, FieldDef, ModelDef


def q(name: str) -> str:
    return f'"{name}"'


def upsert_name(model: ModelDef) -> str:
    return f"upsert_{model.name}"


def delete_name(model: ModelDef) -> str:
    return f"delete_{model.name}"


def found_name(model: ModelDef) -> str:
    """The delete that says which keys it found. "deleted_" can never be "delete_" and a
    model's name: their seventh characters differ."""
    return f"deleted_{model.name}"


def _recordtype(fields: tuple[FieldDef, ...]) -> str:
    return ", ".join(f"{q(f.name)} {SQL_TYPES[f.type]}" for f in fields)


def _value(spec: FieldDef, alias: str, doc: str) -> str:
    """A field's value: absent from the JSON object -> its declared default."""
    column = f"{alias}.{q(spec.name)}"
    if spec.default is None:
        return column
    return (
        f"CASE WHEN {doc} ? '{spec.name}' THEN {column} ELSE {sql_literal(spec, spec.default)} END"
    )


def _hashable(spec: FieldDef, value: str) -> str:
    # timestamptz renders in the session's time zone; hash it in UTC so the hash is stable.
    return f"({value} AT TIME ZONE 'UTC')" if spec.type == "datetime" else value


def _array(expression: str) -> str:
    return f"CASE WHEN jsonb_typeof({expression}) = 'array' THEN {expression} ELSE '[]' END"


# The changed rows' records, by position in the array (jsonb arrays index in O(1)), not by a
# join of the array with itself: the planner guesses one row for each side of such a join and
# picks a nested loop, a million comparisons for a thousand records (measured: 0.3 ms of the
# 0.45 ms a workflow cost).
_RECORD_AT = "\n        CROSS JOIN LATERAL (SELECT records -> (c.ord::integer - 1) AS doc) AS e"


def _key_text(key: tuple[str, ...], alias: str) -> str:
    """A natural key as one text value (for a jsonb object keyed by it)."""
    if len(key) == 1:
        return f"{alias}.{q(key[0])}::text"
    return f"jsonb_build_array({', '.join(f'{alias}.{q(k)}' for k in key)})::text"


# The stamp of record ``e.ord``: the one given, else now on the server's clock (journal zero: a
# write from psql is accepted when it runs).
_STAMP = "coalesce(stamps[e.ord], now_stamp)"
_OLDER = "t.accepted_stamp IS NULL OR t.accepted_stamp < {}"  # the stored row is older


def upsert_function(declaration: Declaration, model: ModelDef) -> str:
    table = q(model.table_name)
    key = model.natural_key
    fields = model.fields
    columns = ", ".join(q(f.name) for f in fields)
    values = ", ".join(f"{_value(f, 'r', 'e.doc')} AS {q(f.name)}" for f in fields)
    nested = [*(c.name for c in model.children), *(link.name for link in model.links)]
    hash_parts = [_hashable(f, _value(f, "r", "e.doc")) for f in fields]
    hash_parts += [f"e.doc -> '{name}'" for name in nested]
    content_hash = f"md5(jsonb_build_array({', '.join(hash_parts)})::text)"
    key_r = ", ".join(f"r.{q(k)}" for k in key)
    key_fields = tuple(f for f in fields if f.name in key)
    updates = ", ".join(f"{q(f.name)} = excluded.{q(f.name)}" for f in fields)
    key_match = " AND ".join(f"t.{q(k)} = r.{q(k)}" for k in key)
    stale = ""
    if model.links:  # only linked entities need to know before the upsert which records lose
        stale = f"""
    stale := ARRAY(
        SELECT e.ord FROM jsonb_array_elements(records) WITH ORDINALITY AS e(doc, ord)
        CROSS JOIN LATERAL jsonb_to_record(e.doc) AS r({_recordtype(key_fields)})
        JOIN {table} AS t ON {key_match}
        WHERE t.accepted_stamp >= {_STAMP});"""
    body = [
        stale,
        _links_first(declaration, model),
        f"""
    IF EXISTS (SELECT 1 FROM jsonb_array_elements(records) AS e(doc),
                             jsonb_to_record(e.doc) AS r({_recordtype(fields)})
               WHERE {" OR ".join(f"r.{q(k)} IS NULL" for k in key)}) THEN
        RAISE EXCEPTION '{upsert_name(model)}: a record lacks its natural key ({", ".join(key)})'
            USING ERRCODE = '23502';
    END IF;
    WITH src AS (
        SELECT DISTINCT ON ({key_r}) e.ord, {values}, {content_hash} AS content_hash,
               {_STAMP} AS accepted_stamp
        FROM jsonb_array_elements(records) WITH ORDINALITY AS e(doc, ord)
        CROSS JOIN LATERAL jsonb_to_record(e.doc) AS r({_recordtype(fields)})
        ORDER BY {key_r}, {_STAMP} DESC, e.ord DESC
    ), up AS (
        INSERT INTO {table} AS t ({columns}, content_hash, accepted_stamp)
        SELECT {", ".join(f"src.{q(f.name)}" for f in fields)}, src.content_hash,
               src.accepted_stamp FROM src
        ON CONFLICT ({", ".join(q(k) for k in key)}) DO UPDATE
            SET {updates}, content_hash = excluded.content_hash,
                accepted_stamp = excluded.accepted_stamp, updated_at = now(), last_seen_at = now()
            WHERE t.content_hash IS DISTINCT FROM excluded.content_hash
              AND ({_OLDER.format("excluded.accepted_stamp")})
        RETURNING t.id, (t.xmax = 0) AS inserted, {", ".join(f"t.{q(k)}" for k in key)}
    ), positions AS MATERIALIZED (
        SELECT jsonb_object_agg({_key_text(key, "src")}, src.ord) AS at FROM src
    )
    SELECT array_agg(up.id), array_agg((positions.at ->> {_key_text(key, "up")})::bigint),
           count(*) FILTER (WHERE up.inserted), (SELECT count(*) FROM src)
      INTO ids, ords, n_inserted, n_records
      FROM up CROSS JOIN positions;
    n_changed := coalesce(array_length(ids, 1), 0);
    IF n_changed < n_records THEN  -- seen again, unchanged: last_seen_at and the stamp move
        UPDATE {table} AS t SET last_seen_at = now(), accepted_stamp = r.accepted_stamp
        FROM (
            SELECT DISTINCT ON ({", ".join(f"x.{q(k)}" for k in key)})
                   {", ".join(f"x.{q(k)}" for k in key)}, {_STAMP} AS accepted_stamp
            FROM jsonb_array_elements(records) WITH ORDINALITY AS e(doc, ord)
            CROSS JOIN LATERAL jsonb_to_record(e.doc) AS x({_recordtype(key_fields)})
            ORDER BY {", ".join(f"x.{q(k)}" for k in key)}, {_STAMP} DESC
        ) AS r
        WHERE {key_match} AND ({_OLDER.format("r.accepted_stamp")});
    END IF;""",
    ]
    for child in model.children:
        body.append(
            _replace_child(
                model, child.name, child.table_name, child.fields, child.relation, child.key
            )
        )
    for link in model.links:
        body.append(_replace_links(declaration, model, link.name))
    return f"""
DROP FUNCTION IF EXISTS {q(upsert_name(model))}(jsonb);  -- before stamps: one argument
CREATE OR REPLACE FUNCTION {q(upsert_name(model))}(records jsonb, stamps bytea[] DEFAULT NULL)
RETURNS jsonb LANGUAGE plpgsql AS $fn$
DECLARE
    ids bigint[]; ords bigint[]; stale bigint[] := '{{}}';
    n_records integer := 0; n_inserted integer := 0; n_changed integer := 0;
    now_stamp bytea := int8send((extract(epoch FROM clock_timestamp()) * 1000000)::bigint)
                       || decode(repeat('00', 8), 'hex');
BEGIN
    IF jsonb_typeof(records) = 'object' THEN records := jsonb_build_array(records); END IF;
    IF jsonb_typeof(records) IS DISTINCT FROM 'array' THEN
        RAISE EXCEPTION '{upsert_name(model)} expects a JSON array of records, or one record'
            USING ERRCODE = '22023';
    END IF;
{"".join(body)}
    RETURN jsonb_build_object('records', n_records, 'inserted', n_inserted,
                              'updated', n_changed - n_inserted,
                              'unchanged', n_records - n_changed,
                              'changed', to_jsonb(coalesce(ords, '{{}}')));
END
$fn$;
COMMENT ON FUNCTION {q(upsert_name(model))}(jsonb, bytea[]) IS
    'scrapesink: upsert {model.name} records (a JSON array, or one record) on their natural key;'
    ' the newest acceptance stamp (stamps[i], default now) wins';
"""


def _links_first(declaration: Declaration, model: ModelDef) -> str:
    """Upsert linked entities from the link items: new ones are created, known ones get the
    fields the items carry (null or absent fields never erase a shared entity's data; in one
    call, each field takes its last non-null value)."""
    parts = []
    for link in model.links:
        target = declaration.model(link.model)
        table = q(target.table_name)
        key = target.natural_key
        fields = target.fields
        key_x = ", ".join(f"x.{q(k)}" for k in key)
        merged = [f"coalesce(excluded.{q(f.name)}, t.{q(f.name)})" for f in fields]
        current = [f"t.{q(f.name)}" for f in fields]
        hash_of = ", ".join(_hashable(f, m) for f, m in zip(fields, merged, strict=True))
        fresh_hash = ", ".join(_hashable(f, f"x.{q(f.name)}") for f in fields)
        latest = ", ".join(
            f"(array_agg(x.{q(f.name)} ORDER BY e.ord DESC, i.iord DESC)"
            f" FILTER (WHERE x.{q(f.name)} IS NOT NULL))[1] AS {q(f.name)}"
            for f in fields
            if f.name not in key
        )
        parts.append(f"""
    INSERT INTO {table} AS t ({", ".join(q(f.name) for f in fields)}, content_hash)
    SELECT {", ".join(f"g.{q(f.name)}" for f in fields)},
           md5(jsonb_build_array({fresh_hash.replace("x.", "g.")})::text)
    FROM (
        SELECT {key_x}{", " if latest else ""}{latest}
        FROM jsonb_array_elements(records) WITH ORDINALITY AS e(doc, ord)
        CROSS JOIN LATERAL jsonb_array_elements({_array(f"e.doc -> '{link.name}'")})
            WITH ORDINALITY AS i(item, iord)
        CROSS JOIN LATERAL jsonb_to_record(i.item) AS x({_recordtype(fields)})
        WHERE {" AND ".join(f"x.{q(k)} IS NOT NULL" for k in key)} AND e.ord <> ALL(stale)
        GROUP BY {key_x}
    ) AS g
    ON CONFLICT ({", ".join(q(k) for k in key)}) DO UPDATE
        SET {", ".join(f"{q(f.name)} = {m}" for f, m in zip(fields, merged, strict=True))},
            content_hash = md5(jsonb_build_array({hash_of})::text),
            updated_at = now(), last_seen_at = now()
        WHERE ({", ".join(merged)}) IS DISTINCT FROM ({", ".join(current)});""")
    return "".join(parts)


def _replace_child(
    model: ModelDef,
    name: str,
    table_name: str,
    fields: tuple[FieldDef, ...],
    relation: str,
    key: tuple[str, ...],
) -> str:
    table = q(table_name)
    parent = q(ref_column(model.table_name))
    columns = ", ".join(q(f.name) for f in fields)
    if relation == "one":
        values = ", ".join(_value(f, "x", f"(e.doc -> '{name}')") for f in fields)
        source = f"""
        CROSS JOIN LATERAL jsonb_to_record(e.doc -> '{name}') AS x({_recordtype(fields)})
        WHERE jsonb_typeof(e.doc -> '{name}') = 'object'"""
        distinct, order = "", ""
    else:
        values = ", ".join(_value(f, "x", "i.item") for f in fields)
        source = f"""
        CROSS JOIN LATERAL jsonb_array_elements({_array(f"e.doc -> '{name}'")})
            WITH ORDINALITY AS i(item, iord)
        CROSS JOIN LATERAL jsonb_to_record(i.item) AS x({_recordtype(fields)})"""
        if key:
            key_x = ", ".join(f"x.{q(k)}" for k in key)
            distinct = f"DISTINCT ON (c.id, {key_x}) "
            order = f"\n        ORDER BY c.id, {key_x}, i.iord DESC"
        else:
            distinct, order = "", "\n        ORDER BY c.id, i.iord"
    return f"""
    IF n_changed > 0 THEN
        DELETE FROM {table} WHERE {parent} = ANY(ids);
        INSERT INTO {table} ({parent}, {columns})
        SELECT {distinct}c.id, {values}
        FROM unnest(ids, ords) AS c(id, ord){_RECORD_AT}{source}{order};
    END IF;"""


def _replace_links(declaration: Declaration, model: ModelDef, link_name: str) -> str:
    link = next(x for x in model.links if x.name == link_name)
    target = declaration.model(link.model)
    table = q(link.table_name)
    parent = q(ref_column(model.table_name))
    other = q(ref_column(target.table_name))
    key = target.natural_key
    item_fields = tuple(f for f in target.fields if f.name in key) + link.fields
    link_columns = "".join(f", {q(f.name)}" for f in link.fields)
    link_values = "".join(f", {_value(f, 'x', 'i.item')}" for f in link.fields)
    return f"""
    IF n_changed > 0 THEN
        DELETE FROM {table} WHERE {parent} = ANY(ids);
        INSERT INTO {table} ({parent}, {other}{link_columns})
        SELECT DISTINCT ON (c.id, a.id) c.id, a.id{link_values}
        FROM unnest(ids, ords) AS c(id, ord){_RECORD_AT}
        CROSS JOIN LATERAL jsonb_array_elements({_array(f"e.doc -> '{link.name}'")})
            WITH ORDINALITY AS i(item, iord)
        CROSS JOIN LATERAL jsonb_to_record(i.item) AS x({_recordtype(item_fields)})
        JOIN {q(target.table_name)} AS a ON {" AND ".join(f"a.{q(k)} = x.{q(k)}" for k in key)}
        ORDER BY c.id, a.id, i.iord DESC;
    END IF;"""


def delete_function(model: ModelDef) -> str:
    table = q(model.table_name)
    key_fields = tuple(f for f in model.fields if f.name in model.natural_key)
    return f"""
DROP FUNCTION IF EXISTS {q(delete_name(model))}(jsonb);  -- before stamps: one argument
-- One development version made delete_<model> return integer[]: give it its count back. Never
-- dropped otherwise: a DROP makes calls running at that moment fail (the function's identity
-- changes), and it loses what an operator granted on it.
DO $do$ BEGIN
    IF (SELECT prorettype FROM pg_proc
        WHERE oid = to_regprocedure('{delete_name(model)}(jsonb, bytea[])')) = 'integer[]'::regtype
    THEN
        DROP FUNCTION {q(delete_name(model))}(jsonb, bytea[]);
    END IF;
END $do$;
-- The positions of the keys found and deleted (what scrapesink's own deliveries call, so that
-- a key not found is answered for as such); a newer version than the delete stays.
CREATE OR REPLACE FUNCTION {q(found_name(model))}(keys jsonb, stamps bytea[] DEFAULT NULL)
RETURNS integer[] LANGUAGE plpgsql AS $fn$
DECLARE
    gone integer[];
    now_stamp bytea := int8send((extract(epoch FROM clock_timestamp()) * 1000000)::bigint)
                       || decode(repeat('00', 8), 'hex');
BEGIN
    IF jsonb_typeof(keys) = 'object' THEN keys := jsonb_build_array(keys); END IF;
    WITH deleted AS (
        DELETE FROM {table} AS t
        USING jsonb_array_elements(keys) WITH ORDINALITY AS e(doc, ord)
        CROSS JOIN LATERAL jsonb_to_record(e.doc) AS r({_recordtype(key_fields)})
        WHERE {" AND ".join(f"t.{q(k)} = r.{q(k)}" for k in model.natural_key)}
          AND ({_OLDER.format(_STAMP)})
        RETURNING e.ord
    )
    SELECT coalesce(array_agg(ord::integer ORDER BY ord), '{{}}') INTO gone FROM deleted;
    RETURN gone;  -- children and link rows go with their row (ON DELETE CASCADE)
END
$fn$;
-- How many were deleted (for psql and other clients: the function's contract since stamps).
CREATE OR REPLACE FUNCTION {q(delete_name(model))}(keys jsonb, stamps bytea[] DEFAULT NULL)
RETURNS integer LANGUAGE sql AS $fn$
    SELECT coalesce(cardinality({q(found_name(model))}(keys, stamps)), 0)
$fn$;
COMMENT ON FUNCTION {q(delete_name(model))}(jsonb, bytea[]) IS
    'scrapesink: delete {model.name} records by natural key, with their children and links';
"""

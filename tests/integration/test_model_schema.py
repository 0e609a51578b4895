"""Schema evolution of declared models, and the model sinks' exactly-once contract."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import psycopg
import pytest

from scrapesink.adapters.csv_models import CsvModelSink
from scrapesink.adapters.postgres.model_sink import PostgresModelSink
from scrapesink.application.ports import Batch
from scrapesink.bootstrap import App, bootstrap
from scrapesink.config import Settings
from scrapesink.domain.declarations import load_models, parse_declaration
from scrapesink.domain.models import Declaration
from scrapesink.domain.records import UPSERT, RecordOp
from scrapesink.errors import SchemaError


def declaration(*fields: dict[str, object]) -> Declaration:
    """The bundled models plus a small one of the test's own (dropping a model is destructive)."""
    return load_models().merged(parse_declaration(_shops(*fields)))


def _shops(*fields: dict[str, object]) -> dict[str, object]:
    return {
        "models": {
            "shops": {
                "table_name": "shops",
                "natural_key": ["code"],
                "fields": [{"name": "code", "type": "string", "nullable": False}, *fields],
            }
        }
    }


def test_additive_changes_apply_by_themselves_and_are_recorded(app: App) -> None:
    schema = app.model_schema
    first = schema.apply(declaration(), allow_destructive=False)
    assert {c.change for c in first} >= {"add_table"}
    grown = declaration(
        {"name": "city", "type": "string", "index": True},
        {"name": "open", "type": "boolean", "nullable": False, "default": True},
    )
    changes = schema.apply(grown, allow_destructive=False)
    assert sorted((c.change, c.detail.split()[0]) for c in changes) == [
        ("add_column", "city"),
        ("add_column", "open"),
        ("add_index", "ix_shops_city"),
    ]
    assert not any(c.destructive for c in changes)
    history = schema.history(model="shops")
    assert {h.change for h in history} == {"add_table", "add_column", "add_index"}
    assert schema.plan(grown) == []


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"name": "code", "type": "string", "nullable": False}, "drop_column city"),
        ({"name": "city", "type": "integer"}, "alter_type city"),
        ({"name": "city", "type": "string", "nullable": False}, "set_not_null city"),
    ],
)
def test_destructive_changes_are_refused_unless_allowed(
    app: App, change: dict[str, object], words: str
) -> None:
    schema = app.model_schema
    schema.apply((declaration({"name": "city", "type": "string"})), allow_destructive=False)
    fields = [] if change["name"] == "code" else [change]
    changed = declaration(*fields)
    with pytest.raises(SchemaError, match="--allow-destructive") as refused:
        schema.apply(changed, allow_destructive=False)
    assert words in str(refused.value)
    assert schema.plan(changed)  # nothing was applied
    applied = schema.apply(changed, allow_destructive=True)
    assert any(c.destructive for c in applied)
    assert schema.plan(changed) == []


def test_an_index_on_new_columns_is_rebuilt_by_itself(app: App, database_url: str) -> None:
    schema = app.model_schema
    grown = declaration({"name": "city", "type": "string", "index": True})
    schema.apply(grown, allow_destructive=False)
    with psycopg.connect(database_url, autocommit=True) as conn:  # as versions before 0.2 made it
        conn.execute("DROP INDEX ix_shops_city")
        conn.execute("CREATE INDEX ix_shops_city ON shops (city)")
    (change,) = schema.plan(grown)
    assert (change.change, change.detail, change.destructive) == (
        "alter_index",
        "ix_shops_city",
        False,
    )
    assert [c.describe() for c in schema.apply(grown, allow_destructive=False)] == [
        "shops: alter_index ix_shops_city"
    ]
    assert schema.plan(grown) == []
    with psycopg.connect(database_url) as conn:
        (definition,) = conn.execute(
            "SELECT indexdef FROM pg_indexes WHERE indexname = 'ix_shops_city'"
        ).fetchone()  # type: ignore[misc]
    assert definition.endswith("(city, id)")
    assert schema.history(model="shops")[0].change == "alter_index"


def test_json_defaults_are_applied_and_filled_in(app: App) -> None:
    declared = declaration({"name": "tags", "type": "json", "default": ["new"]})
    app.model_schema.ensure(declared)
    assert app.model_schema.ensure(declared) == []  # once per process
    app.use_declaration(declared)
    service = app.models()
    service.save("shops", [(None, {"code": "a"})])
    assert service.get("shops", "a")["tags"] == ["new"]  # type: ignore[index]


def test_a_new_not_null_field_without_default_is_refused(app: App) -> None:
    schema = app.model_schema
    schema.apply(declaration(), allow_destructive=False)
    strict = declaration({"name": "owner", "type": "string", "nullable": False})
    with pytest.raises(SchemaError, match=r"owner .* NOT NULL without a default"):
        schema.apply(strict, allow_destructive=False)


@pytest.fixture(params=["postgres", "csv"])
def model_sink(request: pytest.FixtureRequest, app: App, data_dir: Path) -> object:
    declared = app.declaration
    app.model_schema.ensure(declared)
    model = declared.model("movies")
    if request.param == "postgres":
        return PostgresModelSink(app.database, model)
    return CsvModelSink(data_dir, declared, model)


def movie(n: int, title: str = "t") -> RecordOp:
    return RecordOp(UPSERT, {"url": f"u{n}", "title": f"{title}{n}", "actors": [{"name": "A"}]})


def test_model_sink_contract_exactly_once_and_unchanged(model_sink: object) -> None:
    sink = model_sink  # PostgresModelSink | CsvModelSink: the same contract
    first = sink.stage(Batch("j", 1, 2, [movie(1), movie(2)]))()  # type: ignore[attr-defined]
    assert (first.stored, first.unchanged) == (2, 0)
    # the same range delivered again (replay after a crash): nothing changes
    again = sink.stage(Batch("j", 1, 2, [movie(1), movie(2)]))()  # type: ignore[attr-defined]
    assert again.stored == 0
    assert sink.delivered("j") == [(1, 2)]  # type: ignore[attr-defined]
    later = sink.stage(Batch("j", 3, 4, [movie(1), movie(2, "changed")]))()  # type: ignore[attr-defined]
    assert (later.stored, later.unchanged) == (1, 1)
    assert sink.delivered("j") == [(1, 2), (3, 4)]  # type: ignore[attr-defined]
    sink.forget("j")  # type: ignore[attr-defined]
    assert sink.delivered("j") == []  # type: ignore[attr-defined]
    assert json.dumps(sink.kind) == '"model:movies"'  # type: ignore[attr-defined]


def test_a_new_field_rewrites_the_csv_header_keeping_old_rows(
    settings: Settings, data_dir: Path
) -> None:
    first = bootstrap(settings, schema="check")
    try:
        first.use_declaration(declaration({"name": "city", "type": "string"}))
        first.start_writing()
        first.models().save("shops", [(None, {"code": "a", "city": "Oslo"})])
    finally:
        first.close()
    second = bootstrap(settings, schema="check")  # a later process with a grown declaration
    try:
        grown = declaration({"name": "city", "type": "string"}, {"name": "zip", "type": "string"})
        second.use_declaration(grown)
        second.start_writing()
        second.models().save("shops", [(None, {"code": "b", "zip": "0150"})])
    finally:
        second.close()
    with (data_dir / "shops.csv").open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["code"], r["city"], r["zip"]) for r in rows] == [
        ("a", "Oslo", ""),
        ("b", "", "0150"),
    ]

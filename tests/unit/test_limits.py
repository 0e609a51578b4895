"""Limits every store can honour, checked at validation: names that become paths, key sizes,
nesting depth. Each refusal names the field and says what the limit is."""

from __future__ import annotations

import pytest

from scrapesink.domain.declarations import load_models
from scrapesink.domain.events import EventRules, validate_event
from scrapesink.domain.records import validate_record
from scrapesink.domain.values import source_dir_name
from scrapesink.errors import RecordError

RULES = EventRules()
AT = "2025-05-15T10:00:00Z"


def event(**fields: object) -> dict[str, object]:
    return {"source": "s", "source_id": "1", "occurred_at": AT, "payload": {}, **fields}


def nested(depth: int) -> dict[str, object]:
    value: dict[str, object] = {}
    inner = value
    for _ in range(depth - 1):
        inner["a"] = {}
        inner = inner["a"]  # type: ignore[assignment]
    return value


@pytest.mark.parametrize(
    ("source", "ok"),
    [
        ("a" * 255, True),
        ("a" * 256, False),
        ("😀" * 21, True),  # 4 bytes each, 12 characters once percent-encoded: 252
        ("😀" * 22, False),  # 264: a directory name cannot hold it
        ("é" * 42, True),
        ("é" * 43, False),
    ],
)
def test_a_source_must_fit_a_directory_name_in_bytes_once_encoded(source: str, ok: bool):
    if ok:
        assert validate_event(event(source=source), RULES).event.source == source
        assert len(source_dir_name(source).encode()) <= 255
    else:
        with pytest.raises(RecordError, match="too long for a file name") as error:
            validate_event(event(source=source), RULES)
        assert error.value.path == "source"


def test_a_source_id_is_limited_in_bytes_not_characters():
    assert validate_event(event(source_id="😀" * 250), RULES).event.source_id  # 1000 bytes
    with pytest.raises(RecordError, match="1,004 bytes") as error:
        validate_event(event(source_id="😀" * 251), RULES)
    assert error.value.path == "source_id"


def test_a_payload_nested_deeper_than_the_limit_is_refused_with_its_reason():
    import json

    assert validate_event(event(payload=nested(256)), RULES)  # the payload is level 1
    for payload in (nested(257), nested(10_000)):  # 10,000: deeper than Python recurses
        with pytest.raises(RecordError, match="nested deeper than 256 levels") as error:
            validate_event(event(payload=payload), RULES)
        assert error.value.path == "payload"
    flat = {"source": "s", "id": "1", "timestamp": AT, "doc": nested(300)}  # JSON Lines: text
    with pytest.raises(RecordError, match="nested deeper than 256 levels"):
        validate_event(flat, RULES, raw=json.dumps(flat))
    few = {"source": "s", "id": "1", "timestamp": AT, "text": "[[{{" * 200}  # in a string
    assert validate_event(few, RULES, raw=json.dumps(few))


def test_a_model_records_json_field_nested_too_deep_names_the_field():
    declaration = load_models()
    workflows = declaration.model("workflows")
    record = {"workflow_id": "w", "structure": {"workflow_json": nested(5000)}}
    with pytest.raises(RecordError, match="nested deeper than") as error:
        validate_record(declaration, workflows, record)
    assert error.value.path == "structure"
    assert (
        validate_record(
            declaration,
            workflows,
            {"workflow_id": "w", "structure": {"workflow_json": nested(100)}},
        ).record["workflow_id"]
        == "w"
    )


@pytest.mark.parametrize(
    ("table", "reason"),
    [
        ("raw_event_keys", "one of scrapesink's own tables"),
        ("alembic_version", "one of scrapesink's own tables"),
        ("api_keys", "one of scrapesink's own tables"),
        ("pg_class", "starting with 'pg_' are reserved"),
        ("upsert_movies", "starting with 'upsert_' are reserved"),
        ("raw_events_2026_01_10", "starting with 'raw_events_' are reserved"),
    ],
)
def test_a_model_may_not_take_a_system_or_generated_name(table: str, reason: str):
    from scrapesink.domain.declarations import parse_declaration
    from scrapesink.domain.models import DeclarationError

    spec = {
        "table_name": "films",
        "natural_key": ["url"],
        "fields": [{"name": "url", "type": "string", "nullable": False}],
        "children": [{"name": "parts", "table_name": table, "fields": [{"name": "x"}]}],
    }
    for declaration in (
        {"models": {"films": {**spec, "table_name": table, "children": []}}},
        {"models": {"films": spec}},
    ):
        with pytest.raises(DeclarationError) as error:
            parse_declaration(declaration)
        assert any(
            reason in problem and "table_name" in problem for problem in error.value.problems
        )


def test_the_reserved_table_names_are_every_table_scrapesink_keeps():
    from scrapesink.adapters.postgres.tables import metadata
    from scrapesink.domain.models import SYSTEM_TABLES

    assert set(metadata.tables) | {"alembic_version"} == SYSTEM_TABLES


def test_a_user_model_whose_table_collides_with_a_bundled_one_is_one_clear_line():
    from scrapesink.domain.declarations import load_models, parse_declaration
    from scrapesink.domain.models import DeclarationError

    films = parse_declaration(
        {
            "models": {
                "films": {
                    "table_name": "movies",
                    "natural_key": ["url"],
                    "fields": [{"name": "url", "type": "string", "nullable": False}],
                }
            }
        }
    )
    with pytest.raises(DeclarationError) as error:
        load_models().merged(films)
    assert error.value.problems == [
        "models.films: table 'movies' is already the table of model 'movies'"
    ]


def test_model_keys_are_limited_in_bytes_like_source_ids():
    declaration = load_models()
    movies = declaration.model("movies")
    assert validate_record(declaration, movies, {"url": "é" * 500, "title": "t"})  # 1000 bytes
    with pytest.raises(RecordError, match="1,002 bytes") as error:
        validate_record(declaration, movies, {"url": "é" * 501, "title": "t"})
    assert error.value.path == "url"
    with pytest.raises(RecordError, match="bytes of UTF-8") as error:
        validate_record(
            declaration, movies, {"url": "u", "title": "t", "actors": [{"name": "😀" * 300}]}
        )
    assert error.value.path == "actors[0].name"


def test_text_no_store_can_write_is_refused_with_a_printable_path():
    declaration = load_models()
    movies = declaration.model("movies")
    for record, path in (
        ({"url": "\ud800", "title": "t"}, "url"),
        ({"url": "u", "title": "t", "actors": [{"name": "x\udfff"}]}, "actors[0].name"),
        ({"url": "u", "title": "t", "k\ud800": 1}, "k\\ud800"),
    ):
        with pytest.raises(RecordError, match="lone surrogate") as error:
            validate_record(declaration, movies, record)
        assert error.value.path == path
        error.value.path.encode("utf-8")  # the path itself can be written anywhere


def test_every_negative_zero_becomes_zero_also_beside_a_nul_or_given_as_text():
    declaration = load_models()
    workflows = declaration.model("workflows")
    record = {
        "workflow_id": "w\x00",
        "quality_score": "-0.0",
        "structure": {"workflow_json": {"a": -0.0, "b": [-1e-400]}},
    }
    checked = validate_record(declaration, workflows, record).record
    assert str(checked["quality_score"]) == "0.0"
    assert str(checked["structure"]["workflow_json"]) == "{'a': 0.0, 'b': [0.0]}"


def test_a_manifest_whose_signature_is_not_ascii_is_refused_not_a_crash(tmp_path):
    import json

    from scrapesink.adapters.backup import Backups

    backup = tmp_path / "backups" / "20261201T000000000000Z"
    backup.mkdir(parents=True)
    (backup / "manifest.json").write_text(
        json.dumps(
            {
                "id": backup.name,
                "created_at": "2026-12-01T00:00:00+00:00",
                "files": {},
                "scrapesink_version": "x",
                "hmac": "é" * 64,
            }
        )
    )
    backups = Backups(tmp_path / "backups", tmp_path, "", tmp_path, b"key")
    assert any("signature does not match" in p for p in backups.verify(backup.name))


def test_a_value_too_deep_for_the_decoders_must_still_be_whole_json():
    from scrapesink.adapters.readers import loads

    deep = '{"a":' * 5000 + "1" + "}" * 5000
    assert loads(deep)["a"]["a"]  # built without recursion
    with pytest.raises(ValueError, match="malformed JSON"):
        loads(deep + " trailing garbage")

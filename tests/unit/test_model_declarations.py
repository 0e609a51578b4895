"""Model declarations: every problem reported with its path; hostile names never accepted."""

from __future__ import annotations

import json

import pytest

from scrapesink.domain.declarations import bundled, load_declaration, parse_declaration
from scrapesink.errors import ConfigError, DeclarationError


def declare(**model):
    base = {
        "table_name": "things",
        "fields": [{"name": "url", "type": "string", "nullable": False}],
        "natural_key": ["url"],
    }
    return {"models": {"things": {**base, **model}}}


def problems(data) -> list[str]:
    with pytest.raises(DeclarationError) as info:
        parse_declaration(data)
    return info.value.problems


def test_the_seed_001_shape_is_accepted_with_primary_keys_as_natural_key():
    seed = {
        "models": {
            "component": {
                "table_name": "components",
                "fields": [
                    {"name": "key", "type": "integer", "primary_key": True},
                    {"name": "name", "type": "string", "nullable": False},
                ],
            }
        }
    }
    model = parse_declaration(seed).model("component")
    assert model.table_name == "components"
    assert model.natural_key == ("key",)
    assert model.field("key").nullable is False


def test_every_problem_is_reported_at_once_with_its_path():
    data = declare(
        fields=[
            {"name": "url", "type": "string", "nullable": False},
            {"name": "title", "type": "strng"},
            {"name": "Bad Name", "type": "text"},
            {"name": "url", "type": "text"},
            {"name": "body", "type": "integer", "search": True},
            {"name": "flag", "type": "boolean", "default": "yes"},
        ]
    )
    found = problems(data)
    assert 'models.things.fields[1].type: unknown type "strng"' in found[0]
    assert any(p.startswith('models.things.fields[2].name: field name "Bad Name"') for p in found)
    assert "models.things.fields[3].name: field 'url' is declared twice" in found
    assert "models.things.fields[4].search: only string and text fields can be searched" in found
    assert 'models.things.fields[5].default: "yes" is not a valid boolean' in found
    assert len(found) == 5


@pytest.mark.parametrize(
    "name",
    ['x"; DROP TABLE raw_events; --', "Robert'); --", "a b", "1abc", "x" * 64, "ünï", ""],
)
def test_hostile_identifiers_never_pass(name):
    found = problems(
        {"models": {"m": {"fields": [{"name": name, "type": "text"}], "natural_key": [name]}}}
    )
    assert any("is not an identifier" in p for p in found)


def test_keys_children_links_and_tables_are_checked():
    data = {
        "models": {
            "movies": {
                "natural_key": ["nope"],
                "fields": [{"name": "url", "type": "string"}, {"name": "meta", "type": "json"}],
                "indexes": [{"fields": ["url", "ghost"], "using": "hash"}],
                "children": [
                    {
                        "name": "clips",
                        "relation": "many",
                        "fields": [{"name": "u", "type": "text"}],
                    },
                    {
                        "name": "extra",
                        "relation": "lots",
                        "fields": [{"name": "v", "type": "text"}],
                    },
                ],
                "links": [{"name": "actors", "model": "actors"}],
                "tabel_name": "typo",
            },
            "other": {
                "table_name": "movies",
                "fields": [{"name": "k", "type": "text", "primary_key": True}],
            },
        }
    }
    found = problems(data)
    expected = [
        "models.movies.natural_key[0]: unknown field 'nope'",
        "models.movies.indexes[0].fields[1]: unknown field 'ghost'",
        'models.movies.indexes[0].using: must be "btree" or "gin"',
        "models.movies.children[0].key: must be a list of field names",
        'models.movies.children[1].relation: must be "one" (1:1) or "many" (1:N)',
        "models.movies.links[0].model: unknown model 'actors'",
        "models.other.table_name: table 'movies' is already used by models.movies",
    ]
    for line in expected:
        assert line in found, (line, found)
    assert any(p.startswith("models.movies.tabel_name: unknown key") for p in found)


def test_system_columns_are_reserved():
    found = problems(
        declare(
            fields=[
                {"name": "url", "type": "string", "nullable": False},
                {"name": "updated_at", "type": "datetime"},
            ]
        )
    )
    assert found == [
        "models.things.fields[1].name: 'updated_at' is a column scrapesink adds itself"
    ]


def test_bundled_declarations_reproduce_the_seeds():
    movies = bundled("movies")
    assert {m.table_name for m in movies.models.values()} == {"movies", "actors"}
    (link,) = movies.model("movies").links
    assert (link.model, link.table_name) == ("actors", "movie_actor")
    workflows = bundled("workflows").model("workflows")
    assert {c.table_name for c in workflows.children} == {
        "workflow_metadata",
        "workflow_structure",
        "workflow_content",
        "video_transcripts",
    }
    assert {c.name: c.relation for c in workflows.children}["transcripts"] == "many"
    flags = [f.name for f in workflows.fields if f.name.startswith("layer")]
    assert flags == ["layer1_success", "layer2_success", "layer3_success"]
    assert "quality_score" in {f.name for f in workflows.fields}


def test_unknown_model_and_merges():
    movies, workflows = bundled("movies"), bundled("workflows")
    both = movies.merged(workflows)
    assert set(both.models) == {"movies", "actors", "workflows"}
    with pytest.raises(DeclarationError, match="declared twice"):
        both.merged(movies)
    with pytest.raises(DeclarationError, match="unknown model 'films'"):
        both.model("films")


def test_files_report_the_file_and_are_config_errors(tmp_path):
    path = tmp_path / "models.json"
    path.write_text("{not json")
    with pytest.raises(ConfigError, match="malformed JSON at line 1"):
        load_declaration(path)
    path.write_text(json.dumps(declare(strict="yes")))
    with pytest.raises(DeclarationError) as info:
        load_declaration(path)
    assert info.value.problems == [
        f'{path}: models.things.strict: must be true or false, got "yes"'
    ]
    with pytest.raises(DeclarationError, match="no such file"):
        load_declaration(tmp_path / "missing.json")


def test_a_model_name_whose_functions_postgresql_would_cut_is_refused():
    # Two 60-character names sharing 55 characters would share one deleted_<name> function.
    long = "m" * 56
    spec = {"natural_key": ["k"], "fields": [{"name": "k", "type": "string", "nullable": False}]}
    with pytest.raises(DeclarationError, match="at most 55"):
        parse_declaration({"models": {long: {**spec, "table_name": "t1"}}})
    assert parse_declaration({"models": {"m" * 55: {**spec, "table_name": "t2"}}})

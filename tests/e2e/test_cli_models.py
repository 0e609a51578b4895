"""`scrapesink models`: bundled declarations, your own files, one line per problem."""

from __future__ import annotations

import json

from tests.e2e.test_cli_ingest import run

GOOD = {
    "models": {
        "products": {
            "natural_key": ["sku"],
            "fields": [
                {"name": "sku", "type": "string", "nullable": False},
                {"name": "price", "type": "numeric"},
            ],
        }
    }
}


def test_bundled_models_are_listed_and_shown(cli_env):
    listed = run(cli_env, "models", "list")
    assert listed.returncode == 0, listed.stderr
    for name in ("movies", "actors", "workflows"):
        assert name in listed.stdout
    shown = json.loads(run(cli_env, "models", "show", "workflows").stdout)
    assert [c["table_name"] for c in shown["children"]] == [
        "workflow_metadata",
        "workflow_structure",
        "workflow_content",
        "video_transcripts",
    ]
    unknown = run(cli_env, "models", "show", "films")
    assert unknown.returncode == 1 and "unknown model 'films'" in unknown.stderr


def test_user_declarations_join_the_bundled_ones(cli_env, tmp_path):
    path = tmp_path / "products.json"
    path.write_text(json.dumps(GOOD))
    listed = run({**cli_env, "SCRAPESINK_MODELS": str(path)}, "models", "list")
    assert "products" in listed.stdout and "movies" in listed.stdout
    assert "products" in run(cli_env, "models", "list", "--models", str(path)).stdout
    checked = run(cli_env, "models", "check", str(path))
    assert checked.returncode == 0 and "1 model(s), no problems" in checked.stdout


def test_a_malformed_declaration_is_one_line_per_problem(cli_env, tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(
        json.dumps(
            {
                "models": {
                    "films": {
                        "natural_key": ["url"],
                        "fields": [
                            {"name": "url", "type": "strng"},
                            {"name": "Bad", "type": "text"},
                        ],
                    },
                    "movies": {"natural_key": ["k"], "fields": [{"name": "k", "type": "text"}]},
                }
            }
        )
    )
    result = run(cli_env, "models", "check", str(path))
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines == [
        f'error: {path}: models.films.fields[0].type: unknown type "strng" (one of integer, '
        "bigint, float, numeric, string, text, boolean, date, datetime, json)",
        f'error: {path}: models.films.fields[1].name: field name "Bad" is not an identifier '
        "(a-z, 0-9, _; at most 63 characters)",
    ]
    clash = tmp_path / "clash.json"
    clash.write_text(json.dumps({"models": {"movies": GOOD["models"]["products"]}}))
    result = run(cli_env, "models", "check", str(clash))
    assert result.returncode == 1 and "models.movies: declared twice" in result.stderr
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    result = run({**cli_env, "SCRAPESINK_MODELS": str(broken)}, "models", "list")
    assert result.returncode == 1 and "malformed JSON at line 1" in result.stderr
    assert "Traceback" not in result.stderr


def test_delete_says_what_was_not_found_and_fails_when_nothing_was_deleted(cli_env, tmp_path):
    records = tmp_path / "w.jsonl"
    records.write_text(json.dumps({"workflow_id": "w1", "url": "https://n8n.io/w/1"}) + "\n")
    assert run(cli_env, "ingest", "--model", "workflows", str(records)).returncode == 0
    both = run(cli_env, "delete", "workflows", "w1", "never-existed")
    assert both.returncode == 0, both.stderr
    assert "deleted 1 of 2 workflows record(s); 1 not found" in both.stdout
    none = run(cli_env, "delete", "workflows", "never-existed")
    assert none.returncode == 1
    assert "deleted 0 of 1 workflows record(s); 1 not found" in none.stdout

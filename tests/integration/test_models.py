"""Declared models end to end on a real PostgreSQL and real CSV files (seed 003's test list,
seed 000's movies sharing actors, upserts, the generated functions)."""

from __future__ import annotations

import csv
import json
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from scrapesink.domain.declarations import load_models
from scrapesink.entrypoints.python import Sink
from scrapesink.errors import NotFound


def workflow(n: int, **extra: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "workflow_id": f"wf-{n}",
        "url": f"https://n8n.io/workflows/{n}",
        "quality_score": (n % 10) / 10,
        "layer1_success": True,
        "layer2_success": n % 2 == 0,
        "layer3_success": n % 4 == 0,
        "processing_time": 1.5,
        "metadata": {
            "title": f"Workflow {n} posts Slack alerts" if n % 3 == 0 else f"Workflow {n}",
            "description": "Sends a daily digest by email",
            "categories": ["marketing"] if n % 2 else ["devops"],
            "tags": ["t1", f"t{n % 5}"],
            "views": n,
        },
        "structure": {"node_count": n % 7, "node_types": ["http", "slack"], "workflow_json": {}},
        "content": {"explainer_text": "How it works", "has_videos": n % 2 == 1},
        "transcripts": [{"video_url": f"https://v/{n}/{i}", "duration": i} for i in range(2)],
    }
    record.update(extra)
    return record


def rows(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def count(url: str, table: str) -> int:
    with psycopg.connect(url) as conn:
        query = sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))
        return int(conn.execute(query).fetchone()[0])  # type: ignore[index]


def test_create_workflow_complete_with_every_layer(sink: Sink, data_dir: Path) -> None:
    summary = sink.save("workflows", [workflow(3)])
    assert (summary.stored, summary.rejected, summary.pending) == (1, 0, 0)
    got = sink.get("workflows", "wf-3")
    assert got is not None
    assert got["metadata"]["title"] == "Workflow 3 posts Slack alerts"
    assert got["metadata"]["tags"] == ["t1", "t3"]
    assert got["structure"]["node_types"] == ["http", "slack"]
    assert got["content"]["has_videos"] is True
    assert [t["video_url"] for t in got["transcripts"]] == ["https://v/3/0", "https://v/3/1"]
    assert got["retry_count"] == 0  # declared default
    assert got["first_seen_at"] == got["updated_at"]
    assert [r["workflows_workflow_id"] for r in rows(data_dir / "video_transcripts.csv")] == [
        "wf-3",
        "wf-3",
    ]


@pytest.mark.parametrize("n", [100, 10_000])
def test_bulk_insert(sink: Sink, database_url: str, data_dir: Path, n: int) -> None:
    summary = sink.save("workflows", (workflow(i) for i in range(n)))
    assert summary.stored == n
    assert summary.sinks["csv"].stored == n
    assert count(database_url, "workflows") == n
    assert count(database_url, "video_transcripts") == 2 * n
    assert len(rows(data_dir / "workflows.csv")) == n
    assert len(rows(data_dir / "workflow_metadata.csv")) == n


def test_resaving_the_same_records_is_a_no_op_in_both_stores(
    sink: Sink, database_url: str, data_dir: Path
) -> None:
    records = [workflow(i) for i in range(50)]
    sink.save("workflows", records)
    before = sink.get("workflows", "wf-7")
    sizes = {p.name: p.stat().st_size for p in data_dir.glob("*.csv")}
    again = sink.save("workflows", records)
    assert (again.stored, again.unchanged) == (0, 50)
    assert again.sinks["csv"].unchanged == 50
    assert {p.name: p.stat().st_size for p in data_dir.glob("*.csv")} == sizes
    after = sink.get("workflows", "wf-7")
    assert after is not None and before is not None
    assert after["updated_at"] == before["updated_at"]
    assert after["last_seen_at"] >= before["last_seen_at"]
    assert after["id"] == before["id"]


def test_a_changed_record_adds_exactly_one_csv_version(sink: Sink, data_dir: Path) -> None:
    sink.save("workflows", [workflow(1), workflow(2)])
    before = sink.get("workflows", "wf-1")
    changed = sink.save("workflows", [workflow(1, quality_score=0.99), workflow(2)])
    assert (changed.stored, changed.unchanged) == (1, 1)
    versions = [r for r in rows(data_dir / "workflows.csv") if r["workflow_id"] == "wf-1"]
    assert [v["quality_score"] for v in versions] == ["0.1", "0.99"]
    assert rows(data_dir / "workflow_metadata.csv").__len__() == 2  # children unchanged
    after = sink.get("workflows", "wf-1")
    assert after is not None and before is not None
    assert after["updated_at"] > before["updated_at"]
    assert after["first_seen_at"] == before["first_seen_at"]


def test_children_are_replaced_to_match_the_record(sink: Sink, data_dir: Path) -> None:
    sink.save("workflows", [workflow(1)])
    record = workflow(1, transcripts=[{"video_url": "https://v/1/1", "duration": 9}])
    sink.save("workflows", [record])
    got = sink.get("workflows", "wf-1")
    assert got is not None
    assert got["transcripts"] == [
        {
            "video_url": "https://v/1/1",
            "duration": 9,
            "platform": None,
            "transcript_text": None,
            "transcript_json": None,
        }
    ]
    history = rows(data_dir / "video_transcripts.csv")
    gone = [r for r in history if r["video_url"] == "https://v/1/0"]
    assert [bool(r["deleted_at"]) for r in gone] == [False, True]  # tombstone for the old one


def test_duplicate_keys_in_one_batch_resolve_to_the_last(sink: Sink) -> None:
    summary = sink.save("workflows", [workflow(1, retry_count=1), workflow(1, retry_count=2)])
    assert (summary.stored, summary.input_duplicates) == (1, 1)
    got = sink.get("workflows", "wf-1")
    assert got is not None and got["retry_count"] == 2


def test_bad_records_are_rejected_with_their_path_and_the_rest_stored(sink: Sink) -> None:
    bad_type = workflow(2, quality_score="high")
    no_key = workflow(3)
    del no_key["workflow_id"]
    child_without_key = workflow(4, transcripts=[{"duration": 3}])
    summary = sink.save("workflows", [workflow(1), bad_type, no_key, child_without_key])
    assert summary.stored == 1
    assert [(e.location, e.path) for e in summary.rejections] == [
        ("[1]", "quality_score"),
        ("[2]", "workflow_id"),
        ("[3]", "transcripts[0].video_url"),
    ]
    assert "expected a finite number" in summary.rejections[0].message


def test_get_and_pagination_with_filters_and_sort(sink: Sink) -> None:
    sink.save("workflows", [workflow(i) for i in range(30)])
    assert sink.get("workflows", "nope") is None
    seen: list[str] = []
    page = sink.list("workflows", limit=7, sort="-quality_score")
    while True:
        seen += [r["workflow_id"] for r in page.records]
        if page.next_cursor is None:
            break
        page = sink.list("workflows", limit=7, sort="-quality_score", after=page.next_cursor)
    assert len(seen) == len(set(seen)) == 30
    scores = [int(s.split("-")[1]) % 10 for s in seen]
    assert scores == sorted(scores, reverse=True)
    good = sink.list(
        "workflows", where=[("quality_score", ">=", 0.8), ("layer2_success", "=", True)]
    )
    assert {r["workflow_id"] for r in good.records} == {"wf-8", "wf-18", "wf-28"}


def _all_pages(sink: Sink, sort: str, limit: int, **options: Any) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    after = None
    while True:
        page = sink.list("workflows", sort=sort, limit=limit, after=after, **options)
        found += page.records
        if page.next_cursor is None:
            return found
        after = page.next_cursor


@pytest.mark.parametrize("sort", ["quality_score", "-quality_score", "-retry_count", None])
def test_pages_follow_the_sort_with_ties_by_id_and_nulls_last(sink: Sink, sort: str | None) -> None:
    records = [workflow(i, quality_score=None if i % 4 == 0 else (i % 3) / 10) for i in range(23)]
    sink.save("workflows", records)
    stored = sink.list("workflows", limit=100).records  # by id
    assert [r["id"] for r in stored] == sorted(r["id"] for r in stored)
    expected = stored
    if sort is not None:
        field, sign = sort.lstrip("-"), (-1 if sort.startswith("-") else 1)
        known = [r for r in stored if r[field] is not None]
        unknown = [r for r in stored if r[field] is None]
        expected = sorted(known, key=lambda r: (sign * r[field], sign * r["id"]))
        expected += sorted(unknown, key=lambda r: sign * r["id"])  # nulls last, both ways
    for limit in (1, 4, 23, 50):
        pages = _all_pages(sink, sort or "", limit)
        assert [r["workflow_id"] for r in pages] == [r["workflow_id"] for r in expected]


def test_a_listed_record_has_its_fields_and_with_children_all_of_it(sink: Sink) -> None:
    sink.save("workflows", [workflow(i) for i in range(3)])
    (listed,) = sink.list("workflows", where=[("workflow_id", "=", "wf-1")]).records
    got = sink.get("workflows", "wf-1")
    assert got is not None
    assert "metadata" not in listed and "transcripts" not in listed
    assert {k: v for k, v in got.items() if k in listed} == listed  # times: the same text
    datetime.fromisoformat(listed["first_seen_at"])  # ISO 8601
    movie = {"url": "u", "title": "Heat", "rating": "8.30", "release_date": "1995-12-15"}
    sink.save("movies", [movie])
    (short,) = sink.list("movies").records
    whole = sink.get("movies", "u")
    assert whole is not None and {k: v for k, v in whole.items() if k in short} == short
    assert (short["rating"], short["release_date"]) == (8.3, "1995-12-15")
    (whole,) = sink.list("workflows", where=[("workflow_id", "=", "wf-1")], children=True).records
    assert whole == got


def test_update_changes_fields_and_keeps_the_rest(sink: Sink, data_dir: Path) -> None:
    sink.save("workflows", [workflow(5)])
    updated = sink.update("workflows", "wf-5", {"error_message": "timeout", "retry_count": 3})
    assert (updated["error_message"], updated["retry_count"]) == ("timeout", 3)
    assert updated["metadata"]["title"] == "Workflow 5"
    assert len(updated["transcripts"]) == 2
    assert [r["retry_count"] for r in rows(data_dir / "workflows.csv")] == ["0", "3"]
    with pytest.raises(NotFound):
        sink.update("workflows", "wf-404", {"retry_count": 1})


def test_a_delete_counts_only_the_records_that_existed(sink: Sink, data_dir: Path) -> None:
    sink.save("workflows", [workflow(1)])
    summary = sink.delete("workflows", "wf-1", "never-existed")
    assert (summary.stored, summary.unchanged) == (1, 1)
    for name in ("postgres", "csv"):
        assert (summary.sinks[name].stored, summary.sinks[name].unchanged) == (1, 1), name
    assert [r["workflow_id"] for r in rows(data_dir / "workflows.csv")] == ["wf-1", "wf-1"]
    again = sink.delete("workflows", "wf-1")  # gone already
    assert (again.stored, again.unchanged) == (0, 1)


def test_delete_cascades_and_compact_drops_deleted_rows(
    sink: Sink, database_url: str, data_dir: Path
) -> None:
    sink.save("workflows", [workflow(1), workflow(2)])
    summary = sink.delete("workflows", "wf-1")
    assert summary.stored == 1
    assert sink.get("workflows", "wf-1") is None
    assert count(database_url, "video_transcripts") == 2
    assert count(database_url, "workflow_metadata") == 1
    history = rows(data_dir / "workflows.csv")
    assert [(r["workflow_id"], bool(r["deleted_at"])) for r in history] == [
        ("wf-1", False),
        ("wf-2", False),
        ("wf-1", True),
    ]
    result = sink.compact("workflows")
    assert result["workflows.csv"] == (3, 1)
    assert [r["workflow_id"] for r in rows(data_dir / "workflows.csv")] == ["wf-2"]
    assert [r["video_url"] for r in rows(data_dir / "video_transcripts.csv")] == [
        "https://v/2/0",
        "https://v/2/1",
    ]
    sink.save("workflows", [workflow(3)])  # appending after a compaction goes on cleanly
    assert [r["workflow_id"] for r in rows(data_dir / "workflows.csv")] == ["wf-2", "wf-3"]


def test_statistics_report_counts_rates_and_averages(sink: Sink) -> None:
    sink.save("workflows", [workflow(i) for i in range(8)])
    stats = sink.stats("workflows")
    assert stats["records"] == 8
    assert stats["layer1_success_rate"] == 1.0
    assert stats["layer2_success_rate"] == 0.5
    assert stats["layer3_success_rate"] == 0.25
    assert stats["quality_score_avg"] == pytest.approx(0.35)
    assert stats["video_transcripts_rows"] == 16


def test_search_ranks_title_matches_first(sink: Sink) -> None:
    sink.save("workflows", [workflow(i) for i in range(10)])
    hits = sink.search("workflows", "slack alerts")
    assert [h.record["workflow_id"] for h in hits] == ["wf-0", "wf-3", "wf-6", "wf-9"]
    assert sink.search("workflows", "digest")  # description, in a child table
    assert sink.search("workflows", "kubernetes") == []


def test_movies_share_actors_stored_once(sink: Sink, database_url: str, data_dir: Path) -> None:
    heat = {
        "url": "https://m/heat",
        "title": "Heat",
        "year": 1995,
        "genres": ["crime"],
        "actors": [
            {"name": "Al Pacino", "role": "Hanna", "birth_date": "1940-04-25"},
            {"name": "Robert De Niro", "role": "McCauley"},
            {"name": "Al Pacino", "role": "Hanna"},  # the same link twice: stored once
        ],
    }
    irishman = {
        "url": "https://m/irishman",
        "title": "The Irishman",
        "actors": [{"name": "Al Pacino", "role": "Hoffa"}, {"name": "Robert De Niro"}],
    }
    summary = sink.save("movies", [heat, irishman])
    assert summary.stored == 2
    assert count(database_url, "actors") == 2
    assert count(database_url, "movie_actor") == 4
    pacino = sink.get("actors", "Al Pacino")
    assert pacino is not None and pacino["birth_date"] == "1940-04-25"  # not erased by a link
    got = sink.get("movies", "https://m/heat")
    assert got is not None
    assert {(a["name"], a["role"]) for a in got["actors"]} == {
        ("Al Pacino", "Hanna"),
        ("Robert De Niro", "McCauley"),
    }
    assert {r["name"] for r in rows(data_dir / "actors.csv")} == {"Al Pacino", "Robert De Niro"}
    links = rows(data_dir / "movie_actor.csv")
    assert {(r["movies_url"], r["actors_name"]) for r in links} == {
        ("https://m/heat", "Al Pacino"),
        ("https://m/heat", "Robert De Niro"),
        ("https://m/irishman", "Al Pacino"),
        ("https://m/irishman", "Robert De Niro"),
    }
    again = sink.save("movies", [heat, irishman])
    assert again.unchanged == 2
    assert len(rows(data_dir / "movie_actor.csv")) == 4


def test_upsert_function_from_plain_sql(sink: Sink, database_url: str) -> None:
    record = {"url": "https://m/alien", "title": "Alien", "actors": [{"name": "S. Weaver"}]}
    with psycopg.connect(database_url, autocommit=True) as conn:
        first = conn.execute("SELECT upsert_movies(%s::jsonb)", (json.dumps(record),)).fetchone()
        again = conn.execute("SELECT upsert_movies(%s::jsonb)", (json.dumps([record]),)).fetchone()
        with pytest.raises(psycopg.errors.NotNullViolation):
            conn.execute('SELECT upsert_movies(\'[{"title": "no key"}]\'::jsonb)')
    assert first is not None and first[0] == {
        "records": 1,
        "inserted": 1,
        "updated": 0,
        "unchanged": 0,
        "changed": [1],
    }
    assert again is not None and again[0]["unchanged"] == 1 and again[0]["changed"] == []
    got = sink.get("movies", "https://m/alien")
    assert got is not None and got["actors"] == [
        {"name": "S. Weaver", "role": None, "billing_order": None}
    ]


def test_json_numbers_beyond_a_float_are_read(sink: Sink, database_url: str) -> None:
    sink.save("movies", [{"url": "u", "title": "Heat", "genres": ["crime"]}])
    huge = "1" + "0" * 400 + ".5"  # jsonb keeps any numeric; a float cannot hold this one
    with psycopg.connect(database_url) as conn:
        conn.execute("UPDATE movies SET genres = %s::jsonb", (f"[{huge}, 2]",))
    got = sink.get("movies", "u")
    assert got is not None and got["genres"] == [float("inf"), 2]
    assert sink.list("movies", children=True).records[0]["genres"] == [float("inf"), 2]


def test_records_come_back_in_declared_order(sink: Sink) -> None:
    # jsonb orders keys by length: workflow_id came after url, id and the timestamps.
    sink.save("workflows", [workflow(1)])
    declared = [f.name for f in load_models().model("workflows").fields]
    got = list(sink.get("workflows", "wf-1") or {})
    listed = list(sink.list("workflows").records[0])
    whole = list(sink.list("workflows", children=True).records[0])
    for keys in (got, listed, whole):
        assert keys[0] == "workflow_id"
        assert [k for k in keys if k in declared] == [f for f in declared if f in keys]
    assert got.index("metadata") > got.index(declared[-1])  # children after the fields


def test_search_finds_records_through_the_entities_they_link_to(sink: Sink) -> None:
    sink.save(
        "movies",
        [
            {"url": "https://m/heat", "title": "Heat", "actors": [{"name": "Al Pacino"}]},
            {"url": "https://m/ronin", "title": "Ronin", "actors": [{"name": "Robert De Niro"}]},
            {"url": "https://m/hoffa", "title": "The Irishman", "actors": [{"name": "Al Pacino"}]},
        ],
    )
    found = {hit.record["url"] for hit in sink.search("movies", "pacino")}
    assert found == {"https://m/heat", "https://m/hoffa"}
    assert {hit.record["url"] for hit in sink.search("movies", "ronin")} == {"https://m/ronin"}

"""The model CSV mirror's change detection: what a batch appends, against real files and state.

No PostgreSQL here: the CSV sink decides alone (PostgreSQL may be down while it writes).
"""

from __future__ import annotations

import csv
import sqlite3
from pathlib import Path
from typing import Any

import msgspec

from scrapesink.adapters.csv_models import CsvModelSink
from scrapesink.application.ports import Batch
from scrapesink.domain.declarations import load_models, parse_declaration
from scrapesink.domain.models import Declaration
from scrapesink.domain.records import DELETE, UPSERT, RecordOp, validate_record

TWINS = parse_declaration(
    {
        "models": {
            name: {
                "table_name": name,
                "natural_key": ["code"],
                "fields": [
                    {"name": "code", "type": "string", "nullable": False},
                    {"name": "label", "type": "string"},
                ],
                "children": [
                    {
                        "name": "parts",
                        "table_name": f"{name}_parts",
                        "relation": "many",
                        "key": ["part"],
                        "fields": [{"name": "part", "type": "string", "nullable": False}],
                    }
                ],
            }
            for name in ("left", "right")
        }
    }
)


class Mirror:
    """One model's CSV sink, fed batch by batch like a delivery lane feeds it."""

    def __init__(self, data_dir: Path, declaration: Declaration, model: str) -> None:
        self.declaration = declaration
        self.model = declaration.model(model)
        self.sink = CsvModelSink(data_dir, declaration, self.model)
        self.data_dir = data_dir
        self.seq = 0

    def save(self, *records: dict[str, Any], op: str = UPSERT) -> Any:
        entities = [
            RecordOp(op, validate_record(self.declaration, self.model, r).record) for r in records
        ]
        first, self.seq = self.seq + 1, self.seq + len(entities)
        batch = Batch(f"journal-{self.model.name}", first, self.seq, entities)
        return self.sink.stage(batch)()

    def rows(self, table: str) -> list[dict[str, str]]:
        path = self.data_dir / f"{table}.csv"
        if not path.exists():
            return []
        with path.open(newline="", encoding="utf-8") as handle:
            return list(csv.DictReader(handle))


def workflow(n: int, **changes: Any) -> dict[str, Any]:
    return {
        "workflow_id": f"wf-{n}",
        "quality_score": 0.5,
        "metadata": {"title": f"Workflow {n}", "tags": ["a", "b"]},
        "transcripts": [
            {"video_url": f"https://v/{n}/1", "duration": 60},
            {"video_url": f"https://v/{n}/2", "duration": 90},
        ],
        **changes,
    }


def test_an_unchanged_record_appends_nothing(tmp_path: Path) -> None:
    mirror = Mirror(tmp_path, load_models(), "workflows")
    first = mirror.save(workflow(1), workflow(2))
    assert (first.stored, first.unchanged) == (2, 0)
    again = mirror.save(workflow(1), workflow(2))
    assert (again.stored, again.unchanged) == (0, 2)
    assert again.unchanged_seqs == frozenset({3, 4})
    assert len(mirror.rows("workflows")) == 2
    assert len(mirror.rows("video_transcripts")) == 4


def test_a_change_appends_only_the_rows_that_changed(tmp_path: Path) -> None:
    mirror = Mirror(tmp_path, load_models(), "workflows")
    mirror.save(workflow(1))
    changed = workflow(1, transcripts=[{"video_url": "https://v/1/1", "duration": 61}])
    outcome = mirror.save(changed)
    assert outcome.stored == 1
    assert len(mirror.rows("workflows")) == 1  # the record's own row did not change
    assert len(mirror.rows("workflow_metadata")) == 1
    history = mirror.rows("video_transcripts")
    assert [(r["video_url"], r["duration"], bool(r["deleted_at"])) for r in history] == [
        ("https://v/1/1", "60", False),
        ("https://v/1/2", "90", False),
        ("https://v/1/1", "61", False),
        ("https://v/1/2", "90", True),  # a tombstone keeps the values it had
    ]


def test_a_deleted_record_saved_again_gets_all_its_rows(tmp_path: Path) -> None:
    mirror = Mirror(tmp_path, load_models(), "workflows")
    mirror.save(workflow(1))
    gone = mirror.save({"workflow_id": "wf-1"}, op=DELETE)
    assert gone.stored == 1
    assert [bool(r["deleted_at"]) for r in mirror.rows("video_transcripts")] == [
        False,
        False,
        True,
        True,
    ]
    assert mirror.save({"workflow_id": "wf-1"}, op=DELETE).stored == 0  # already gone
    back = mirror.save(workflow(1))
    assert back.stored == 1
    assert [bool(r["deleted_at"]) for r in mirror.rows("workflows")] == [False, True, False]
    assert len(mirror.rows("video_transcripts")) == 6


def test_two_models_with_equal_keys_keep_their_rows_apart(tmp_path: Path) -> None:
    left = Mirror(tmp_path, TWINS, "left")
    right = Mirror(tmp_path, TWINS, "right")
    left.save({"code": "k", "parts": [{"part": "l1"}, {"part": "l2"}]})
    right.save({"code": "k", "parts": [{"part": "r1"}]})
    right.save({"code": "k", "label": "changed", "parts": [{"part": "r2"}]})
    assert not any(r["deleted_at"] for r in left.rows("left_parts"))
    assert [(r["part"], bool(r["deleted_at"])) for r in right.rows("right_parts")] == [
        ("r1", False),
        ("r2", False),
        ("r1", True),
    ]
    assert left.save({"code": "k", "parts": [{"part": "l1"}, {"part": "l2"}]}).unchanged == 1


def test_a_shared_entity_keeps_what_its_own_record_said(tmp_path: Path) -> None:
    declaration = load_models()
    actors = Mirror(tmp_path, declaration, "actors")
    movies = Mirror(tmp_path, declaration, "movies")
    actors.save({"name": "Al Pacino", "birth_date": "1940-04-25"})
    movies.save({"url": "https://m/heat", "title": "Heat", "actors": [{"name": "Al Pacino"}]})
    assert [r["birth_date"] for r in actors.rows("actors")] == ["1940-04-25"]  # nothing new
    movies.save(
        {
            "url": "https://m/heat",
            "title": "Heat",
            "actors": [{"name": "Al Pacino", "profile_url": "https://p/al"}],
        }
    )
    latest = actors.rows("actors")[-1]
    assert (latest["birth_date"], latest["profile_url"]) == ("1940-04-25", "https://p/al")
    again = actors.save({"name": "Al Pacino", "birth_date": "1940-04-25"})
    assert again.stored == 1  # what the movie added is not in this record: a new version
    assert actors.rows("actors")[-1]["profile_url"] == ""


def test_state_written_by_earlier_versions_is_taken_over(tmp_path: Path) -> None:
    mirror = Mirror(tmp_path, load_models(), "workflows")
    mirror.save(workflow(1), workflow(2))
    _as_earlier_versions_kept_it(tmp_path / "csv_models.sqlite")

    later = Mirror(tmp_path, load_models(), "workflows")  # a new process
    later.seq = mirror.seq
    assert later.save(workflow(1), workflow(2)).unchanged == 2
    assert len(later.rows("workflows")) == 2 and len(later.rows("video_transcripts")) == 4
    changed = later.save(workflow(2, quality_score=0.9))
    assert changed.stored == 1
    assert len(later.rows("workflows")) == 3 and len(later.rows("video_transcripts")) == 4
    with sqlite3.connect(tmp_path / "csv_models.sqlite") as db:
        tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master")}
    assert "versions" not in tables


def _as_earlier_versions_kept_it(state: Path) -> None:
    """Rewrite the state in the layout of earlier versions: a row per CSV row, children
    pointing at their record's identity."""
    with sqlite3.connect(state) as db:
        db.execute(
            "CREATE TABLE versions (file TEXT NOT NULL, identity TEXT NOT NULL, parent TEXT,"
            " cells TEXT NOT NULL, deleted INTEGER NOT NULL, PRIMARY KEY (file, identity))"
            " WITHOUT ROWID"
        )
        for identity, rows in db.execute("SELECT identity, rows FROM records"):
            for i, (row_file, row_identity, cells) in enumerate(msgspec.json.decode(rows)):
                db.execute(
                    "INSERT INTO versions VALUES (?, ?, ?, ?, 0)",
                    (
                        row_file,
                        row_identity,
                        None if i == 0 else identity,
                        msgspec.json.encode(cells).decode(),
                    ),
                )
        db.execute("DELETE FROM records")

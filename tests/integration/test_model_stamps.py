"""Both model sinks decide by acceptance stamp, never by arrival: the newest version wins."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from scrapesink.adapters.csv_models import CsvModelSink
from scrapesink.adapters.postgres.model_reader import PostgresModelReader
from scrapesink.adapters.postgres.model_sink import PostgresModelSink
from scrapesink.application.ports import Batch, RecordSink
from scrapesink.bootstrap import App
from scrapesink.domain.declarations import load_models
from scrapesink.domain.records import DELETE, UPSERT, RecordOp, validate_record

DECLARATION = load_models()
MOVIES = DECLARATION.model("movies")


def movie(title: str, *actors: str, url: str = "https://m/1") -> RecordOp:
    data = {"url": url, "title": title, "actors": [{"name": a} for a in actors]}
    return RecordOp(UPSERT, validate_record(DECLARATION, MOVIES, data).record)


def at(us: int, *entities: RecordOp, journal: str = "j") -> Batch[RecordOp]:
    """A batch of one journal whose records were accepted at ``us`` microseconds."""
    times = range(us, us + len(entities))
    return Batch(journal, us, us + len(entities) - 1, list(entities), times)


@pytest.fixture(params=["csv", "postgres"])
def sink(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RecordSink[RecordOp]]:
    if request.param == "csv":
        yield CsvModelSink(tmp_path, DECLARATION, MOVIES)
    else:
        app: App = request.getfixturevalue("app")
        yield PostgresModelSink(app.database, MOVIES)


def held(sink: RecordSink[RecordOp]) -> dict[str, Any]:
    """url -> (title, actors) of the latest version each store holds."""
    if isinstance(sink, PostgresModelSink):
        repository = PostgresModelReader(sink.database, DECLARATION)
        page = repository.list(MOVIES, children=True, limit=1000)
        return {
            r["url"]: (r["title"], sorted(a["name"] for a in r["actors"])) for r in page.records
        }
    assert isinstance(sink, CsvModelSink)
    latest: dict[str, tuple[str, list[str]]] = {}
    for row in _rows(sink.root / "movies.csv"):
        if row["deleted_at"]:
            latest.pop(row["url"], None)
        else:
            latest[row["url"]] = (row["title"], [])
    links: dict[tuple[str, str], bool] = {}
    for row in _rows(sink.root / "movie_actor.csv"):
        links[(row["movies_url"], row["actors_name"])] = not row["deleted_at"]
    for (url, name), present in sorted(links.items()):
        if present and url in latest:
            latest[url][1].append(name)
    return latest


def _rows(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def test_an_older_version_arriving_late_changes_nothing(sink: RecordSink[RecordOp]):
    sink.stage(at(2_000, movie("newer", "Pacino"), journal="j2"))()
    late = sink.stage(at(1_000, movie("older", "De Niro"), journal="j1"))()
    assert (late.stored, late.unchanged) == (0, 1)
    assert held(sink) == {"https://m/1": ("newer", ["Pacino"])}


def test_an_unchanged_newer_version_still_moves_the_stamp(sink: RecordSink[RecordOp]):
    # v1 and v3 say the same; v2, in between, arrives last and must not win.
    sink.stage(at(1_000, movie("same", "Pacino")))()
    again = sink.stage(at(3_000, movie("same", "Pacino")))()
    assert again.unchanged == 1
    sink.stage(at(2_000, movie("between", "Kilmer"), journal="j0"))()
    assert held(sink) == {"https://m/1": ("same", ["Pacino"])}


def test_in_order_versions_apply_and_a_delete_spares_a_newer_version(sink: RecordSink[RecordOp]):
    sink.stage(at(1_000, movie("one", "Pacino")))()
    sink.stage(at(2_000, movie("two", "Pacino", "De Niro")))()
    assert held(sink) == {"https://m/1": ("two", ["De Niro", "Pacino"])}
    stale_delete = RecordOp(DELETE, {"url": "https://m/1"})
    sink.stage(at(1_500, stale_delete, journal="j0"))()
    assert held(sink) == {"https://m/1": ("two", ["De Niro", "Pacino"])}
    sink.stage(at(3_000, stale_delete))()
    assert held(sink) == {}


def test_a_wall_clock_stepping_back_never_lets_an_older_write_win(app: App, tmp_path: Path):
    from scrapesink.adapters.journal import Journal
    from scrapesink.application.delivery import RetryPolicy
    from scrapesink.application.durable import DurableWriter
    from tests.unit.fakes import MemoryDeadLetters

    ticks = iter([5_000_000, 1_000_000, 900_000])  # NTP steps the clock back twice
    journal = Journal.create(tmp_path / "journal", "model:movies", clock=lambda: next(ticks))
    sinks = [PostgresModelSink(app.database, MOVIES), CsvModelSink(tmp_path, DECLARATION, MOVIES)]
    writer = DurableWriter(journal, sinks, MemoryDeadLetters(), RetryPolicy(1, 1))
    for title in ("one", "two", "three"):
        writer.write([movie(title, "Pacino")])
    entries = [e for chunk in journal.read(1, 3) for e in chunk]
    assert [e.accepted_us for e in entries] == [5_000_000, 5_000_001, 5_000_002]  # never back
    writer.close()
    for sink in sinks:
        assert held(sink) == {"https://m/1": ("three", ["Pacino"])}
    # The same journal entries delivered newest first give the same answer: seq breaks ties.
    reversed_sink = CsvModelSink(tmp_path / "reversed", DECLARATION, MOVIES)
    for e in reversed(entries):
        reversed_sink.stage(Batch(journal.id, e.seq, e.seq, [e.record], [e.accepted_us]))()
    assert held(reversed_sink) == {"https://m/1": ("three", ["Pacino"])}

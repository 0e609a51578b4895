"""The model service over in-memory fakes: saves, last-wins, rejections, update, delete."""

from __future__ import annotations

import pytest

from scrapesink.application.delivery import RetryPolicy
from scrapesink.application.durable import DurableWriter
from scrapesink.application.kinds import ModelKind
from scrapesink.application.models import ModelService
from scrapesink.domain.declarations import parse_declaration
from scrapesink.errors import NotFound, RecordError
from tests.unit.fakes import MemoryDeadLetters, MemoryJournal, MemoryModelSink

DECLARATION = parse_declaration(
    {
        "models": {
            "books": {
                "table_name": "books",
                "natural_key": ["isbn"],
                "fields": [
                    {"name": "isbn", "type": "string", "nullable": False},
                    {"name": "title", "type": "text"},
                    {"name": "pages", "type": "integer"},
                ],
            }
        }
    }
)


def make(batch_size: int = 1000) -> tuple[ModelService, MemoryModelSink, MemoryModelSink]:
    pg = MemoryModelSink("books", ["isbn"], name="postgres")
    csv = MemoryModelSink("books", ["isbn"], name="csv")
    writers: dict[str, DurableWriter] = {}

    def writer_for(kind: ModelKind) -> DurableWriter:
        if kind.name not in writers:
            journal = MemoryJournal(kind=kind.name)
            writers[kind.name] = DurableWriter(
                journal, [pg, csv], MemoryDeadLetters(), RetryPolicy(0, 60)
            )
        return writers[kind.name]

    return ModelService(DECLARATION, writer_for, pg, batch_size=batch_size), pg, csv


def rec(i: int, **fields):
    return (f"[{i}]", {"isbn": f"isbn-{i}", "title": f"t{i}", **fields})


def test_saves_reach_every_sink_and_the_last_copy_of_a_key_wins():
    service, pg, csv = make()
    summary = service.save("books", [rec(1), rec(2, pages=10), rec(2, pages=12)])
    assert (summary.read, summary.stored, summary.input_duplicates) == (3, 2, 1)
    assert summary.as_dict()["model"] == "books"
    assert pg.records == csv.records
    assert pg.records[("isbn-2",)]["pages"] == 12


def test_saving_the_same_records_again_is_unchanged():
    service, _, _ = make()
    service.save("books", [rec(1), rec(2)])
    again = service.save("books", [rec(1), rec(2, title="new")])
    assert (again.stored, again.unchanged) == (1, 1)


def test_a_bad_record_is_rejected_with_its_path_and_its_neighbours_are_stored():
    service, pg, _ = make()
    seen = []
    summary = service.save("books", [rec(1), rec(2, pages="many"), rec(3)], on_reject=seen.append)
    assert summary.rejected == 1 and summary.stored == 2
    (error,) = summary.rejections
    assert (error.location, error.path) == ("[2]", "pages") and seen == [error]
    assert set(pg.records) == {("isbn-1",), ("isbn-3",)}


def test_tracked_saves_answer_per_record_in_input_order():
    service, _, _ = make()
    service.save("books", [rec(1)])
    summary = service.save(
        "books", [rec(1), rec(2), ("[x]", {"title": "no key"}), rec(2)], track=True
    )
    assert [r.status for r in summary.results or []] == [
        "unchanged",
        "duplicate",
        "rejected",
        "stored",
    ]


def test_update_merges_the_changes_into_the_stored_record():
    service, pg, _ = make()
    service.save("books", [rec(1, pages=10)])
    updated = service.update("books", "isbn-1", {"pages": 11})
    assert updated == {"isbn": "isbn-1", "title": "t1", "pages": 11} == pg.records[("isbn-1",)]
    with pytest.raises(RecordError, match="natural key"):
        service.update("books", "isbn-1", {"isbn": "other"})
    with pytest.raises(NotFound):
        service.update("books", "isbn-9", {"pages": 1})


def test_delete_removes_from_every_sink():
    service, pg, csv = make()
    service.save("books", [rec(1), rec(2)])
    summary = service.delete("books", ["isbn-1"])
    assert summary.sinks["postgres"].stored == 1
    assert set(pg.records) == set(csv.records) == {("isbn-2",)}
    assert service.get("books", "isbn-1") is None


def test_batches_are_cut_at_the_batch_size():
    service, pg, _ = make(batch_size=2)
    summary = service.save("books", [rec(i) for i in range(5)])
    assert summary.batches == 3 and len(pg.records) == 5


def test_an_update_a_store_refuses_raises_instead_of_answering_the_old_record():
    from scrapesink.errors import ConstraintError

    service, pg, _ = make()
    service.save("books", [rec(1, pages=10)])
    pg.refuse = lambda op: (
        ConstraintError("value too long") if op.record.get("pages") == 99 else None
    )
    with pytest.raises(ConstraintError, match="refused by postgres"):
        service.update("books", "isbn-1", {"pages": 99})
    assert pg.records[("isbn-1",)]["pages"] == 10

"""The journal and dead-letter ports: the in-memory fakes the unit tests use behave as the real
stores do (``adapters.journal.Journal``, ``adapters.deadletters.DeadLetterStore``)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from scrapesink.adapters.deadletters import DeadLetterStore
from scrapesink.adapters.journal import Journal
from scrapesink.application.kinds import EVENTS, model_kind
from scrapesink.domain.events import RawEvent
from scrapesink.domain.records import UPSERT, RecordOp
from scrapesink.errors import ConstraintError
from tests.unit.fakes import MemoryDeadLetters, MemoryJournal

AT = datetime(2025, 5, 15, 10, tzinfo=UTC)


def events(*ids: str) -> list[RawEvent]:
    return [RawEvent("s", i, AT, f'{{"id": "{i}"}}', AT.isoformat()) for i in ids]


@pytest.fixture(params=["memory", "sqlite"])
def journal(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    if request.param == "memory":
        yield MemoryJournal()
        return
    real = Journal.create(tmp_path / "journal", EVENTS)
    yield real
    if real.path.exists():  # not closed and removed by the test
        real.close(remove_if_empty=False)


def test_appends_get_consecutive_seqs_and_read_back_in_order(journal: Any):
    assert journal.append(events("a", "b")) == (1, 2)
    assert journal.append(events("c")) == (3, 3)
    assert journal.last_seq == 3
    chunks = list(journal.read(2, 3, chunk=1))
    assert [[e.seq for e in chunk] for chunk in chunks] == [[2], [3]]
    assert [e.record.source_id for chunk in chunks for e in chunk] == ["b", "c"]
    assert journal.first_seq() == 1 and journal.count_between(2, 3) == 2


def test_acceptance_times_increase_with_the_seqs(journal: Any):
    journal.append(events("a", "b"))
    first_batch = journal.last_accepted_us
    journal.append(events("c"))
    times = [e.accepted_us for chunk in journal.read(1, 3) for e in chunk]
    assert times[0] == first_batch and times == sorted(set(times))
    assert journal.last_accepted_us == times[2]


def test_compaction_forgets_what_every_sink_has_and_seqs_are_never_reused(journal: Any):
    journal.append(events("a", "b", "c"))
    journal.compact(2)
    assert journal.first_seq() == 3
    assert [e.seq for chunk in journal.read(1, 3) for e in chunk] == [3]
    journal.compact(3)
    assert journal.first_seq() is None
    assert journal.append(events("d")) == (4, 4)


def test_close_says_whether_nothing_was_left(journal: Any):
    journal.append(events("a"))
    journal.compact(1)
    assert journal.close() is True


def test_a_model_journal_keeps_its_kind_and_its_records(tmp_path: Path):
    real = Journal.create(tmp_path / "journal", model_kind("movies"))
    real.append([RecordOp(UPSERT, {"url": "u", "n": 1})])
    path = real.path
    real.close(remove_if_empty=False)
    again = Journal(path)
    try:
        assert again.kind == "model:movies"
        assert [e.record for chunk in again.read(1, 1) for e in chunk] == [
            RecordOp(UPSERT, {"url": "u", "n": 1})
        ]
    finally:
        again.close()


@pytest.fixture(params=["memory", "sqlite"])
def dead(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    yield MemoryDeadLetters() if request.param == "memory" else DeadLetterStore(tmp_path / "d.db")


def kept(store: Any) -> list[tuple[str, str, int, Any, int, int | None]]:
    """(sink, kind, seq, record, attempts, accepted_us) of every letter, oldest first (an
    event by its columns: the store does not keep its cached ISO text)."""
    letters = store.kept.values() if isinstance(store, MemoryDeadLetters) else store.list()
    return [(x.sink, x.kind, x.seq, _columns(x.record), x.attempts, x.accepted_us) for x in letters]


def _columns(record: Any) -> Any:
    return tuple(record[:4]) if isinstance(record, RawEvent) else record


def test_a_refused_record_is_kept_once_per_sink_and_slot_with_its_attempts(dead: Any):
    (event,) = events("bad")
    refused = ConstraintError("value too long")
    dead.add("postgres", EVENTS, "j", 7, event, refused, 1234)
    dead.add("postgres", EVENTS, "j", 7, event, refused, 1234)  # refused again
    dead.add("csv", EVENTS, "j", 7, event, refused, 1234)
    entity = RecordOp(UPSERT, {"url": "u"})
    dead.add("postgres", model_kind("movies"), "m", 1, entity, refused)
    assert kept(dead) == [
        ("postgres", EVENTS, 7, _columns(event), 2, 1234),
        ("csv", EVENTS, 7, _columns(event), 1, 1234),
        ("postgres", "model:movies", 1, entity, 1, None),
    ]


def test_a_journal_of_a_kind_no_one_knows_is_kept_and_counted_not_fatal(app, data_dir):
    # A journal written by another version, or damaged: start-up, replay and status go on.
    strange = Journal.create(app.journal_dir, "gadgets-v9")
    strange.append([RecordOp(UPSERT, {"sku": "a"})])
    path = strange.path
    strange.close()
    result = app.replay()
    assert result.unknown == ["gadgets-v9"] and path.exists()
    status = app.status()
    assert status.journals == 1 and status.sinks["postgres"].pending == 1

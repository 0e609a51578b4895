"""Group commit: records handed over one at a time are journaled together, each answered."""

from __future__ import annotations

import threading

from scrapesink.application.delivery import RetryPolicy
from scrapesink.application.durable import DurableWriter
from scrapesink.application.group_commit import GroupCommit, Outcome
from scrapesink.application.ingest import IngestService
from scrapesink.domain.events import EventRules
from tests.unit.fakes import MemoryDeadLetters, MemoryJournal, MemorySink


def service() -> tuple[IngestService, MemoryJournal, MemorySink]:
    journal, sink = MemoryJournal(), MemorySink("postgres")
    writer = DurableWriter(
        journal, [sink], MemoryDeadLetters(), RetryPolicy(0, 60), wait_for_lanes=False
    )
    return IngestService(writer, EventRules(default_source="s")), journal, sink


def event(i: int | None) -> dict[str, object]:
    return {"id": i, "timestamp": "2025-05-15T10:00:00Z", "n": i}


def test_records_handed_over_together_share_a_write_and_each_gets_its_outcome():
    ingest, journal, _ = service()
    writes: list[int] = []
    gate = threading.Event()

    def write(target: str, records: list[object]):
        gate.wait()  # the first write waits: everything handed over meanwhile gathers
        writes.append(len(records))
        return ingest.ingest(((f"[{i}]", r) for i, r in enumerate(records)), settle=False)

    commit = GroupCommit(write, max_records=50, linger=0)
    outcomes: dict[int, Outcome] = {}
    done = threading.Event()

    def answer(i: int):
        def note(outcome: Outcome) -> None:
            outcomes[i] = outcome
            if len(outcomes) == 101:
                done.set()

        return note

    for i in range(101):
        commit.submit("events", event(None if i == 42 else i), answer(i))
    gate.set()
    assert done.wait(10)
    commit.close()
    assert outcomes[42].status == "rejected" and outcomes[42].reason == "id: missing field id"
    assert {o.status for i, o in outcomes.items() if i != 42} == {"accepted"}
    assert sum(writes) == 101 and len(writes) <= 4  # the first alone, then up to 50 a write
    assert journal.last_seq == 100


def test_a_write_that_fails_answers_failed_and_the_next_round_goes_on():
    calls = []

    def write(target: str, records: list[object]):
        calls.append(records)
        if len(calls) == 1:
            raise OSError("disk full")
        ingest, _, _ = service()
        return ingest.ingest(((f"[{i}]", r) for i, r in enumerate(records)), settle=False)

    commit = GroupCommit(write, max_records=1, linger=0)
    outcomes: list[Outcome] = []
    for i in range(2):
        commit.submit("events", event(i), outcomes.append)
    commit.close()
    assert [o.status for o in outcomes] == ["failed", "accepted"]
    assert "disk full" in outcomes[0].reason


def test_records_handed_over_after_close_fail_at_once():
    commit = GroupCommit(lambda target, records: None, max_records=1)  # type: ignore[arg-type,return-value]
    commit.close()
    outcomes: list[Outcome] = []
    commit.submit("events", event(1), outcomes.append)
    assert outcomes[0].status == "failed"


def test_the_idle_hook_runs_in_the_journaling_thread_when_nothing_comes():
    called: list[str] = []
    seen = threading.Event()

    def idle() -> None:
        called.append(threading.current_thread().name)
        seen.set()

    commit = GroupCommit(lambda t, r: None, on_idle=idle, idle_every=0.01, name="journaler")  # type: ignore[arg-type,return-value]
    assert seen.wait(5)
    commit.close()
    assert called[0] == "journaler"

"""Following journals: passes until told to finish, then until nothing is left or nothing moves."""

from __future__ import annotations

import threading
import time

from scrapesink.application.follow import follow
from scrapesink.application.outcomes import SinkReport
from scrapesink.application.replay import ReplayResult


def result(stored: int, left: int, *, pending: int = 0, error: str | None = None) -> ReplayResult:
    report = SinkReport(stored=stored, pending=pending, error=error)
    return ReplayResult(journals=left, removed=0, reports={"postgres": report})


def test_finishing_passes_go_on_while_they_deliver_and_stop_when_nothing_is_left():
    finish = threading.Event()
    finish.set()
    results = iter([result(10, 2), result(5, 1), result(0, 0)])
    progress = follow(lambda: next(results), finish, interval=0)
    assert progress.finished and progress.passes == 3
    assert progress.reports["postgres"].stored == 15
    assert progress.journals_left == 0


def test_a_store_that_is_down_ends_the_finishing_passes_with_its_records_pending():
    finish = threading.Event()
    finish.set()
    results = iter([result(0, 3, pending=40, error="connection refused")] * 5)
    progress = follow(lambda: next(results), finish, interval=0)
    assert progress.passes == 1  # nothing moved: no point in passing again
    assert progress.reports["postgres"].pending == 40
    assert progress.reports["postgres"].error == "connection refused"


def test_passes_repeat_until_finish_and_respect_the_deadline():
    finish = threading.Event()
    seen: list[int] = []

    def replay() -> ReplayResult:
        seen.append(1)
        if len(seen) == 3:
            finish.set()
        return result(1, 1)  # always something delivered, always a journal left

    progress = follow(replay, finish, interval=0, deadline=lambda: time.monotonic() - 1)
    assert progress.finished
    assert progress.passes == 4  # three before finish, one after: the deadline had passed

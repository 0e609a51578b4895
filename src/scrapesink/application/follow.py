"""Following journals: deliver what other processes journal, as they close their journals.

A writer that only journals (``scrapesink.open(deliver="journal")``: the Scrapy pipeline, whose
process must spend its time crawling) closes its journal every so often; :func:`follow` replays
every closed journal of the data directory in passes (``replay`` does the work: exactly once,
each store deciding by stamp) until told to finish, then makes its last passes until nothing is
left, a pass gets nowhere (a store is down: the rest stays journaled), or the deadline passes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from scrapesink.application.outcomes import SinkReport
from scrapesink.application.replay import ReplayResult


@dataclass
class Progress:
    """What the passes did so far: per store, the records stored, found duplicate or unchanged
    and sent to dead letters (added up), and what the last pass left pending (and why)."""

    passes: int = 0
    reports: dict[str, SinkReport] = field(default_factory=dict)
    journals_left: int = 0
    finished: bool = False

    def add(self, result: ReplayResult) -> None:
        self.passes += 1
        for name, report in result.reports.items():
            total = self.reports.setdefault(name, SinkReport())
            total.stored += report.stored
            total.duplicates += report.duplicates
            total.unchanged += report.unchanged
            total.dead_letters += report.dead_letters
            total.pending = report.pending
            total.error = report.error
        self.journals_left = result.journals - result.removed + result.busy

    def as_dict(self) -> dict[str, Any]:
        return {
            "passes": self.passes,
            "reports": {name: report.as_dict() for name, report in self.reports.items()},
            "journals_left": self.journals_left,
            "finished": self.finished,
        }


def follow(
    replay: Callable[[], ReplayResult],
    finish: threading.Event,
    *,
    interval: float = 0.5,
    deadline: Callable[[], float | None] = lambda: None,
    on_pass: Callable[[Progress], None] = lambda progress: None,
) -> Progress:
    """Replay every ``interval`` seconds until ``finish`` is set; then pass again until no
    journal is left, a pass delivers nothing (a store is down, a journal is in use: that
    stays journaled) or ``deadline()`` (a monotonic time, None: no limit) has passed."""
    progress = Progress()
    while not finish.is_set():
        progress.add(replay())
        on_pass(replace(progress))
        finish.wait(interval)
    while True:
        result = replay()
        progress.add(result)
        limit = deadline()
        progress.finished = (
            progress.journals_left == 0
            or not any(_handled(report) for report in result.reports.values())
            or (limit is not None and time.monotonic() >= limit)
        )
        on_pass(replace(progress))
        if progress.finished:
            return progress


def _handled(report: SinkReport) -> int:
    return report.stored + report.duplicates + report.unchanged + report.dead_letters

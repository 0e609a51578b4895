"""Background delivery's driver: what waits in the journal reaches each sink without a writer
waiting for it.

A writer that does not wait for its lanes (``DurableWriter(wait_for_lanes=False)``) leaves a
batch in the journal when every lane slot is busy or a sink is recovering. :class:`Feeder` runs
one thread that, every ``interval`` seconds, hands such batches on in journal order
(``DurableWriter.feed``), so a slow or stopped store makes the journal grow, never the memory
or the writer's wait; a store that comes back after its cool-down gets what it missed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence

from scrapesink.application.durable import DurableWriter

log = logging.getLogger(__name__)


class Feeder:
    """One thread feeding the writers ``writers()`` returns (they may be opened later)."""

    def __init__(
        self, writers: Callable[[], Sequence[DurableWriter]], *, interval: float = 0.2
    ) -> None:
        self._writers = writers
        self._interval = interval
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name="scrapesink-feeder", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """Something waits in a journal: feed now rather than at the next interval."""
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self._interval)
            self._wake.clear()
            if not self._stop.is_set():
                self.feed_once()

    def feed_once(self) -> int:
        handed = 0
        for writer in self._writers():
            try:
                handed += writer.feed()
            except Exception:  # the next round tries again; the records are in the journal
                log.exception("background delivery failed to hand records on")
        return handed

    def wait_idle(self, timeout: float) -> bool:
        """Wait until every sink that is up has everything journaled so far; False when
        ``timeout`` seconds passed first (what is left waits in the journal)."""
        deadline = time.monotonic() + timeout
        while True:
            if all(writer.idle for writer in self._writers()):
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(min(self._interval, max(0.0, deadline - time.monotonic())))

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join()

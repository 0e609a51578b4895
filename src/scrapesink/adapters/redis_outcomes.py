"""What workers did with each published record, told back to the producers that wait for it.

`serve` answers each record's outcome (stored, duplicate, unchanged, dead letter, pending). With
a shared journal the workers store the records, so after every batch a worker adds one entry to
``scrapesink:outcomes`` (its sink, journal id, seq range, status, and the seqs found duplicate
or unchanged); a producer that waits for its records (:class:`OutcomeListener`) reads that
stream and notes each entry on the receipts it holds, as a local delivery lane would. The stream
is capped by length: outcomes are notices to whoever waits now, not data (the stores and their
progress are the truth), and a producer that waits too long answers ``pending``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Any

from scrapesink.adapters.redis_streams import OUTCOMES, RedisStreams, translated
from scrapesink.application.outcomes import STORED, Outcome, Receipt
from scrapesink.application.ports import Batch, WriteOutcome
from scrapesink.errors import StorageError

log = logging.getLogger(__name__)


class OutcomeListener:
    """Reads the outcomes stream in a thread and notes each entry on the receipts registered.

    Started before the first tracked publish (:meth:`start` reads the stream's position
    synchronously), so no outcome of a record published after it can be missed."""

    def __init__(
        self, streams: RedisStreams, sinks: Sequence[str], *, wait_seconds: float = 5.0
    ) -> None:
        self.streams = streams
        self.sinks: Sequence[str] = list(sinks)
        self.wait_seconds = wait_seconds
        self._receipts: list[Receipt] = []
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._position = "0-0"

    def start(self) -> None:
        with self._lock:
            if self._thread is not None:
                return
            with translated(self.streams.where):
                last = self.streams.client.xrevrange(OUTCOMES, count=1)
            self._position = last[0][0].decode() if last else "0-0"
            self._thread = threading.Thread(
                target=self._run, name="scrapesink-outcomes", daemon=True
            )
            self._thread.start()

    def register(self, receipt: Receipt) -> None:
        with self._lock:
            self._receipts.append(receipt)

    def unregister(self, receipt: Receipt) -> None:
        with self._lock:
            if receipt in self._receipts:
                self._receipts.remove(receipt)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with translated(self.streams.where):
                    reply = self.streams.client.xread(
                        {OUTCOMES: self._position}, count=1000, block=500
                    )
            except StorageError as exc:
                log.info("outcomes not read: %s", exc.message)
                self._stop.wait(1.0)
                continue
            for _key, rows in reply or []:
                for entry_id, fields in rows:
                    self._position = entry_id.decode()
                    self._dispatch(Outcome.parse(fields))

    def _dispatch(self, outcome: Outcome) -> None:
        with self._lock:
            receipts = list(self._receipts)
        if not receipts:
            return
        batch: Batch[Any] = Batch(outcome.journal_id, outcome.first, outcome.last, ())
        written = None  # a dead letter or pending: the status says it all
        if outcome.status == STORED:
            written = WriteOutcome(
                duplicate_seqs=frozenset(outcome.duplicates),
                unchanged=len(outcome.unchanged),
                unchanged_seqs=frozenset(outcome.unchanged),
            )
        for receipt in receipts:
            receipt.note(outcome.sink, batch, written, outcome.status)

"""Group commit: records handed over one at a time by many callers, journaled together.

A caller that must not wait on a disk (Scrapy's reactor thread) hands each record over with a
callback (:meth:`GroupCommit.submit`, which never blocks). One thread takes whatever is waiting,
up to ``max_records``, lingering at most ``linger`` seconds for more, and journals it with one
write per target (raw events, or one model), so one fsync covers many records. Then it calls
each record's callback, in that thread, with its :class:`Outcome`:

* ``accepted``: journaled, i.e. acknowledged; the stores get it in the background;
* ``rejected``: the record's own error (validation), with its path; nothing else is affected;
* ``failed``: the write itself failed (the journal cannot be written): not acknowledged.

Memory is bounded by the callers, each of which waits for its callback before it hands over
more (Scrapy: ``CONCURRENT_ITEMS`` per response in flight); when the stores fall behind, the
journal grows, not this queue (the writes do not wait for the stores: background delivery).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

from scrapesink.application.summary import MAX_KEPT_REJECTIONS, WriteSummary
from scrapesink.errors import RecordError, ScrapesinkError

log = logging.getLogger(__name__)
T = TypeVar("T", bound=Hashable)


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of one handed-over record (see the module docstring)."""

    status: Literal["accepted", "rejected", "failed"]
    error: ScrapesinkError | None = None

    @property
    def reason(self) -> str:
        if self.error is None:
            return ""
        if isinstance(self.error, RecordError) and self.error.path:
            return f"{self.error.path}: {self.error.message}"
        return self.error.message


ACCEPTED = Outcome("accepted")
Write = Callable[[T, list[Any]], WriteSummary]
Done = Callable[[Outcome], None]
_STOP = object()


class GroupCommit(Generic[T]):
    """One journaling thread for records handed over by other threads.

    Args:
        write: journals a list of records of one target and returns the write's summary,
            whose rejections carry the record's index as their location (``[3]``).
        max_records: at most this many records per round of writes.
        linger: seconds to wait for more records once one is waiting (0: take only what is
            there; a write in progress gathers the next round anyway).
        on_written: told each write's summary (in the journaling thread).
        on_idle: called in the journaling thread after ``idle_every`` seconds without records.
        dispatch: calls the callbacks of one round, given with their outcomes (default: each
            in turn, in the journaling thread); a caller whose callbacks must hop to an event
            loop hops once per round rather than once per record.
    """

    def __init__(
        self,
        write: Write[T],
        *,
        max_records: int = 500,
        linger: float = 0.005,
        on_written: Callable[[T, WriteSummary], None] | None = None,
        dispatch: Callable[[list[tuple[Done, Outcome]]], None] | None = None,
        on_idle: Callable[[], None] | None = None,
        idle_every: float | None = None,
        name: str = "scrapesink-journal",
    ) -> None:
        if not 1 <= max_records <= MAX_KEPT_REJECTIONS:
            raise ValueError(f"max_records must be 1..{MAX_KEPT_REJECTIONS}")
        self._dispatch = dispatch or _call_each
        self._on_idle = on_idle
        self._idle_every = idle_every if on_idle is not None else None
        self._write = write
        self._max = max_records
        self._linger = linger
        self._on_written = on_written
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._closed = False
        self._lock = threading.Lock()
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.thread.start()

    def submit(self, target: T, record: Any, done: Done) -> None:
        """Hand one record over; ``done`` is called (in the journaling thread) with its outcome."""
        with self._lock:
            if self._closed:
                done(Outcome("failed", ScrapesinkError("closed: the record was not journaled")))
                return
            self._queue.put((target, record, done))

    def close(self) -> None:
        """Journal everything handed over so far, then stop the thread."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._queue.put(_STOP)
        self.thread.join()

    # -- in the journaling thread -------------------------------------------------------------
    def _run(self) -> None:
        stopping = False
        while not stopping:
            try:
                first = self._queue.get(timeout=self._idle_every)
            except queue.Empty:
                self._idle()
                continue
            if first is _STOP:
                return
            round_ = [first]
            deadline = time.monotonic() + self._linger
            while len(round_) < self._max:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    wait = deadline - time.monotonic()
                    if wait <= 0:
                        break
                    try:
                        nxt = self._queue.get(timeout=wait)
                    except queue.Empty:
                        break
                if nxt is _STOP:
                    stopping = True
                    break
                round_.append(nxt)
            self._commit(round_)

    def _idle(self) -> None:
        if self._on_idle is not None:
            try:
                self._on_idle()
            except Exception:
                log.exception("a group commit idle hook failed")

    def _commit(self, round_: list[tuple[T, Any, Done]]) -> None:
        groups: dict[T, list[tuple[Any, Done]]] = {}
        for target, record, done in round_:
            groups.setdefault(target, []).append((record, done))
        answers: list[tuple[Done, Outcome]] = []
        for target, entries in groups.items():
            outcomes = self._write_group(target, [record for record, _ in entries])
            answers += [
                (done, outcome) for (_, done), outcome in zip(entries, outcomes, strict=True)
            ]
        try:
            self._dispatch(answers)
        except Exception:  # a caller's callback must not stop the journaling
            log.exception("a group commit callback failed")

    def _write_group(self, target: T, records: list[Any]) -> list[Outcome]:
        try:
            summary = self._write(target, records)
        except ScrapesinkError as exc:
            log.error("records not journaled: %s", exc.message)
            return [Outcome("failed", exc)] * len(records)
        except Exception as exc:
            log.exception("records not journaled")
            return [Outcome("failed", ScrapesinkError(f"{type(exc).__name__}: {exc}"))] * len(
                records
            )
        outcomes = [ACCEPTED] * len(records)
        for error in summary.rejections:
            index = _index(error.location)
            if index is not None and 0 <= index < len(records):
                outcomes[index] = Outcome("rejected", error)
        if self._on_written is not None:
            try:
                self._on_written(target, summary)
            except Exception:
                log.exception("a group commit observer failed")
        return outcomes


def _call_each(answers: list[tuple[Done, Outcome]]) -> None:
    for done, outcome in answers:
        done(outcome)


def _index(location: str | None) -> int | None:
    """The index of ``[3]`` (how the Python API names a record of a list)."""
    if location and location.startswith("[") and location.endswith("]"):
        try:
            return int(location[1:-1])
        except ValueError:
            return None
    return None

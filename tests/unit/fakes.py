"""In-memory fakes of the ports: a journal, a sink and a dead-letter store (no database)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from scrapesink.application.ports import EVENTS, Batch, WriteOutcome
from scrapesink.domain.events import RawEvent
from scrapesink.errors import ScrapesinkError


@dataclass(frozen=True)
class Entry:
    seq: int
    record: RawEvent
    accepted_us: int = 0


class MemoryJournal:
    def __init__(self, journal_id: str = "j1") -> None:
        self.id = journal_id
        self.kind = EVENTS
        self.entries: dict[int, RawEvent] = {}
        self._last = 0
        self._first = 1
        self.closed = False

    @property
    def last_seq(self) -> int:
        return self._last

    @property
    def last_accepted_us(self) -> int:
        return self._first  # a fake clock: a record's seq is its time

    def append(self, events: Sequence[RawEvent]) -> tuple[int, int]:
        first = self._first = self._last + 1
        for i, event in enumerate(events):
            self.entries[first + i] = event
        self._last = first + len(events) - 1
        return first, self._last

    def read(self, first: int, last: int, *, chunk: int = 5000) -> Iterator[list[Entry]]:
        seqs = sorted(s for s in self.entries if first <= s <= last)
        for start in range(0, len(seqs), chunk):
            yield [Entry(s, self.entries[s], s) for s in seqs[start : start + chunk]]

    def first_seq(self) -> int | None:
        return min(self.entries, default=None)

    def count_between(self, first: int, last: int) -> int:
        return sum(1 for s in self.entries if first <= s <= last)

    def compact(self, upto: int) -> int:
        gone = [s for s in self.entries if s <= upto]
        for s in gone:
            del self.entries[s]
        return len(gone)

    def close(self, *, remove_if_empty: bool = True) -> bool:
        self.closed = True
        return not self.entries


class MemorySink:
    """A fake EventSink: first write of a key wins; can be told to fail."""

    def __init__(self, name: str = "memory", parallelism: int = 1) -> None:
        self.name = name
        self.kind = EVENTS
        self.parallelism = parallelism
        self.events: dict[tuple[str, str], RawEvent] = {}
        self.stamps: dict[tuple[str, str], bytes] = {}
        self.ranges: dict[str, list[tuple[int, int]]] = {}
        self.batches: list[int] = []
        self.fail_with: ScrapesinkError | None = None
        self.refuse: Callable[[RawEvent], ScrapesinkError | None] = lambda event: None
        self.repaired = 0
        self.stage_fails_with: Exception | None = None

    def stage(self, batch: Batch) -> Callable[[], WriteOutcome]:
        if self.stage_fails_with is not None:
            raise self.stage_fails_with
        return lambda: self._write(batch)

    def _write(self, batch: Batch) -> WriteOutcome:
        if self.fail_with is not None:
            raise self.fail_with
        for event in batch.records:
            error = self.refuse(event)
            if error is not None:
                raise error  # the whole batch fails, as one transaction would
        self.batches.append(len(batch.records))
        duplicates = set()
        stored = 0
        for event, stamp in zip(batch.records, batch.stamps(), strict=True):
            held = self.stamps.get(event.key)
            if held is not None and held <= stamp:
                duplicates.add(event.key)
            else:  # new, or an older copy than the one held: the oldest stamp wins
                self.events[event.key] = event
                self.stamps[event.key] = stamp
                stored += 1
        if batch.journal_id:
            self.ranges.setdefault(batch.journal_id, []).append((batch.first, batch.last))
        return WriteOutcome(stored, frozenset(duplicates))

    def delivered(self, journal_id: str) -> list[tuple[int, int]]:
        if self.fail_with is not None:
            raise self.fail_with
        return sorted(self.ranges.get(journal_id, []))

    def skip(self, journal_id: str, first: int, last: int) -> None:
        self.ranges.setdefault(journal_id, []).append((first, last))

    def forget(self, journal_id: str) -> None:
        self.ranges.pop(journal_id, None)

    def repair(self) -> None:
        self.repaired += 1


class MemoryDeadLetters:
    def __init__(self) -> None:
        self.letters: list[tuple[str, str, int, RawEvent, ScrapesinkError]] = []

    def add(
        self,
        sink: str,
        kind: str,
        journal_id: str,
        seq: int,
        event: RawEvent,
        error: ScrapesinkError,
        accepted_us: int | None = None,
    ) -> None:
        self.letters.append((sink, journal_id, seq, event, error))

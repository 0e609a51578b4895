"""The ports the application layer talks through: one Protocol per seam with two sides."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Protocol

from scrapesink.domain.events import RawEvent, StoredEvent
from scrapesink.errors import ScrapesinkError


@dataclass(frozen=True, slots=True)
class WriteOutcome:
    """What a store did with one batch: how many it newly stored, and which keys it already had.

    Duplicates are listed rather than stored keys because they are the rare case: a batch of
    new events is reported without touching its keys one by one.
    """

    stored: int = 0
    duplicates: frozenset[tuple[str, str]] = field(default_factory=frozenset)


@dataclass(frozen=True, slots=True)
class EventQuery:
    """Filters for listing raw events; ``after`` is the opaque cursor of the previous page."""

    source: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    processed: bool | None = None
    contains: dict[str, Any] | None = None
    limit: int = 100
    after: str | None = None


@dataclass(frozen=True, slots=True)
class EventPage:
    events: list[StoredEvent]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class DayStats:
    source: str
    day: date
    events: int
    processed: int


@dataclass(frozen=True, slots=True)
class Batch:
    """Events ``first..last`` of one journal, in journal order (``events[i]`` is ``first + i``)."""

    journal_id: str
    first: int
    last: int
    events: Sequence[RawEvent]

    def split(self) -> tuple[Batch, Batch]:
        half = len(self.events) // 2
        return (
            Batch(self.journal_id, self.first, self.first + half - 1, self.events[:half]),
            Batch(self.journal_id, self.first + half, self.last, self.events[half:]),
        )


class EventSink(Protocol):
    """A store that journal batches are delivered to (PostgreSQL, CSV files, ...).

    A sink records which journal ranges it holds *atomically with the data*, in its own store,
    so a batch is never half delivered and never delivered twice, whatever crashes when.
    """

    name: str
    #: batches this sink may take at once (it must then accept ranges out of order)
    parallelism: int

    def stage(self, batch: Batch) -> Callable[[], WriteOutcome]:
        """Encode ``batch`` now (in the caller's thread); the returned call stores it."""

    def delivered(self, journal_id: str) -> list[tuple[int, int]]:
        """The ranges of ``journal_id`` this sink holds (or has skipped), sorted."""

    def skip(self, journal_id: str, first: int, last: int) -> None:
        """Record a range as handled without data (its records went to dead letters)."""

    def forget(self, journal_id: str) -> None:
        """The journal is gone: drop the sink's bookkeeping about it."""

    def repair(self) -> None:
        """Undo what a crash left half done (called at start-up)."""


class DeadLetters(Protocol):
    def add(
        self, sink: str, journal_id: str, seq: int, event: RawEvent, error: ScrapesinkError
    ) -> None: ...


class JournalEntry(Protocol):
    @property
    def seq(self) -> int: ...

    @property
    def event(self) -> RawEvent: ...


class Journal(Protocol):
    """The journal port (the SQLite journal; a broker stream could stand in)."""

    id: str

    @property
    def last_seq(self) -> int: ...

    def append(self, events: Sequence[RawEvent]) -> tuple[int, int]: ...

    def read(
        self, first: int, last: int, *, chunk: int = ...
    ) -> Iterable[Sequence[JournalEntry]]: ...

    def first_seq(self) -> int | None: ...

    def count_between(self, first: int, last: int) -> int: ...

    def compact(self, upto: int) -> int: ...

    def close(self, *, remove_if_empty: bool = True) -> bool: ...

"""The ports the application layer talks through: one Protocol per seam with two sides."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Protocol

from scrapesink.domain.events import RawEvent, StoredEvent


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


class EventStore(Protocol):
    """Where raw events are kept (PostgreSQL; an in-memory fake in unit tests)."""

    def prepare(self) -> None:
        """Get ready to write (e.g. premake partitions)."""

    def write(self, events: Sequence[RawEvent]) -> WriteOutcome:
        """Store a batch of events with unique keys; the first write of a key wins."""

    def stage(self, events: Sequence[RawEvent]) -> Callable[[], WriteOutcome]:
        """Split :meth:`write` in two: encode the batch now, return the storing part to run later
        (in another thread). ``stage(events)()`` is ``write(events)``."""

    def get(self, source: str, source_id: str) -> StoredEvent | None: ...

    def query(self, query: EventQuery) -> EventPage: ...

    def stats(
        self,
        *,
        source: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[DayStats]: ...

    def mark_processed(self, keys: Sequence[tuple[str, str]], processed: bool = True) -> int:
        """Set the processed flag; returns how many events changed."""

"""The ports the application layer talks through: one Protocol per seam with two sides."""

from __future__ import annotations

import builtins
import functools
import hashlib
import struct
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Generic, Protocol, TypeVar

from scrapesink.domain.events import RawEvent, StoredEvent
from scrapesink.domain.models import ModelDef
from scrapesink.errors import ScrapesinkError


@dataclass(frozen=True, slots=True)
class WriteOutcome:
    """What a store did with one batch: how many records it newly stored, and which journal
    seqs it already held (``duplicate_seqs``) or found identical (``unchanged_seqs``).

    Seqs, not keys, so a receipt answers for each record whatever its kind, and the rare cases
    are listed rather than the stored records: a batch of new records is reported without
    touching them one by one.
    """

    stored: int = 0
    #: records another copy of the same key won over (held already, or earlier in the batch):
    #: the stamp rule decided, and nothing of theirs was written
    duplicate_seqs: frozenset[int] = field(default_factory=frozenset)
    #: model records found identical to what the store holds (nothing written)
    unchanged: int = 0
    #: which journal seqs those were (for per-record answers; may be empty when not known)
    unchanged_seqs: frozenset[int] = field(default_factory=frozenset)


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


FILTER_OPS = ("=", "!=", "<", "<=", ">", ">=", "~")  # ~ : JSON containment


@dataclass(frozen=True, slots=True)
class Filter:
    """One condition on a model's field (``price>=10``, ``tags~["ai"]``)."""

    field: str
    op: str
    value: Any


@dataclass(frozen=True, slots=True)
class ModelPage:
    records: list[dict[str, Any]]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class SearchHit:
    rank: float
    record: dict[str, Any]


class EventReader(Protocol):
    """The read side of raw events (PostgreSQL's ``PostgresEventStore``; a fake in tests)."""

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
        """Flag events as handled by a downstream consumer; how many changed."""


class ModelReader(Protocol):
    """The read side of declared models (PostgreSQL's ``PostgresModelReader``; a fake in tests)."""

    def get(self, model: ModelDef, key: dict[str, Any]) -> dict[str, Any] | None: ...

    def list(
        self,
        model: ModelDef,
        *,
        filters: Sequence[Filter] = (),
        sort: str | None = None,
        limit: int = 50,
        after: str | None = None,
        children: bool = False,
    ) -> ModelPage: ...

    def count(self, model: ModelDef, filters: Sequence[Filter] = ()) -> int: ...

    def search(
        self, model: ModelDef, text: str, *, limit: int = 20
    ) -> builtins.list[SearchHit]: ...

    def stats(self, model: ModelDef) -> dict[str, Any]: ...


R = TypeVar("R")
_STAMP = struct.Struct(">q8s")  # 16 bytes


@functools.lru_cache(maxsize=1024)
def _journal_bytes(journal_id: str) -> bytes:
    """A journal id as 8 bytes (a digest): what breaks ties between journals."""
    return hashlib.blake2b(journal_id.encode(), digest_size=8).digest()


def stamp(accepted_us: int, journal_id: str) -> bytes:
    """A record's acceptance stamp: its time, then its journal, as 16 bytes whose byte order is
    that order, so every store compares stamps as plain bytes (PostgreSQL ``bytea``, SQLite
    ``BLOB``, Python ``bytes``). Models keep the newest stamp, raw events the oldest; what arrives
    first never matters (DESIGN.md, invariant 6).

    The time is UTC microseconds, strictly increasing along one journal (the journal gives each
    record of a batch the next microsecond, never going back: see ``Journal.append``), so it
    orders a journal's records as their seqs do and (time, journal id, seq) needs no seq."""
    return _STAMP.pack(accepted_us, _journal_bytes(journal_id))


def now_us() -> int:
    return time.time_ns() // 1000


@dataclass(frozen=True, slots=True)
class Batch(Generic[R]):
    """Records ``first..last`` of one journal, in journal order (``records[i]`` is ``first + i``).

    One journal holds one kind of record (raw events, or one model's record operations), so a
    batch does.
    ``accepted_us[i]`` is ``records[i]``'s acceptance time (its stamp's); a batch built outside
    any journal (a one-off write, a retried dead letter) has none and is stamped now.
    """

    journal_id: str
    first: int
    last: int
    records: Sequence[R]
    accepted_us: Sequence[int] = ()
    #: the journal the records were accepted in, when the batch is delivered outside it (a
    #: retried dead letter): their stamps name it
    origin: str | None = None

    def split(self) -> tuple[Batch[R], Batch[R]]:
        half = len(self.records) // 2
        times = self.accepted_us
        return (
            Batch(
                self.journal_id,
                self.first,
                self.first + half - 1,
                self.records[:half],
                times[:half],
                self.origin,
            ),
            Batch(
                self.journal_id,
                self.first + half,
                self.last,
                self.records[half:],
                times[half:],
                self.origin,
            ),
        )

    def stamps(self) -> list[bytes]:
        """Each record's acceptance stamp, in order."""
        times = self.accepted_us
        if not times:
            start = now_us()
            times = range(start, start + len(self.records))
        tail = _journal_bytes(self.journal_id if self.origin is None else self.origin)
        pack = _STAMP.pack
        return [pack(t, tail) for t in times]


class RecordSink(Protocol[R]):
    """A store that journal batches are delivered to (PostgreSQL, CSV files, ...).

    A sink records which journal ranges it holds *atomically with the data*, in its own store,
    so a batch is never half delivered and never delivered twice, whatever crashes when.
    """

    name: str
    #: the journal kind it takes (``events``, ``model:movies``)
    kind: str
    #: batches this sink may take at once (it must then accept ranges out of order)
    parallelism: int

    def stage(self, batch: Batch[R]) -> Callable[[], WriteOutcome]:
        """Encode ``batch`` now (in the caller's thread); the returned call stores it."""

    def delivered(self, journal_id: str) -> list[tuple[int, int]]:
        """The ranges of ``journal_id`` this sink holds (or has skipped), sorted."""

    def skip(self, journal_id: str, first: int, last: int) -> None:
        """Record a range as handled without data (its records went to dead letters)."""

    def forget(self, journal_id: str) -> None:
        """The journal is gone: drop the sink's bookkeeping about it."""

    def forget_below(self, journal_id: str, seq: int) -> int:
        """Drop the bookkeeping of ranges ending before ``seq`` (a shared journal's entries
        that can never be handed again); returns how many ranges went."""

    def repair(self) -> None:
        """Undo what a crash left half done (called at start-up)."""


EventSink = RecordSink[RawEvent]


class DeadLetters(Protocol):
    def add(
        self,
        sink: str,
        kind: str,
        journal_id: str,
        seq: int,
        record: Any,
        error: ScrapesinkError,
        accepted_us: int | None = None,
    ) -> None: ...


class JournalEntry(Protocol):
    @property
    def seq(self) -> int: ...

    @property
    def record(self) -> Any: ...

    @property
    def accepted_us(self) -> int: ...


class Journal(Protocol):
    """The journal port (the SQLite journal; a broker stream could stand in)."""

    id: str
    kind: str

    @property
    def last_seq(self) -> int: ...

    @property
    def last_accepted_us(self) -> int:
        """The acceptance time of the first record of the last batch appended (the next
        records of that batch have the next microseconds)."""

    def append(self, records: Sequence[Any]) -> tuple[int, int]: ...

    def read(
        self, first: int, last: int, *, chunk: int = ...
    ) -> Iterable[Sequence[JournalEntry]]: ...

    def first_seq(self) -> int | None: ...

    def count_between(self, first: int, last: int) -> int: ...

    def compact(self, upto: int) -> int: ...

    def close(self, *, remove_if_empty: bool = True) -> bool: ...


class StreamEntry(Protocol):
    """One batch of a shared journal: records ``first..last`` under one entry id."""

    @property
    def id(self) -> bytes: ...

    @property
    def first(self) -> int: ...

    @property
    def last(self) -> int: ...

    @property
    def origin(self) -> str | None:
        """The journal its records were first accepted in (records published again)."""

    @property
    def unreadable(self) -> str | None:
        """Why the entry could not be read (None: it could)."""

    def entries(self) -> Sequence[JournalEntry]: ...


class SharedJournal(Protocol):
    """The consuming side of a journal that many producers share (Redis Streams; NATS
    JetStream or Kafka could stand in): one consumer group per sink, entries acknowledged
    once the sink holds them, taken over from consumers that went silent."""

    def journal_id(self, kind: str) -> str: ...

    def kinds(self) -> list[str]: ...

    def declared(self, kind: str) -> str | None:
        """The fingerprint of the model declaration producers validate with (None: unsaid)."""

    def ensure_groups(self, kind: str, groups: Sequence[str]) -> None: ...

    def read_group(
        self,
        kinds: Sequence[str],
        group: str,
        consumer: str,
        *,
        count: int,
        block_ms: int | None,
        history: bool = False,
    ) -> dict[str, list[Any]]: ...

    def claim(
        self, kind: str, group: str, consumer: str, *, min_idle_ms: int, count: int
    ) -> list[Any]: ...

    def ack(self, kind: str, group: str, ids: Sequence[bytes]) -> None: ...

    def set_aside(self, kind: str, group: str, entry: Any) -> None:
        """Keep an entry no worker can read out of the way (acknowledged for ``group``)."""

    def report_outcomes(self, outcomes: Sequence[Any]) -> None:
        """Tell producers waiting on their records what the sink did (``outcomes.Outcome``)."""

    def settled_below(self, kind: str, group: str) -> int | None:
        """The seq below which ``group`` has acknowledged every entry (None: not known)."""

    def trim(self, kind: str) -> int: ...

    def forget_consumers(self, kind: str, group: str, idle_ms: int) -> int:
        """Remove consumers that hold nothing and were idle that long (workers gone)."""

    def take_lease(self, name: str, holder: str, ms: int, home: str = "") -> bool | None:
        """True: held; False: another holder has it; None: ``home`` is not its home."""

    def drop_lease(self, name: str, holder: str) -> None: ...

"""In-memory fakes of the ports: a journal, sinks of events and of a model's records, a
dead-letter store, and the read ports (no database)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from scrapesink.application.kinds import EVENTS, model_kind
from scrapesink.application.ports import (
    Batch,
    DayStats,
    EventPage,
    EventQuery,
    Filter,
    ModelPage,
    SearchHit,
    WriteOutcome,
)
from scrapesink.domain.events import RawEvent, StoredEvent
from scrapesink.domain.models import ModelDef
from scrapesink.domain.records import DELETE
from scrapesink.errors import ScrapesinkError

AT_START = datetime(2025, 1, 1, tzinfo=UTC)  # the fakes' created_at


@dataclass(frozen=True)
class Entry:
    seq: int
    record: RawEvent
    accepted_us: int = 0


class MemoryJournal:
    """A fake journal: a record's seq is its acceptance time."""

    def __init__(self, journal_id: str = "j1", kind: str = EVENTS) -> None:
        self.id = journal_id
        self.kind = kind
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
        self.ids: dict[tuple[str, str], int] = {}  # what PostgreSQL's id column would say
        self.processed: set[tuple[str, str]] = set()
        self.stamps: dict[tuple[str, str], bytes] = {}
        self.ranges: dict[str, list[tuple[int, int]]] = {}
        self.batches: list[int] = []
        self.fail_with: ScrapesinkError | None = None
        self.refuse: Callable[[RawEvent], ScrapesinkError | None] = lambda event: None
        self.repaired = 0
        self.stage_fails_with: Exception | None = None
        self.gate = threading.Event()  # cleared: every delivery waits until it is set
        self.gate.set()

    def stage(self, batch: Batch) -> Callable[[], WriteOutcome]:
        if self.stage_fails_with is not None:
            raise self.stage_fails_with
        return lambda: self._write(batch)

    def _write(self, batch: Batch) -> WriteOutcome:
        self.gate.wait()
        if self.fail_with is not None:
            raise self.fail_with
        for event in batch.records:
            error = self.refuse(event)
            if error is not None:
                raise error  # the whole batch fails, as one transaction would
        self.batches.append(len(batch.records))
        duplicates = set()
        stored = 0
        for seq, event, stamp in zip(
            range(batch.first, batch.last + 1), batch.records, batch.stamps(), strict=True
        ):
            held = self.stamps.get(event.key)
            if held is not None and held <= stamp:
                duplicates.add(seq)
            else:  # new, or an older copy than the one held: the oldest stamp wins
                self.events[event.key] = event
                self.ids.setdefault(event.key, len(self.ids) + 1)
                self.stamps[event.key] = stamp
                stored += 1
        if batch.journal_id:
            self.ranges.setdefault(batch.journal_id, []).append((batch.first, batch.last))
        return WriteOutcome(stored, frozenset(duplicates))

    def delivered(self, journal_id: str) -> list[tuple[int, int]]:
        if self.fail_with is not None:
            raise self.fail_with
        return sorted(self.ranges.get(journal_id, []))

    # -- the read port (ports.EventReader) ------------------------------------------------
    def _stored(self) -> list[StoredEvent]:
        return sorted(
            (
                StoredEvent(
                    self.ids[key],
                    e.source,
                    e.source_id,
                    e.occurred_at,
                    e.payload,
                    AT_START,
                    key in self.processed,
                )
                for key, e in self.events.items()
            ),
            key=lambda e: (e.occurred_at, e.id),
        )

    def get(self, source: str, source_id: str) -> StoredEvent | None:
        return next(
            (e for e in self._stored() if (e.source, e.source_id) == (source, source_id)), None
        )

    def query(self, query: EventQuery) -> EventPage:
        def wanted(e: StoredEvent) -> bool:
            return (
                (query.source is None or e.source == query.source)
                and (query.since is None or e.occurred_at >= query.since)
                and (query.until is None or e.occurred_at < query.until)
                and (query.processed is None or e.processed == query.processed)
                and (query.contains is None or query.contains.items() <= e.payload.items())
            )

        events = [e for e in self._stored() if wanted(e)]
        if query.after is not None:
            events = events[int(query.after) :]
        page = events[: query.limit]
        start = int(query.after or 0)
        more = len(events) > query.limit
        return EventPage(page, str(start + query.limit) if more else None)

    def stats(
        self,
        *,
        source: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[DayStats]:
        days: dict[tuple[str, date], list[int]] = {}
        for e in self.query(EventQuery(source, since, until, limit=10**9)).events:
            counts = days.setdefault((e.source, e.occurred_at.astimezone(UTC).date()), [0, 0])
            counts[0] += 1
            counts[1] += e.processed
        return [DayStats(s, d, n, p) for (s, d), (n, p) in sorted(days.items())]

    def mark_processed(self, keys: Sequence[tuple[str, str]], processed: bool = True) -> int:
        changed = 0
        for key in dict.fromkeys(keys):
            if key in self.events and (key in self.processed) != processed:
                (self.processed.add if processed else self.processed.discard)(key)
                changed += 1
        return changed

    def skip(self, journal_id: str, first: int, last: int) -> None:
        self.ranges.setdefault(journal_id, []).append((first, last))

    def forget(self, journal_id: str) -> None:
        self.ranges.pop(journal_id, None)

    def repair(self) -> None:
        self.repaired += 1


class MemoryModelSink:
    """A fake sink of one model's records: the newest stamp of a key wins, an identical record
    is unchanged, a delete removes (what PostgreSQL's procedures and the model CSVs do)."""

    parallelism = 1

    def __init__(self, model: str, natural_key: Sequence[str], name: str = "memory") -> None:
        self.name = name
        self.kind = model_kind(model)
        self.natural_key = tuple(natural_key)
        self.records: dict[tuple[Any, ...], dict[str, Any]] = {}
        self.stamps: dict[tuple[Any, ...], bytes] = {}
        self.ranges: dict[str, list[tuple[int, int]]] = {}
        self.refuse: Callable[[Any], ScrapesinkError | None] = lambda op: None

    def stage(self, batch: Batch) -> Callable[[], WriteOutcome]:
        return lambda: self._write(batch)

    def _write(self, batch: Batch) -> WriteOutcome:
        for op in batch.records:
            error = self.refuse(op)
            if error is not None:
                raise error  # the whole batch fails, as one transaction would
        if batch.journal_id and any(
            a <= batch.first and batch.last <= b for a, b in self.ranges.get(batch.journal_id, [])
        ):
            return WriteOutcome(0)  # delivered before
        stored, same = 0, set()
        for seq, entity, stamp in zip(
            range(batch.first, batch.last + 1), batch.records, batch.stamps(), strict=True
        ):
            key = tuple(entity.record[k] for k in self.natural_key)
            held = self.stamps.get(key)
            if held is not None and held >= stamp:
                same.add(seq)  # an older version: changes nothing
                continue
            self.stamps[key] = stamp
            if entity.op == DELETE:
                if self.records.pop(key, None) is None:
                    same.add(seq)  # nothing to delete
                else:
                    stored += 1
            elif self.records.get(key) == entity.record:
                same.add(seq)
            else:
                self.records[key] = entity.record
                stored += 1
        if batch.journal_id:
            self.ranges.setdefault(batch.journal_id, []).append((batch.first, batch.last))
        return WriteOutcome(stored, unchanged=len(same), unchanged_seqs=frozenset(same))

    def delivered(self, journal_id: str) -> list[tuple[int, int]]:
        return sorted(self.ranges.get(journal_id, []))

    def skip(self, journal_id: str, first: int, last: int) -> None:
        self.ranges.setdefault(journal_id, []).append((first, last))

    def forget(self, journal_id: str) -> None:
        self.ranges.pop(journal_id, None)

    def repair(self) -> None:
        pass

    # -- the read port (ports.ModelReader), of this one model ---------------------------------
    def get(self, model: ModelDef, key: dict[str, Any]) -> dict[str, Any] | None:
        return self.records.get(tuple(key[k] for k in self.natural_key))

    def list(
        self,
        model: ModelDef,
        *,
        filters: Sequence[Filter] = (),
        sort: str | None = None,
        limit: int = 50,
        after: str | None = None,
        children: bool = False,
    ) -> ModelPage:
        rows = [r for r in self.records.values() if all(_matches(r, f) for f in filters)]
        if sort:
            field = sort.lstrip("-")
            present = sorted(
                (r for r in rows if r.get(field) is not None),
                key=lambda r: r[field],
                reverse=sort.startswith("-"),
            )
            rows = present + [r for r in rows if r.get(field) is None]  # nulls last
        start = int(after or 0)
        page = rows[start : start + limit]
        more = len(rows) > start + limit
        return ModelPage([dict(r) for r in page], str(start + limit) if more else None)

    def count(self, model: ModelDef, filters: Sequence[Filter] = ()) -> int:
        return sum(all(_matches(r, f) for f in filters) for r in self.records.values())

    def search(self, model: ModelDef, text: str, *, limit: int = 20) -> list[SearchHit]:
        words = text.lower().split()
        hits = []
        for record in self.records.values():
            found = " ".join(str(record.get(f, "")) for f in model.search_fields).lower()
            rank = sum(found.count(word) for word in words)
            if rank:
                hits.append(SearchHit(float(rank), record))
        return sorted(hits, key=lambda h: -h.rank)[:limit]

    def stats(self, model: ModelDef) -> dict[str, Any]:
        return {"records": len(self.records)}


_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "=": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    "<": lambda a, b: a is not None and a < b,
    "<=": lambda a, b: a is not None and a <= b,
    ">": lambda a, b: a is not None and a > b,
    ">=": lambda a, b: a is not None and a >= b,
}


def _matches(record: dict[str, Any], condition: Filter) -> bool:
    return _COMPARE[condition.op](record.get(condition.field), condition.value)


@dataclass
class Letter:
    sink: str
    kind: str
    journal_id: str
    seq: int
    record: Any
    error: ScrapesinkError
    accepted_us: int | None
    attempts: int = 1


class MemoryDeadLetters:
    """A fake dead-letter store: one letter per (sink, journal, seq), refusals counted."""

    def __init__(self) -> None:
        self.kept: dict[tuple[str, str, int], Letter] = {}

    @property
    def letters(self) -> list[tuple[str, str, int, Any, ScrapesinkError]]:
        return [(x.sink, x.journal_id, x.seq, x.record, x.error) for x in self.kept.values()]

    def add(
        self,
        sink: str,
        kind: str,
        journal_id: str,
        seq: int,
        record: Any,
        error: ScrapesinkError,
        accepted_us: int | None = None,
    ) -> None:
        held = self.kept.get((sink, journal_id, seq))
        if held is not None:
            held.attempts += 1
            held.error = error
            return
        self.kept[(sink, journal_id, seq)] = Letter(
            sink, kind, journal_id, seq, record, error, accepted_us
        )

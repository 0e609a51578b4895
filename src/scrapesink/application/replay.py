"""Delivering what other writers left: journals of dead processes (or left pending by a sink
outage) replayed to the sinks that lack their records, and dead letters sent to their sink again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from scrapesink.application.delivery import (
    UNOBSERVED,
    Delivery,
    DeliveryObserver,
    RetryPolicy,
    contiguous_end,
    missing,
)
from scrapesink.application.durable import batches_of, forget_journal
from scrapesink.application.kinds import kind_named
from scrapesink.application.outcomes import SinkReport
from scrapesink.application.ports import Batch, DeadLetters, Journal, RecordSink
from scrapesink.errors import (
    ConfigError,
    PermanentStorageError,
    ScrapesinkError,
    TransientStorageError,
)

log = logging.getLogger(__name__)


@dataclass
class ReplayResult:
    journals: int = 0
    removed: int = 0
    busy: int = 0
    unknown: list[str] = field(default_factory=list)  # kinds no sink here takes (undeclared)
    reports: dict[str, SinkReport] = field(default_factory=dict)


SinksFor = Callable[[str], Sequence[RecordSink[Any]] | None]


def replay(
    journal_paths: Iterable[Path],
    open_journal: Callable[[Path], Journal | None],
    sinks_for: SinksFor,
    dead_letters: DeadLetters,
    policy: RetryPolicy,
    *,
    batch_size: int = 5000,
    observer: DeliveryObserver = UNOBSERVED,
) -> ReplayResult:
    """Deliver everything the given journals hold that a sink lacks; remove drained journals.

    ``sinks_for(kind)`` gives the sinks of a journal's kind (None: a model not declared here;
    that journal is kept for a process that declares it). Journals held by a live process
    (``open_journal`` returns None) are skipped, counted busy.
    """
    result = ReplayResult(reports={sink.name: SinkReport() for sink in sinks_for("events") or []})
    for path in journal_paths:
        journal = open_journal(path)
        if journal is None:
            result.busy += 1
            continue
        sinks = sinks_for(journal.kind)
        if sinks is None:
            journal.close(remove_if_empty=False)
            result.unknown.append(journal.kind)
            log.warning(
                "journal %s holds %s records, a model not declared here: kept for a process"
                " that declares it (SCRAPESINK_MODELS)",
                path.name,
                journal.kind,
            )
            continue
        result.journals += 1
        try:
            delivery = Delivery(kind_named(journal.kind), sinks, dead_letters, policy, observer)
            _replay_one(journal, delivery, batch_size, result)
        finally:
            removed = journal.close()  # True when drained: the file is gone
        if removed:
            result.removed += 1
            forget_journal(sinks, journal.id)
    return result


def _replay_one(
    journal: Journal, delivery: Delivery, batch_size: int, result: ReplayResult
) -> bool:
    start = journal.first_seq()
    if start is None:
        delivery.close()
        return True
    ends = []
    try:
        for lane in delivery.lanes:
            try:
                have = lane.sink.delivered(journal.id)
            except TransientStorageError as exc:
                lane.report.pending += journal.count_between(start, journal.last_seq)
                lane.report.error = exc.message
                ends.append(start - 1)
                continue
            for first, last in missing(start, journal.last_seq, have):
                for batch in batches_of(journal, first, last, batch_size):
                    lane.submit(batch)
            lane.drain()
            lane.handled.extend(have)
            ends.append(contiguous_end(start, lane.handled))
    finally:
        delivery.close()
    for name, report in delivery.reports().items():
        result.reports.setdefault(name, SinkReport()).add(report)
    upto = min(ends, default=start - 1)
    if upto >= start:
        journal.compact(upto)
    return upto >= journal.last_seq


@dataclass
class RetryResult:
    stored: list[int] = field(default_factory=list)
    refused: dict[int, str] = field(default_factory=dict)


class DeadLetterRecords(Protocol):
    """What retrying needs of the dead-letter store."""

    def remove(self, ids: Sequence[int]) -> int: ...

    def failed_again(self, letter_id: int, error: ScrapesinkError) -> None: ...


class DeadLetterLike(Protocol):
    @property
    def id(self) -> int: ...

    @property
    def sink(self) -> str: ...

    @property
    def kind(self) -> str: ...

    @property
    def record(self) -> Any: ...

    @property
    def journal_id(self) -> str: ...

    @property
    def accepted_us(self) -> int | None: ...


def retry_dead_letters(
    letters: Sequence[DeadLetterLike], sinks_for: SinksFor, store: DeadLetterRecords
) -> RetryResult:
    """Send each dead letter to its sink again; stored ones leave the store.

    Raises:
        TransientStorageError: a sink is unavailable (nothing more is tried).
        ConfigError: a letter belongs to a sink that is not enabled.
    """
    result = RetryResult()
    try:
        for letter in letters:
            sink = next((s for s in sinks_for(letter.kind) or [] if s.name == letter.sink), None)
            if sink is None:
                raise ConfigError(
                    f"dead letter {letter.id} is for {letter.sink!r} ({letter.kind}),"
                    " which is not enabled or declared here"
                )
            # Outside its journal (its range there is settled), but with its own stamp: a retry
            # is not a newer write than the records accepted after it.
            times = () if letter.accepted_us is None else (letter.accepted_us,)
            retried = Batch("", 0, 0, [letter.record], times, letter.journal_id)
            try:
                sink.stage(retried)()
            except PermanentStorageError as exc:
                store.failed_again(letter.id, exc)
                result.refused[letter.id] = exc.message
                continue
            result.stored.append(letter.id)
    finally:
        store.remove(result.stored)
    return result


class Publish(Protocol):
    """Publish records again to a shared journal, keeping their stamps (``RedisStreams``)."""

    def __call__(
        self, kind: str, records: Sequence[Any], stamps: Sequence[int] | None, origin: str
    ) -> None: ...


def republish_dead_letters(
    letters: Sequence[DeadLetterLike], publish: Publish, store: DeadLetterRecords
) -> int:
    """Publish dead letters to the shared journal again, for the workers to deliver; each
    keeps the stamp it was accepted with (a retry is never newer than what came after it).
    Published letters leave the store: a record refused again comes back as a new letter. The
    sink that stored it the first time finds it a duplicate (same key, same stamp).

    Raises:
        TransientStorageError: the shared journal is unreachable (what was published before
            is removed from the store, the rest stays).
    """
    groups: dict[tuple[str, str, bool], list[DeadLetterLike]] = {}
    for letter in letters:
        stamped = letter.accepted_us is not None
        groups.setdefault((letter.kind, letter.journal_id, stamped), []).append(letter)
    published = 0
    for (kind, origin, stamped), group in groups.items():
        stamps = [int(letter.accepted_us or 0) for letter in group] if stamped else None
        publish(kind, [letter.record for letter in group], stamps, origin)
        store.remove([letter.id for letter in group])
        published += len(group)
    return published

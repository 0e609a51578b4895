"""A batch of raw events in the forms PostgreSQL takes: key arrays and COPY text."""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import Any

from scrapesink.application.ports import Batch
from scrapesink.domain.events import RawEvent


class EncodedBatch:
    """A batch encoded for the database: sorted by time, key arrays with each record's
    acceptance stamp, the COPY text."""

    __slots__ = (
        "days",
        "events",
        "first",
        "journal_id",
        "last",
        "order",
        "params",
        "stamps",
        "text",
    )

    def __init__(self, batch: Batch[RawEvent]) -> None:
        records, all_stamps = batch.records, batch.stamps()
        times = list(map(_TIME, records))
        order = sorted(range(len(records)), key=times.__getitem__)
        self.order = order  # events[i] is records[order[i]]
        self.events = events = [records[i] for i in order]
        self.stamps = stamps = [all_stamps[i] for i in order]
        self.journal_id, self.first, self.last = batch.journal_id, batch.first, batch.last
        self.params: dict[str, Any] = {
            "sources": [e.source for e in events],
            "ids": [e.source_id for e in events],
            "times": [e.occurred_at for e in events],
            "stamps": stamps,
            "n": len(events),
        }
        self.days = {e.occurred_at.date() for e in events}
        self.text = copy_text(events, frozenset())

    def oldest_copies(self) -> tuple[list[RawEvent], list[bytes], list[int]]:
        """One copy per key, the oldest stamp's (a catch-up batch may carry a key twice): the
        events, their stamps, and their positions in ``events``."""
        chosen: dict[tuple[str, str], int] = {}
        for i, (event, stamp) in enumerate(zip(self.events, self.stamps, strict=True)):
            j = chosen.setdefault(event.key, i)
            if stamp < self.stamps[j]:
                chosen[event.key] = i
        picked = sorted(chosen.values())
        return [self.events[i] for i in picked], [self.stamps[i] for i in picked], picked

    def seqs_but(self, positions: Sequence[int]) -> frozenset[int]:
        """The journal seqs of every event but those at ``positions`` (of ``events``)."""
        order, first = self.order, self.first
        kept = {order[i] for i in positions}
        return frozenset(first + i for i in range(len(order)) if i not in kept)


_TIME = operator.attrgetter("occurred_at")


def copy_text(events: Sequence[RawEvent], skip: frozenset[tuple[str, str]]) -> bytes:
    """The batch as one block of COPY text (tab-separated, backslash escapes).

    Hand-written on purpose: psycopg's ``write_row`` costs a Python call per row, which showed as
    the largest client cost of the write path; the text format needs only four escapes, and
    validation has already removed NUL, which COPY could not carry.
    """
    lines = [
        f"{_escape(e.source)}\t{_escape(e.source_id)}\t{e.iso()}\t{_escape(e.payload_json)}\n"
        for e in events
        if not skip or e.key not in skip
    ]
    return "".join(lines).encode("utf-8")


def _escape(text: str) -> str:
    # `in` tests are memchr-fast; most values need no replacement at all.
    if "\\" in text:
        text = text.replace("\\", "\\\\")
    if "\n" in text or "\r" in text or "\t" in text:
        text = text.replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")
    return text

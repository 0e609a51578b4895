"""Day partition arithmetic: names and UTC bounds, whatever the local or session time zone."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

PARENT_TABLE = "raw_events"
_NAME = re.compile(r"^raw_events_(\d{4})_(\d{2})_(\d{2})$")


@dataclass(frozen=True, slots=True)
class DayPartition:
    """One UTC day of ``raw_events``: ``[start, end)`` in UTC."""

    day: date

    @property
    def name(self) -> str:
        d = self.day
        return f"{PARENT_TABLE}_{d.year:04d}_{d.month:02d}_{d.day:02d}"

    @property
    def start(self) -> datetime:
        return datetime.combine(self.day, time(0), tzinfo=UTC)

    @property
    def end(self) -> datetime:
        return self.start + timedelta(days=1)

    @classmethod
    def containing(cls, moment: datetime) -> DayPartition:
        """The partition that holds ``moment`` (an aware datetime in any zone)."""
        if moment.tzinfo is None:
            raise ValueError("partition lookup needs an aware datetime")
        return cls(moment.astimezone(UTC).date())

    @classmethod
    def from_name(cls, name: str) -> DayPartition | None:
        match = _NAME.match(name)
        if not match:
            return None
        year, month, day = (int(part) for part in match.groups())
        try:
            return cls(date(year, month, day))
        except ValueError:
            return None


def days_ahead(today: date, count: int) -> list[DayPartition]:
    """Today's partition and the ``count`` days after it."""
    return [DayPartition(today + timedelta(days=offset)) for offset in range(count + 1)]


def expired(
    partitions: list[DayPartition], *, now: datetime, older_than: timedelta
) -> list[DayPartition]:
    """Partitions whose whole day ended before ``now - older_than``."""
    cutoff = now - older_than
    return sorted((p for p in partitions if p.end <= cutoff), key=lambda p: p.day)

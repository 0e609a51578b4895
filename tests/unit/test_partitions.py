"""Day partition arithmetic: names and bounds are UTC days whatever the input offset."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

import pytest

from scrapesink.domain.partitions import DayPartition, days_ahead, expired

PLUS14 = timezone(timedelta(hours=14))
MINUS12 = timezone(timedelta(hours=-12))


def test_name_and_bounds():
    part = DayPartition(date(2025, 5, 15))
    assert part.name == "raw_events_2025_05_15"
    assert part.start == datetime(2025, 5, 15, tzinfo=UTC)
    assert part.end == datetime(2025, 5, 16, tzinfo=UTC)


@pytest.mark.parametrize(
    ("moment", "day"),
    [
        (datetime(2025, 5, 15, 23, 59, 59, 999999, tzinfo=UTC), date(2025, 5, 15)),
        (datetime(2025, 5, 16, 0, 0, tzinfo=UTC), date(2025, 5, 16)),
        (datetime(2025, 5, 16, 13, 59, 59, 999999, tzinfo=PLUS14), date(2025, 5, 15)),
        (datetime(2025, 5, 16, 14, 0, tzinfo=PLUS14), date(2025, 5, 16)),
        (datetime(2025, 5, 15, 11, 59, 59, 999999, tzinfo=MINUS12), date(2025, 5, 15)),
        (datetime(2025, 5, 15, 12, 0, tzinfo=MINUS12), date(2025, 5, 16)),
    ],
)
def test_containing_uses_the_utc_day(moment, day):
    assert DayPartition.containing(moment).day == day
    part = DayPartition.containing(moment)
    assert part.start <= moment < part.end


def test_containing_refuses_naive_datetimes():
    with pytest.raises(ValueError):
        DayPartition.containing(datetime(2025, 5, 15))


def test_from_name_round_trips_and_rejects_strangers():
    assert DayPartition.from_name("raw_events_2025_02_28") == DayPartition(date(2025, 2, 28))
    assert DayPartition.from_name("raw_events_2025_02_30") is None
    assert DayPartition.from_name("raw_events_default") is None


def test_days_ahead_includes_today():
    parts = days_ahead(date(2025, 12, 30), 3)
    assert [p.name for p in parts] == [
        "raw_events_2025_12_30",
        "raw_events_2025_12_31",
        "raw_events_2026_01_01",
        "raw_events_2026_01_02",
    ]


def test_expired_only_counts_whole_days_past_the_cutoff():
    parts = [DayPartition(date(2025, 5, d)) for d in (1, 2, 3)]
    now = datetime(2025, 5, 4, 12, tzinfo=UTC)
    # cutoff = May 2 12:00: May 1 ended before it, May 2 did not
    assert expired(parts, now=now, older_than=timedelta(days=2)) == [parts[0]]

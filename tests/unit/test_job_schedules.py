"""How often a job is expected to succeed, read from its cron schedule (the job-late alert)."""

from __future__ import annotations

import pytest

from scrapesink.adapters.postgres.jobs import DAY, expected_interval


@pytest.mark.parametrize(
    ("schedule", "seconds"),
    [
        ("*/15 * * * *", 900),
        ("0 * * * *", 3600),
        ("0 */6 * * *", 6 * 3600),
        ("0 3 * * *", DAY),
        ("0 3 1 * *", 31 * DAY),  # monthly: never read as daily (false alerts 28 days a month)
        ("0 0 */2 * *", 31 * DAY),
        ("0 9 * * 1-5", 7 * DAY),  # working days: loosely, never wrongly
        ("0,30 * * * *", 3600),
        (None, DAY),
        ("nonsense", DAY),
    ],
)
def test_expected_interval(schedule, seconds):
    assert expected_interval({"schedule": schedule}) == seconds

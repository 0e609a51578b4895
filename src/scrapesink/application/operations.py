"""Operations on an installation: status, health, maintenance, compaction.

They work through small ports the composition root fills in (``bootstrap.App.operations``), so
each can be run, and tested, without knowing which adapter answers. Status and health work while
PostgreSQL is down: its sinks are left out, and every journaled record counts as pending for it.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from scrapesink.application.health import Check, Health
from scrapesink.application.kinds import Targets, kind_named
from scrapesink.domain.partitions import DayPartition, days_ahead
from scrapesink.errors import TransientStorageError


class Progress(Protocol):
    """What a sink says it holds of a journal (every ``RecordSink`` is one)."""

    name: str

    def delivered(self, journal_id: str) -> list[tuple[int, int]]: ...


class JournalView(Protocol):
    """A journal seen from outside (``adapters.journal.JournalInfo``)."""

    @property
    def kind(self) -> str: ...

    @property
    def in_use(self) -> bool: ...

    @property
    def size_bytes(self) -> int: ...

    @property
    def id(self) -> str: ...

    def pending(self, delivered: Sequence[tuple[int, int]]) -> tuple[int, datetime | None]: ...


class Checkable(Protocol):
    def unreadable(self) -> list[str]:
        """What its state names but cannot be checked (one line each)."""


class Database(Protocol):
    def ping(self) -> None: ...


class Schema(Protocol):
    def current(self) -> str | None: ...

    def head(self) -> str: ...


class Named(Protocol):
    @property
    def name(self) -> str: ...


class Partitions(Protocol):
    def existing(self) -> Sequence[DayPartition]: ...

    def premake(self, days: int) -> Sequence[Named]: ...

    def prune(self, older_than: timedelta) -> Sequence[Named]: ...


class Upkeep(Protocol):
    def vacuum_closed_partitions(self, write_window: timedelta) -> list[str]: ...

    def analyze(self) -> None: ...


class Compactable(Protocol):
    def compact(self) -> dict[str, tuple[int, int]]: ...


@dataclass(frozen=True, slots=True)
class OpsPolicy:
    """The settings operations go by."""

    data_dir: Path
    premake_days: int = 7
    retention: timedelta | None = None
    write_window: timedelta = timedelta(days=2)
    max_pending_age: timedelta = timedelta(minutes=15)
    min_free_bytes: int = 1_000_000_000
    csv_enabled: bool = True


@dataclass(frozen=True, slots=True)
class MaintainResult:
    created: list[str]
    dropped: list[str]
    vacuumed: list[str]
    retention: timedelta | None


@dataclass(frozen=True, slots=True)
class SinkStatus:
    pending: int
    oldest_pending: datetime | None
    dead_letters: int


@dataclass(frozen=True, slots=True)
class PipelineStatus:
    """What waits where: per sink the journaled records it has not stored yet, dead letters."""

    database: str
    sinks: dict[str, SinkStatus]
    journals: int
    journals_in_use: int
    journal_bytes: int
    csv_problems: list[str] = field(default_factory=list)  # state entries repair skipped

    @property
    def pending(self) -> int:
        return sum(sink.pending for sink in self.sinks.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "database": self.database,
            "sinks": {
                name: {
                    "pending": sink.pending,
                    "oldest_pending": sink.oldest_pending.isoformat()
                    if sink.oldest_pending
                    else None,
                    "dead_letters": sink.dead_letters,
                }
                for name, sink in self.sinks.items()
            },
            "journals": self.journals,
            "journals_in_use": self.journals_in_use,
            "journal_bytes": self.journal_bytes,
            "csv_problems": self.csv_problems,
        }


def pipeline_status(
    journals: Sequence[JournalView],
    progress: Targets[Progress],
    dead_letters: dict[str, int],
    database: str,
    csv_problems: Sequence[str] = (),
) -> PipelineStatus:
    """Read every journal against what each sink of its kind says it holds. A sink left out of
    ``progress`` (PostgreSQL while it is down) counts every journaled record as pending."""
    names = ["postgres", *(s.name for s in progress.event_sinks() if s.name != "postgres")]
    pending = dict.fromkeys(names, 0)
    oldest: dict[str, datetime | None] = dict.fromkeys(names)
    for info in journals:
        sinks = {s.name: s for s in kind_named(info.kind).sinks(progress) or ()}
        for name in names:
            sink = sinks.get(name)
            count, first = info.pending(sink.delivered(info.id) if sink is not None else [])
            pending[name] += count
            if first is not None:
                current = oldest[name]
                oldest[name] = first if current is None else min(current, first)
    return PipelineStatus(
        database,
        {
            name: SinkStatus(pending[name], oldest[name], dead_letters.get(name, 0))
            for name in names
        },
        len(journals),
        sum(info.in_use for info in journals),
        sum(info.size_bytes for info in journals),
        list(csv_problems),
    )


class Operations:
    """Status, health, maintenance and compaction of one installation."""

    def __init__(
        self,
        policy: OpsPolicy,
        *,
        database: Database,
        database_label: Callable[[], str],
        schema: Schema,
        partitions: Partitions,
        upkeep: Upkeep,
        journals: Callable[[], Sequence[JournalView]],
        progress: Callable[[bool], Targets[Progress]],
        dead_letters: Callable[[], dict[str, int]],
        csv_files: Sequence[Checkable],
        compactors: Callable[[str | None], Sequence[Compactable]],
    ) -> None:
        self.policy = policy
        self.database = database
        self.database_label = database_label
        self.schema = schema
        self.partitions = partitions
        self.upkeep = upkeep
        self.journals = journals
        self.progress = progress
        self.dead_letters = dead_letters
        self.csv_files = csv_files
        self.compactors = compactors

    def csv_problems(self) -> list[str]:
        if not self.policy.csv_enabled:
            return []
        return [problem for files in self.csv_files for problem in files.unreadable()]

    def status(self, *, database_up: bool = True) -> PipelineStatus:
        """Pending per sink; with the database down, every journaled record counts as pending
        for PostgreSQL (its progress cannot be read) and the other sinks still answer."""
        return pipeline_status(
            self.journals(),
            self.progress(database_up),
            self.dead_letters(),
            self.database_label(),
            self.csv_problems(),
        )

    def maintain(self) -> MaintainResult:
        """Premake partitions, drop those past retention, VACUUM the closed ones, ANALYZE."""
        p = self.policy
        created = self.partitions.premake(p.premake_days)
        dropped = self.partitions.prune(p.retention) if p.retention is not None else []
        vacuumed = self.upkeep.vacuum_closed_partitions(p.write_window)
        self.upkeep.analyze()
        return MaintainResult(
            [x.name for x in created], [x.name for x in dropped], vacuumed, p.retention
        )

    def compact(self, model: str | None = None) -> dict[str, tuple[int, int]]:
        """Rewrite model CSV files latest-only (one model's, or all); file -> rows before, after."""
        result: dict[str, tuple[int, int]] = {}
        for files in self.compactors(model):
            result.update(files.compact())
        return result

    def health(self, *, now: datetime | None = None) -> Health:
        """Database reachable, migrations at head, partitions premade, nothing pending for too
        long, free space in the data directory, every CSV file its state names checkable."""
        p = self.policy
        now = now or datetime.now(UTC)
        checks: list[Check] = []
        try:
            self.database.ping()
            up = True
            checks.append(Check("database", True, self.database_label()))
        except TransientStorageError as exc:
            up = False
            checks.append(Check("database", False, exc.message))
        if up:
            checks += self._schema_checks(now.date())
        status = self.status(database_up=up)
        for name, sink in status.sinks.items():
            age = (now - sink.oldest_pending) if sink.oldest_pending else None
            late = age is not None and age > p.max_pending_age
            detail = f"{sink.pending} pending" + (
                f", oldest {int(age.total_seconds())} s" if age is not None else ""
            )
            checks.append(Check(f"pending {name}", not late, detail))
        usage = shutil.disk_usage(p.data_dir if p.data_dir.exists() else Path("."))
        checks.append(
            Check(
                "disk",
                usage.free >= p.min_free_bytes,
                f"{usage.free / 1e9:.1f} GB free of {usage.total / 1e9:.1f} GB in the data dir",
            )
        )
        if p.csv_enabled:
            problems = status.csv_problems
            checks.append(
                Check(
                    "csv files",
                    not problems,
                    "; ".join(problems[:3])
                    + (f" and {len(problems) - 3} more" if len(problems) > 3 else "")
                    if problems
                    else "every file the CSV state names can be checked",
                )
            )
        return Health(checks)

    def _schema_checks(self, today: date) -> list[Check]:
        current, head = self.schema.current(), self.schema.head()
        present = {x.day for x in self.partitions.existing()}
        days = self.policy.premake_days
        missing = [x.name for x in days_ahead(today, days) if x.day not in present]
        return [
            Check("migrations", current == head, f"at {current or 'nothing'}, head {head}"),
            Check(
                "partitions",
                not missing,
                f"missing {', '.join(missing)} (scrapesink maintain)"
                if missing
                else f"today and {days} day(s) ahead present",
            ),
        ]

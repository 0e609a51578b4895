"""ETL jobs: what a run records, and the rules of names and run states.

A job definition (its kind, config and components) is checked at the edge, by the pydantic
schemas of ``application/job_specs.py``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from scrapesink.errors import Conflict, RecordError

RunStatus = Literal["pending", "running", "succeeded", "failed", "partial"]
FINISHED = ("succeeded", "failed", "partial")
# what a status may become (the database enforces the same with a trigger)
TRANSITIONS: dict[str, tuple[str, ...]] = {
    "pending": ("running", "failed"),
    "running": FINISHED,
}
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$"


def check_name(name: str) -> str:
    """A job name as given to ``--job``, ``sink.run()`` or ``?job=``."""
    if not re.fullmatch(NAME_PATTERN, name):
        raise RecordError(
            f"job name {name!r}: use 1-128 letters, digits and _ . : - (starting with a letter"
            " or digit)",
            path="job",
        )
    return name


def check_transition(run_id: int, current: str, new: str) -> None:
    if new not in TRANSITIONS.get(current, ()):
        raise Conflict(f"run {run_id} is {current}: it cannot become {new}")


@dataclass(frozen=True, slots=True)
class Component:
    name: str
    kind: str
    config: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Job:
    id: int
    name: str
    kind: str
    source: str | None
    config: dict[str, Any]
    enabled: bool
    created_at: datetime
    updated_at: datetime
    components: list[Component] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "source": self.source,
            "config": self.config,
            "enabled": self.enabled,
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
            "components": [
                {"name": c.name, "kind": c.kind, "config": c.config} for c in self.components
            ],
        }


@dataclass(frozen=True, slots=True)
class RunCounts:
    read: int = 0
    stored: int = 0
    duplicate: int = 0
    unchanged: int = 0
    rejected: int = 0
    pending: int = 0


@dataclass(frozen=True, slots=True)
class Run:
    id: int
    job: str
    status: str
    origin: str
    started_at: datetime
    finished_at: datetime | None
    counts: RunCounts
    error_summary: str | None

    @property
    def duration_seconds(self) -> float | None:
        if self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "job": self.job,
            "status": self.status,
            "origin": self.origin,
            "started_at": self.started_at.isoformat(),
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
            "duration_seconds": self.duration_seconds,
            "records": {
                "read": self.counts.read,
                "stored": self.counts.stored,
                "duplicate": self.counts.duplicate,
                "unchanged": self.counts.unchanged,
                "rejected": self.counts.rejected,
                "pending": self.counts.pending,
            },
            "error_summary": self.error_summary,
        }

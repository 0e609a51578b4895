"""ETL jobs: what a job definition may say (its config is checked against its kind's schema)
and what a run records.

Kinds and their config (unknown keys refused, so a typo is an error, not a silent default):

- ``ingest`` — records handed to scrapesink (``ingest --job``, ``sink.run()``, the API):
  ``{"format": "jsonl"|"json"|"csv", "id_field", "time_field", "model"}``, all optional;
- ``scrape`` — a scraper feeding scrapesink: ``{"start_urls": [...] (at least one),
  "schedule": "<cron, 5 fields>", "max_pages": n, "concurrency": 1-64, "settings": {...}}``;
- ``export`` — a job reading out of scrapesink: ``{"target": "...", "format": "csv"|"jsonl"}``.

Components (the parts a job is made of: reader, transform, writer, scraper, custom) carry a
free JSON object of their own.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from scrapesink.errors import Conflict, RecordError

RunStatus = Literal["pending", "running", "succeeded", "failed", "partial"]
FINISHED = ("succeeded", "failed", "partial")
# what a status may become (the database enforces the same with a trigger)
TRANSITIONS: dict[str, tuple[str, ...]] = {
    "pending": ("running", "failed"),
    "running": FINISHED,
}
_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class IngestConfig(_Strict):
    format: Literal["jsonl", "json", "csv"] | None = None
    id_field: str = "id"
    time_field: str = "timestamp"
    model: str | None = None


class ScrapeConfig(_Strict):
    start_urls: list[str] = Field(min_length=1)
    schedule: str | None = None
    max_pages: int | None = Field(default=None, ge=1)
    concurrency: int = Field(default=4, ge=1, le=64)
    settings: dict[str, Any] = Field(default_factory=dict)

    @field_validator("start_urls")
    @classmethod
    def _urls(cls, urls: list[str]) -> list[str]:
        for url in urls:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"{url!r} is not an http(s) URL")
        return urls

    @field_validator("schedule")
    @classmethod
    def _cron(cls, schedule: str | None) -> str | None:
        if schedule is not None and len(schedule.split()) != 5:
            raise ValueError("a cron expression has 5 fields: minute hour day month weekday")
        return schedule


class ExportConfig(_Strict):
    target: str = Field(min_length=1)
    format: Literal["csv", "jsonl"] = "csv"


CONFIGS: dict[str, type[_Strict]] = {
    "ingest": IngestConfig,
    "scrape": ScrapeConfig,
    "export": ExportConfig,
}
COMPONENT_KINDS = ("reader", "transform", "writer", "scraper", "custom")


class ComponentSpec(_Strict):
    name: str = Field(pattern=_NAME)
    kind: Literal["reader", "transform", "writer", "scraper", "custom"]
    config: dict[str, Any] = Field(default_factory=dict)


class JobSpec(_Strict):
    """A job definition as given (CLI, API); ``config`` is checked against its kind."""

    name: str = Field(pattern=_NAME)
    kind: Literal["ingest", "scrape", "export"] = "ingest"
    source: str | None = None
    config: dict[str, Any] = Field(default_factory=dict)
    enabled: bool = True
    components: list[ComponentSpec] = Field(default_factory=list)


def check_job(data: Any) -> JobSpec:
    """A valid JobSpec, or one RecordError listing every problem with its path."""
    try:
        spec = JobSpec.model_validate(data)
        names = [c.name for c in spec.components]
        if len(names) != len(set(names)):
            raise RecordError("component names must be unique within a job", path="components")
        spec.config = CONFIGS[spec.kind].model_validate(spec.config).model_dump(exclude_none=True)
    except ValidationError as exc:
        prefix = "config." if isinstance(data, dict) and exc.title != "JobSpec" else ""
        problems = [
            f"{prefix}{'.'.join(str(p) for p in e['loc']) or 'config'}: "
            f"{e['msg'].removeprefix('Value error, ')}"
            for e in exc.errors()
        ]
        raise RecordError("; ".join(problems)) from None  # each problem names its path
    return spec


def check_name(name: str) -> str:
    """A job name as given to ``--job``, ``sink.run()`` or ``?job=``."""
    if not re.fullmatch(_NAME, name):
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

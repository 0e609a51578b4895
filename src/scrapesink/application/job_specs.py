"""ETL job definitions as given (CLI, API): pydantic schemas, a config per kind.

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

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from scrapesink.domain.jobs import NAME_PATTERN
from scrapesink.errors import RecordError


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
    name: str = Field(pattern=NAME_PATTERN)
    kind: Literal["reader", "transform", "writer", "scraper", "custom"]
    config: dict[str, Any] = Field(default_factory=dict)


class JobSpec(_Strict):
    """A job definition as given (CLI, API); ``config`` is checked against its kind."""

    name: str = Field(pattern=NAME_PATTERN)
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

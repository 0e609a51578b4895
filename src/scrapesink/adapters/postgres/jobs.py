"""Jobs, components and runs in PostgreSQL (tables from migration 0005)."""

from __future__ import annotations

import builtins
import json
from collections.abc import Sequence
from typing import Any

from scrapesink.adapters.postgres.database import Database
from scrapesink.application.job_specs import JobSpec
from scrapesink.domain.jobs import (
    FINISHED,
    Component,
    Job,
    Run,
    RunCounts,
    check_name,
    check_transition,
)
from scrapesink.errors import Conflict, ConstraintError, NotFound

_JOB = "id, name, kind, source, config, enabled, created_at, updated_at"
_RUN = (
    "r.id, j.name, r.status, r.origin, r.started_at, r.finished_at, r.records_read,"
    " r.records_stored, r.records_duplicate, r.records_unchanged, r.records_rejected,"
    " r.records_pending, r.error_summary"
)


class JobStore:
    def __init__(self, database: Database) -> None:
        self.database = database

    # -- jobs ------------------------------------------------------------------------------------
    def create(self, spec: JobSpec, *, replace: bool = False) -> Job:
        """A new job (or, with ``replace``, a new definition of an existing one)."""
        conflict = (
            "ON CONFLICT (name) DO UPDATE SET kind = excluded.kind, source = excluded.source,"
            " config = excluded.config, enabled = excluded.enabled, updated_at = now()"
            if replace
            else ""
        )
        try:
            with self.database.connection() as conn, conn.transaction():
                row = conn.execute(
                    "INSERT INTO etl_jobs (name, kind, source, config, enabled)"  # noqa: S608
                    f" VALUES (%s, %s, %s, %s::jsonb, %s) {conflict} RETURNING {_JOB}",
                    (spec.name, spec.kind, spec.source, json.dumps(spec.config), spec.enabled),
                ).fetchone()
                assert row is not None
                conn.execute("DELETE FROM etl_components WHERE job_id = %s", (row[0],))
                for position, component in enumerate(spec.components):
                    conn.execute(
                        "INSERT INTO etl_components (job_id, name, kind, config, position)"
                        " VALUES (%s, %s, %s, %s::jsonb, %s)",
                        (
                            row[0],
                            component.name,
                            component.kind,
                            json.dumps(component.config),
                            position,
                        ),
                    )
        except ConstraintError as exc:
            if exc.constraint_name == "etl_jobs_name_key":
                raise Conflict(f"job {spec.name!r} exists (replace it with --replace)") from exc
            raise
        return self.get(spec.name)

    def get(self, name: str) -> Job:
        with self.database.connection() as conn:
            row = conn.execute(
                f"SELECT {_JOB} FROM etl_jobs WHERE name = %s",  # noqa: S608
                (name,),
            ).fetchone()
            if row is None:
                raise NotFound(f"no job named {name!r}")
            parts = conn.execute(
                "SELECT name, kind, config FROM etl_components WHERE job_id = %s ORDER BY position",
                (row[0],),
            ).fetchall()
        return _job(row, [Component(*p) for p in parts])

    def list(self) -> builtins.list[Job]:
        with self.database.connection() as conn:
            rows = conn.execute(f"SELECT {_JOB} FROM etl_jobs ORDER BY name").fetchall()  # noqa: S608
        return [_job(row, []) for row in rows]

    def ensure(self, name: str, *, source: str | None = None, kind: str = "ingest") -> Job:
        """The job ``name``, made (kind ``ingest``) when it does not exist yet."""
        check_name(name)
        with self.database.connection() as conn:
            conn.execute(
                "INSERT INTO etl_jobs (name, kind, source) VALUES (%s, %s, %s)"
                " ON CONFLICT (name) DO NOTHING",
                (name, kind, source),
            )
        return self.get(name)

    def set_enabled(self, name: str, enabled: bool) -> Job:
        with self.database.connection() as conn:
            row = conn.execute(
                "UPDATE etl_jobs SET enabled = %s, updated_at = now() WHERE name = %s RETURNING id",
                (enabled, name),
            ).fetchone()
        if row is None:
            raise NotFound(f"no job named {name!r}")
        return self.get(name)

    # -- runs ------------------------------------------------------------------------------------
    def start(self, job: Job, origin: str) -> Run:
        if not job.enabled:
            raise Conflict(f"job {job.name!r} is disabled (scrapesink jobs enable {job.name})")
        with self.database.connection() as conn:
            row = conn.execute(
                "INSERT INTO etl_runs (job_id, status, origin) VALUES (%s, 'running', %s)"
                " RETURNING id",
                (job.id, origin),
            ).fetchone()
        assert row is not None
        return self.run(int(row[0]))

    def finish(
        self,
        run_id: int,
        status: str,
        counts: RunCounts,
        error_summary: str | None = None,
        *,
        source: str | None = None,
    ) -> Run:
        """End a running run; a run that already ended is a Conflict (and is not changed).
        ``source``: what the run's records carried, kept as the job's when it has none."""
        if status not in FINISHED:
            raise ValueError(f"{status!r} is not a finished status")
        with self.database.connection() as conn:
            current = conn.execute(
                "SELECT status FROM etl_runs WHERE id = %s FOR UPDATE", (run_id,)
            ).fetchone()
            if current is None:
                raise NotFound(f"no run {run_id}")
            check_transition(run_id, current[0], status)
            conn.execute(
                "UPDATE etl_runs SET status = %s, finished_at = clock_timestamp(),"
                " records_read = %s, records_stored = %s, records_duplicate = %s,"
                " records_unchanged = %s, records_rejected = %s, records_pending = %s,"
                " error_summary = %s WHERE id = %s",
                (
                    status,
                    counts.read,
                    counts.stored,
                    counts.duplicate,
                    counts.unchanged,
                    counts.rejected,
                    counts.pending,
                    error_summary,
                    run_id,
                ),
            )
            if source is not None:
                conn.execute(
                    "UPDATE etl_jobs SET source = %s, updated_at = now() WHERE source IS NULL"
                    " AND id = (SELECT job_id FROM etl_runs WHERE id = %s)",
                    (source, run_id),
                )
        return self.run(run_id)

    def run(self, run_id: int) -> Run:
        with self.database.connection() as conn:
            row = conn.execute(
                f"SELECT {_RUN} FROM etl_runs r JOIN etl_jobs j ON j.id = r.job_id"  # noqa: S608
                " WHERE r.id = %s",
                (run_id,),
            ).fetchone()
        if row is None:
            raise NotFound(f"no run {run_id}")
        return _run(row)

    def runs(self, job: str | None = None, *, limit: int = 50) -> builtins.list[Run]:
        where, params = ("WHERE j.name = %s", [job]) if job else ("", [])
        if job:
            self.get(job)  # NotFound for an unknown job, not an empty list
        with self.database.connection() as conn:
            rows = conn.execute(
                f"SELECT {_RUN} FROM etl_runs r JOIN etl_jobs j ON j.id = r.job_id"  # noqa: S608
                f" {where} ORDER BY r.id DESC LIMIT %s",
                [*params, limit],
            ).fetchall()
        return [_run(row) for row in rows]

    def freshness(self) -> builtins.list[tuple[str, float | None, float]]:
        """Per enabled job: when its last run succeeded (epoch seconds; None: never) and how
        often one is expected (``expected_interval``), for the job-freshness alert."""
        with self.database.connection() as conn:
            # A job that never succeeded counts from its creation (not from 1970: it would be
            # late at once); the last success is one index probe a job, not a scan of its runs.
            rows = conn.execute(
                "SELECT j.name, j.config, extract(epoch FROM coalesce(last.at, j.created_at))"
                " FROM etl_jobs j LEFT JOIN LATERAL ("
                "   SELECT r.finished_at AS at FROM etl_runs r"
                "   WHERE r.job_id = j.id AND r.status = 'succeeded'"
                "   ORDER BY r.started_at DESC LIMIT 1"
                " ) AS last ON true WHERE j.enabled ORDER BY j.name"
            ).fetchall()
        return [
            (name, None if last is None else float(last), expected_interval(config or {}))
            for name, config, last in rows
        ]

    def run_stats(self) -> dict[str, dict[str, Any]]:
        """Per job: runs by status and the success rate of finished runs."""
        with self.database.connection() as conn:
            rows = conn.execute(
                "SELECT j.name, count(r.id),"
                " count(*) FILTER (WHERE r.status = 'succeeded'),"
                " count(*) FILTER (WHERE r.status = 'partial'),"
                " count(*) FILTER (WHERE r.status = 'failed')"
                " FROM etl_jobs j LEFT JOIN etl_runs r ON r.job_id = j.id"
                " GROUP BY j.name ORDER BY j.name"
            ).fetchall()
        result = {}
        for name, runs, ok, partial, failed in rows:
            finished = ok + partial + failed
            result[name] = {
                "runs": runs,
                "succeeded": ok,
                "partial": partial,
                "failed": failed,
                "success_rate": ok / finished if finished else None,
            }
        return result


def _job(row: Sequence[Any], components: builtins.list[Component]) -> Job:
    return Job(
        int(row[0]), row[1], row[2], row[3], row[4], bool(row[5]), row[6], row[7], components
    )


def _run(row: Sequence[Any]) -> Run:
    return Run(
        int(row[0]),
        row[1],
        row[2],
        row[3],
        row[4],
        row[5],
        RunCounts(*(int(v) for v in row[6:12])),
        row[12],
    )


DAY = 86_400.0


def expected_interval(config: dict[str, Any]) -> float:
    """Seconds between runs a job's ``schedule`` (cron, 5 fields) implies, read for the common
    shapes (``*/15 * * * *``: 15 minutes; ``M * * * *``: hourly; ``M H * * *``: daily;
    ``M H * * D``: weekly); anything else, or no schedule: a day. Hand-written on purpose: the
    alert needs only the period, not the next fire time a cron library computes."""
    schedule = str(config.get("schedule") or "").split()
    if len(schedule) != 5:
        return DAY
    minute, hour, day, month, weekday = schedule
    if minute.startswith("*/") and minute[2:].isdigit() and hour == day == month == weekday == "*":
        return 60.0 * max(1, int(minute[2:]))
    if minute == "*" and hour == day == month == weekday == "*":
        return 60.0
    if minute.isdigit() and hour.startswith("*/") and hour[2:].isdigit() and day == month == "*":
        return 3600.0 * max(1, int(hour[2:]))
    if minute.isdigit() and hour == day == month == weekday == "*":
        return 3600.0
    if minute.isdigit() and hour.isdigit() and day == month == weekday == "*":
        return DAY
    # Anything else is read loosely rather than wrongly: a restricted day of month or month
    # (monthly jobs) as a month, a restricted weekday (working days) as a week.
    if day != "*" or month != "*":
        return 31 * DAY
    if weekday != "*":
        return 7 * DAY
    return DAY if hour != "*" else 3600.0

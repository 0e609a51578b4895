"""Prometheus metrics of the write path (prometheus-client), for every entrypoint.

One registry per process (``REGISTRY``, not prometheus-client's global default, so an
application embedding scrapesink keeps its own). Counters are updated by the delivery lanes
through :class:`PrometheusObserver`, which the composition root passes to every writer; gauges
of the pipeline (pending records and their age, dead letters, pool connections, partitions) are
read when the registry is collected, from the :class:`Gauges` collector an entrypoint registers
with the readings it has.

    scrapesink_records_total{sink, kind, name, outcome}   kind events|model, name source|model,
                                                          outcome stored|duplicate|unchanged|
                                                          dead_letter|pending
    scrapesink_records_rejected_total{kind, name}         failed validation, never journaled
    scrapesink_sink_write_failures_total{sink, error_type}
    scrapesink_batch_duration_seconds{sink}               one successful batch write
    scrapesink_sink_pending_records{sink}, scrapesink_sink_oldest_pending_seconds{sink},
    scrapesink_dead_letters{sink}, scrapesink_pool_connections{state},
    scrapesink_partitions, scrapesink_partition_days_ahead (days after today premade, in a row),
    scrapesink_database_up (1: PostgreSQL answered this scrape),
    scrapesink_job_last_success_timestamp_seconds{job},
    scrapesink_job_expected_interval_seconds{job}   (enabled jobs; the alerts use both)
    scrapesink_stream_group_lag{stream, group}, scrapesink_stream_group_pending{stream, group},
    scrapesink_stream_group_consumers{stream, group},
    scrapesink_stream_group_idle_seconds{stream, group}   (a shared journal: per consumer group,
                                                          i.e. per sink, of each kind's stream)
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    start_http_server,
    write_to_textfile,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from scrapesink.application.health import GroupLike
from scrapesink.application.kinds import RecordKind
from scrapesink.application.operations import PipelineStatus
from scrapesink.application.ports import Batch, WriteOutcome
from scrapesink.errors import ScrapesinkError

log = logging.getLogger(__name__)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
REGISTRY = CollectorRegistry()

RECORDS = Counter(
    "scrapesink_records",
    "Records a sink answered for, by kind (events, model), name (source or model) and outcome",
    ["sink", "kind", "name", "outcome"],
    registry=REGISTRY,
)
REJECTED = Counter(
    "scrapesink_records_rejected",
    "Records that failed validation (never journaled)",
    ["kind", "name"],
    registry=REGISTRY,
)
FAILURES = Counter(
    "scrapesink_sink_write_failures",
    "Batch writes a sink failed (after retries), by error type",
    ["sink", "error_type"],
    registry=REGISTRY,
)
BATCH_SECONDS = Histogram(
    "scrapesink_batch_duration_seconds",
    "Time to write one batch to a sink (retries included)",
    ["sink"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    registry=REGISTRY,
)


class PrometheusObserver:
    """Counts what every delivery lane did (``delivery.DeliveryObserver``)."""

    def delivered(
        self, sink: str, kind: RecordKind, batch: Batch[Any], outcome: WriteOutcome, seconds: float
    ) -> None:
        BATCH_SECONDS.labels(sink).observe(seconds)
        for name, result, n in kind.tally(batch, outcome):
            RECORDS.labels(sink, kind.family, name, result).inc(n)

    def refused(self, sink: str, kind: RecordKind, record: Any) -> None:
        RECORDS.labels(sink, kind.family, kind.label(record), "dead_letter").inc()

    def left_pending(self, sink: str, kind: RecordKind, records: int) -> None:
        RECORDS.labels(sink, kind.family, kind.label(None), "pending").inc(records)

    def failed(self, sink: str, error: BaseException) -> None:
        error_type = getattr(error, "error_type", type(error).__name__)
        FAILURES.labels(sink, error_type).inc()

    def rejected(self, kind: RecordKind, name: str | None) -> None:
        REJECTED.labels(kind.family, name or "unknown").inc()


class Gauges(Collector):
    """The pipeline's state, read at each collection: ``status()``, the pool's statistics
    (psycopg_pool's ``get_stats``) and how many day partitions exist."""

    def __init__(
        self,
        status: Callable[[], PipelineStatus],
        pool_stats: Callable[[], dict[str, int]],
        partition_days: Callable[[], Iterable[date]],
        database_up: Callable[[], bool] = lambda: True,
        jobs: Callable[[], Iterable[tuple[str, float | None, float]]] = list,
        groups: Callable[[], Iterable[GroupLike]] = list,
    ) -> None:
        self.groups = groups
        self.status = status
        self.pool_stats = pool_stats
        self.partition_days = partition_days
        self.database_up = database_up
        self.jobs = jobs

    def collect(self) -> Iterable[Metric]:
        pending = GaugeMetricFamily(
            "scrapesink_sink_pending_records",
            "Journaled records a sink has not stored yet",
            labels=["sink"],
        )
        oldest = GaugeMetricFamily(
            "scrapesink_sink_oldest_pending_seconds",
            "Age of the oldest record a sink has not stored yet (0: none)",
            labels=["sink"],
        )
        dead = GaugeMetricFamily(
            "scrapesink_dead_letters", "Records a sink refused for good", labels=["sink"]
        )
        try:
            report = self.status()
        except (ScrapesinkError, OSError) as exc:
            log.warning("pipeline gauges not read: %s", exc)
        else:
            now = datetime.now(UTC)
            for name, sink in report.sinks.items():
                pending.add_metric([name], sink.pending)
                age = (now - sink.oldest_pending).total_seconds() if sink.oldest_pending else 0
                oldest.add_metric([name], age)
                dead.add_metric([name], sink.dead_letters)
        yield from (pending, oldest, dead)
        yield from group_gauges(self.groups)
        pool = GaugeMetricFamily(
            "scrapesink_pool_connections", "PostgreSQL pool connections", labels=["state"]
        )
        try:
            stats = self.pool_stats()
        except RuntimeError:  # the pool is closed
            stats = {}
        size = stats.get("pool_size", 0)
        idle = stats.get("pool_available", 0)
        pool.add_metric(["in_use"], size - idle)
        pool.add_metric(["idle"], idle)
        pool.add_metric(["waiting"], stats.get("requests_waiting", 0))
        yield pool
        up = self.database_up()
        yield GaugeMetricFamily(
            "scrapesink_database_up", "1 when PostgreSQL answered this scrape", value=int(up)
        )
        if not up:
            return
        try:
            days = set(self.partition_days())
            jobs = list(self.jobs())
        except ScrapesinkError as exc:
            log.warning("database gauges not read: %s", exc)
            return
        yield GaugeMetricFamily(
            "scrapesink_partitions", "Day partitions of raw_events", value=len(days)
        )
        today, ahead = datetime.now(UTC).date(), 0
        while today + timedelta(days=ahead + 1) in days:
            ahead += 1
        yield GaugeMetricFamily(
            "scrapesink_partition_days_ahead",
            "Days after today whose partition is premade, in a row (0: none for tomorrow)",
            value=ahead if today in days else -1,
        )
        last = GaugeMetricFamily(
            "scrapesink_job_last_success_timestamp_seconds",
            "When an enabled job's last run succeeded (its creation, when none has yet)",
            labels=["job"],
        )
        every = GaugeMetricFamily(
            "scrapesink_job_expected_interval_seconds",
            "How often an enabled job is expected to succeed (from its schedule; else a day)",
            labels=["job"],
        )
        for name, succeeded, interval in jobs:
            last.add_metric([name], succeeded or 0)
            every.add_metric([name], interval)
        yield from (last, every)


def group_gauges(groups: Callable[[], Iterable[GroupLike]]) -> Iterable[Metric]:
    """The shared journal's consumer groups (nothing without one)."""
    labels = ["stream", "group"]
    families = {
        "lag": GaugeMetricFamily(
            "scrapesink_stream_group_lag", "Entries not yet handed to the group", labels=labels
        ),
        "pending": GaugeMetricFamily(
            "scrapesink_stream_group_pending",
            "Entries handed to a worker of the group and not acknowledged",
            labels=labels,
        ),
        "consumers": GaugeMetricFamily(
            "scrapesink_stream_group_consumers", "Workers the group has seen", labels=labels
        ),
        "idle": GaugeMetricFamily(
            "scrapesink_stream_group_idle_seconds",
            "Since the group's most recently active worker did anything (-1: no worker)",
            labels=labels,
        ),
    }
    try:
        read = list(groups())
    except ScrapesinkError as exc:
        log.warning("consumer groups not read: %s", exc)
        read = []
    for g in read:
        names = [g.kind, g.group]
        families["lag"].add_metric(names, -1 if g.lag is None else g.lag)
        families["pending"].add_metric(names, g.pending)
        families["consumers"].add_metric(names, g.consumers)
        families["idle"].add_metric(names, -1 if g.idle_ms is None else g.idle_ms / 1000)
    if read:
        yield from families.values()


class GroupGauges(Collector):
    """The consumer-group gauges alone (a worker's /metrics)."""

    def __init__(self, groups: Callable[[], Iterable[GroupLike]]) -> None:
        self.groups = groups

    def collect(self) -> Iterable[Metric]:
        return group_gauges(self.groups)


def serve_metrics(port: int, *registries: CollectorRegistry) -> None:
    """Serve ``REGISTRY`` and ``registries`` on ``port`` (all addresses) in a thread."""
    combined = CollectorRegistry()
    for registry in (REGISTRY, *registries):
        combined.register(_Copy(registry))
    start_http_server(port, registry=combined)


def render(*registries: CollectorRegistry) -> bytes:
    """The text format of ``REGISTRY`` and of ``registries``."""
    return b"".join(generate_latest(r) for r in (REGISTRY, *registries))


def write_textfile(path: Path, *registries: CollectorRegistry) -> None:
    """For node-exporter's textfile collector: written to a temp file, then renamed."""
    combined = CollectorRegistry()
    for registry in (REGISTRY, *registries):
        combined.register(_Copy(registry))
    write_to_textfile(str(path), combined)


class _Copy(Collector):
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def collect(self) -> Iterable[Metric]:
        return self.registry.collect()

"""Prometheus metrics of the HTTP service (prometheus-client), one registry per app.

Counters and histograms are updated as requests go; the pipeline gauges (pending records per
sink, dead letters, pool connections) are read when ``/metrics`` is scraped.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from scrapesink.application.ingest import WriteSummary
from scrapesink.errors import ScrapesinkError, TransientStorageError

if TYPE_CHECKING:
    from scrapesink.entrypoints.api.services import Services

log = logging.getLogger(__name__)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class _Pipeline(Collector):
    def __init__(self, services: Services) -> None:
        self.services = services

    def collect(self) -> Iterable[Metric]:
        pending = GaugeMetricFamily(
            "scrapesink_sink_pending_records",
            "Journaled records a sink has not stored yet",
            labels=["sink"],
        )
        dead = GaugeMetricFamily(
            "scrapesink_dead_letters", "Records a sink refused for good", labels=["sink"]
        )
        try:
            try:
                status = self.services.status()
            except TransientStorageError:
                status = self.services.status(database_up=False)
        except (ScrapesinkError, OSError) as exc:
            log.warning("pipeline gauges not read: %s", exc)
        else:
            for name, sink in status.sinks.items():
                pending.add_metric([name], sink.pending)
                dead.add_metric([name], sink.dead_letters)
        yield pending
        yield dead
        pool = GaugeMetricFamily(
            "scrapesink_pool_connections", "PostgreSQL pool connections", labels=["state"]
        )
        stats = self.services.app.database.stats()
        size = stats.get("pool_size", 0)
        idle = stats.get("pool_available", 0)
        pool.add_metric(["in_use"], size - idle)
        pool.add_metric(["idle"], idle)
        pool.add_metric(["waiting"], stats.get("requests_waiting", 0))
        yield pool


class Metrics:
    def __init__(self, services: Services) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "scrapesink_http_requests",
            "HTTP requests answered",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "scrapesink_http_request_duration_seconds",
            "Time to answer an HTTP request",
            ["method", "route"],
            registry=self.registry,
        )
        self.records = Counter(
            "scrapesink_records",
            "Records received over HTTP, by kind (events or the model) and outcome",
            ["kind", "outcome"],
            registry=self.registry,
        )
        self.registry.register(_Pipeline(services))

    def count(self, kind: str, summary: WriteSummary) -> None:
        if summary.results is None:
            return
        outcomes: dict[str, int] = {}
        for result in summary.results:
            outcomes[result.status] = outcomes.get(result.status, 0) + 1
        for outcome, n in outcomes.items():
            self.records.labels(kind, outcome).inc(n)

    def render(self) -> bytes:
        return generate_latest(self.registry)

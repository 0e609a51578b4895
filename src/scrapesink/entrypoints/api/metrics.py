"""The HTTP service's own metrics (requests, latency) beside scrapesink's process metrics
(``scrapesink.metrics``: records per sink/source/outcome, failures, batch times, and the
pipeline gauges read at each scrape)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram

from scrapesink import metrics
from scrapesink.bootstrap import PipelineStatus
from scrapesink.errors import TransientStorageError

if TYPE_CHECKING:
    from scrapesink.entrypoints.api.services import Services

CONTENT_TYPE = metrics.CONTENT_TYPE


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

        def status() -> PipelineStatus:
            try:
                return services.status()
            except TransientStorageError:  # PostgreSQL down: the other sinks still answer
                return services.status(database_up=False)

        self.registry.register(metrics.Gauges(services.app, status))

    def render(self) -> bytes:
        return metrics.render(self.registry)

"""The HTTP service's own metrics (requests, latency) beside scrapesink's process metrics
(``adapters.metrics``: records per sink/source/outcome, failures, batch times, and the
pipeline gauges read at each scrape)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.registry import Collector

from scrapesink.adapters import metrics

CONTENT_TYPE = metrics.CONTENT_TYPE


class Metrics:
    """The server's registry: its request counters and the pipeline's ``gauges``."""

    def __init__(self, gauges: Collector) -> None:
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
        self.registry.register(gauges)

    def render(self) -> bytes:
        return metrics.render(self.registry)

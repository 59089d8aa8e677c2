"""Prometheus metrics in a registry per app (tests build several apps in one process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("loracle_http_requests_total", "HTTP requests by route and status.",
                                ["method", "route", "status"], registry=self.registry)
        self.latency = Histogram("loracle_http_request_seconds", "Time to the end of the response (streams included).",
                                 ["route"], registry=self.registry,
                                 buckets=(0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120))
        self.runs_started = Counter("loracle_runs_started_total", "Agent runs admitted to the queue.", registry=self.registry)
        self.runs_finished = Counter("loracle_runs_finished_total", "Agent runs by outcome.", ["status"], registry=self.registry)
        self.rejected = Counter("loracle_runs_rejected_total", "Runs refused with 429 (queue or tenant full).",
                                registry=self.registry)
        self.in_flight = Gauge("loracle_runs_in_flight", "Runs queued or running.", registry=self.registry)
        self.running = Gauge("loracle_runs_running", "Runs executing on a worker.", registry=self.registry)

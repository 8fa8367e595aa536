"""What `GET /metrics` shows, in Prometheus' text format (prometheus-client), one registry per server."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class ServerMetrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("lmtune_requests", "HTTP requests answered, by endpoint and status", ["endpoint", "status"], registry=r)
        self.latency = Histogram("lmtune_request_seconds", "Time from request to the end of its response, by endpoint",
                                 ["endpoint"], buckets=LATENCY_BUCKETS, registry=r)
        self.batch_size = Histogram("lmtune_batch_size", "Inputs in each forward pass (or generate call), by kind",
                                    ["kind"], buckets=BATCH_BUCKETS, registry=r)
        self.queue_depth = Gauge("lmtune_queue_depth", "Requests waiting for the model", registry=r)
        self.tokens = Counter("lmtune_tokens", "Tokens read (prompt) and written (completion) by generation requests",
                              ["direction"], registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)

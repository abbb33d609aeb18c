"""Prometheus metrics of one endpoint worker, kept in the app's own CollectorRegistry.

A registry per app (not prometheus_client's global one) lets tests and the simulation build
several apps in one process. With several uvicorn workers, ``fedsys serve`` sets
``PROMETHEUS_MULTIPROC_DIR`` before the workers start: each worker then writes its values to
files there, and a scrape of any worker reports the sum over all of them (prometheus_client's
multiprocess mode); the active-version gauge keeps one series per live worker.
"""

from __future__ import annotations

import os
import time

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.002,
    0.003,
    0.005,
    0.0075,
    0.01,
    0.02,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class ServeMetrics:
    """Request counts and latencies by route and status, batch sizes, active versions."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.worker = str(os.getpid())
        self.requests = Counter(
            "fedsys_requests",
            "HTTP requests by route template, method and status code.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "fedsys_request_latency_seconds",
            "Time from request start to the end of the response, by route template.",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "fedsys_batch_size",
            "Rows per model call of the dynamic batcher.",
            ["model"],
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        self.active_version = Gauge(
            "fedsys_active_version",
            "Version each model is served at by this worker.",
            ["model", "worker"],
            registry=self.registry,
            multiprocess_mode="liveall",
        )
        self.swaps = Counter(
            "fedsys_model_swaps",
            "Hot swaps of the served model by this worker.",
            ["model"],
            registry=self.registry,
        )

    def exposition(self) -> tuple[bytes, str]:
        if os.environ.get(MULTIPROC_ENV):  # several workers: sum the files of all of them
            merged = CollectorRegistry()
            multiprocess.MultiProcessCollector(merged)  # type: ignore[no-untyped-call]
            return generate_latest(merged), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class MetricsMiddleware:
    """Pure ASGI middleware (no BaseHTTPMiddleware overhead) timing every HTTP request.

    The route label is the matched route's template (``/v1/models/{name}:predict``), never
    the raw path, so unknown paths cannot grow the label set.
    """

    def __init__(self, app: ASGIApp, metrics: ServeMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            self.metrics.requests.labels(template, scope.get("method", ""), str(status)).inc()
            self.metrics.latency.labels(template).observe(time.perf_counter() - start)

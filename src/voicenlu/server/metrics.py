"""Prometheus metrics with the standard client library.

With several workers, ``serve()`` points PROMETHEUS_MULTIPROC_DIR at a folder of its own before
they start; each worker then writes its counts there and any worker's /metrics adds up all of
them, so one scrape sees the whole server. With one process the counts stay in memory.
"""

import asyncio
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

from voicenlu.server.demo import STATIC_PREFIX

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
ENDPOINTS = (
    "/parse",
    "/parse/batch",
    "/model/parse",
    "/parse/audio",
    "/health",
    "/ready",
    "/metadata",
    "/metrics",
    "/openapi.json",
)
# The label of a connection refused before it named a path (a silent or malformed one).
NO_PATH = "none"
# The key under which the app's lifespan hands the HTTP layer its way to count the answers
# it gives itself (ASGI lifespan state, which uvicorn shares with every connection).
REFUSALS = "voicenlu.refusals"
LATENCY_BUCKETS = (0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# nginx's code for "the client closed the connection before the answer": counted apart from
# 5xx, so an alert on server errors never fires on client behaviour.
CLIENT_GONE = 499


class Metrics:
    """The service's metrics; ``render()`` is the body of GET /metrics."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self):
        self.shared = bool(os.environ.get(MULTIPROC_ENV))
        # Shared: values live in the folder, the scrape collects them. Alone: one registry per app.
        self.registry = None if self.shared else CollectorRegistry()
        where = {"registry": self.registry}
        self.requests = Counter(
            "voicenlu_requests",
            "HTTP requests answered, by endpoint and status (499: the client went away first; "
            "endpoint none: refused before it named a path).",
            ["endpoint", "status"],
            **where,
        )
        self.latency = Histogram(
            "voicenlu_request_duration_seconds",
            "Time to answer a request, by endpoint.",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            **where,
        )
        self.in_flight = Gauge(
            "voicenlu_requests_in_flight",
            "Requests being answered now.",
            multiprocess_mode="livesum",
            **where,
        )
        self.batches = Counter(
            "voicenlu_microbatches", "Model runs made by the /parse micro-batcher.", **where
        )
        self.batched = Counter(
            "voicenlu_microbatched_requests", "Requests parsed by those runs.", **where
        )

        self.parsed = Counter(
            "voicenlu_parsed_texts",
            "Texts run through the model (work for clients that left is not).",
            **where,
        )

    def refused(self, path: str | None, status: int) -> None:
        """Count an answer the HTTP layer gave before the app saw the request."""
        label = NO_PATH if path is None else endpoint_label(path)
        self.requests.labels(label, str(status)).inc()

    def observe_batch(self, size: int) -> None:
        self.batches.inc()
        self.batched.inc(size)

    def render(self) -> bytes:
        if not self.shared:
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry)

    def close(self) -> None:
        """A stopping worker's live gauges leave the sum."""
        if self.shared:
            multiprocess.mark_process_dead(os.getpid())


def endpoint_label(path: str) -> str:
    """A fixed set of label values, so scanning for random paths cannot grow /metrics."""
    if path in ENDPOINTS:
        return path
    return "/static" if path == "/" or path.startswith(STATIC_PREFIX) else "other"


class MetricsMiddleware:
    """Outermost layer: counts every answer, the 401s, 413s and 503s included.

    A request whose client disconnects (or that is cancelled) before an answer is counted as
    499, never as a 500.
    """

    def __init__(self, app, metrics: Metrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        status = None
        gone = False

        async def receive_and_note_disconnect():
            nonlocal gone
            message = await receive()
            gone = gone or message["type"] == "http.disconnect"
            return message

        async def send_and_note_status(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        self.metrics.in_flight.inc()
        try:
            await self.app(scope, receive_and_note_disconnect, send_and_note_status)
        except asyncio.CancelledError:
            gone = True
            raise
        finally:
            self.metrics.in_flight.dec()
            if status is None:
                status = CLIENT_GONE if gone else 500
            label = endpoint_label(scope["path"])
            self.metrics.requests.labels(label, str(status)).inc()
            self.metrics.latency.labels(label).observe(time.perf_counter() - start)

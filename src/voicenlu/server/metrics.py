"""Prometheus metrics: request counts and latencies by endpoint, micro-batch sizes."""

import time
from collections import Counter, defaultdict

from voicenlu.server.demo import STATIC_PREFIX

ENDPOINTS = ("/parse", "/parse/batch", "/model/parse", "/health", "/ready", "/metadata", "/metrics")
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    """Request counts and latencies, written in Prometheus' text format by hand.

    Kept per process: with several workers each answers /metrics with its own counts.
    """

    def __init__(self):
        self.requests: Counter = Counter()
        self.buckets: dict[str, list[int]] = defaultdict(lambda: [0] * len(LATENCY_BUCKETS))
        self.latency_sum: Counter = Counter()
        self.latency_count: Counter = Counter()
        self.batches = 0
        self.batched = 0

    def observe(self, endpoint: str, status: int, seconds: float) -> None:
        self.requests[endpoint, status] += 1
        for i, bound in enumerate(LATENCY_BUCKETS):
            if seconds <= bound:
                self.buckets[endpoint][i] += 1
        self.latency_sum[endpoint] += seconds
        self.latency_count[endpoint] += 1

    def observe_batch(self, size: int) -> None:
        self.batches += 1
        self.batched += size

    def render(self) -> str:
        lines = [
            "# HELP voicenlu_requests_total HTTP requests answered, by endpoint and status.",
            "# TYPE voicenlu_requests_total counter",
        ]
        for (endpoint, status), n in sorted(self.requests.items()):
            lines.append(f'voicenlu_requests_total{{endpoint="{endpoint}",status="{status}"}} {n}')
        lines += [
            "# HELP voicenlu_request_duration_seconds Time to answer a request, by endpoint.",
            "# TYPE voicenlu_request_duration_seconds histogram",
        ]
        name = "voicenlu_request_duration_seconds"
        for endpoint in sorted(self.latency_count):
            for bound, n in zip(LATENCY_BUCKETS, self.buckets[endpoint], strict=True):
                lines.append(f'{name}_bucket{{endpoint="{endpoint}",le="{bound}"}} {n}')
            count = self.latency_count[endpoint]
            lines += [
                f'{name}_bucket{{endpoint="{endpoint}",le="+Inf"}} {count}',
                f'{name}_sum{{endpoint="{endpoint}"}} {self.latency_sum[endpoint]:.6f}',
                f'{name}_count{{endpoint="{endpoint}"}} {count}',
            ]
        lines += [
            "# HELP voicenlu_microbatches_total Model runs made by the /parse micro-batcher.",
            "# TYPE voicenlu_microbatches_total counter",
            f"voicenlu_microbatches_total {self.batches}",
            "# HELP voicenlu_microbatched_requests_total Requests parsed by those runs.",
            "# TYPE voicenlu_microbatched_requests_total counter",
            f"voicenlu_microbatched_requests_total {self.batched}",
        ]
        return "\n".join(lines) + "\n"


def endpoint_label(path: str) -> str:
    """A fixed set of label values, so scanning for random paths cannot grow /metrics."""
    if path in ENDPOINTS:
        return path
    return "/static" if path == "/" or path.startswith(STATIC_PREFIX) else "other"


class MetricsMiddleware:
    """Outermost layer: counts every answer, the 401s, 413s and 500s included."""

    def __init__(self, app, metrics: Metrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        status = 500  # what the client gets if the app raises before answering

        async def send_and_note_status(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note_status)
        finally:
            label = endpoint_label(scope["path"])
            self.metrics.observe(label, status, time.perf_counter() - start)

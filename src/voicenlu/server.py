"""HTTP API: serve a bundle's parser with FastAPI and uvicorn.

POST /parse, /parse/batch and /model/parse (Rasa's shape) answer parse results (DESIGN section 4);
GET /health, /ready, /metadata and /metrics (Prometheus) are for operators; GET / is a demo page.
Every bad request gets a 4xx JSON answer ``{"error": "...", "detail": [...]}`` that says what is
wrong, so clients never have to read a 500 to find their own mistake.
"""

import asyncio
import hmac
import ipaddress
import logging
import os
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse
from fastapi.staticfiles import StaticFiles
from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic_core import PydanticCustomError
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException

from voicenlu import __version__
from voicenlu.bundle import read_manifest
from voicenlu.errors import ConfigError, InputError
from voicenlu.runtime import Parser, check_text

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
API_KEY_ENV = "VOICENLU_API_KEY"
# Paths anyone may fetch even when an API key is set: the liveness probe, and the demo page's
# static files (they hold no data; the page asks for the key before it calls the API).
PUBLIC_PATHS = ("/health", "/")
PUBLIC_PREFIX = "/static/"
ENDPOINTS = ("/parse", "/parse/batch", "/model/parse", "/health", "/ready", "/metadata", "/metrics")
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
# Rasa's FallbackClassifier names a rejected request this way; Rasa clients branch on it.
RASA_FALLBACK = "nlu_fallback"


# --- Request and response bodies ---------------------------------------------------------------


def _valid_text(text: str) -> str:
    """Blank text is refused while validating the body, so it gets a 422 like every other field."""
    try:
        return check_text(text)
    except InputError as exc:
        raise PydanticCustomError("blank_text", str(exc)) from None


def _request_models(max_chars: int, max_batch: int):
    """Request bodies whose limits come from the app's settings, so /openapi.json states them."""
    strict = ConfigDict(extra="forbid", strict=True)
    Text = Annotated[
        str,
        Field(min_length=1, max_length=max_chars, description="The request, as typed or heard."),
        AfterValidator(_valid_text),
    ]
    Threshold = Field(
        None,
        ge=0.0,
        le=1.0,
        allow_inf_nan=False,
        description="Reject as out of scope below this in-scope score, 0 to 1 (default: the "
        "bundle's threshold, which lets 99% of its dev requests through).",
    )

    class ParseRequest(BaseModel):
        model_config = strict
        text: Text
        threshold: float | None = Threshold

    class BatchRequest(BaseModel):
        model_config = strict
        texts: list[Text] = Field(min_length=1, max_length=max_batch)
        threshold: float | None = Threshold

    class RasaParseRequest(BaseModel):
        """Rasa's /model/parse body: ``message_id`` is accepted and ignored."""

        model_config = strict
        text: Text
        message_id: str | None = None

    return ParseRequest, BatchRequest, RasaParseRequest


class Intent(BaseModel):
    name: str | None
    confidence: float


class RankedIntent(BaseModel):
    name: str
    confidence: float


class Slot(BaseModel):
    slot: str
    value: str
    start: int
    end: int
    confidence: float


class ParseResult(BaseModel):
    text: str
    intent: Intent
    in_scope: bool
    intent_ranking: list[RankedIntent]
    slots: list[Slot]


class RasaEntity(BaseModel):
    entity: str
    value: str
    start: int
    end: int
    confidence_entity: float
    extractor: str


class RasaParseResult(BaseModel):
    text: str
    intent: RankedIntent
    entities: list[RasaEntity]
    intent_ranking: list[RankedIntent]


def to_rasa(result: dict, threshold: float) -> dict:
    """A parse result in Rasa's /model/parse shape.

    A rejected request becomes Rasa's ``nlu_fallback`` intent with the threshold as its
    confidence, put first in the ranking, as Rasa's FallbackClassifier does.
    """
    ranking = result["intent_ranking"]
    if result["in_scope"]:
        intent = ranking[0]
    else:
        intent = {"name": RASA_FALLBACK, "confidence": round(threshold, 4)}
        ranking = [intent, *ranking]
    entities = [
        {
            "entity": s["slot"],
            "value": s["value"],
            "start": s["start"],
            "end": s["end"],
            "confidence_entity": s["confidence"],
            "extractor": "voicenlu",
        }
        for s in result["slots"]
    ]
    return {
        "text": result["text"],
        "intent": intent,
        "entities": entities,
        "intent_ranking": ranking,
    }


# --- Micro-batching ----------------------------------------------------------------------------


class ModelLane:
    """The one thread a worker runs its model on, so requests queue instead of competing.

    Concurrent session runs would each start the runtime's own threads on the same cores
    and slow every request down; one run at a time keeps latency flat under load, and the
    event loop stays free to accept and answer requests meanwhile.
    """

    def __init__(self):
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="voicenlu-model")

    async def run(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    def close(self) -> None:
        self.executor.shutdown(wait=True)


class MicroBatcher:
    """Groups /parse requests into one ``parse_batch`` call: those already waiting when the
    model frees up, plus those that arrive within ``window_s``.

    One batch of n texts costs less than n single runs, so under concurrent load this trades
    up to ``window_s`` of added latency for throughput.
    """

    def __init__(
        self, parser: Parser, lane: ModelLane, window_s: float, max_batch: int, metrics: "Metrics"
    ):
        self.parser = parser
        self.lane = lane
        self.window_s = window_s
        self.max_batch = max_batch
        self.metrics = metrics
        self.queue: asyncio.Queue = asyncio.Queue()
        self.task: asyncio.Task | None = None

    def start(self) -> None:
        self.task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        self.task.cancel()
        try:
            await self.task
        except asyncio.CancelledError:
            pass

    async def parse(self, text: str, threshold: float | None) -> dict:
        future = asyncio.get_running_loop().create_future()
        await self.queue.put((text, threshold, future))
        return await future

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self.queue.get()]
            deadline = loop.time() + self.window_s
            while len(batch) < self.max_batch:
                if not self.queue.empty():  # queued while the model was busy: no waiting
                    batch.append(self.queue.get_nowait())
                    continue
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self.queue.get(), remaining))
                except TimeoutError:
                    break
            # parse_batch takes one threshold: requests that chose different ones run apart.
            groups = defaultdict(list)
            for item in batch:
                groups[item[1]].append(item)
            for threshold, items in groups.items():
                await self._parse_group(threshold, items)

    async def _parse_group(self, threshold: float | None, items: list) -> None:
        self.metrics.observe_batch(len(items))
        texts = [text for text, _, _ in items]
        try:
            results = await self.lane.run(self.parser.parse_batch, texts, threshold)
        except Exception as exc:  # hand the error to every waiting request, keep serving
            for _, _, future in items:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, _, future), result in zip(items, results, strict=True):
            if not future.done():  # a client that went away cancelled its future
                future.set_result(result)


# --- Metrics -----------------------------------------------------------------------------------


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


def _endpoint_label(path: str) -> str:
    """A fixed set of label values, so scanning for random paths cannot grow /metrics."""
    if path in ENDPOINTS:
        return path
    return "/static" if path == "/" or path.startswith(PUBLIC_PREFIX) else "other"


# --- ASGI middleware ---------------------------------------------------------------------------


async def _send_json(scope, receive, send, status: int, error: str, headers=None) -> None:
    response = JSONResponse({"error": error, "detail": []}, status_code=status, headers=headers)
    await response(scope, receive, send)


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
            label = _endpoint_label(scope["path"])
            self.metrics.observe(label, status, time.perf_counter() - start)


class GuardMiddleware:
    """Checks the API key and the raw body before FastAPI parses anything.

    Pure ASGI so that an oversized body is refused from its Content-Length or as soon as the
    stream passes the limit, without buffering more than ``max_body_bytes``.
    """

    def __init__(self, app, api_key: str | None, max_body_bytes: int):
        self.app = app
        self.api_key = api_key.encode() if api_key else None
        self.max_body_bytes = max_body_bytes

    def _denied(self, scope) -> str | None:
        path = scope["path"]
        if not self.api_key or path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIX):
            return None
        scheme, _, key = Headers(scope=scope).get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            return "This server needs an API key: send the header 'Authorization: Bearer <key>'."
        if not hmac.compare_digest(key.strip().encode(), self.api_key):
            return "The API key in the Authorization header is wrong."
        return None

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        denied = self._denied(scope)
        if denied:
            return await _send_json(
                scope, receive, send, 401, denied, {"WWW-Authenticate": "Bearer"}
            )
        if scope["method"] != "POST":
            return await self.app(scope, receive, send)

        headers = Headers(scope=scope)
        too_large = (
            f"The request body is larger than this server's limit of {self.max_body_bytes} bytes."
        )
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_body_bytes:
            return await _send_json(scope, receive, send, 413, too_large)
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if len(body) > self.max_body_bytes:
                return await _send_json(scope, receive, send, 413, too_large)
            if not message.get("more_body", False):
                break
        if body:
            media_type = headers.get("content-type", "").split(";")[0].strip().lower()
            if media_type != "application/json":
                error = "Send the body as JSON, with the header 'Content-Type: application/json'."
                return await _send_json(scope, receive, send, 415, error)
            try:
                body.decode("utf-8")
            except UnicodeDecodeError as exc:
                error = f"The request body is not valid UTF-8 (bad byte at offset {exc.start})."
                return await _send_json(scope, receive, send, 400, error)

        replayed = False

        async def replay():
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": bytes(body), "more_body": False}

        await self.app(scope, replay, send)


# --- Error answers -----------------------------------------------------------------------------


def _problem(error: dict) -> dict:
    """One validation problem, without the rejected input (it may be megabytes long)."""
    message = error["msg"]
    if error["type"] == "json_invalid":
        message = f"{message}: {error.get('ctx', {}).get('error', 'malformed JSON')}"
    return {"loc": list(error["loc"]), "msg": message, "type": error["type"]}


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    problems = [_problem(e) for e in exc.errors()]
    if any(p["type"] == "json_invalid" for p in problems):
        status, error = 400, f"The request body is not valid JSON ({problems[0]['msg']})."
    else:
        status = 422
        parts = []
        for p in problems[:3]:
            where = ".".join(str(part) for part in p["loc"] if part != "body") or "body"
            parts.append(f"{where}: {p['msg'].rstrip('.')}")
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        error = "Invalid request: " + "; ".join(parts) + more + "."
    return JSONResponse({"error": error, "detail": problems}, status_code=status)


async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
    if exc.status_code == 404:
        error = f"There is no endpoint at {request.url.path}; the API is described at /docs."
    elif exc.status_code == 405:
        error = f"{request.method} is not allowed on {request.url.path}."
    else:
        error = str(exc.detail)
    return JSONResponse(
        {"error": error, "detail": []}, status_code=exc.status_code, headers=exc.headers
    )


async def _input_error(request: Request, exc: InputError) -> JSONResponse:
    return JSONResponse({"error": str(exc), "detail": []}, status_code=422)


async def _internal_error(request: Request, exc: Exception) -> JSONResponse:
    log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
    error = "The server failed to answer this request; its log has the details."
    return JSONResponse({"error": error, "detail": []}, status_code=500)


# --- The app -----------------------------------------------------------------------------------


def default_max_body_bytes(max_chars: int, max_batch: int) -> int:
    """Room for a full batch of maximal texts at 4 UTF-8 bytes a character, plus JSON framing."""
    return max_batch * (4 * max_chars + 16) + 1024


def create_app(
    parser_or_bundle: Parser | str | Path,
    *,
    api_key: str | None = None,
    cors_origins: tuple[str, ...] | list[str] = (),
    max_chars: int = 1000,
    max_batch: int = 256,
    max_body_bytes: int | None = None,
    microbatch_ms: float = 0.0,
    threads: int | None = None,
) -> FastAPI:
    """The HTTP API for one parser (or a bundle path, loaded now so a bad bundle fails early).

    ``api_key`` (None: the environment variable VOICENLU_API_KEY; "": none): when set, every
    request but /health and the demo page must send ``Authorization: Bearer <key>``.
    ``cors_origins`` lists the web origins allowed to call the API from a browser (none by default).
    ``microbatch_ms`` > 0 groups concurrent /parse requests into one model run.
    ``threads`` is the model's thread count (default: the runtime's, one per core).
    """
    for name, value in (("max_chars", max_chars), ("max_batch", max_batch)):
        if value < 1:
            raise ConfigError(f"{name} must be at least 1, not {value}.")
    if microbatch_ms < 0:
        raise ConfigError(f"microbatch_ms must be 0 (off) or more, not {microbatch_ms}.")
    parser = parser_or_bundle
    if not isinstance(parser, Parser):
        parser = Parser.load(parser_or_bundle, threads=threads, spin_wait=False)
    if api_key is None:
        api_key = os.environ.get(API_KEY_ENV)
    max_body_bytes = max_body_bytes or default_max_body_bytes(max_chars, max_batch)
    metrics = Metrics()
    ParseRequest, BatchRequest, RasaParseRequest = _request_models(max_chars, max_batch)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        lane = app.state.lane = ModelLane()
        # The first run allocates the model's buffers: do it before /ready says yes.
        await lane.run(parser.parse, "warm up")
        if microbatch_ms > 0:
            app.state.batcher = MicroBatcher(parser, lane, microbatch_ms / 1000, max_batch, metrics)
            app.state.batcher.start()
        app.state.ready = True
        yield
        app.state.ready = False
        if app.state.batcher:
            await app.state.batcher.stop()
        lane.close()

    app = FastAPI(
        title="voicenlu",
        version=__version__,
        description="Intent detection and slot filling for voice assistants.",
        lifespan=lifespan,
    )
    app.state.ready = False
    app.state.batcher = None

    async def parse_one(text: str, threshold: float | None) -> dict:
        if app.state.batcher:
            return await app.state.batcher.parse(text, threshold)
        return await app.state.lane.run(parser.parse, text, threshold)

    @app.post("/parse", response_model=ParseResult, summary="Parse one request")
    async def parse(body: ParseRequest) -> dict:
        return await parse_one(body.text, body.threshold)

    @app.post("/parse/batch", response_model=list[ParseResult], summary="Parse many, in order")
    async def parse_batch(body: BatchRequest) -> list[dict]:
        return await app.state.lane.run(parser.parse_batch, body.texts, body.threshold)

    @app.post("/model/parse", response_model=RasaParseResult, summary="Parse, in Rasa's shape")
    async def rasa_parse(body: RasaParseRequest) -> dict:
        return to_rasa(await parse_one(body.text, None), parser.threshold)

    @app.get("/health", summary="The process is alive")
    async def health() -> dict:
        return {"status": "ok"}

    @app.get("/ready", summary="The model is loaded and warm")
    async def ready() -> JSONResponse:
        if app.state.ready:
            return JSONResponse({"ready": True})
        return JSONResponse({"ready": False, "error": "The model is not loaded yet."}, 503)

    @app.get("/metadata", summary="The model and the server's limits")
    async def metadata() -> dict:
        return {
            "version": __version__,
            "backbone": parser.manifest.get("backbone"),
            "intents": parser.intents,
            "slots": parser.slots,
            "precision": parser.precision,
            "threshold": parser.threshold,
            "in_scope_score": parser.calibration.get("score", "max_softmax"),
            "metrics": parser.manifest.get("dev_metrics", {}),
            "limits": {
                "max_chars": max_chars,
                "max_batch": max_batch,
                "max_body_bytes": max_body_bytes,
            },
            "microbatch_ms": microbatch_ms,
        }

    @app.get("/metrics", response_class=PlainTextResponse, summary="Prometheus metrics")
    async def prometheus() -> PlainTextResponse:
        return PlainTextResponse(
            metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8"
        )

    @app.get("/", include_in_schema=False)
    async def demo() -> FileResponse:
        # The page loads nothing from elsewhere; the policy keeps it that way.
        policy = "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'"
        return FileResponse(STATIC / "index.html", headers={"Content-Security-Policy": policy})

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(InputError, _input_error)
    app.add_exception_handler(Exception, _internal_error)

    # Added innermost first: metrics sees everything; CORS answers preflights before the key
    # check (browsers send no Authorization header on them).
    app.add_middleware(GuardMiddleware, api_key=api_key, max_body_bytes=max_body_bytes)
    if cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
        )
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    return app


# --- Running it --------------------------------------------------------------------------------

SETTINGS_ENV = {
    "bundle": "VOICENLU_BUNDLE",
    "cors_origins": "VOICENLU_CORS_ORIGINS",
    "max_chars": "VOICENLU_MAX_CHARS",
    "max_batch": "VOICENLU_MAX_BATCH",
    "microbatch_ms": "VOICENLU_MICROBATCH_MS",
    "threads": "VOICENLU_THREADS",
}


def _env_number(name: str, kind: type, default):
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        return kind(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a valid {kind.__name__}.") from None


def app_from_env() -> FastAPI:
    """App factory for ``uvicorn --factory`` and multi-worker serve(): settings from env vars.

    Each worker process calls it, since a loaded model cannot be handed across processes.
    """
    bundle = os.environ.get(SETTINGS_ENV["bundle"])
    if not bundle:
        raise ConfigError(f"Set {SETTINGS_ENV['bundle']} to the bundle folder to serve.")
    origins = os.environ.get(SETTINGS_ENV["cors_origins"], "")
    return create_app(
        bundle,
        cors_origins=tuple(o.strip() for o in origins.split(",") if o.strip()),
        max_chars=_env_number(SETTINGS_ENV["max_chars"], int, 1000),
        max_batch=_env_number(SETTINGS_ENV["max_batch"], int, 256),
        microbatch_ms=_env_number(SETTINGS_ENV["microbatch_ms"], float, 0.0),
        threads=_env_number(SETTINGS_ENV["threads"], int, None),
    )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(
    bundle: str | Path,
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: int = 1,
    cors_origins: tuple[str, ...] | list[str] = (),
    max_chars: int = 1000,
    max_batch: int = 256,
    microbatch_ms: float = 0.0,
    threads: int | None = None,
    access_log: bool = False,
) -> None:
    """Serve a bundle over HTTP until interrupted (``voicenlu serve``).

    Binds to loopback unless told otherwise. The API key is read from VOICENLU_API_KEY, never
    from the command line, where other users could read it in the process list. Each worker
    runs its model on ``threads`` threads, one by default: under load a second thread cost
    more CPU than it saved (on 2 cores, 4.5-5.5 ms of server CPU per request against 2.6-2.9
    ms with one), so use more cores with more workers. The access log is off by default: a
    line per request adds about a fifth of a parse's CPU time.
    """
    import uvicorn

    if workers < 1:
        raise ConfigError(f"--workers must be at least 1, not {workers}.")
    if threads is not None and threads < 1:
        raise ConfigError(f"--threads must be at least 1, not {threads}.")
    threads = threads or 1
    if not _is_loopback(host) and not os.environ.get(API_KEY_ENV):
        log.warning(
            "Serving on %s without an API key: anyone who can reach this address can use it. "
            "Set %s to require one.",
            host,
            API_KEY_ENV,
        )
    if workers == 1:
        app = create_app(
            bundle,
            cors_origins=cors_origins,
            max_chars=max_chars,
            max_batch=max_batch,
            microbatch_ms=microbatch_ms,
            threads=threads,
        )
        uvicorn.run(app, host=host, port=port, access_log=access_log)
        return
    # A bad bundle fails once, here, rather than in every worker.
    read_manifest(Path(bundle), verify=False, need=("tokenizer.json",))
    os.environ.update(
        {
            SETTINGS_ENV["bundle"]: str(Path(bundle).resolve()),
            SETTINGS_ENV["cors_origins"]: ",".join(cors_origins),
            SETTINGS_ENV["max_chars"]: str(max_chars),
            SETTINGS_ENV["max_batch"]: str(max_batch),
            SETTINGS_ENV["microbatch_ms"]: str(microbatch_ms),
            SETTINGS_ENV["threads"]: str(threads),
        }
    )
    uvicorn.run(
        "voicenlu.server:app_from_env",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        access_log=access_log,
    )

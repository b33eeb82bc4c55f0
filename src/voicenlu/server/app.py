"""The FastAPI app: endpoints, error answers, and the middleware around them."""

import asyncio
import dataclasses
import functools
import logging
import os
from contextlib import asynccontextmanager
from pathlib import Path

import orjson
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException

from voicenlu.config import Limits
from voicenlu.errors import ConfigError, InputError
from voicenlu.runtime import Parser
from voicenlu.server.batching import MicroBatcher, ModelLane
from voicenlu.server.demo import SecurityHeadersMiddleware, add_demo_page
from voicenlu.server.guard import GuardMiddleware
from voicenlu.server.metrics import CLIENT_GONE, REFUSALS, Metrics, MetricsMiddleware
from voicenlu.server.schemas import (
    AudioParseResult,
    ParseResult,
    RasaParseResult,
    request_models,
    to_rasa,
)
from voicenlu.speech import AudioError, AudioTooLong, RecogniserFailed, SpeechUnavailable
from voicenlu.values import DEFAULT_TIMEZONE, reference
from voicenlu.version import __version__

# A request's (reference_time, timezone), as it sent them; (None, None) is now, in the
# server's zone.
When = tuple[str | None, str | None]
NOW: When = (None, None)

log = logging.getLogger(__name__)

API_KEY_ENV = "VOICENLU_API_KEY"
# Texts of a /parse/batch request go to the model this many at a time, so a /parse that
# arrives meanwhile waits for one chunk, not the whole batch, and a batch whose client has
# gone stops at the next chunk.
BATCH_CHUNK = 16


class FastJSON(Response):
    """orjson, and no second validation of what the parser already shaped (DESIGN section 4)."""

    media_type = "application/json"

    def render(self, content) -> bytes:
        return orjson.dumps(content)


# --- Error answers -----------------------------------------------------------------------------


def _problem(error: dict) -> dict:
    """One validation problem, without the rejected input (it may be megabytes long)."""
    message = error["msg"]
    detail = error.get("ctx", {}).get("error", "")
    if error["type"] == "json_invalid" and detail not in message:
        message = f"{message}: {detail}"
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
        path = request.url.path
        error = f"There is no endpoint at {path}; the API is described at /openapi.json."
    elif exc.status_code == 405:
        error = f"{request.method} is not allowed on {request.url.path}."
    else:
        error = str(exc.detail)
    return JSONResponse(
        {"error": error, "detail": []}, status_code=exc.status_code, headers=exc.headers
    )


async def _input_error(request: Request, exc: InputError) -> JSONResponse:
    return JSONResponse({"error": str(exc), "detail": []}, status_code=422)


async def _audio_error(request: Request, exc: AudioError) -> JSONResponse:
    status = 413 if isinstance(exc, AudioTooLong) else 422
    return JSONResponse({"error": str(exc), "detail": []}, status_code=status)


async def _speech_unavailable(request: Request, exc: SpeechUnavailable) -> JSONResponse:
    return JSONResponse({"error": str(exc), "detail": []}, status_code=501)


async def _recogniser_failed(request: Request, exc: RecogniserFailed) -> JSONResponse:
    retry = {"Retry-After": "1"}
    return JSONResponse({"error": str(exc), "detail": []}, status_code=503, headers=retry)


async def audio_body(request: Request) -> bytes:
    """The WAV bytes of a /parse/audio request: the body itself, or the multipart field 'file'."""
    if request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
        try:
            form = await request.form(max_files=1, max_fields=4)
        except Exception as exc:  # python-multipart raises its own untyped errors
            raise AudioError(f"The multipart body could not be read: {exc}.") from None
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            raise AudioError("Put the WAV recording in the multipart field 'file'.")
        return await upload.read()
    return await request.body()


# /parse/audio reads its body itself (a WAV file is not JSON); this describes it for clients.
AUDIO_BODY = {
    "required": True,
    "content": {
        "audio/wav": {"schema": {"type": "string", "format": "binary"}},
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "properties": {"file": {"type": "string", "format": "binary"}},
                "required": ["file"],
            }
        },
    },
}


async def _internal_error(request: Request, exc: Exception) -> JSONResponse:
    log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
    error = "The server failed to answer this request; its log has the details."
    return JSONResponse({"error": error, "detail": []}, status_code=500)


# --- The app -----------------------------------------------------------------------------------


def json_body(model: type[BaseModel]) -> dict:
    """The OpenAPI entry for a JSON body of ``model``, which the endpoint validates itself."""
    schema = {"schema": model.model_json_schema()}
    return {"requestBody": {"required": True, "content": {"application/json": schema}}}


async def read_body(request: Request, model: type[BaseModel]) -> BaseModel:
    """The body validated straight from its bytes (pydantic's own JSON parser), with no
    decoded copy in between; a bad one gets the same 400/422 answers as any other."""
    try:
        return model.model_validate_json(await request.body() or b"{}")
    except ValidationError as exc:
        raise RequestValidationError(exc.errors(include_url=False)) from None


async def unless_gone(request: Request, work):
    """Await ``work`` unless the client disconnects first; then cancel it (its model run too,
    if it has not started) and answer 499 to nobody, which the metrics count as such."""
    work = asyncio.ensure_future(work)
    gone = asyncio.ensure_future(request.receive())
    try:
        await asyncio.wait((work, gone), return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
    if work.done():
        return FastJSON(work.result())
    work.cancel()
    return Response(status_code=CLIENT_GONE)


def limits_with(limits: Limits | None, overrides: dict) -> Limits:
    """``limits`` (default: the documented defaults) with some fields set by name."""
    try:
        return dataclasses.replace(limits or Limits(), **overrides)
    except TypeError as exc:
        raise ConfigError(f"Unknown limit: {exc}") from None


def create_app(
    parser_or_bundle: Parser | str | Path,
    *,
    api_key: str | None = None,
    cors_origins: tuple[str, ...] | list[str] = (),
    limits: Limits | None = None,
    microbatch_ms: float = 0.0,
    threads: int | None = None,
    timezone: str = DEFAULT_TIMEZONE,
    digest: str | None = None,
    **limit_fields,
) -> FastAPI:
    """The HTTP API for one parser (or a bundle path, loaded now so a bad bundle fails early).

    ``api_key`` (None: the environment variable VOICENLU_API_KEY; "": none): when set, every
    request but /health and the demo page must send ``Authorization: Bearer <key>``.
    ``cors_origins`` lists the web origins allowed to call the API from a browser (none by default).
    ``limits`` (and any of its fields by name, e.g. ``max_chars=200``) bound each request.
    ``microbatch_ms`` > 0 groups concurrent /parse requests into one model run.
    ``threads`` is the model's thread count (default: the runtime's, one per core).
    ``timezone`` (an IANA name) gives resolved times to requests that name none; a parser
    passed in keeps the one it was loaded with.
    ``digest``: load the bundle only if its manifest digest is this one (a checked signature's).
    """
    limits = limits_with(limits, limit_fields)
    if microbatch_ms < 0:
        raise ConfigError(f"microbatch_ms must be 0 (off) or more, not {microbatch_ms}.")
    parser = parser_or_bundle
    if not isinstance(parser, Parser):
        try:
            reference(0, timezone)
        except InputError as exc:
            raise ConfigError(f"The server's timezone setting: {exc}") from None
        parser = Parser.load(
            parser_or_bundle, threads=threads, spin_wait=False, timezone=timezone, digest=digest
        )
    if api_key is None:
        api_key = os.environ.get(API_KEY_ENV)
    metrics = Metrics()
    ParseRequest, BatchRequest, RasaParseRequest = request_models(
        limits.max_chars, limits.max_batch, limits.max_batch_chars
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        lane = app.state.lane = ModelLane()
        # The first run allocates the model's buffers: do it before /ready says yes.
        await lane.run(parser.parse, "warm up")
        if microbatch_ms > 0:
            app.state.batcher = MicroBatcher(
                parser, lane, microbatch_ms / 1000, limits.max_batch, metrics
            )
            app.state.batcher.start()
        app.state.ready = True
        # The HTTP layer (limits.LimitedHttpProtocol) counts its own answers with this.
        yield {REFUSALS: metrics.refused}
        app.state.ready = False
        if app.state.batcher:
            await app.state.batcher.stop()
        lane.close()
        metrics.close()

    # No /docs or /redoc: FastAPI's pages load their scripts from a CDN, blank offline.
    # /openapi.json describes the API for any viewer.
    app = FastAPI(
        title="voicenlu",
        version=__version__,
        description="Intent detection and slot filling for voice assistants.",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.state.ready = False
    app.state.batcher = None

    async def parse_one(text: str, threshold: float | None, when: When = NOW) -> dict:
        if app.state.batcher:
            return await app.state.batcher.parse(text, threshold, when)
        run = functools.partial(parser.parse, reference_time=when[0], timezone=when[1])
        result = await app.state.lane.run(run, text, threshold)
        metrics.parsed.inc()
        return result

    async def parse_many(texts: list[str], threshold: float | None, when: When) -> list[dict]:
        # One reference for the whole batch, fixed before its chunks run.
        ref = parser.values.reference(*when)
        run = functools.partial(
            parser.parse_batch, reference_time=ref.timestamp, timezone=ref.timezone
        )
        results = []
        for i in range(0, len(texts), BATCH_CHUNK):
            chunk = texts[i : i + BATCH_CHUNK]
            results += await app.state.lane.run(run, chunk, threshold)
            metrics.parsed.inc(len(chunk))
        await app.state.lane.release_memory()
        return results

    async def parse_rasa(text: str, when: When) -> dict:
        return to_rasa(await parse_one(text, None, when), parser.threshold)

    @app.post(
        "/parse",
        response_model=ParseResult,
        summary="Parse one request",
        openapi_extra=json_body(ParseRequest),
    )
    async def parse(request: Request) -> Response:
        body = await read_body(request, ParseRequest)
        when = (body.reference_time, body.timezone)
        return await unless_gone(request, parse_one(body.text, body.threshold, when))

    @app.post(
        "/parse/batch",
        response_model=list[ParseResult],
        summary="Parse many, in order",
        openapi_extra=json_body(BatchRequest),
    )
    async def parse_batch(request: Request) -> Response:
        body = await read_body(request, BatchRequest)
        when = (body.reference_time, body.timezone)
        return await unless_gone(request, parse_many(body.texts, body.threshold, when))

    @app.post(
        "/model/parse",
        response_model=RasaParseResult,
        summary="Parse, in Rasa's shape",
        openapi_extra=json_body(RasaParseRequest),
    )
    async def rasa_parse(request: Request) -> Response:
        body = await read_body(request, RasaParseRequest)
        return await unless_gone(
            request, parse_rasa(body.text, (body.reference_time, body.timezone))
        )

    @app.post(
        "/parse/audio",
        response_model=AudioParseResult,
        summary="Parse a spoken request: a 16 kHz mono 16-bit WAV body (or multipart 'file')",
        responses={413: {"description": "too large or too long"}, 415: {}, 422: {}, 501: {}},
        openapi_extra={"requestBody": AUDIO_BODY},
    )
    async def parse_audio(
        request: Request, threshold: float | None = Query(None, ge=0, le=1)
    ) -> Response:
        wav = await audio_body(request)
        work = app.state.lane.run(
            parser.parse_audio, wav, None, threshold, limits.max_audio_seconds
        )
        return await unless_gone(request, work)

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
            "max_length": parser.max_length,
            "metrics": parser.manifest.get("dev_metrics", {}),
            "limits": limits.asdict(),
            "microbatch_ms": microbatch_ms,
            "threads": parser.threads or None,
            "cors_origins": list(cors_origins),
            "timezone": parser.values.timezone,
            "slot_types": parser.values.slot_types,
            "examples": parser.manifest.get("examples", []),
        }

    @app.get("/metrics", summary="Prometheus metrics, all workers together")
    async def prometheus() -> Response:
        return Response(metrics.render(), media_type=metrics.content_type)

    add_demo_page(app)

    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(AudioError, _audio_error)
    app.add_exception_handler(InputError, _input_error)
    app.add_exception_handler(SpeechUnavailable, _speech_unavailable)
    app.add_exception_handler(RecogniserFailed, _recogniser_failed)
    app.add_exception_handler(Exception, _internal_error)

    # Added innermost first: metrics sees everything; CORS answers preflights before the key
    # check (browsers send no Authorization header on them).
    app.add_middleware(GuardMiddleware, api_key=api_key, limits=limits)
    if cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
        )
    app.add_middleware(SecurityHeadersMiddleware)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    return app

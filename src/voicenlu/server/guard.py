"""What is checked before FastAPI parses anything: the API key, admission (a cap on requests
being parsed at once), and the raw body (size, read time, media type, UTF-8).

Pure ASGI, so an oversized body is refused from its Content-Length or as soon as the stream
passes the limit, without buffering more than the body limit, and a refused request costs
no JSON parsing or validation.
"""

import asyncio
import hmac

from fastapi.responses import JSONResponse
from starlette.datastructures import Headers

from voicenlu.config import Limits
from voicenlu.server.demo import STATIC_PREFIX

# Paths anyone may fetch even when an API key is set: the liveness probe, and the demo page's
# static files (they hold no data; the page asks for the key before it calls the API).
PUBLIC_PATHS = ("/health", "/")
# The endpoints that run the model: admission control counts these.
WORK_PATHS = ("/parse", "/parse/batch", "/model/parse", "/parse/audio")
AUDIO_PATH = "/parse/audio"
AUDIO_TYPES = ("audio/wav", "audio/x-wav", "audio/wave", "multipart/form-data")


async def send_json(scope, receive, send, status: int, error: str, headers=None) -> None:
    """Answer with the API's error shape from inside an ASGI middleware."""
    response = JSONResponse({"error": error, "detail": []}, status_code=status, headers=headers)
    await response(scope, receive, send)


class GuardMiddleware:
    """API key, then admission, then the body; HEAD is answered as GET without a body."""

    def __init__(self, app, api_key: str | None, limits: Limits):
        self.app = app
        self.api_key = api_key.encode() if api_key else None
        self.limits = limits
        self.admitted = 0

    def _denied(self, scope) -> str | None:
        path = scope["path"]
        if not self.api_key or path in PUBLIC_PATHS or path.startswith(STATIC_PREFIX):
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
            return await send_json(
                scope, receive, send, 401, denied, {"WWW-Authenticate": "Bearer"}
            )
        method = scope["method"]
        if method == "HEAD" and scope["path"] not in WORK_PATHS:
            # The server sends no body for a HEAD request whatever the app writes.
            return await self.app({**scope, "method": "GET"}, receive, send)
        if method != "POST":
            return await self.app(scope, receive, send)
        if scope["path"] not in WORK_PATHS:
            return await self.app(scope, receive, send)
        if self.admitted >= self.limits.max_inflight:
            error = "The server is at its limit of requests in progress; retry shortly."
            retry = {"Retry-After": str(self.limits.retry_after)}
            return await send_json(scope, receive, send, 503, error, retry)
        self.admitted += 1
        try:
            await self._read_and_pass(scope, receive, send)
        finally:
            self.admitted -= 1

    async def _read_and_pass(self, scope, receive, send):
        audio = scope["path"] == AUDIO_PATH
        limit = self.limits.audio_bytes if audio else self.limits.body_bytes
        headers = Headers(scope=scope)
        too_large = f"The request body is larger than this server's limit of {limit} bytes."
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            return await send_json(scope, receive, send, 413, too_large, {"Connection": "close"})
        body = bytearray()
        try:
            async with asyncio.timeout(self.limits.body_timeout):
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        return  # nobody to answer; the metrics count it as 499
                    body += message.get("body", b"")
                    if len(body) > limit:
                        close = {"Connection": "close"}
                        return await send_json(scope, receive, send, 413, too_large, close)
                    if not message.get("more_body", False):
                        break
        except TimeoutError:
            error = f"The request body took longer than {self.limits.body_timeout} s to arrive."
            return await send_json(scope, receive, send, 408, error, {"Connection": "close"})
        media_type = headers.get("content-type", "").split(";")[0].strip().lower()
        if audio and media_type not in AUDIO_TYPES:
            error = (
                "Send a 16 kHz mono 16-bit WAV recording: the body itself with 'Content-Type: "
                "audio/wav', or multipart/form-data with the file in the field 'file'."
            )
            return await send_json(scope, receive, send, 415, error)
        if body and not audio:
            if media_type != "application/json":
                error = "Send the body as JSON, with the header 'Content-Type: application/json'."
                return await send_json(scope, receive, send, 415, error)
            try:
                body.decode("utf-8")
            except UnicodeDecodeError as exc:
                error = f"The request body is not valid UTF-8 (bad byte at offset {exc.start})."
                return await send_json(scope, receive, send, 400, error)

        replayed = False

        async def replay():
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": bytes(body), "more_body": False}

        await self.app(scope, replay, send)

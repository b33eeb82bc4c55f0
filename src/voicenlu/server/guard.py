"""The API key and the raw body, checked before FastAPI parses anything."""

import hmac

from fastapi.responses import JSONResponse
from starlette.datastructures import Headers

from voicenlu.server.demo import STATIC_PREFIX

# Paths anyone may fetch even when an API key is set: the liveness probe, and the demo page's
# static files (they hold no data; the page asks for the key before it calls the API).
PUBLIC_PATHS = ("/health", "/")


async def send_json(scope, receive, send, status: int, error: str, headers=None) -> None:
    """Answer with the API's error shape from inside an ASGI middleware."""
    response = JSONResponse({"error": error, "detail": []}, status_code=status, headers=headers)
    await response(scope, receive, send)


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
        if scope["method"] != "POST":
            return await self.app(scope, receive, send)

        headers = Headers(scope=scope)
        too_large = (
            f"The request body is larger than this server's limit of {self.max_body_bytes} bytes."
        )
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_body_bytes:
            return await send_json(scope, receive, send, 413, too_large)
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if len(body) > self.max_body_bytes:
                return await send_json(scope, receive, send, 413, too_large)
            if not message.get("more_body", False):
                break
        if body:
            media_type = headers.get("content-type", "").split(";")[0].strip().lower()
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

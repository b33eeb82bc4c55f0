"""The HTTP protocol that enforces the limits uvicorn leaves open: header size and count,
header read time, open connections. The limits themselves are ``voicenlu.config.Limits``.
"""

from __future__ import annotations

import json

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from voicenlu.config import Limits


def raw_response(status: int, reason: str, message: str, retry_after: int | None = None) -> bytes:
    """A complete HTTP/1.1 answer with the API's JSON error shape, closing the connection."""
    body = json.dumps({"error": message, "detail": []}).encode()
    head = [
        f"HTTP/1.1 {status} {reason}",
        "content-type: application/json",
        f"content-length: {len(body)}",
        "connection: close",
    ]
    if retry_after is not None:
        head.append(f"retry-after: {retry_after}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def header_refusal(message: str) -> bytes:
    return raw_response(431, "Request Header Fields Too Large", message)


class LimitedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the limits it lacks, checked before any app code runs.

    A request's line and headers are counted as they arrive and refused past
    ``max_header_bytes`` or ``max_headers`` (431); a connection that has not finished its
    headers ``header_timeout`` after connecting (or after its request's first byte) gets a 408;
    past ``max_connections`` a connection is answered 503 with Retry-After as soon as its
    headers are in. Either way the connection is closed and nothing reaches the app.
    """

    def __init__(self, *args, limits: Limits, **kwargs):
        super().__init__(*args, **kwargs)
        self.limits = limits
        self.header_bytes = 0  # received since the current request began, until its headers end
        self.headers_pending = True
        self.refusal: bytes | None = None
        self.header_timer = None

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections:
            self.refusal = raw_response(
                503,
                "Service Unavailable",
                "The server has too many open connections; retry shortly.",
                self.limits.retry_after,
            )
        self.arm_header_timer()

    def connection_lost(self, exc) -> None:
        self.disarm_header_timer()
        super().connection_lost(exc)

    def arm_header_timer(self) -> None:
        if self.header_timer is None:
            self.header_timer = self.loop.call_later(
                self.limits.header_timeout, self.on_header_timeout
            )

    def disarm_header_timer(self) -> None:
        if self.header_timer is not None:
            self.header_timer.cancel()
            self.header_timer = None

    def on_header_timeout(self) -> None:
        self.header_timer = None
        if self.headers_pending and not self.transport.is_closing():
            if self.cycle is None or self.cycle.response_complete:
                message = f"The request headers took longer than {self.limits.header_timeout} s."
                self.transport.write(raw_response(408, "Request Timeout", message))
            self.transport.close()

    def refuse(self, response: bytes) -> None:
        self.disarm_header_timer()
        if not self.transport.is_closing():
            self.transport.write(response)
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        if self.headers_pending:
            self.header_bytes += len(data)
        super().data_received(data)
        if self.headers_pending and self.header_bytes > self.limits.max_header_bytes:
            limit = self.limits.max_header_bytes
            self.refuse(
                header_refusal(f"The request line and headers are longer than {limit} bytes.")
            )

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.headers_pending = True
        self.arm_header_timer()

    def on_header(self, name: bytes, value: bytes) -> None:
        super().on_header(name, value)
        if len(self.headers) > self.limits.max_headers and self.refusal is None:
            limit = self.limits.max_headers
            self.refusal = header_refusal(f"The request has more than {limit} header fields.")

    def on_headers_complete(self) -> None:
        self.headers_pending = False
        self.header_bytes = 0
        self.disarm_header_timer()
        if self.refusal is None:
            super().on_headers_complete()
        else:
            self.refuse(self.refusal)

    def on_message_complete(self) -> None:
        self.headers_pending = True  # what comes next is the next request's
        if self.refusal is None:
            super().on_message_complete()

    def on_body(self, body: bytes) -> None:
        if self.refusal is None:
            super().on_body(body)

    def shutdown(self) -> None:
        """Connections still sending headers hold no work: close them at once."""
        if self.headers_pending and (self.cycle is None or self.cycle.response_complete):
            self.disarm_header_timer()
            self.transport.close()
            return
        super().shutdown()

"""The HTTP protocol that enforces the limits uvicorn leaves open: header size and count,
header read time, open connections, idle and half-open connections, answers nobody reads,
and the shutdown deadline. The limits themselves are ``voicenlu.config.Limits``.
"""

from __future__ import annotations

import json
import socket
import struct

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from voicenlu.config import Limits
from voicenlu.server.metrics import REFUSALS


def raw_response(status: int, reason: str, message: str, retry_after: int | None = None) -> bytes:
    """A complete HTTP/1.1 answer with the API's JSON error shape, closing the connection."""
    body = json.dumps({"error": message, "detail": []}).encode()
    head = [
        f"HTTP/1.1 {status} {reason}",
        "content-type: application/json",
        f"content-length: {len(body)}",
        "x-content-type-options: nosniff",
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

    Every connection ends on a timer whatever it sends: after an answer it has
    ``keepalive_timeout`` to begin its next request, and bytes that begin none (body bytes
    after the answer, stray line breaks) do not restart that clock; an answer given before
    the request's body was read (a refusal, a 404, /health...) closes the connection, so an
    unread body is never read on; a client that stops reading its answer is reset after
    ``body_timeout``; on shutdown, requests still in progress after ``shutdown_timeout`` have
    their connections closed. Answers sent from here are counted in the app's metrics.
    """

    def __init__(self, *args, limits: Limits, **kwargs):
        super().__init__(*args, **kwargs)
        self.limits = limits
        self.header_bytes = 0  # received since the current request began, until its headers end
        self.headers_pending = True
        self.refusal: tuple[int, bytes] | None = None
        self.header_timer = None
        self.send_timer = None
        self.url = b""
        self.answering = None  # the request being answered; pipelining makes it not self.cycle

    # --- Refusals, answered here and counted by the app's metrics ---

    def refuse(self, status: int, response: bytes) -> None:
        self.disarm_header_timer()
        if not self.transport.is_closing():
            self.transport.write(response)
            self.transport.close()
            self.count(status)

    def count(self, status: int) -> None:
        note = self.app_state.get(REFUSALS)
        if note is not None:
            try:
                path = httptools.parse_url(self.url).path.decode("ascii", "replace")
            except httptools.HttpParserInvalidURLError:
                path = None
            note(path if self.url else None, status)

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to bytes that are not HTTP, in the API's JSON shape."""
        self.refuse(400, raw_response(400, "Bad Request", f"{msg} Send HTTP/1.1 requests."))

    # --- Connection life ---

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        # Any byte the kernel will not take pauses writing (see pause_writing), however
        # small the answer, and whether or not the connection is already closing.
        transport.set_write_buffer_limits(high=0)
        if len(self.connections) > self.limits.max_connections:
            self.refusal = (
                503,
                raw_response(
                    503,
                    "Service Unavailable",
                    "The server has too many open connections; retry shortly.",
                    self.limits.retry_after,
                ),
            )
        self.arm_header_timer()

    def connection_lost(self, exc) -> None:
        self.disarm_header_timer()
        self.disarm_send_timer()
        self.drop_answers()
        super()._unset_keepalive_if_required()
        super().connection_lost(exc)

    def _start_asgi_task(self, cycle, app) -> None:
        self.answering = cycle
        super()._start_asgi_task(cycle, app)

    def drop_answers(self) -> None:
        """The connection is gone or being cut: the answer in progress and those pipelined
        behind it are dropped, as for a client that left. uvicorn marks only the newest
        request as gone, which with pipelining is not the one being answered: that one would
        go on writing to the closed connection (an error and a traceback under uvloop)."""
        self.pipeline.clear()
        if self.answering is not None and not self.answering.response_complete:
            self.answering.disconnected = True
            self.answering.message_event.set()

    def _unset_keepalive_if_required(self) -> None:
        """uvicorn calls this on every byte received, which let bytes that begin no request
        keep an idle connection open forever. The idle timer now ends only when a request
        begins (``on_message_begin``), when a new one is armed, or with the connection."""

    def on_response_complete(self) -> None:
        # The answer went out before its request's body was all in: close rather than read on.
        if not self.pipeline and self.cycle is not None and self.cycle.more_body:
            self.transport.close()
        super()._unset_keepalive_if_required()
        super().on_response_complete()

    def pause_writing(self) -> None:
        """The client is not taking its answer: it has ``body_timeout`` to take all of it."""
        super().pause_writing()
        if self.send_timer is None:
            self.send_timer = self.loop.call_later(self.limits.body_timeout, self.cut_off)

    def cut_off(self) -> None:
        """Reset the connection, dropping the answers it did not take: a plain close would
        leave them to the kernel, which holds them (megabytes) for a client that never reads."""
        self.drop_answers()
        sock = self.transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.transport.abort()

    def resume_writing(self) -> None:
        self.disarm_send_timer()
        super().resume_writing()

    def disarm_send_timer(self) -> None:
        if self.send_timer is not None:
            self.send_timer.cancel()
            self.send_timer = None

    # --- Headers ---

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
                self.refuse(408, raw_response(408, "Request Timeout", message))
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        if self.headers_pending:
            self.header_bytes += len(data)
        super().data_received(data)
        if self.headers_pending and self.header_bytes > self.limits.max_header_bytes:
            limit = self.limits.max_header_bytes
            message = f"The request line and headers are longer than {limit} bytes."
            self.refuse(431, header_refusal(message))

    def on_message_begin(self) -> None:
        super().on_message_begin()
        super()._unset_keepalive_if_required()  # a request began: its header timer takes over
        self.headers_pending = True
        self.arm_header_timer()

    def on_header(self, name: bytes, value: bytes) -> None:
        super().on_header(name, value)
        if len(self.headers) > self.limits.max_headers and self.refusal is None:
            limit = self.limits.max_headers
            message = f"The request has more than {limit} header fields."
            self.refusal = (431, header_refusal(message))

    def on_headers_complete(self) -> None:
        self.headers_pending = False
        self.header_bytes = 0
        self.disarm_header_timer()
        # Headers that arrived whole in one read were never counted as they came: their size.
        parsed = len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)
        if parsed > self.limits.max_header_bytes and self.refusal is None:
            limit = self.limits.max_header_bytes
            message = f"The request line and headers are longer than {limit} bytes."
            self.refusal = (431, header_refusal(message))
        if self.refusal is None:
            super().on_headers_complete()
        else:
            self.refuse(*self.refusal)

    def on_message_complete(self) -> None:
        self.headers_pending = True  # what comes next is the next request's
        if self.refusal is None:
            super().on_message_complete()

    def on_body(self, body: bytes) -> None:
        if self.refusal is None:
            super().on_body(body)

    # --- Shutdown ---

    def shutdown(self) -> None:
        """Connections still sending headers hold no work: close them at once. Requests in
        progress get ``shutdown_timeout``; then their connections are closed, so their
        clients see a closed connection and their work is cancelled as for a client that
        left (uvicorn's own deadline, a little later, would answer them 500)."""
        if self.headers_pending and (self.cycle is None or self.cycle.response_complete):
            self.disarm_header_timer()
            self.transport.close()
            return
        super().shutdown()
        if not self.transport.is_closing():
            self.loop.call_later(self.limits.shutdown_timeout, self.transport.close)

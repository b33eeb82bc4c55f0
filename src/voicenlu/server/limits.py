"""The service's limits: one documented setting each, and the HTTP protocol that enforces those
uvicorn leaves open (header size and count, header read time, open connections).

Every limit is a field of ``Limits`` with a safe default; the CLI flags, the environment
variables read by each worker, ``/metadata`` and the README table all come from these fields.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from voicenlu.errors import ConfigError
from voicenlu.speech import MAX_SECONDS, SAMPLE_RATE


def _limit(default, help: str):
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class Limits:
    """Per worker process. Times are in seconds, sizes in bytes unless named otherwise."""

    max_chars: int = _limit(1000, "longest text accepted, in characters (422 beyond)")
    max_batch: int = _limit(256, "most texts in one /parse/batch request (422 beyond)")
    max_batch_chars: int = _limit(
        16_000, "most characters in one /parse/batch request, all texts together (422 beyond)"
    )
    max_body_bytes: int = _limit(
        0, "largest request body (413 beyond); 0: room for a maximal batch as UTF-8 JSON"
    )
    max_audio_seconds: float = _limit(
        15.0, "longest recording /parse/audio accepts, in seconds (413 beyond; at most 30)"
    )
    max_audio_bytes: int = _limit(
        0, "largest /parse/audio body (413 beyond); 0: room for max_audio_seconds of 16 kHz WAV"
    )
    max_header_bytes: int = _limit(16_384, "request line and headers together (431 beyond)")
    max_headers: int = _limit(64, "most header fields in one request (431 beyond)")
    header_timeout: float = _limit(
        10.0, "time from connecting (or from a request's first byte) to its last header (408)"
    )
    body_timeout: float = _limit(10.0, "time to receive a whole request body (408 beyond)")
    max_connections: int = _limit(
        512, "open connections; past it new ones get 503 with Retry-After as soon as they ask"
    )
    max_inflight: int = _limit(
        64, "requests admitted to parse at once; past it 503 with Retry-After, before the body"
    )
    keepalive_timeout: float = _limit(5.0, "an idle keep-alive connection is closed after this")
    shutdown_timeout: float = _limit(
        10.0, "on SIGTERM, in-flight requests get this long, then their connections are closed"
    )
    retry_after: int = _limit(1, "seconds a 503 asks the client to wait (Retry-After header)")

    def __post_init__(self):
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            auto = f.name in ("max_body_bytes", "max_audio_bytes")  # 0: derived below
            least = 0 if auto else 1 if f.type == "int" else 0.001
            if isinstance(value, bool) or not isinstance(value, int | float) or value < least:
                raise ConfigError(f"{f.name} must be a number of at least {least}, not {value!r}.")
        if self.max_body_bytes == 0:
            # Room for a full batch of maximal texts at 4 UTF-8 bytes a character, plus framing.
            room = min(self.max_batch * self.max_chars, self.max_batch_chars)
            object.__setattr__(self, "max_body_bytes", 4 * room + 16 * self.max_batch + 1024)

        if self.max_audio_seconds > MAX_SECONDS:
            raise ConfigError(
                f"max_audio_seconds must be at most {MAX_SECONDS:.0f} (one recogniser window)."
            )
        if self.max_audio_bytes == 0:
            # 16-bit samples at 16 kHz, plus room for the WAV header and multipart framing.
            audio = int(2 * SAMPLE_RATE * self.max_audio_seconds)
            object.__setattr__(self, "max_audio_bytes", audio + 65_536)

    def asdict(self) -> dict:
        return dataclasses.asdict(self)

    @staticmethod
    def env_name(name: str) -> str:
        return f"VOICENLU_{name.upper()}"

    def to_env(self) -> dict[str, str]:
        """The settings as environment variables, for worker processes."""
        return {self.env_name(k): str(v) for k, v in self.asdict().items()}

    @classmethod
    def from_env(cls, environ=os.environ) -> Limits:
        """Limits from VOICENLU_<NAME> variables; unset ones keep their defaults."""
        values = {}
        for f in dataclasses.fields(cls):
            raw = environ.get(cls.env_name(f.name), "").strip()
            if not raw:
                continue
            kind = int if f.type == "int" else float
            try:
                values[f.name] = kind(raw)
            except ValueError:
                raise ConfigError(
                    f"{cls.env_name(f.name)}={raw!r} is not a valid {kind.__name__}."
                ) from None
        return cls(**values)


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

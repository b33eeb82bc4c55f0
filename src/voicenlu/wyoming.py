"""The Wyoming protocol service: speech to text and intent recognition for Home Assistant.

Home Assistant, Rhasspy and other voice stacks talk to speech and intent services over Wyoming
(the ``wyoming`` package, the optional extra ``voicenlu[wyoming]``): JSON events, each a header
line, optional JSON data and an optional binary payload. One bundle serves two programs:

- ``describe`` -> ``info``: an ASR program (when the bundle can hear: the speech extra and its
  ``speech.json``) and an intent program, language ``en``, the bundle's intents in its
  description;
- ``transcript`` or ``recognize`` (text) -> ``intent`` (name, entities, text) or
  ``not-recognized``. A text that holds several requests (a parse result with ``requests``)
  answers ``intents-start``, one ``intent`` per request, ``intents-stop``: the protocol's
  multi-intent form, which a client from before it reads as its first intent. If any request
  is out of scope the whole text is ``not-recognized``, naming the part not understood, so
  half a command is never carried out;
- ``audio-start``, ``audio-chunk``..., ``audio-stop`` (after an optional ``transcribe``) ->
  ``transcript``, then the ``intent`` or ``not-recognized`` of what was heard. Home
  Assistant's speech-to-text reads the transcript and hangs up; a client that reads on gets
  the intent without a second round trip.

An entity is a slot: ``name`` the slot name, ``value`` the resolved value when there is one
(a custom entity's canonical value, a number, an ISO time; ``{"from", "to"}`` for an interval)
and the slot's text otherwise. A Wyoming entity has no other field (clients build it from
exactly ``name`` and ``value``), so the texts as spoken, offsets and confidences travel in the
intent's ``context`` under ``"voicenlu"``.

Everything is bounded: an event's size, a stream's length, the wait for the next event and
the number of connections. A connection that breaks the protocol is closed with a log line;
a request the service cannot serve gets an ``error`` event saying why. Recognition runs in
worker threads, off the event loop: every client is read and described while a recording is
recognised, text requests never wait behind one, and recordings are recognised one at a time
(the recogniser already uses every core).
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlparse

import numpy as np
from wyoming.asr import Transcribe, Transcript
from wyoming.audio import AudioChunk, AudioChunkConverter, AudioStart, AudioStop
from wyoming.error import Error
from wyoming.event import Event, async_write_event
from wyoming.info import (
    AsrModel,
    AsrProgram,
    Attribution,
    Describe,
    Info,
    IntentModel,
    IntentProgram,
)
from wyoming.intent import Entity, Intent, IntentsStart, IntentsStop, NotRecognized, Recognize
from wyoming.ping import Ping, Pong
from wyoming.server import AsyncEventHandler, AsyncServer

from voicenlu.config import AUDIO_SAMPLE_RATE, WYOMING_URI, WyomingLimits
from voicenlu.errors import ConfigError, InputError, VoiceNLUError
from voicenlu.runtime import Parser
from voicenlu.version import __version__

log = logging.getLogger(__name__)

LANGUAGES = ["en"]
SAMPLE_WIDTH = 2  # bytes: what the recogniser hears is 16 kHz mono 16-bit PCM
CHANNELS = (1, 2)  # the wyoming package's converter mixes stereo down; more is refused
MIN_RATE, MAX_RATE = 8_000, 192_000


class ProtocolError(Exception):
    """The peer broke the protocol (not JSON, too big, cut off): the connection is closed."""


# --- parse results -> Wyoming events ---


def entity_value(slot: dict):
    """The value a client acts on: the resolved value when there is one, else the text."""
    resolved = slot.get("resolved")
    if not resolved:
        return slot["value"]
    if resolved.get("type") == "interval":
        ends = {k: resolved.get(k) for k in ("from", "to")}
        return {k: None if end is None else end["value"] for k, end in ends.items()}
    return resolved.get("value", slot["value"])


def intent_of(result: dict) -> Intent:
    """One in-scope parse result as a Wyoming ``intent``."""
    slots = result["slots"]
    details = {
        "confidence": result["intent"]["confidence"],
        "slots": [
            {k: s[k] for k in ("slot", "value", "start", "end", "confidence", "resolved")}
            for s in slots
        ],
    }
    return Intent(
        name=result["intent"]["name"],
        entities=[Entity(s["slot"], entity_value(s)) for s in slots],
        text=result["text"],
        context={"voicenlu": details},
    )


def intent_events(result: dict) -> list[Event]:
    """The answer to a parse result: ``intent``, ``not-recognized``, or for several requests
    ``intents-start``, one ``intent`` each, ``intents-stop`` (DESIGN section 4's ``requests``)."""
    requests = result.get("requests") or [result]
    missed = [r for r in requests if not r["in_scope"]]
    if missed:
        heard = " / ".join(r["text"] for r in missed)
        return [NotRecognized(text=f"Sorry, I did not understand: {heard}").event()]
    if len(requests) == 1:
        return [intent_of(requests[0]).event()]
    return [
        IntentsStart().event(),
        *(intent_of(r).event() for r in requests),
        IntentsStop().event(),
    ]


# --- audio ---


class AudioStream:
    """One ``audio-start`` ... ``audio-stop`` stream, as 16 kHz mono 16-bit PCM, bounded."""

    def __init__(self, start: AudioStart, max_seconds: float):
        if start.channels not in CHANNELS or start.width not in (1, 2, 3, 4):
            raise InputError(
                f"audio of {start.channels} channels of {8 * start.width}-bit samples: send "
                "16 kHz mono 16-bit PCM (stereo and 8 to 32-bit samples are converted)."
            )
        if not MIN_RATE <= start.rate <= MAX_RATE:
            raise InputError(
                f"audio sampled at {start.rate} Hz: send 16 kHz (rates from {MIN_RATE} to "
                f"{MAX_RATE} Hz are converted)."
            )
        self.format = (start.rate, start.width, start.channels)
        self.converter = AudioChunkConverter(AUDIO_SAMPLE_RATE, SAMPLE_WIDTH, 1)
        self.max_seconds = max_seconds
        self.max_bytes = int(max_seconds * AUDIO_SAMPLE_RATE) * SAMPLE_WIDTH
        self.pcm = bytearray()

    def add(self, chunk: AudioChunk) -> None:
        if (chunk.rate, chunk.width, chunk.channels) != self.format:
            raise InputError(
                f"an audio-chunk of {chunk.rate} Hz, {chunk.width} bytes, {chunk.channels} "
                f"channels in a stream that started as {self.format[0]} Hz, {self.format[1]} "
                f"bytes, {self.format[2]} channels: keep one format per stream."
            )
        if len(chunk.audio) % (chunk.width * chunk.channels):
            raise InputError(
                f"an audio-chunk of {len(chunk.audio)} bytes is not a whole number of "
                f"{chunk.width * chunk.channels}-byte frames."
            )
        converted = self.converter.convert(chunk).audio
        if len(self.pcm) + len(converted) > self.max_bytes:
            raise InputError(
                f"the audio stream is longer than {self.max_seconds:g} s: send one command "
                "per stream."
            )
        self.pcm += converted


def recognise(parser: Parser, pcm: bytes, max_seconds: float) -> dict:
    """The parse result of one spoken command, 16 kHz mono 16-bit PCM recorded whole."""
    samples = np.frombuffer(pcm, dtype="<i2")
    return parser.parse_audio(samples, AUDIO_SAMPLE_RATE, max_seconds=max_seconds)


# --- the service ---


def describe(parser: Parser, hears: bool) -> Info:
    """The ``info`` event's content: the programs this bundle serves."""
    me = Attribution(name="voicenlu", url="")
    name = parser.bundle.resolve().name
    intents = ", ".join(parser.intents)
    asr = []
    if hears:
        from voicenlu.speech import MODEL_NAME

        model = AsrModel(
            name=MODEL_NAME,
            attribution=Attribution(name="OpenAI", url="https://github.com/openai/whisper"),
            installed=True,
            description="Whisper tiny.en, prompted and snapped with the bundle's training data",
            version=None,
            languages=LANGUAGES,
        )
        asr = [
            AsrProgram(
                name="voicenlu-asr",
                attribution=me,
                installed=True,
                description=f"speech to text for the assistant {name}",
                version=__version__,
                models=[model],
            )
        ]
    model = IntentModel(
        name=name,
        attribution=me,
        installed=True,
        description=f"intents: {intents}",
        version=parser.manifest.get("digest"),
        languages=LANGUAGES,
    )
    intent = IntentProgram(
        name="voicenlu",
        attribution=me,
        installed=True,
        description=f"intents and slots of the assistant {name}",
        version=__version__,
        models=[model],
    )
    return Info(asr=asr, intent=[intent])


class Service:
    """What the connections share: the parser, the bounds, the worker threads."""

    def __init__(self, parser: Parser, limits: WyomingLimits, hears: bool):
        self.parser = parser
        self.limits = limits
        self.hears = hears
        self.info = describe(parser, hears).event()
        # Text is parsed in milliseconds, speech takes most of a second: separate workers, so
        # a recording never queues a text request behind it.
        self.text_pool = ThreadPoolExecutor(2, thread_name_prefix="voicenlu-text")
        self.speech_pool = ThreadPoolExecutor(1, thread_name_prefix="voicenlu-speech")
        self.connections = 0

    @classmethod
    def load(cls, bundle, limits: WyomingLimits, threads: int | None = None) -> Service:
        """Load the bundle, and its recogniser when it can hear (else serve intents only)."""
        from voicenlu.speech import SpeechUnavailable

        parser = Parser.load(bundle, threads=threads, spin_wait=False)
        try:
            parser.recogniser()
            hears = True
        except SpeechUnavailable as exc:
            log.warning("serving intents from text only: %s", exc)
            hears = False
        return cls(parser, limits, hears)

    async def run(self, uri: str, ready=None) -> None:
        """Serve ``uri`` (``tcp://HOST:PORT`` or ``unix://PATH``) until cancelled; ``ready`` is
        called once it listens."""
        server = server_for(uri)

        def handler(reader, writer):
            return Connection(reader, writer, self)

        try:
            await server.start(handler)
        except OSError as exc:
            raise ConfigError(f"cannot listen on {uri}: {exc.strerror or exc}.") from None
        if ready is not None:
            ready()
        try:
            await asyncio.Event().wait()  # until cancelled
        finally:
            await server.stop()
            self.text_pool.shutdown(wait=False, cancel_futures=True)
            self.speech_pool.shutdown(wait=False, cancel_futures=True)


def server_for(uri: str) -> AsyncServer:
    parsed = urlparse(uri)
    if parsed.scheme == "stdio":
        raise ConfigError("stdio:// serves one client at a time: use tcp://HOST:PORT.")
    try:
        return AsyncServer.from_uri(uri)
    except ValueError as exc:
        raise ConfigError(f"--uri {uri!r}: {exc}; for example {WYOMING_URI}.") from None


async def read_event(reader: asyncio.StreamReader, max_bytes: int) -> Event | None:
    """The next event, or None at the end of the stream; ``ProtocolError`` for anything that
    is not a Wyoming event of at most ``max_bytes`` of data and payload."""
    try:
        line = await reader.readline()
    except ValueError:  # asyncio's line limit (64 KiB)
        raise ProtocolError("an event header line longer than 64 KiB") from None
    if not line:
        return None
    try:
        header = json.loads(line)
    except ValueError:
        raise ProtocolError(
            f"not a Wyoming event (the header is not JSON): {line[:60]!r}"
        ) from None
    if not isinstance(header, dict) or not isinstance(header.get("type"), str):
        raise ProtocolError(f"an event header without a 'type': {line[:60]!r}")
    data = header.get("data") or {}
    lengths = [header.get(k) or 0 for k in ("data_length", "payload_length")]
    if not isinstance(data, dict) or not all(type(n) is int and n >= 0 for n in lengths):
        raise ProtocolError(f"a malformed {header['type']} header: {line[:80]!r}")
    if sum(lengths) > max_bytes:
        raise ProtocolError(
            f"a {header['type']} event of {sum(lengths)} bytes (at most {max_bytes})"
        )
    try:
        if lengths[0]:
            extra = json.loads(await reader.readexactly(lengths[0]))
            if not isinstance(extra, dict):
                raise ProtocolError(f"{header['type']} data that is not a JSON object")
            data = {**data, **extra}
        payload = await reader.readexactly(lengths[1]) if lengths[1] else None
    except asyncio.IncompleteReadError:
        raise ProtocolError(f"the connection closed inside a {header['type']} event") from None
    except ValueError:
        raise ProtocolError(f"{header['type']} data that is not JSON") from None
    return Event(type=header["type"], data=data, payload=payload)


class Connection(AsyncEventHandler):
    """One client: events in order; recognition in the service's worker threads."""

    def __init__(self, reader, writer, service: Service):
        super().__init__(reader, writer)
        self.service = service
        self.limits = service.limits
        self.peer = writer.get_extra_info("peername") or "a client"
        self.stream: AudioStream | None = None

    async def run(self) -> None:
        """Read bounded events until the client leaves, errs or idles (replaces the package's
        loop, which trusts lengths and closes on garbage without a word)."""
        service = self.service
        service.connections += 1
        try:
            if service.connections > self.limits.max_connections:
                log.warning("refusing %s: %d connections open", self.peer, service.connections - 1)
                await self.write_error("the service is busy: try again shortly", "busy")
                return
            while True:
                event = await asyncio.wait_for(
                    read_event(self.reader, self.limits.max_event_bytes),
                    self.limits.idle_timeout,
                )
                if event is None or not await self.handle_event(event):
                    break
        except ProtocolError as exc:
            log.warning("closing the connection from %s: %s", self.peer, exc)
        except TimeoutError:
            log.info("closing the connection from %s: idle", self.peer)
        except ConnectionError as exc:
            log.info("the connection from %s broke: %s", self.peer, exc)
        except Exception:  # a defect: keep serving the others, and say where it was
            log.exception("closing the connection from %s after an unexpected error", self.peer)
        finally:
            service.connections -= 1
            self.writer.close()

    async def write_error(self, text: str, code: str) -> None:
        await async_write_event(Error(text=text, code=code).event(), self.writer)

    async def handle_event(self, event: Event) -> bool:
        """Answer one event; False closes the connection."""
        try:
            return await self.answer(event)
        except (KeyError, TypeError, ValueError) as exc:
            # from_event() of an event missing a field or with a field of the wrong type.
            await self.write_error(f"a malformed {event.type} event ({exc!r})", "bad-event")
            log.warning("closing the connection from %s: malformed %s", self.peer, event.type)
            return False

    async def answer(self, event: Event) -> bool:
        if Describe.is_type(event.type):
            await self.write_event(self.service.info)
        elif Ping.is_type(event.type):
            await self.write_event(Pong(text=Ping.from_event(event).text).event())
        elif Transcript.is_type(event.type) or Recognize.is_type(event.type):
            text = event.data["text"]
            if not isinstance(text, str):
                raise TypeError(f"'text' must be a string, not {type(text).__name__}")
            await self.understand(text)
        elif Transcribe.is_type(event.type):
            language = Transcribe.from_event(event).language
            if language and not language.lower().startswith("en"):
                await self.write_error(f"voicenlu hears English, not {language!r}", "language")
        elif AudioStart.is_type(event.type):
            return await self.start_audio(AudioStart.from_event(event))
        elif AudioChunk.is_type(event.type):
            return await self.add_audio(AudioChunk.from_event(event))
        elif AudioStop.is_type(event.type):
            return await self.stop_audio()
        else:  # the protocol asks servers to drop events they do not know
            log.debug("dropping a %s event from %s", event.type, self.peer)
        return True

    async def understand(self, text: str) -> None:
        if not text.strip():
            await self.write_event(
                NotRecognized(text="Nothing to understand: the text is empty.").event()
            )
            return
        if len(text) > self.limits.max_chars:
            await self.write_error(
                f"a text of {len(text)} characters; at most {self.limits.max_chars}",
                "too-long",
            )
            return
        loop = asyncio.get_running_loop()
        result = await loop.run_in_executor(self.service.text_pool, self.service.parser.parse, text)
        for answer in intent_events(result):
            await self.write_event(answer)

    async def start_audio(self, start: AudioStart) -> bool:
        if not self.service.hears:
            await self.write_error(
                "this service understands text only: install voicenlu[speech] and use a bundle "
                "trained with it",
                "no-speech",
            )
            return False
        try:
            self.stream = AudioStream(start, self.limits.max_audio_seconds)
        except InputError as exc:
            await self.write_error(str(exc), "audio-format")
            return False
        return True

    async def add_audio(self, chunk: AudioChunk) -> bool:
        if self.stream is None:
            await self.write_error("an audio-chunk before audio-start", "bad-event")
            return False
        try:
            self.stream.add(chunk)
        except InputError as exc:
            await self.write_error(str(exc), "audio-format")
            return False
        return True

    async def stop_audio(self) -> bool:
        if self.stream is None:
            await self.write_error("an audio-stop before audio-start", "bad-event")
            return False
        pcm, self.stream = bytes(self.stream.pcm), None
        loop = asyncio.get_running_loop()
        limit = self.limits.max_audio_seconds
        try:
            result = await loop.run_in_executor(
                self.service.speech_pool, recognise, self.service.parser, pcm, limit
            )
        except VoiceNLUError as exc:  # nothing heard, or no samples at all
            await self.write_event(Transcript(text="", language="en").event())
            await self.write_event(NotRecognized(text=str(exc)).event())
            return True
        await self.write_event(Transcript(text=result["transcript"], language="en").event())
        for answer in intent_events(result):
            await self.write_event(answer)
        return True


def serve(
    bundle,
    uri: str = WYOMING_URI,
    limits: WyomingLimits | None = None,
    threads: int | None = None,
) -> None:
    """Load ``bundle`` and serve it over Wyoming at ``uri`` until interrupted."""
    server_for(uri)  # a bad URI is refused before the model loads
    service = Service.load(bundle, limits or WyomingLimits(), threads)
    programs = "speech to text and intents" if service.hears else "intents from text"
    ready = f"voicenlu wyoming: serving {programs} on {uri}"
    asyncio.run(service.run(uri, ready=lambda: print(ready, file=sys.stderr, flush=True)))

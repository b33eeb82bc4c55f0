"""The Wyoming service, started as a user starts it (`voicenlu wyoming BUNDLE --uri ...`) and
spoken to over loopback with the wyoming package's own client, as Home Assistant does.

Spoken requests are rendered by espeak-ng (see test_speech).
"""

from __future__ import annotations

import asyncio
import io
import json
import socket
import subprocess
import sys
import threading
import wave

import numpy as np
import pytest
from test_speech import WEATHER, needs_espeak, speak
from wyoming.asr import Transcribe, Transcript
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.client import AsyncTcpClient
from wyoming.error import Error
from wyoming.event import Event
from wyoming.info import Describe, Info
from wyoming.intent import Intent, IntentsStart, IntentsStop, NotRecognized, Recognize

from voicenlu.cli import main
from voicenlu.runtime import Parser
from voicenlu.wyoming import entity_value, intent_events

MAX_AUDIO_SECONDS = 8
GIBBERISH = "zxqv blorp wug snarf klimt"
RATE = "rate this book five stars"  # a custom entity's synonym ("this": current) and a number
BOOK = "book a table for four people tomorrow at 8 pm"  # a number and a time


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Running:
    """A `voicenlu wyoming` process and what it has logged so far."""

    def __init__(self, bundle):
        self.port = free_port()
        self.lines: list[str] = []
        self.process = subprocess.Popen(
            [sys.executable, "-m", "voicenlu", "wyoming", str(bundle)]
            + ["--uri", f"tcp://127.0.0.1:{self.port}"]
            + ["--max-audio-seconds", str(MAX_AUDIO_SECONDS), "--max-event-bytes", "65536"],
            stderr=subprocess.PIPE,
            text=True,
        )
        self.logged = threading.Condition()

        def read_log():
            for line in self.process.stderr:
                with self.logged:
                    self.lines.append(line)
                    self.logged.notify_all()
            with self.logged:
                self.lines.append("(the service ended)\n")
                self.logged.notify_all()

        threading.Thread(target=read_log, daemon=True).start()
        self.wait_for("voicenlu wyoming: serving", 0)

    def wait_for(self, text: str, since: int) -> str:
        """The first line logged from line ``since`` on that holds ``text``; fails if the
        service ends first."""
        with self.logged:
            seen = since
            while True:
                for line in self.lines[seen:]:
                    assert "(the service ended)" not in line, self.log
                    if text in line:
                        return line
                seen = len(self.lines)
                assert self.logged.wait(timeout=600), f"no {text!r} in the log: {self.log}"

    @property
    def log(self) -> str:
        return "".join(self.lines)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=60)


@pytest.fixture(scope="module")
def service(tiny_bundle):
    running = Running(tiny_bundle)
    yield running
    running.stop()
    assert "Traceback" not in running.log, running.log


@pytest.fixture(scope="module")
def parser(tiny_bundle) -> Parser:
    return Parser.load(tiny_bundle)


async def ask(port: int, events: list[Event], answers: int, sent=None) -> list[Event]:
    """Send ``events`` with the wyoming client; read ``answers`` events (fewer if the service
    closes the connection). ``sent``, an asyncio.Event, is set once all are written."""
    async with AsyncTcpClient("127.0.0.1", port) as client:
        for event in events:
            await client.write_event(event)
        if sent is not None:
            sent.set()
        got = []
        while len(got) < answers:
            event = await asyncio.wait_for(client.read_event(), 300)
            if event is None:
                break
            got.append(event)
        return got


def exchange(port: int, events: list[Event], answers: int = 1) -> list[Event]:
    return asyncio.run(ask(port, events, answers))


def audio_events(wav: bytes, channels: int = 1, chunk_ms: int = 20) -> list[Event]:
    """A WAV's frames as ``audio-start``, 20 ms ``audio-chunk``s and ``audio-stop``; with
    ``channels=2`` the mono signal is written to both channels."""
    with wave.open(io.BytesIO(wav)) as w:
        rate, width = w.getframerate(), w.getsampwidth()
        samples = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    pcm = np.repeat(samples, channels).astype("<i2").tobytes()
    step = rate * chunk_ms // 1000 * width * channels
    chunks = [
        AudioChunk(rate, width, channels, pcm[i : i + step]).event()
        for i in range(0, len(pcm), step)
    ]
    return [AudioStart(rate, width, channels).event(), *chunks, AudioStop().event()]


def as_intent(event: Event) -> Intent:
    assert Intent.is_type(event.type), event
    return Intent.from_event(event)


# --- describe ---


def test_describe_names_an_asr_and_an_intent_program(service, parser):
    [event] = exchange(service.port, [Describe().event()])
    info = Info.from_event(event)  # the way Home Assistant reads it
    [asr], [intent] = info.asr, info.intent
    assert asr.installed and asr.models[0].languages == ["en"]
    assert intent.installed and intent.models[0].languages == ["en"]
    assert intent.models[0].installed
    described = intent.models[0].description
    assert all(name in described for name in parser.intents)
    assert intent.models[0].name == parser.bundle.resolve().name


# --- text ---


def entities(intent: Intent) -> dict:
    return {e.name: e.value for e in intent.entities}


def spoken(intent: Intent) -> dict:
    return {s["slot"]: s["value"] for s in intent.context["voicenlu"]["slots"]}


def check_rating(intent: Intent, expected: dict) -> None:
    """The known request: its intent, each slot an entity with its resolved value, the text,
    and the slot texts as said."""
    assert intent.name == "RateBook" and intent.text == RATE
    assert entities(intent) == {s["slot"]: entity_value(s) for s in expected["slots"]}
    assert entities(intent)["object_select"] == "current"  # "this", a synonym of "current"
    assert entities(intent)["rating_value"] == 5  # "five"
    assert spoken(intent)["object_select"] == "this" and spoken(intent)["rating_value"] == "five"


def test_a_transcript_comes_back_as_its_intent(service, parser):
    expected = parser.parse(RATE)
    # What Home Assistant's conversation agent sends: the text with its context.
    ha = Transcript(RATE, context={"conversation_id": "01J"}, language="en").event()
    [answer] = exchange(service.port, [ha])
    check_rating(as_intent(answer), expected)
    [answer] = exchange(service.port, [Recognize(RATE).event()])
    check_rating(as_intent(answer), expected)


def test_numbers_and_times_arrive_resolved(service, parser):
    expected = {s["slot"]: s for s in parser.parse(BOOK)["slots"]}
    [answer] = exchange(service.port, [Recognize(BOOK).event()])
    intent = as_intent(answer)
    assert intent.name == "BookRestaurant"
    assert entities(intent)["party_size_number"] == 4
    time = expected["timeRange"]["resolved"]
    assert entities(intent)["timeRange"] == time["value"]  # an ISO instant, not "8 pm"
    # "tomorrow" and "at 8 pm" are one time: one entity with its whole text.
    assert time["value"].startswith("20") and spoken(intent)["timeRange"] == "tomorrow at 8 pm"


def test_out_of_scope_and_empty_texts_are_not_recognized(service, parser):
    assert parser.parse(GIBBERISH)["in_scope"] is False
    answers = exchange(service.port, [Recognize(GIBBERISH).event(), Recognize("  ").event()], 2)
    assert [a.type for a in answers] == ["not-recognized", "not-recognized"]
    assert GIBBERISH in NotRecognized.from_event(answers[0]).text
    assert "empty" in NotRecognized.from_event(answers[1]).text


def test_a_text_too_long_gets_an_error(service):
    [answer] = exchange(service.port, [Recognize("turn it up " * 200).event()])
    assert Error.from_event(answer).text == "a text of 2200 characters; at most 1000"


# --- several requests in one text ---


def combined(first: dict, second: dict) -> dict:
    """Two parse results in the shape DESIGN section 4 gives a text holding two requests:
    the first's fields on top, ``requests`` with offsets into the whole text."""
    joiner = " and "
    shift = len(first["text"]) + len(joiner)
    moved = {
        **second,
        "slots": [
            {**s, "start": s["start"] + shift, "end": s["end"] + shift} for s in second["slots"]
        ],
    }
    return {**first, "text": first["text"] + joiner + second["text"], "requests": [first, moved]}


def test_several_requests_become_the_multi_intent_events(parser):
    # The parser does not split texts yet: two real results, combined as documented.
    rating = parser.parse(RATE)
    music = parser.parse("play some jazz by Miles Davis")
    assert music["intent"]["name"] == "PlayMusic" and music["in_scope"]
    events = intent_events(combined(rating, music))
    assert [e.type for e in events] == ["intents-start", "intent", "intent", "intents-stop"]
    assert IntentsStart.is_type(events[0].type) and IntentsStop.is_type(events[-1].type)
    first, second = (Intent.from_event(e) for e in events[1:3])
    check_rating(first, rating)
    assert second.name == "PlayMusic" and second.text == music["text"]
    assert entities(second) == {s["slot"]: entity_value(s) for s in music["slots"]}
    assert entities(second)["artist"] == "Miles Davis"
    # A single request (a list of one) stays one plain intent.
    assert [e.type for e in intent_events({**rating, "requests": [rating]})] == ["intent"]


def test_half_understood_text_is_not_recognized_at_all(parser):
    rating = parser.parse(RATE)
    rejected = parser.parse(GIBBERISH)
    assert rejected["in_scope"] is False
    [event] = intent_events(combined(rating, rejected))
    assert NotRecognized.is_type(event.type)
    assert GIBBERISH in NotRecognized.from_event(event).text


def test_entity_values_prefer_what_the_slot_resolves_to():
    def slot(value, resolved):
        return {"slot": "s", "value": value, "resolved": resolved}

    custom = {"kind": "custom", "entity": "room", "value": "living room", "match": "synonym"}
    assert entity_value(slot("lounge", custom)) == "living room"
    assert entity_value(slot("four", {"kind": "number", "value": 4})) == 4
    interval = {
        "kind": "time",
        "type": "interval",
        "from": {"value": "2026-11-29T18:00:00.000+00:00", "grain": "hour"},
        "to": None,
    }
    assert entity_value(slot("after six", interval)) == {
        "from": "2026-11-29T18:00:00.000+00:00",
        "to": None,
    }
    assert entity_value(slot("Boston", None)) == "Boston"


# --- audio ---


@needs_espeak
def test_a_spoken_request_streams_in_and_comes_back_transcribed_and_understood(service, parser):
    events = [Transcribe(language="en").event(), *audio_events(speak(WEATHER))]
    transcript, answer = exchange(service.port, events, 2)
    heard = Transcript.from_event(transcript).text
    assert "berlin" in heard.lower(), heard
    intent = as_intent(answer)
    assert intent.name == "GetWeather"
    # The entities of the transcript's text, as the parser finds them typed.
    typed = parser.parse(heard)
    assert set(entities(intent)) == {s["slot"] for s in typed["slots"]} and typed["slots"]


@needs_espeak
def test_other_rates_and_stereo_are_converted(service):
    events = audio_events(speak(WEATHER, rate=22_050), channels=2)
    transcript, answer = exchange(service.port, events, 2)
    assert "berlin" in Transcript.from_event(transcript).text.lower()
    assert as_intent(answer).name == "GetWeather"


def test_an_empty_stream_is_transcribed_as_nothing_and_not_recognized(service):
    events = [AudioStart(16_000, 2, 1).event(), AudioStop().event()]
    transcript, answer = exchange(service.port, events, 2)
    assert Transcript.from_event(transcript).text == ""
    assert "holds no samples" in NotRecognized.from_event(answer).text


@needs_espeak
def test_a_recording_does_not_hold_up_other_clients(service):
    """A client that asks once a recording is sent is answered before the recording is."""
    order: list[str] = []
    spoken = audio_events(speak(WEATHER))

    async def both():
        sent = asyncio.Event()

        async def speaker():
            await ask(service.port, spoken, 2, sent)
            order.append("speech")

        speaking = asyncio.create_task(speaker())
        await sent.wait()
        answers = await ask(service.port, [Describe().event(), Recognize(RATE).event()], 2)
        assert [a.type for a in answers] == ["info", "intent"]
        order.append("text")
        await speaking

    asyncio.run(both())
    assert order == ["text", "speech"]


# --- bounds and bad input ---


def error_of(events: list[Event]) -> str:
    assert len(events) == 1 and Error.is_type(events[0].type), events
    return Error.from_event(events[0]).text


def test_unsupported_audio_is_refused_with_the_fix(service):
    three = exchange(service.port, [AudioStart(16_000, 2, 3).event()], 2)
    assert "3 channels" in error_of(three) and "16 kHz mono 16-bit" in error_of(three)
    slow = exchange(service.port, [AudioStart(4_000, 2, 1).event()], 2)
    assert "4000 Hz" in error_of(slow)
    stray = exchange(service.port, [AudioChunk(16_000, 2, 1, bytes(640)).event()], 2)
    assert error_of(stray) == "an audio-chunk before audio-start"
    ragged = [AudioStart(16_000, 2, 1).event(), AudioChunk(16_000, 2, 1, bytes(641)).event()]
    assert "whole number of 2-byte frames" in error_of(exchange(service.port, ragged, 2))
    mixed = [AudioStart(16_000, 2, 1).event(), AudioChunk(22_050, 2, 1, bytes(640)).event()]
    assert "keep one format per stream" in error_of(exchange(service.port, mixed, 2))


def test_a_stream_longer_than_the_limit_is_cut_off(service):
    second = AudioChunk(16_000, 2, 1, bytes(32_000)).event()
    # The last second is one too many: the service stops reading there.
    events = [AudioStart(16_000, 2, 1).event()] + [second] * (MAX_AUDIO_SECONDS + 1)
    text = error_of(exchange(service.port, events, 2))
    assert text == (
        f"the audio stream is longer than {MAX_AUDIO_SECONDS} s: send one command per stream."
    )


def test_a_malformed_event_gets_an_error_and_the_connection_closes(service):
    events = exchange(service.port, [Event("transcript", {"texte": "hi"})], 2)
    assert "malformed transcript" in error_of(events)
    events = exchange(service.port, [Event("recognize", {"text": 42})], 2)
    assert "'text' must be a string" in error_of(events)


async def raw(port: int, data: bytes) -> bytes:
    """Write ``data`` on a plain socket and end it; what comes back before the service closes
    the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    writer.write_eof()
    try:
        back = await asyncio.wait_for(reader.read(), 300)
    except ConnectionResetError:  # closed with some of what was sent unread
        back = b""
    writer.close()
    return back


def header(**fields) -> bytes:
    return json.dumps(fields).encode() + b"\n"


@pytest.mark.parametrize(
    "garbage, logged",
    [
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "not a Wyoming event (the header is not JSON)"),
        (b"[1, 2]\n", "an event header without a 'type'"),
        (header(type="audio-chunk", payload_length=10**9), "bytes (at most 65536)"),
        (header(type="recognize", data_length=-5), "a malformed recognize header"),
        (header(type="recognize", data_length=40) + b"{}", "closed inside a recognize event"),
        (b"x" * 70_000 + b"\n", "longer than 64 KiB"),
    ],
)
def test_garbage_closes_the_connection_with_a_log_line(service, garbage, logged):
    with service.logged:
        seen = len(service.lines)
    assert asyncio.run(raw(service.port, garbage)) == b""
    # Its own line: another test's connection may log its closing after ``seen``.
    assert "closing the connection" in service.wait_for(logged, seen), service.log[-2000:]
    # and the service goes on serving
    [info] = exchange(service.port, [Describe().event()])
    assert Info.is_type(info.type)


def test_unknown_events_are_dropped(service):
    answers = exchange(service.port, [Event("run-satellite"), Describe().event()])
    assert [a.type for a in answers] == ["info"]


# --- the command ---


def test_the_command_refuses_bad_options_without_a_traceback(capsys):
    assert main(["wyoming", "no-such-bundle"]) == 1
    assert "No model bundle at no-such-bundle" in capsys.readouterr().err
    assert main(["wyoming", "no-such-bundle", "--uri", "http://127.0.0.1:10300"]) == 1
    assert "tcp://" in capsys.readouterr().err
    assert main(["wyoming", "no-such-bundle", "--max-audio-seconds", "45"]) == 1
    assert "at most 30" in capsys.readouterr().err


def test_a_port_in_use_is_named(tiny_bundle, service):
    uri = f"tcp://127.0.0.1:{service.port}"
    done = subprocess.run(
        [sys.executable, "-m", "voicenlu", "wyoming", str(tiny_bundle), "--uri", uri],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 1 and f"cannot listen on {uri}" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr

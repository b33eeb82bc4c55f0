"""Whisper in a process of its own: beside Duckling without corrupting memory, and a crash or
a hang costs one recording, not the process that asked."""

from __future__ import annotations

import os
import signal

import pytest
from test_speech import WEATHER, needs_espeak, speak

from voicenlu import speech
from voicenlu.runtime import Parser
from voicenlu.speech import RecogniserFailed, Whisper, read_audio


@pytest.fixture(scope="module")
def weather():
    return read_audio(speak(WEATHER))


@pytest.fixture()
def whisper():
    recogniser = Whisper({"prompt": ""}, threads=1)
    yield recogniser
    recogniser.stop()


@needs_espeak
def test_speech_and_values_share_a_process(tiny_bundle, weather):
    """Alternating transcriptions with Duckling's parses aborted the process (glibc heap
    corruption) when Whisper ran in it."""
    parser = Parser.load(tiny_bundle)
    for _ in range(12):
        heard = parser.parse_audio(weather, sample_rate=16_000)
        assert "berlin" in heard["text"].lower()
        for _ in range(20):
            result = parser.parse("book a table for four people tomorrow at 8 pm")
        assert any(s["resolved"] for s in result["slots"]), result


@needs_espeak
def test_a_hung_recogniser_costs_one_recording(whisper, weather, monkeypatch):
    assert "berlin" in whisper(weather).lower()
    os.kill(whisper.process.pid, signal.SIGSTOP)
    monkeypatch.setattr(speech, "WHISPER_TIMEOUT_S", 2)
    with pytest.raises(RecogniserFailed, match="took over 2 s"):
        whisper(weather)
    assert whisper.process is None
    assert "berlin" in whisper(weather).lower()  # a new process answers the next one


@needs_espeak
def test_a_crashed_recogniser_costs_one_recording(whisper, weather):
    assert "berlin" in whisper(weather).lower()
    pid = whisper.process.pid
    os.kill(pid, signal.SIGSTOP)  # it cannot answer before it dies
    whisper.pipe.send((weather, whisper.options(3.0)))  # a recording in flight
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(RecogniserFailed, match=r"stopped \(exit code -9\)"):
        whisper.answer(60, "transcribe the recording")
    assert whisper.process is None
    assert "berlin" in whisper(weather).lower()

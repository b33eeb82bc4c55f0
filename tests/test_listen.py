"""Listening: WAV variants, voice-activity detection, the closed-domain grammar, no-speech
answers, and streams cut into one result per spoken command.

Real audio only: Picovoice's recorded coffee orders (``$VOICENLU_PICOVOICE_DIR``, else
``../shared`` beside the repository), requests spoken by espeak-ng, generated tones and noise.
"""

import json
import os
import struct
from pathlib import Path

import httpx
import numpy as np
import pytest
from test_server import live_server
from test_speech import WEATHER, needs_espeak, post_wav, speak, wav_bytes

from voicenlu.data.records import SlotSpan, Utterance
from voicenlu.data.training import file_data
from voicenlu.grammar import GrammarDecoder, grammar_settings, word_graph
from voicenlu.listen import END_SILENCE_MS, Endpointer, VoiceDetector
from voicenlu.runtime import Parser
from voicenlu.server import create_app
from voicenlu.speech import (
    GRAMMAR_MIN_SCORE,
    AudioError,
    Recogniser,
    domain_settings,
    read_audio,
)

PICOVOICE = Path(
    os.environ.get(
        "VOICENLU_PICOVOICE_DIR",
        Path(__file__).resolve().parents[2] / "shared/data/picovoice-speech-to-intent",
    )
)
needs_recordings = pytest.mark.skipif(
    not (PICOVOICE / "label.json").is_file() and not os.environ.get("CI"),
    reason="the Picovoice recordings are not at hand",
)
RATE = 16_000


def pcm_of(wav: bytes) -> np.ndarray:
    return (read_audio(wav) * 32768).astype(np.int16)


def recording(index: int) -> tuple[np.ndarray, dict]:
    """The ``index``-th Picovoice recording (by file name) as int16, and its label."""
    labels = json.loads((PICOVOICE / "label.json").read_text())
    name = sorted(labels)[index]
    return pcm_of((PICOVOICE / "speech/clean" / name).read_bytes()), labels[name]


def non_speech() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    t = np.arange(4 * RATE) / RATE
    melody = np.concatenate(
        [np.sin(2 * np.pi * f * t[: RATE // 2]) * np.exp(-4 * t[: RATE // 2]) for f in
         (262, 330, 392, 523, 392, 330, 262, 196)]
    )  # fmt: skip
    return {
        "silence": np.zeros(2 * RATE),
        "tone": 0.5 * np.sin(2 * np.pi * 440 * t[:RATE]),
        "white noise": 0.2 * rng.standard_normal(3 * RATE),
        "melody": 0.3 * melody,
    }


# --- WAV files as recorders write them ---


def stereo_wav(left: np.ndarray, right: np.ndarray, extensible: bool = False) -> bytes:
    """A 16 kHz 16-bit two-channel WAV, plain PCM or WAVE_FORMAT_EXTENSIBLE."""
    frames = np.stack([left, right], axis=1).astype("<i2").tobytes()
    return _riff(2, frames, extensible)


def _riff(channels: int, frames: bytes, extensible: bool, tag: int = 1) -> bytes:
    block = 2 * channels
    fmt = struct.pack("<HHIIHH", 0xFFFE if extensible else tag, channels, RATE, RATE * block,
                      block, 16)  # fmt: skip
    if extensible:
        pcm_guid = bytes.fromhex("0100000000001000800000aa00389b71")
        fmt += struct.pack("<HHI", 22, 16, 3 if channels == 2 else 4) + pcm_guid
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt
    body += b"data" + struct.pack("<I", len(frames)) + frames
    return b"RIFF" + struct.pack("<I", len(body)) + body


def test_stereo_is_mixed_down_and_extensible_pcm_is_read():
    rng = np.random.default_rng(1)
    left = (8000 * np.sin(np.arange(RATE) / 7)).astype(np.int16)
    right = rng.integers(-3000, 3000, RATE).astype(np.int16)
    mono = read_audio(wav_bytes(left))
    both = read_audio(stereo_wav(left, left))
    np.testing.assert_allclose(both, mono, atol=1e-6)  # the same signal, not 32768 times it
    mixed = read_audio(stereo_wav(left, right))
    np.testing.assert_allclose(mixed, (left / 32768 + right / 32768) / 2, atol=1e-6)
    np.testing.assert_array_equal(read_audio(stereo_wav(left, right, extensible=True)), mixed)
    one = _riff(1, left.astype("<i2").tobytes(), extensible=True)
    np.testing.assert_array_equal(read_audio(one), mono)
    with pytest.raises(AudioError, match="not PCM"):
        read_audio(_riff(1, left.astype("<i2").tobytes(), extensible=False, tag=3))


# --- voice activity ---


def test_voice_detector_scores_a_stream_as_the_whole_recording():
    pcm, _ = recording(0) if (PICOVOICE / "label.json").is_file() else (None, None)
    if pcm is None:
        pcm = pcm_of(speak(WEATHER))
    audio = pcm / 32768.0
    voice = VoiceDetector()
    whole = voice.probabilities(audio)
    stream = voice.fresh()
    pieces = np.concatenate([stream.frames(audio[i : i + 512]) for i in range(0, audio.size, 512)])
    np.testing.assert_allclose(pieces[: whole.size], whole, atol=1e-5)
    assert whole.max() > 0.9 and whole[:5].max() < 0.5  # speech, after a silent start
    span = voice.speech(audio)
    assert span is not None and 0 < span.start_s < span.end_s <= audio.size / RATE
    assert span.samples.size < audio.size  # trimmed


def test_non_speech_has_no_speech_in_it():
    voice = VoiceDetector()
    for name, audio in non_speech().items():
        assert voice.speech(audio.astype(np.float32)) is None, name


# --- the closed-domain grammar ---

LARGE_LATTE = (SlotSpan("size", 12, 17), SlotSpan("drink", 18, 23))
ORDERS = [
    Utterance("can i get a large latte", "order", LARGE_LATTE),
    Utterance("brew a mocha", "order", (SlotSpan("drink", 7, 12),)),
    Utterance("cancel", "stop", ()),
]  # fmt: skip


def accepts(graph, sentence: str) -> bool:
    start, final, moves = graph
    states = {start}
    for word in sentence.split():
        states = {to for frm, to, _, w in moves if frm in states and w == word}
    return final in states


def test_grammar_combines_heads_and_tails_of_an_intent():
    grammar = grammar_settings(ORDERS, {"size": ["small", "extra large"]}, {"size", "drink"})
    assert grammar["slots"] == {
        "drink": ["latte", "mocha"],
        "size": ["extra large", "large", "small"],
    }
    graph = word_graph(grammar)
    for sentence in [
        "can i get a large latte",
        "brew a extra large mocha",  # brew's head with the other order's tail
        "can i get a mocha",
        "cancel",
    ]:
        assert accepts(graph, sentence), sentence
    for sentence in ["can i get a", "cancel a mocha", "brew a large", "large latte"]:
        assert not accepts(graph, sentence), sentence
    assert grammar_settings(ORDERS, {}, {"size"}) is None  # an open slot: no grammar
    assert graph == word_graph(grammar)  # the same graph every time


@pytest.fixture(scope="module")
def coffee():
    """The Rhino coffee context's training data, as a bundle trained on it records it."""
    data = file_data(PICOVOICE / "rhino/coffee_maker.yaml", seed=13)
    return domain_settings(data.train, data.slot_types)


@needs_recordings
def test_recorded_orders_are_decoded_against_the_grammar(coffee):
    assert coffee["grammar"] and set(coffee["grammar"]["slots"]) == {
        "coffeeDrink", "milkAmount", "numberOfShots", "roast", "size", "sugarAmount"
    }  # fmt: skip
    decoder = GrammarDecoder(coffee["grammar"])
    assert decoder.unknown == []  # every word is in pocketsphinx's dictionary
    recogniser = Recogniser(coffee)
    for index in range(3):
        pcm, label = recording(index)
        fit = decoder.decode(recogniser.voice.speech(pcm / 32768.0).samples)
        assert 0 < fit.score <= 1
        for value in label["slots"].values():
            assert value.strip() in fit.text, (fit, label)
        # The same utterance decoded as it streams, from the endpointer's events.
        endpointer = Endpointer(recogniser.voice.fresh())
        stream, ends = None, []
        for start in range(0, 2 * pcm.size, 640):
            for kind, value in endpointer.feed(pcm.tobytes()[start : start + 640]):
                if kind == "start":
                    stream = decoder.stream()
                    stream.feed(value)
                elif kind == "audio":
                    stream.feed(value)
                else:
                    ends.append(stream.finish())
        assert not list(endpointer.close())
        assert len(ends) == 1 and ends[0], ends
        for value in label["slots"].values():
            assert value.strip() in ends[0].text, (ends, label)


@needs_recordings
def test_an_unsure_grammar_answer_is_heard_again_by_whisper(coffee):
    recogniser = Recogniser(coffee)
    engines = []
    for index in range(3):
        pcm, label = recording(index)
        samples = pcm / 32768.0
        fit = recogniser.grammar.decode(recogniser.voice.speech(samples).samples)
        heard = recogniser.transcribe(samples)
        engines.append(heard.engine)
        assert heard.engine == ("grammar" if fit.score >= GRAMMAR_MIN_SCORE else "whisper")
        for value in label["slots"].values():
            assert value.strip() in heard.text, (heard, label)
    assert set(engines) == {"grammar", "whisper"}, engines  # both sides of the gate are seen


@needs_recordings
def test_out_of_grammar_speech_and_non_speech_are_not_forced_into_a_command(coffee):
    recogniser = Recogniser(coffee)
    for name, audio in non_speech().items():
        heard = recogniser.transcribe(audio.astype(np.float32))
        assert (heard.raw, heard.engine) == ("", "none"), name
    decoder = GrammarDecoder(coffee["grammar"])
    weather = read_audio(speak(WEATHER))
    assert decoder.decode(weather) is None  # no coffee order fits: the open path hears it


def test_settings_without_slot_types_have_no_grammar():
    assert domain_settings(ORDERS)["grammar"] is None


# --- parse_audio and listen on a bundle (open slots: the Whisper path) ---


@pytest.fixture(scope="module")
def parser(tiny_bundle) -> Parser:
    return Parser.load(tiny_bundle)


def test_audio_without_speech_gets_a_no_speech_result(parser):
    for name, audio in non_speech().items():
        result = parser.parse_audio(audio.astype(np.float32), sample_rate=RATE)
        assert result["transcript"] == "" and result["text"] == "", name
        assert result["in_scope"] is False and result["intent"]["name"] is None
        assert result["slots"] == [] and result["recogniser"] == "none"


@needs_espeak
def test_stereo_and_mono_parse_the_same(parser):
    mono = pcm_of(speak(WEATHER))
    one = parser.parse_audio(wav_bytes(mono))
    two = parser.parse_audio(stereo_wav(mono, mono, extensible=True))
    assert one["intent"]["name"] == "GetWeather" and two["text"] == one["text"]


@pytest.fixture(scope="module")
def audio_api(parser):
    app = create_app(parser, api_key="", max_audio_seconds=30)
    with live_server(app) as url, httpx.Client(base_url=url, timeout=120) as client:
        yield client


@needs_espeak
def test_every_path_gives_the_same_result_for_the_same_audio(parser, audio_api, tmp_path, capsys):
    """Python, HTTP and the CLI read a stereo WAV alike; a tone is no speech on each."""
    from voicenlu.cli import main

    mono = pcm_of(speak(WEATHER))
    tone = (non_speech()["tone"] * 20000).astype(np.int16)
    for left, right in ((mono, mono), (tone, tone)):
        wav = stereo_wav(left, right)
        python = parser.parse_audio(wav)
        http = post_wav(audio_api, wav)
        assert http.status_code == 200, http.text
        path = tmp_path / "request.wav"
        path.write_bytes(wav)
        assert main(["predict", str(parser.bundle), "--audio", str(path), "--json"]) == 0
        cli = json.loads(capsys.readouterr().out)
        for other in (http.json(), cli):
            assert (other["transcript"], other["text"], other["intent"]["name"]) == (
                python["transcript"], python["text"], python["intent"]["name"]
            )  # fmt: skip
    assert python["transcript"] == "" and http.json()["recogniser"] == "none"


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * RATE), dtype=np.int16)


@needs_espeak
def test_listen_yields_one_result_per_spoken_command(parser):
    first = pcm_of(speak(WEATHER))
    second = pcm_of(speak("play some music by the beatles"))
    audio = np.concatenate([silence(1), first, silence(1.5), second, silence(1)])
    pcm = audio.astype("<i2").tobytes()
    chunks = (pcm[i : i + 777] for i in range(0, len(pcm), 777))  # any chunk size, odd too
    results = list(parser.listen(chunks))
    assert len(results) == 2, [r["transcript"] for r in results]
    assert results[0]["intent"]["name"] == "GetWeather" and "berlin" in results[0]["text"]
    assert "beatles" in results[1]["text"]
    assert results[0]["timing"]["end_ms"] < results[1]["timing"]["start_ms"]
    second_start = 1000 * (1 + (first.size / RATE) + 1.5)
    assert abs(results[1]["timing"]["start_ms"] - second_start) < 400
    # Silence and noise alone: nothing to say.
    assert (
        list(
            parser.listen(
                [silence(2).tobytes(), (non_speech()["tone"] * 3e4).astype("<i2").tobytes()]
            )
        )
        == []
    )


@needs_espeak
def test_a_command_still_open_when_the_stream_stops_is_heard(parser):
    pcm = np.concatenate([silence(0.5), pcm_of(speak(WEATHER))]).astype("<i2").tobytes()
    results = list(parser.listen([pcm]))  # no trailing silence: the end of the stream ends it
    assert len(results) == 1 and results[0]["intent"]["name"] == "GetWeather"
    assert END_SILENCE_MS < 1000


@needs_espeak
def test_cli_listen_prints_one_json_line_per_command(tiny_bundle, tmp_path, capsys):
    from voicenlu.cli import main

    speech = pcm_of(speak(WEATHER))
    audio = np.concatenate([silence(0.5), speech, silence(1), speech, silence(1)])
    wav = tmp_path / "stream.wav"
    wav.write_bytes(wav_bytes(audio))
    raw = tmp_path / "stream.raw"
    raw.write_bytes(audio.astype("<i2").tobytes())
    for path in (wav, raw):
        assert main(["listen", str(tiny_bundle), str(path), "--json"]) == 0
        lines = capsys.readouterr().out.strip().splitlines()
        assert len(lines) == 2, lines
        assert all(json.loads(line)["intent"]["name"] == "GetWeather" for line in lines)
    stereo = tmp_path / "stereo.wav"
    stereo.write_bytes(stereo_wav(speech, speech))
    assert main(["listen", str(tiny_bundle), str(stereo)]) != 0
    assert "16 kHz mono 16-bit" in capsys.readouterr().err

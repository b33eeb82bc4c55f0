"""A smaller, faster bundle: int8 quantization of the ONNX graph (onnxruntime + onnx, no torch).

Quantization is ONNX Runtime's dynamic int8 (weights stored int8, activations quantized on
the fly), after ORT's transformer graph fusions (attention, layer norm, GELU), which cut
the node count and let the quantized MatMuls run fused.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path

import numpy as np

from voicenlu.bundle import put_file, read_manifest, update_manifest
from voicenlu.calibration import calibrate
from voicenlu.data.background import background_requests
from voicenlu.data.records import Utterance
from voicenlu.metrics import HEADLINE, compute_metrics
from voicenlu.quiet import quiet
from voicenlu.runtime import Parser, result_to_utterance

log = logging.getLogger(__name__)

# Fewer held-out utterances than this are not scored: 3 utterances say "100.00%" or "66.67%",
# nothing about int8. What int8 changes is still checked, on every text (``agreement``).
MIN_SCORED = 50


def fuse_transformer_graph(src: Path, dst: Path, manifest: dict) -> bool:
    """ORT's offline fusions for BERT-like encoders; False (and a plain copy) when unsupported."""
    from onnxruntime.transformers.optimizer import optimize_model

    config = manifest["encoder_config"]
    if manifest.get("pruned_heads"):  # layers of unequal width: ORT's attention fusion assumes one
        shutil.copyfile(src, dst)
        return False
    try:
        model = optimize_model(
            str(src),
            model_type="bert",
            num_heads=config.get("num_attention_heads", 0),
            hidden_size=config.get("hidden_size", 0),
            opt_level=1,
            only_onnxruntime=False,
        )
        model.save_model_to_file(str(dst))
        return True
    except Exception as exc:  # fusion is an optimisation: fall back to the plain graph
        log.warning("graph fusion skipped (%s); quantizing the plain graph", exc)
        shutil.copyfile(src, dst)
        return False


def quantize(
    bundle: Path,
    dev: list[Utterance] | None = None,
    test: list[Utterance] | None = None,
    per_channel: bool = False,
    fuse: bool = True,
    calibrate_on: list[Utterance] | None = None,
    partial: bool = False,
) -> dict:
    """Write ``model.int8.onnx`` and record it: its own calibration on ``calibrate_on``
    (default: dev), how often it parses exactly as fp32 does, and both precisions' scores on
    dev and test when each has at least ``MIN_SCORED`` utterances. ``partial``: the pipeline
    is still writing the bundle."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    bundle = Path(bundle)
    manifest = read_manifest(bundle, need=("model.onnx",), require_complete=not partial)
    with tempfile.TemporaryDirectory() as tmp:
        fused = Path(tmp) / "fused.onnx"
        if fuse:
            did_fuse = fuse_transformer_graph(bundle / "model.onnx", fused, manifest)
        else:
            did_fuse = False
            shutil.copyfile(bundle / "model.onnx", fused)
        with quiet():
            put_file(
                bundle,
                "model.int8.onnx",
                lambda path: quantize_dynamic(
                    str(fused), str(path), weight_type=QuantType.QInt8, per_channel=per_channel
                ),
            )
    summary = {
        "weight_type": "int8",
        "per_channel": per_channel,
        "fused": bool(did_fuse),
        "size_mb": round((bundle / "model.int8.onnx").stat().st_size / 2**20, 2),
    }
    calibrate_on = dev if calibrate_on is None else calibrate_on
    parsers = {
        p: Parser.load(bundle, precision=p, values=False, partial=partial) for p in ("fp32", "int8")
    }
    if calibrate_on:
        summary["calibration"] = _calibrate(parsers["int8"], calibrate_on)
    checked = [*(calibrate_on or []), *(dev or []), *(test or [])]
    texts = list(dict.fromkeys(u.text for u in checked))
    if texts:
        summary["agreement"] = _agreement(parsers, texts)
    splits = {"dev": dev, "test": test}
    summary.update(_score(parsers, {k: v for k, v in splits.items() if len(v or ()) >= MIN_SCORED}))
    too_few = {k: len(v) for k, v in splits.items() if v and len(v) < MIN_SCORED}
    if too_few:
        summary["not_scored"] = too_few
    update_manifest(bundle, quantization=summary)
    return summary


def _agreement(parsers: dict[str, Parser], texts: list[str]) -> dict:
    """Share of texts that int8 parses exactly as fp32 does (intent and every slot): a check
    of the quantization itself, which needs no labels and no held-out data."""
    same = 0
    for i in range(0, len(texts), 64):
        chunk = texts[i : i + 64]
        fp32, int8 = (parsers[p].parse_batch(chunk, threshold=0.0) for p in ("fp32", "int8"))
        same += sum(
            result_to_utterance(a) == result_to_utterance(b)
            for a, b in zip(fp32, int8, strict=True)
        )
    return {"texts": len(texts), "same_parse": round(same / len(texts), 4)}


def _calibrate(parser: Parser, dev: list[Utterance]) -> dict:
    """The int8 graph's own calibration on dev, with the bundle's in-scope score: a threshold
    fitted to fp32 lets fewer than 99% of dev through int8 (98.2-98.5% on two SNIPS folds)."""
    logits, density = parser.evidence([u.text for u in dev])
    labels = np.array([parser.intents.index(u.intent) for u in dev])
    score = parser.calibration.get("score", "max_softmax")
    # The background too, when the fp32 calibration was fitted with it.
    uses = "reference_background" in parser.manifest.get("calibration", {})
    background = parser.evidence(list(background_requests())) if uses else None
    return calibrate(logits, labels, score=score, density=density, background=background)


def _score(parsers: dict[str, Parser], splits: dict[str, list[Utterance] | None]) -> dict:
    """Headline metrics of fp32 and int8 on each split given."""
    scores = {}
    for precision, parser in parsers.items():
        for split, gold in splits.items():
            if not gold:
                continue
            results = parser.parse_batch([u.text for u in gold], threshold=0.0)  # closed set
            pred = [result_to_utterance(r) for r in results]
            m = compute_metrics(gold, pred)
            scores[f"{split}_{precision}"] = {k: round(m[k], 4) for k in HEADLINE}
    return scores

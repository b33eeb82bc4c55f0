"""Out-of-scope evaluation: leave one intent out of training and try to reject it.

SNIPS has no out-of-scope requests, so each fold trains on six intents and treats the test
utterances of the seventh as out of scope (DESIGN section 5). Folds train on a reduced
budget (a stratified slice of the standard training split) to keep seven runs affordable.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import numpy as np

from voicenlu.data import stratified_slice
from voicenlu.runtime import Parser, softmax

ECE_BINS = 10


def auroc(positive: np.ndarray, negative: np.ndarray) -> float:
    """Probability that a random positive scores above a random negative (ties count half)."""
    scores = np.concatenate([positive, negative])
    order = scores.argsort(kind="mergesort")
    ranks = np.empty(len(scores))
    ranks[order] = np.arange(1, len(scores) + 1)
    for value in np.unique(scores):  # average ranks over ties
        tied = scores == value
        ranks[tied] = ranks[tied].mean()
    n_pos, n_neg = len(positive), len(negative)
    return float((ranks[:n_pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def fpr_at_tpr(positive: np.ndarray, negative: np.ndarray, tpr: float = 0.95) -> float:
    """Share of negatives accepted at the threshold that accepts ``tpr`` of the positives."""
    threshold = np.quantile(positive, 1 - tpr)
    return float((negative >= threshold).mean())


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray) -> float:
    """Mean |accuracy - confidence| over equal-width confidence bins, weighted by bin size."""
    bins = np.minimum((confidence * ECE_BINS).astype(int), ECE_BINS - 1)
    error = 0.0
    for b in range(ECE_BINS):
        inside = bins == b
        if inside.any():
            error += inside.mean() * abs(correct[inside].mean() - confidence[inside].mean())
    return float(error)


def score_fold(parser: Parser, in_scope, out_of_scope) -> dict:
    """Rejection and calibration figures of one fold's model."""
    _, logits_in, _ = parser.logits([u.text for u in in_scope])
    _, logits_out, _ = parser.logits([u.text for u in out_of_scope])
    labels = np.array([parser.intents.index(u.intent) for u in in_scope])
    raw = softmax(logits_in)
    calibrated_in = softmax(logits_in, parser.temperature)
    conf_in = calibrated_in.max(axis=1)
    conf_out = softmax(logits_out, parser.temperature).max(axis=1)
    correct = calibrated_in.argmax(axis=1) == labels
    accepted = conf_in >= parser.threshold
    return {
        "auroc": auroc(conf_in, conf_out),
        "fpr_at_95_tpr": fpr_at_tpr(conf_in, conf_out),
        "in_scope_accuracy": float((correct & accepted).mean()),
        "out_of_scope_rejected": float((conf_out < parser.threshold).mean()),
        "ece_before": expected_calibration_error(raw.max(axis=1), raw.argmax(axis=1) == labels),
        "ece_after": expected_calibration_error(conf_in, correct),
        "threshold": parser.threshold,
        "temperature": parser.temperature,
    }


def leave_one_intent_out(snips, config, output_dir: Path, per_intent: int = 300) -> dict:
    """Train one model per held-out intent; return per-fold figures and their means."""
    from voicenlu.train import TrainData, train

    folds = []
    for held_out in sorted({u.intent for u in snips.train}):
        keep = [u for u in snips.train if u.intent != held_out]
        data = TrainData(
            train=stratified_slice(keep, per_intent, config.seed),
            dev=[u for u in snips.dev if u.intent != held_out],
            source={"name": "snips-2017-06", "held_out": held_out, "per_intent": per_intent},
        )
        bundle = train(data, config, output_dir / f"without-{held_out}")
        parser = Parser.load(bundle, precision="fp32")
        in_scope = [u for u in snips.test if u.intent != held_out]
        out_of_scope = [u for u in snips.test if u.intent == held_out]
        folds.append({"held_out": held_out, **score_fold(parser, in_scope, out_of_scope)})
    keys = ("auroc", "fpr_at_95_tpr", "in_scope_accuracy", "ece_before", "ece_after")
    result = {
        "protocol": f"leave one intent out, {per_intent} training utterances per intent, "
        f"{config.epochs:g} epochs, score = calibrated max softmax",
        "folds": folds,
        "mean": {k: statistics.mean(f[k] for f in folds) for k in keys},
    }
    (output_dir / "oos.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def render_oos(result: dict) -> str:
    lines = [
        "# Out-of-scope rejection on SNIPS (leave one intent out)",
        "",
        f"Protocol: {result['protocol']}.",
        "",
        "| held-out intent | AUROC | FPR@95%TPR | in-scope acc. | OOS rejected | ECE before "
        "| ECE after |",
        "|---|---|---|---|---|---|---|",
    ]
    for f in [*result["folds"], {"held_out": "**mean**", **result["mean"]}]:
        rejected = (
            f"{100 * f['out_of_scope_rejected']:.1f}%" if "out_of_scope_rejected" in f else ""
        )
        lines.append(
            f"| {f['held_out']} | {f['auroc']:.3f} | {f['fpr_at_95_tpr']:.3f} | "
            f"{100 * f['in_scope_accuracy']:.2f}% | {rejected} | {f['ece_before']:.4f} | "
            f"{f['ece_after']:.4f} |"
        )
    return "\n".join(lines) + "\n"

"""Out-of-scope evaluation: leave one intent out of training and try to reject it.

SNIPS has no out-of-scope requests, so each fold trains on six intents and treats the test
utterances of the seventh as out of scope (DESIGN section 5). Folds train on a reduced
budget (a stratified slice of the standard training split) to keep seven runs affordable.
"""

from __future__ import annotations

import json
import logging
import statistics
import sys
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve

from voicenlu.bundle import is_complete, read_manifest
from voicenlu.calibration import (
    DEFAULT_SCORE,
    SCORES,
    calibrate,
    in_scope_scores,
    ranking_scores,
    softmax,
)
from voicenlu.config import TrainConfig
from voicenlu.data import ensure_data, load_snips
from voicenlu.data.background import background_requests
from voicenlu.data.snips import holdout
from voicenlu.data.training import TrainData, dev_fraction, snips_split
from voicenlu.errors import ConfigError
from voicenlu.experiments.provenance import provenance
from voicenlu.runtime import Parser, uses_scope

log = logging.getLogger(__name__)

ECE_BINS = 10
TEST_SHARE = 0.2  # of each intent of a user's data: the in-scope test set of every fold


def _labelled(positive: np.ndarray, negative: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(labels, scores) as scikit-learn takes them: in scope is the positive class."""
    labels = np.concatenate([np.ones(len(positive)), np.zeros(len(negative))])
    return labels, np.concatenate([positive, negative])


def auroc(positive: np.ndarray, negative: np.ndarray) -> float:
    """Probability that a random positive scores above a random negative (ties count half)."""
    return float(roc_auc_score(*_labelled(positive, negative)))


def fpr_at_tpr(positive: np.ndarray, negative: np.ndarray, tpr: float = 0.95) -> float:
    """Share of negatives accepted at the threshold that accepts ``tpr`` of the positives.

    The threshold is the positives' ``1 - tpr`` quantile, interpolated between two of them as
    ``np.quantile`` does, so it need not be a score; a negative is accepted at or above it. The
    ROC curve is read at the lowest of its thresholds (every distinct score) at or above it,
    which accepts exactly the same negatives.
    """
    threshold = np.quantile(positive, 1 - tpr)
    fpr, _, thresholds = roc_curve(*_labelled(positive, negative), drop_intermediate=False)
    return float(fpr[thresholds >= threshold][-1])


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray) -> float:
    """Mean |accuracy - confidence| over equal-width confidence bins, weighted by bin size."""
    bins = np.minimum((confidence * ECE_BINS).astype(int), ECE_BINS - 1)
    error = 0.0
    for b in range(ECE_BINS):
        inside = bins == b
        if inside.any():
            error += inside.mean() * abs(correct[inside].mean() - confidence[inside].mean())
    return float(error)


def score_fold(parser: Parser, dev, in_scope, out_of_scope) -> dict:
    """Rejection and calibration figures of one fold's model, for each in-scope score.

    Each score is calibrated on the fold's dev set as training does; AUROC and FPR rank by
    ``ranking_scores``. The top-level figures are those of the default score, which training
    stores in new bundles.
    """
    _, logits_dev, _, density_dev = parser.logits([u.text for u in dev])
    _, logits_in, _, density_in = parser.logits([u.text for u in in_scope])
    _, logits_out, _, density_out = parser.logits([u.text for u in out_of_scope])
    labels_dev = np.array([parser.intents.index(u.intent) for u in dev])
    labels = np.array([parser.intents.index(u.intent) for u in in_scope])
    background = parser.evidence(list(background_requests()))
    calibrations = {
        name: calibrate(logits_dev, labels_dev, name, density=density_dev, background=background)
        for name in SCORES
    }
    t = calibrations[DEFAULT_SCORE]["temperature"]  # the same fit whatever the score
    raw, calibrated = softmax(logits_in), softmax(logits_in, t)
    correct = calibrated.argmax(axis=1) == labels
    by_score = {}
    for name, calibration in calibrations.items():
        threshold = calibration["threshold"]
        s_in = ranking_scores(logits_in, calibration, density_in)
        s_out = ranking_scores(logits_out, calibration, density_out)
        accepted_in = in_scope_scores(logits_in, calibration, density_in) >= threshold
        accepted_out = in_scope_scores(logits_out, calibration, density_out) >= threshold
        by_score[name] = {
            "auroc": auroc(s_in, s_out),
            "fpr_at_95_tpr": fpr_at_tpr(s_in, s_out),
            "in_scope_accuracy": float((correct & accepted_in).mean()),
            "out_of_scope_rejected": float(1 - accepted_out.mean()),
            "threshold": threshold,
        }
    return {
        **by_score[DEFAULT_SCORE],
        "ece_before": expected_calibration_error(raw.max(axis=1), raw.argmax(axis=1) == labels),
        "ece_after": expected_calibration_error(calibrated.max(axis=1), correct),
        "temperature": t,
        "scores": by_score,
    }


def snips_folds(snips, per_intent: int, seed: int):
    """(intents, fold): ``fold(intent)`` is (training data without it, in-scope test
    utterances, out-of-scope test utterances) on the SNIPS standard split."""

    def fold(held_out: str):
        data = snips_split(snips, per_intent=per_intent, seed=seed, exclude=(held_out,))
        in_scope = [u for u in snips.test if u.intent != held_out]
        return data, in_scope, [u for u in snips.test if u.intent == held_out]

    return sorted({u.intent for u in snips.train}), fold


def file_folds(utterances, seed: int, description: str):
    """The folds on a user's data: ``TEST_SHARE`` of each intent is held out as the in-scope
    test set; each fold trains on the rest of the other intents (split as ``train`` splits a
    file) and must reject every utterance of the intent it never saw."""
    pool, test = holdout(utterances, TEST_SHARE, seed)
    source = {"kind": "experiment", "description": f"{description}, leave one intent out"}

    def fold(held_out: str):
        kept = [u for u in pool if u.intent != held_out]
        train, dev = holdout(kept, dev_fraction(kept), seed)
        data = TrainData(train=train, dev=dev, source=source | {"exclude": [held_out]})
        in_scope = [u for u in test if u.intent != held_out]
        return data, in_scope, [u for u in utterances if u.intent == held_out]

    return sorted({u.intent for u in utterances}), fold


def leave_one_intent_out(folds, config, output_dir: Path, protocol: str) -> dict:
    """Train one model per held-out intent (``folds``: from ``snips_folds`` or
    ``file_folds``); return per-fold figures and their means.

    A fold whose bundle is complete in ``output_dir`` is scored without training again, so an
    interrupted run picks up where it stopped; a fold stopped halfway is trained again.
    """
    from voicenlu.pipeline import train_bundle

    intents, make_fold = folds
    if len(intents) < 2:
        raise ConfigError(
            "Leaving one intent out needs at least 2 intents: with one, no fold has an intent "
            "left to train on."
        )
    results = []
    for number, held_out in enumerate(intents, 1):
        print(
            f"out of scope: fold {number} of {len(intents)}, without {held_out}",
            file=sys.stderr,
            flush=True,
        )
        data, in_scope, out_of_scope = make_fold(held_out)
        fold_dir = output_dir / f"without-{held_out}"
        bundle = fold_dir / "bundle"
        if is_complete(bundle):  # an earlier, interrupted run finished this fold
            if not uses_scope(read_manifest(bundle, verify=False)):
                raise ConfigError(
                    f"{bundle} was trained by an older voicenlu, without the statistics of "
                    f"the {DEFAULT_SCORE} score: delete {output_dir} or choose another --out."
                )
            log.info("Scoring the existing %s (delete it to train the fold again).", bundle)
        else:
            bundle = train_bundle(data, config, fold_dir)
        parser = Parser.load(bundle, precision="fp32")
        scores = score_fold(parser, data.checks, in_scope, out_of_scope)
        results.append({"held_out": held_out, **scores})
    return summarise(results, protocol, output_dir)


def summarise(folds: list[dict], protocol: str, output_dir: Path) -> dict:
    """Means over folds, overall (stored score) and per score; written to oos.json."""
    keys = ("auroc", "fpr_at_95_tpr", "in_scope_accuracy", "ece_before", "ece_after")
    result = {
        **provenance(),
        "protocol": protocol,
        "folds": folds,
        "mean": _means(folds, keys),
        "mean_by_score": {
            name: _means([f["scores"][name] for f in folds], keys[:3]) for name in SCORES
        },
    }
    (output_dir / "oos.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def _means(rows: list[dict], keys) -> dict:
    return {k: statistics.mean(r[k] for r in rows) for k in keys}


def render_oos(result: dict, command: str, name: str = "SNIPS") -> str:
    lines = [
        f"# Out-of-scope rejection on {name} (leave one intent out)",
        "",
        f"Protocol: {result['protocol']}. Made by `{command}`.",
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
    lines += [
        "",
        f"Rows above use the default in-scope score ({DEFAULT_SCORE}). The same folds, scored "
        "each way (mean over folds; each threshold lets 99% of the fold's dev set through):",
        "",
        "| score | AUROC | FPR@95%TPR | in-scope acc. |",
        "|---|---|---|---|",
    ]
    for name, m in result.get("mean_by_score", {}).items():
        lines.append(
            f"| {name} | {m['auroc']:.3f} | {m['fpr_at_95_tpr']:.3f} | "
            f"{100 * m['in_scope_accuracy']:.2f}% |"
        )
    return "\n".join(lines) + "\n"


def run_oos(
    out: Path,
    name: str,
    utterances,
    *,
    per_intent: int,
    epochs: float,
    seed: int,
    command: str,
    data_dir=None,
) -> str:
    """The protocol on ``utterances`` of ``name`` or, when they are None, on SNIPS (from
    ``data_dir``, ``per_intent`` training utterances per intent): trains the folds into
    ``out``, writes oos.json and oos.md there, and returns the table (``command`` made it)."""
    config = TrainConfig(epochs=epochs, seed=seed, quantize=False)
    if utterances is None:
        folds = snips_folds(load_snips(ensure_data(data_dir)), per_intent, seed)
        protocol = (
            f"leave one intent out, {per_intent} training utterances per intent, "
            f"{config.epochs:g} epochs and at least {config.min_steps} steps"
        )
    else:
        folds = file_folds(utterances, seed, name)
        protocol = (
            f"leave one intent out of {name}: 20% of each intent held out as the in-scope "
            "test set, each fold trained on the rest of the other intents as `train` trains "
            f"a file, {config.epochs:g} epochs and at least {config.min_steps} steps"
        )
    out.mkdir(parents=True, exist_ok=True)
    result = leave_one_intent_out(folds, config, out, protocol)
    table = render_oos(result, command, name)
    (out / "oos.md").write_text(table)
    return table

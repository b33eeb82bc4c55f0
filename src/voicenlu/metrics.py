"""Metrics on character spans (DESIGN.md section 5). No third-party imports.

Slots are scored on character spans, not on BIO tags: a predicted slot counts only if its
(type, start, end) equals a gold one exactly. That is seqeval's strict entity-level F1, but
independent of any tokenizer, so every model (and the baselines) is scored the same way.
Training scores dev with these functions each epoch; evaluation writes them into reports.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from voicenlu.data.records import Utterance

HEADLINE = ("intent_accuracy", "slot_f1", "exact_match")

OUT_OF_SCOPE = "<out of scope>"


def _intent_name(intent: str | None) -> str:
    return OUT_OF_SCOPE if intent is None else intent


def _ratio(num: float, den: float) -> float:
    return num / den if den else 0.0


def _prf(tp: int, fp: int, fn: int) -> dict:
    precision = _ratio(tp, tp + fp)
    recall = _ratio(tp, tp + fn)
    f1 = _ratio(2 * precision * recall, precision + recall)
    return {"precision": precision, "recall": recall, "f1": f1, "support": tp + fn}


def _spans(u: Utterance) -> set[tuple[str, int, int]]:
    return {(s.slot, s.start, s.end) for s in u.slots}


def _check_aligned(gold: Sequence[Utterance], pred: Sequence[Utterance]) -> None:
    if len(gold) != len(pred):
        raise ValueError(f"gold has {len(gold)} utterances but pred has {len(pred)}")
    for i, (g, p) in enumerate(zip(gold, pred, strict=True)):
        if g.text != p.text:
            raise ValueError(f"utterance {i} differs: gold {g.text!r} vs pred {p.text!r}")


def compute_metrics(
    gold: Sequence[Utterance], pred: Sequence[Utterance], slots: bool = True
) -> dict:
    """Score predictions against gold, aligned by position; returns a JSON-serialisable dict.

    ``slots=False``: the gold data does not annotate slots (a CSV of text and intent), so
    slot figures and exact match do not apply and are None, not a misleading 0.
    """
    _check_aligned(gold, pred)
    if not slots:
        gold = [Utterance(u.text, u.intent) for u in gold]
        pred = [Utterance(u.text, u.intent) for u in pred]
    slot_counts: dict[str, Counter] = {}
    intent_counts: dict[str, Counter] = {}
    pairs: Counter = Counter()
    intent_right = exact = 0
    for g, p in zip(gold, pred, strict=True):
        gi, pi = _intent_name(g.intent), _intent_name(p.intent)
        pairs[gi, pi] += 1
        intent_counts.setdefault(gi, Counter())
        intent_counts.setdefault(pi, Counter())
        if gi == pi:
            intent_right += 1
            intent_counts[gi]["tp"] += 1
        else:
            intent_counts[pi]["fp"] += 1
            intent_counts[gi]["fn"] += 1

        gs, ps = _spans(g), _spans(p)
        for span in gs | ps:
            kind = "tp" if span in gs and span in ps else ("fn" if span in gs else "fp")
            slot_counts.setdefault(span[0], Counter())[kind] += 1
        exact += gi == pi and gs == ps

    totals = sum(slot_counts.values(), Counter())
    slot_all = _prf(totals["tp"], totals["fp"], totals["fn"])
    labels = sorted(n for n in intent_counts if n != OUT_OF_SCOPE)
    labels += [OUT_OF_SCOPE] if OUT_OF_SCOPE in intent_counts else []
    n = len(gold)
    return {
        "n": n,
        "intent_accuracy": _ratio(intent_right, n),
        "slot_precision": slot_all["precision"] if slots else None,
        "slot_recall": slot_all["recall"] if slots else None,
        "slot_f1": slot_all["f1"] if slots else None,
        "exact_match": _ratio(exact, n) if slots else None,
        "per_intent": {
            k: _prf(c["tp"], c["fp"], c["fn"]) for k, c in sorted(intent_counts.items())
        },
        "per_slot": {k: _prf(c["tp"], c["fp"], c["fn"]) for k, c in sorted(slot_counts.items())},
        "confusion": {"labels": labels, "matrix": [[pairs[g, p] for p in labels] for g in labels]},
    }


def _slot_strings(u: Utterance) -> list[str]:
    return [f"{slot}={value}" for slot, value in u.slot_values()]


def misclassified(gold: Sequence[Utterance], pred: Sequence[Utterance]) -> list[dict]:
    """The utterances with a wrong intent or any wrong slot, to read the model's mistakes."""
    _check_aligned(gold, pred)
    return [
        {
            "text": g.text,
            "gold_intent": g.intent,
            "pred_intent": p.intent,
            "gold_slots": _slot_strings(g),
            "pred_slots": _slot_strings(p),
        }
        for g, p in zip(gold, pred, strict=True)
        if g.intent != p.intent or _spans(g) != _spans(p)
    ]

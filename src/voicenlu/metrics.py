"""Metrics on character spans (DESIGN.md section 5). Standard library only.

Slots are scored on character spans, not on BIO tags: a predicted slot counts only if its
(type, start, end) equals a gold one exactly. That is seqeval's strict entity-level F1, but
independent of any tokenizer, so every model (and the baselines) is scored the same way.
Training scores dev with these functions each epoch; evaluation writes them into reports.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from voicenlu.data.records import SlotSpan, Utterance
from voicenlu.data.types import DIMENSIONS
from voicenlu.values import Reference, ValueResolver

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


def value_coverage(resolver: ValueResolver, gold: Sequence[Utterance], ref: Reference) -> dict:
    """The share of gold spans of each typed slot that resolve to a value at all, per slot and
    pooled by kind (``time``, ``number``, ``custom``: all custom entities together)."""
    seen: dict[str, Counter] = {}
    for utt in gold:
        for span in utt.slots:
            kind = resolver.slot_types.get(span.slot)
            if kind is None:
                continue
            found = resolver.resolve_slot(utt.text, span.slot, span.start, span.end, ref)
            for key in (span.slot, kind if kind in DIMENSIONS else "custom"):
                seen.setdefault(key, Counter())[found is not None] += 1
    share = {k: _ratio(c[True], c[True] + c[False]) for k, c in seen.items()}
    per_slot = {s: share[s] for s in sorted(resolver.slot_types) if s in share}
    return {k: share.get(k) for k in ("time", "number", "custom")} | {"per_slot": per_slot}


def checked_values(resolver: ValueResolver, test: Sequence[Utterance], sample: dict) -> dict:
    """Resolve each slot of a hand-checked sample (``test_index``, ``slot``, ``text``,
    ``expected``, relative to its ``reference_time`` and ``timezone``) and compare.

    The sample's ``joined`` part checks expressions a model may tag as several slots:
    each item's ``parts`` (texts of one slot, in order) must come out as the ``expected``
    values (``text`` and ``resolved``), with the slot types of ``joined["slot_types"]``."""
    ref = resolver.reference(sample["reference_time"], sample["timezone"])
    wrong = []
    for item in sample["items"]:
        utt = test[item["test_index"]]
        spans = [
            s
            for s in utt.slots
            if (s.slot, utt.text[s.start : s.end]) == (item["slot"], item["text"])
        ]
        if not spans:
            raise ValueError(
                f"test utterance {item['test_index']} has no {item['slot']} slot "
                f"{item['text']!r}: the sample belongs to other data"
            )
        span = spans[0]
        found = resolver.resolve_slot(utt.text, span.slot, span.start, span.end, ref)
        if found != item["expected"]:
            wrong.append(item | {"found": found})
    joined = sample.get("joined", {"slot_types": {}, "items": []})
    typed = ValueResolver(joined["slot_types"], timezone=resolver.timezone)
    for item in joined["items"]:
        found = _joined_values(typed, item, ref)
        if found != item["expected"]:
            wrong.append(item | {"found": found})
    n = len(sample["items"]) + len(joined["items"])
    return {"n": n, "right": _ratio(n - len(wrong), n), "wrong": wrong}


def _joined_values(resolver: ValueResolver, item: dict, ref: Reference) -> list[dict]:
    """What the runtime makes of ``item["parts"]``, tagged as separate spans of its slot."""
    text, spans, at = item["text"], [], 0
    for part in item["parts"]:
        start = text.index(part, at)
        at = start + len(part)
        spans.append((SlotSpan(item["slot"], start, at), 1.0))
    return [
        {
            "text": text[s.start : s.end],
            "resolved": resolver.resolve_slot(text, s.slot, s.start, s.end, ref),
        }
        for s, _ in resolver.whole_values(text, spans, ref)
    ]

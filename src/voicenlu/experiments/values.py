"""How well slot values resolve: the share of gold spans that resolve at all
(``value_coverage``), and a hand-checked sample compared value by value (``checked_values``).
Measures ``voicenlu.values``; ``benchmarks/values.py`` runs it."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from voicenlu.data.records import SlotSpan, Utterance
from voicenlu.data.types import DIMENSIONS
from voicenlu.values import Reference, ValueResolver


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
    share = {k: c[True] / (c[True] + c[False]) for k, c in seen.items()}
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
    return {"n": n, "right": (n - len(wrong)) / n if n else 0.0, "wrong": wrong}


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

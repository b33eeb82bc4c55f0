"""Slot augmentation: new training utterances made by swapping slot values.

With 10 examples per intent a slot head sees each slot filled by a handful of values and
learns those words, not the slot's place in the sentence. Swapping in other values of the
same slot (from other training utterances and from the data's entity value lists) keeps the
carrier phrase and changes the value, which is what generalises. Offsets are rebuilt exactly.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence

from voicenlu.data.records import SlotSpan, Utterance


def slot_values(
    utterances: Iterable[Utterance], extra: dict[str, Iterable[str]] | None = None
) -> dict[str, list[str]]:
    """Distinct values of each slot: those in the utterances, then ``extra`` (entity lists)."""
    values: dict[str, dict[str, None]] = {}
    for u in utterances:
        for name, value in u.slot_values():
            values.setdefault(name, {})[value] = None
    for name, more in (extra or {}).items():
        if name in values:  # only slots the model is trained to tag
            values[name].update(dict.fromkeys(v for v in more if v.strip()))
    return {name: list(v) for name, v in values.items()}


def swap_values(utterance: Utterance, values: dict[str, Sequence[str]], rng) -> Utterance:
    """The utterance with each slot's value replaced by a random value of the same slot."""
    parts, spans, at = [], [], 0
    for span in utterance.slots:
        parts.append(utterance.text[at : span.start])
        start = sum(len(p) for p in parts)
        value = rng.choice(values[span.slot])
        parts.append(value)
        spans.append(SlotSpan(span.slot, start, start + len(value)))
        at = span.end
    parts.append(utterance.text[at:])
    return Utterance("".join(parts), utterance.intent, tuple(spans))


def with_swapped_values(
    utterances: Sequence[Utterance],
    copies: int,
    seed: int,
    extra: dict[str, Iterable[str]] | None = None,
    total: int | None = None,
) -> list[Utterance]:
    """The utterances, then up to ``copies`` new ones per utterance with slots (no repeats),
    made in rounds over all of them so that a ``total`` cap keeps every intent's share."""
    rng = random.Random(seed)
    values = slot_values(utterances, extra)
    seen = {u.text for u in utterances}
    out = list(utterances)
    cap = len(utterances) * (copies + 1) if total is None else total
    for _ in range(copies):
        for u in utterances:
            if len(out) >= cap:
                return out
            if u.slots:
                new = swap_values(u, values, rng)
                if new.text not in seen:
                    seen.add(new.text)
                    out.append(new)
    return out

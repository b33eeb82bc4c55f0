"""Span F1 against seqeval's strict entity-level F1, on real SNIPS test utterances."""

from __future__ import annotations

import dataclasses
import random

import pytest
from seqeval.metrics import f1_score
from seqeval.scheme import IOB2

from voicenlu.data import stratified_slice
from voicenlu.data.records import SlotSpan
from voicenlu.metrics import compute_metrics


def char_tags(utterance) -> list[str]:
    """IOB2 tags with each character as a token, so a span is exactly its characters."""
    tags = ["O"] * len(utterance.text)
    for s in utterance.slots:
        tags[s.start : s.end] = ["B-" + s.slot] + ["I-" + s.slot] * (s.end - s.start - 1)
    return tags


def word_starts_and_ends(text: str) -> tuple[list[int], list[int]]:
    starts, ends, offset = [], [], 0
    for word in text.split():
        start = text.index(word, offset)
        offset = start + len(word)
        starts.append(start)
        ends.append(offset)
    return starts, ends


def perturbed(utterance, rng: random.Random):
    """A prediction with the errors a tagger makes: a dropped slot, a wrong type, a span one
    word longer or shorter, a spurious slot."""
    slots = list(utterance.slots)
    starts, ends = word_starts_and_ends(utterance.text)
    kind = rng.randrange(6)
    if slots and kind == 0:
        slots.pop(rng.randrange(len(slots)))
    elif slots and kind == 1:
        i = rng.randrange(len(slots))
        slots[i] = dataclasses.replace(slots[i], slot="other_type")
    elif slots and kind == 2:
        i = rng.randrange(len(slots))
        later = [e for e in ends if e > slots[i].end]
        free = later and not any(slots[i].end <= s.start < later[0] for s in slots)
        if free:
            slots[i] = dataclasses.replace(slots[i], end=later[0])
    elif slots and kind == 3:
        i = rng.randrange(len(slots))
        inner = [e for e in ends if slots[i].start < e < slots[i].end]
        if inner:
            slots[i] = dataclasses.replace(slots[i], end=inner[-1])
    elif kind == 4:
        free = [
            (s, e)
            for s, e in zip(starts, ends, strict=True)
            if not any(x.start <= s < x.end for x in slots)
        ]
        if free:
            s, e = rng.choice(free)
            slots.append(SlotSpan("spurious", s, e))
    return dataclasses.replace(utterance, slots=tuple(sorted(slots, key=lambda s: s.start)))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_span_f1_equals_seqeval_strict(snips, seed):
    gold = stratified_slice(snips.test, 30, seed=seed)
    rng = random.Random(seed)
    pred = [perturbed(u, rng) for u in gold]
    ours = compute_metrics(gold, pred)["slot_f1"]
    theirs = f1_score(
        [char_tags(u) for u in gold],
        [char_tags(u) for u in pred],
        mode="strict",
        scheme=IOB2,
        average="micro",
    )
    assert ours < 1.0  # the perturbations made errors to count
    assert ours == pytest.approx(theirs, abs=1e-12)

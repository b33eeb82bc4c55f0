"""BIO tagging of char spans onto sub-tokens and back, on the real tokenizer."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer

from voicenlu.data.records import SlotSpan
from voicenlu.features import (
    allowed_transitions,
    decode_slots,
    encode,
    prepare_tokenizer,
    slot_tags,
    snap_to_words,
    spans_to_tags,
    tags_to_spans,
    viterbi,
)
from voicenlu.model import DEFAULT_BACKBONE, resolve_backbone

TAGS = slot_tags(["artist", "city", "playlist"])
TAG_INDEX = {t: i for i, t in enumerate(TAGS)}


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    path = resolve_backbone(DEFAULT_BACKBONE)
    return prepare_tokenizer(Tokenizer.from_file(f"{path}/tokenizer.json"), 256)


# Word pieces: plain and accented letters, digits, emoji, CJK; words may carry combining
# marks and zero-width characters inside, but start and end on a visible character.
EDGE = st.sampled_from(list("abcxyzÀéñøßΩж7") + ["🎵", "🍕", "東", "京"])
INNER = st.sampled_from(list("klmé9") + ["\u0301", "\u200b", "\u200d", "'", "-", "🎶"])
WORD = st.builds(lambda a, mid, b: a + "".join(mid) + b, EDGE, st.lists(INNER, max_size=3), EDGE)


@st.composite
def annotated(draw):
    words = draw(st.lists(st.one_of(EDGE, WORD), min_size=1, max_size=12))
    seps = draw(
        st.lists(st.sampled_from([" ", "  ", " \u200b "]), min_size=len(words), max_size=len(words))
    )
    text, bounds = "", []
    for word, sep in zip(words, seps, strict=True):
        bounds.append((len(text), len(text) + len(word)))
        text += word + sep
    spans, i = [], 0
    while i < len(words):
        length = draw(st.integers(0, 3))
        if length:
            j = min(len(words), i + length)
            spans.append(
                SlotSpan(
                    draw(st.sampled_from(["artist", "city", "playlist"])),
                    bounds[i][0],
                    bounds[j - 1][1],
                )
            )
            i = j
        else:
            i += 1
    return text, tuple(spans)


@settings(max_examples=150, deadline=None)
@given(annotated())
def test_spans_survive_tagging_and_decoding(tokenizer, sample):
    text, spans = sample
    (enc,) = encode(tokenizer, [text])
    tags = spans_to_tags(enc, spans, TAG_INDEX)
    tag_ids = [0 if t == -100 else t for t in tags]
    decoded = [span for span, _ in tags_to_spans(enc, tag_ids, TAGS)]
    assert decoded == list(spans)
    for span in decoded:
        assert text[span.start : span.end]


def test_slot_can_end_inside_a_whitespace_word(tokenizer):
    text = "play tobymac's latest, then Diamonds!"
    spans = (SlotSpan("artist", 5, 12), SlotSpan("playlist", 28, 36))
    (enc,) = encode(tokenizer, [text])
    tags = [0 if t == -100 else t for t in spans_to_tags(enc, spans, TAG_INDEX)]
    decoded = [s for s, _ in tags_to_spans(enc, tags, TAGS)]
    assert [text[s.start : s.end] for s in decoded] == ["tobymac", "Diamonds"]


def test_constrained_decoding_never_starts_with_inside_tag():
    start, trans = allowed_transitions(TAGS)
    rng = np.random.default_rng(0)
    for _ in range(200):
        path = viterbi(np.log(rng.dirichlet(np.ones(len(TAGS)), size=8)), start, trans)
        for prev, cur in zip([0, *path], path, strict=False):
            if TAGS[cur].startswith("I-"):
                assert TAGS[prev][2:] == TAGS[cur][2:]


def test_decode_slots_reports_confidence_per_span(tokenizer):
    text = "add Diamonds to my roadtrip playlist"
    (enc,) = encode(tokenizer, [text])
    gold = (SlotSpan("artist", 4, 12),)
    tag_ids = spans_to_tags(enc, gold, TAG_INDEX)
    logits = np.full((len(enc.ids), len(TAGS)), -5.0, dtype=np.float32)
    for i, t in enumerate(tag_ids):
        logits[i, max(t, 0)] = 5.0
    ((span, confidence),) = decode_slots(enc, logits, TAGS, allowed_transitions(TAGS))
    assert span == gold[0] and 0.9 < confidence <= 1.0


@pytest.mark.parametrize(
    "text, spans, snapped",
    [
        # A word the model split: one span again.
        ("weather in Zurik", [("city", 11, 14), ("city", 14, 16)], [("city", 11, 16)]),
        # A span that starts or ends inside a word grows to the word's ends.
        ("weather in Zurik today", [("city", 13, 16)], [("city", 11, 16)]),
        ("weather in Zurik today", [("city", 11, 13)], [("city", 11, 16)]),
        # Punctuation is a boundary: the possessive stays outside.
        ("play tobymac's latest", [("artist", 5, 12)], [("artist", 5, 12)]),
        # Two slots in one word keep their share of it and never overlap.
        ("set 6pm", [("hour", 4, 5), ("ampm", 6, 7)], [("hour", 4, 6), ("ampm", 6, 7)]),
        # Separate words of one slot stay separate spans.
        ("Bern Zurich", [("city", 0, 4), ("city", 5, 11)], [("city", 0, 4), ("city", 5, 11)]),
    ],
)
def test_spans_snap_to_words(text, spans, snapped):
    found = snap_to_words(text, [(SlotSpan(*s), 0.8) for s in spans])
    assert [(s.slot, s.start, s.end) for s, _ in found] == snapped


def test_decoding_snaps_a_split_word(tokenizer):
    text = "weather in Zurik"
    (enc,) = encode(tokenizer, [text])
    pieces = [text[a:b] for (a, b), sp in zip(enc.offsets, enc.special, strict=True) if not sp]
    assert len(pieces) > 3, pieces  # the tokenizer splits the unknown name
    # Tag each sub-token of the name as the start of its own span, as a weak model may.
    name = [i for i, (a, _) in enumerate(enc.offsets) if not enc.special[i] and a >= 11]
    logits = np.full((len(enc.ids), len(TAGS)), -5.0, dtype=np.float32)
    for i in range(len(enc.ids)):
        logits[i, TAG_INDEX["B-city"] if i in name else 0] = 5.0
    assert len(decode_slots(enc, logits, TAGS, allowed_transitions(TAGS))) == len(name)
    ((span, _),) = decode_slots(enc, logits, TAGS, allowed_transitions(TAGS), text)
    assert text[span.start : span.end] == "Zurik"

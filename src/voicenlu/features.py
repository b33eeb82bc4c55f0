"""Tokenisation and BIO tagging of character spans, both ways.

Every sub-token is tagged (``B-x`` on the first sub-token of a slot, ``I-x`` on the rest),
not only the first sub-token of each word: backbones differ in what they call a word
(WordPiece splits ``tobymac's`` at the apostrophe, SentencePiece does not), and tagging
sub-tokens lets a slot end wherever a sub-token ends, whatever the backbone. Offsets come
from the fast tokenizer on the raw text, so decoded spans index the original string.

This module is shared by training and the torch-free runtime: numpy and tokenizers only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from tokenizers import Tokenizer

from voicenlu.data.records import SlotSpan, Utterance

OUTSIDE = "O"
IGNORE_INDEX = -100  # label of special tokens; skipped by the loss and by decoding


def slot_tags(slot_names: list[str]) -> list[str]:
    """The tag set: ``O`` then ``B-x``, ``I-x`` for each slot name, in sorted order."""
    tags = [OUTSIDE]
    for name in sorted(slot_names):
        tags += [f"B-{name}", f"I-{name}"]
    return tags


@dataclass
class Encoding:
    """One tokenised text: ids, char offsets per token and which tokens are special."""

    ids: list[int]
    type_ids: list[int]
    offsets: list[tuple[int, int]]
    special: list[bool]


def prepare_tokenizer(tokenizer: Tokenizer, max_length: int) -> Tokenizer:
    """Truncate to ``max_length`` and leave padding to :func:`pad_batch` (pad to the longest)."""
    tokenizer.enable_truncation(max_length)
    tokenizer.no_padding()
    return tokenizer


def encode(tokenizer: Tokenizer, texts: list[str]) -> list[Encoding]:
    """Tokenise raw texts; special tokens and empty (zero-width) tokens are marked special."""
    out = []
    for enc in tokenizer.encode_batch(texts):
        special = [
            bool(m) or start == end
            for m, (start, end) in zip(enc.special_tokens_mask, enc.offsets, strict=True)
        ]
        out.append(Encoding(enc.ids, enc.type_ids, [tuple(o) for o in enc.offsets], special))
    return out


def spans_to_tags(encoding: Encoding, spans: tuple[SlotSpan, ...], tag_index: dict[str, int]):
    """Tag ids per token: a token belongs to a span when it starts inside it."""
    tags = [IGNORE_INDEX if sp else tag_index[OUTSIDE] for sp in encoding.special]
    for span in spans:
        first = True
        for i, (start, _end) in enumerate(encoding.offsets):
            if encoding.special[i] or not (span.start <= start < span.end):
                continue
            tags[i] = tag_index[("B-" if first else "I-") + span.slot]
            first = False
    return tags


def tags_to_spans(
    encoding: Encoding, tag_ids: list[int], tags: list[str], scores: list[float] | None = None
) -> list[tuple[SlotSpan, float]]:
    """Decode tags into char spans: a span runs from its ``B-`` token to its last ``I-`` token.

    An ``I-x`` that does not continue an ``x`` span starts a new one (lenient, as seqeval is);
    the runtime's constrained decoding never produces one.
    """
    result: list[tuple[SlotSpan, float]] = []
    current: list = []  # [slot, start, end, [scores]]

    def close():
        if current:
            name, start, end, s = current
            result.append((SlotSpan(name, start, end), float(np.mean(s)) if s else 1.0))
            current.clear()

    for i, tag_id in enumerate(tag_ids):
        if encoding.special[i]:
            continue
        tag = tags[tag_id]
        start, end = encoding.offsets[i]
        score = [scores[i]] if scores is not None else []
        if tag == OUTSIDE:
            close()
        elif tag.startswith("I-") and current and current[0] == tag[2:]:
            current[2] = end
            current[3] += score
        else:
            close()
            current.extend([tag[2:], start, end, score])
    close()
    return result


def allowed_transitions(tags: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """BIO constraints as additive masks: (start[j], transition[i, j]) with -inf where invalid."""
    n = len(tags)
    start = np.zeros(n, dtype=np.float32)
    trans = np.zeros((n, n), dtype=np.float32)
    for j, tag in enumerate(tags):
        if tag.startswith("I-"):
            start[j] = -np.inf
            for i, prev in enumerate(tags):
                if prev[2:] != tag[2:] or prev == OUTSIDE:
                    trans[i, j] = -np.inf
    return start, trans


def viterbi(
    log_probs: np.ndarray, start: np.ndarray, trans: np.ndarray, end: np.ndarray | None = None
) -> list[int]:
    """Best tag path under additive start, transition and end scores (the BIO constraints,
    plus a CRF's learned scores when the model has one)."""
    score = log_probs[0] + start
    back = np.zeros(log_probs.shape, dtype=np.int64)
    for t in range(1, len(log_probs)):
        total = score[:, None] + trans
        back[t] = total.argmax(axis=0)
        score = total.max(axis=0) + log_probs[t]
    if end is not None:
        score = score + end
    path = [int(score.argmax())]
    for t in range(len(log_probs) - 1, 0, -1):
        path.append(int(back[t, path[-1]]))
    return path[::-1]


CRF_FILE = "crf.npz"  # a CRF's learned start, transition and end scores, in a bundle


def load_crf(path) -> dict[str, np.ndarray]:
    """A bundle's CRF scores (``start``, ``transitions``, ``end``), as the model saved them."""
    with np.load(path, allow_pickle=False) as z:
        return {name: z[name] for name in ("start", "transitions", "end")}


def decoding_scores(tags: list[str], crf: dict[str, np.ndarray] | None = None) -> tuple:
    """(start, trans, end) for :func:`viterbi`: the BIO constraints, plus the learned scores
    of a CRF (arrays ``start``, ``transitions``, ``end``) if there is one."""
    start, trans = allowed_transitions(tags)
    if crf is None:
        return start, trans, None
    return start + crf["start"], trans + crf["transitions"], crf["end"]


def decode_slots(
    encoding: Encoding,
    slot_logits: np.ndarray,
    tags: list[str],
    constraints,
    text: str | None = None,
) -> list[tuple[SlotSpan, float]]:
    """Char spans with confidences from one utterance's slot logits (tokens x tags);
    ``constraints`` are :func:`decoding_scores`. Given the ``text``, spans are snapped to
    its words (:func:`snap_to_words`)."""
    n = len(encoding.ids)
    logits = slot_logits[:n].astype(np.float64)
    logits -= logits.max(axis=1, keepdims=True)
    log_probs = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    keep = [i for i in range(n) if not encoding.special[i]]
    if not keep:
        return []
    path = viterbi(log_probs[keep], *constraints)
    tag_ids = [0] * n
    scores = [0.0] * n
    for i, tag_id in zip(keep, path, strict=True):
        tag_ids[i] = tag_id
        scores[i] = float(np.exp(log_probs[i, tag_id]))
    spans = tags_to_spans(encoding, tag_ids, tags, scores)
    return spans if text is None else snap_to_words(text, spans)


def _inside_word(text: str, i: int) -> bool:
    """Whether offset ``i`` falls between two letters or digits of one word."""
    return 0 < i < len(text) and text[i - 1].isalnum() and text[i].isalnum()


def snap_to_words(text: str, spans: list[tuple[SlotSpan, float]]) -> list[tuple[SlotSpan, float]]:
    """Slot spans that start and end on word boundaries, a word being a run of letters and
    digits: a model tags sub-tokens, and may split a word it has never seen ("Zurik" as
    "Zur" + "ik") or leave part of it out.

    Two spans of one slot that meet inside a word become one (their confidence the mean);
    a span that starts or ends inside a word grows to the word's ends, short of any
    neighbouring span. Punctuation stays a boundary: "tobymac's" may still end at "tobymac".
    """
    merged: list[tuple[SlotSpan, float]] = []
    for span, score in sorted(spans, key=lambda pair: pair[0].start):
        if merged:
            last, last_score = merged[-1]
            between = text[last.end : span.start]
            joined = _inside_word(text, last.end) and (not between or between.isalnum())
            if last.slot == span.slot and joined and _inside_word(text, span.start):
                merged[-1] = (SlotSpan(span.slot, last.start, span.end), (last_score + score) / 2)
                continue
        merged.append((span, score))
    snapped = []
    for k, (span, score) in enumerate(merged):
        floor = snapped[-1][0].end if snapped else 0
        ceiling = merged[k + 1][0].start if k + 1 < len(merged) else len(text)
        start, end = span.start, span.end
        while start > floor and _inside_word(text, start):
            start -= 1
        while end < ceiling and _inside_word(text, end):
            end += 1
        snapped.append((SlotSpan(span.slot, start, end), score))
    return snapped


def featurize(
    utterances: list[Utterance],
    tokenizer: Tokenizer,
    intent_index: dict[str, int],
    tag_index: dict[str, int],
    first_id: int = 0,
) -> tuple[list[dict], list[Encoding]]:
    """Training rows (ids, intent id, tag ids, an example id from ``first_id``) and encodings.

    The example id lets a metric look the utterance up again from a batch of rows.
    """
    encodings = encode(tokenizer, [u.text for u in utterances])
    rows = []
    for k, (u, enc) in enumerate(zip(utterances, encodings, strict=True)):
        rows.append(
            {
                "input_ids": enc.ids,
                "token_type_ids": enc.type_ids,
                "intent_labels": intent_index[u.intent],
                "slot_labels": spans_to_tags(enc, u.slots, tag_index),
                "example_ids": first_id + k,
            }
        )
    return rows, encodings


def pad_batch(encodings: list[Encoding], pad_id: int) -> dict[str, np.ndarray]:
    """Pad to the longest encoding in the batch (not to max_length): no wasted compute."""
    width = max(len(e.ids) for e in encodings)
    ids = np.full((len(encodings), width), pad_id, dtype=np.int64)
    type_ids = np.zeros_like(ids)
    mask = np.zeros_like(ids)
    for row, e in enumerate(encodings):
        ids[row, : len(e.ids)] = e.ids
        type_ids[row, : len(e.ids)] = e.type_ids
        mask[row, : len(e.ids)] = 1
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": type_ids}

"""Several requests in one text: where "turn off the lights and close the blinds" splits.

A text is split only at a connector ("and", "and then", "then", "also", "after that", "as
well as", a comma, and their combinations): those are the candidates. Most requests have
none, and cost nothing more. At each candidate a small classifier decides, from what the
bundle's own model says about the text on either side and about the whole: how sure it is
of each side's intent and whether each side looks like a request it knows (the in-scope
score), whether the two sides want the same intent, whether the candidate lies inside a slot
of the whole ("add Diamonds and Pearls to my playlist", "play rock and roll"), and how often
the words next to it begin or end a training request.

It is learned from the assistant's own single-request data, so no combination needs labels:
two training utterances of different intents joined with a connector give a boundary; every
candidate inside a real training utterance, and the wrong candidates inside such a join, give
a place not to split. Same-intent requests ("play jazz and then play rock") are not split:
training joins only different intents, since one-intent lists ("add X and Y to my
playlist") are the common case in real data.

The classifier is a logistic regression on standardised features, fitted with scikit-learn
at build time and scored with numpy, like the lexical model. Its file (``SEGMENT_FILE``)
records the connectors it was fitted with and its decision threshold.
"""

from __future__ import annotations

import math
import random
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from voicenlu.data.records import SlotSpan, Utterance

SEGMENT_FILE = "segment.npz"
# The connecting words; each may follow a comma, and a comma alone connects too.
WORDS = ("and", "and then", "then", "also", "and also", "after that", "and after that",
         "as well as")  # fmt: skip
CONNECTORS = (",", *WORDS, *(f", {w}" for w in WORDS))
# Synthetic joins: a share of three requests, so a boundary next to another is learned too.
JOINS_PER_UTTERANCE = 0.5
TRIPLE_SHARE = 0.2
MIN_JOINS, MAX_JOINS = 2_000, 8_000
SWAPPED_SHARE = 0.5  # single requests made with connector slot values, per join
MIN_DEV_PARTS = 100  # a dev set this big gives the joins; a smaller one, the training set
# Chosen with a bundle of 70 utterances per intent on 3,000 SNIPS training utterances it
# never saw: 0.5 split 96.1% of their joins right and 2.7% of the single requests saying
# "and"; 0.7 94.8% and 1.3%. A single request split wrongly breaks what worked before,
# a join left whole only fails to do more.
THRESHOLD = 0.7
# Candidates weighed per text, the first ones: each costs a model run of either side, so a
# long list of commas must not cost a hundred runs.
MAX_CANDIDATES = 8
C = 1.0

_TOKEN = re.compile(r",|\w+")
_WORD = re.compile(r"\w+")
_TRAILING = " \t.?!"


def connector_pattern(connectors: Sequence[str]) -> re.Pattern:
    """One regex for every connector, the longest first so "and then" wins over "and"."""
    alternatives = []
    for phrase in sorted(connectors, key=len, reverse=True):
        words = phrase.lstrip(", ").split()
        body = r"\s+".join(map(re.escape, words))
        if phrase.startswith(","):
            alternatives.append(r"\s*,\s*" + body if words else r"\s*,")
        else:
            alternatives.append(r"(?<!\w)" + body)
    return re.compile("(?:" + "|".join(alternatives) + r")(?!\w)", re.IGNORECASE)


def connector_key(matched: str) -> str:
    """The connector as listed: lower case, one space between words, a comma first."""
    return " ".join(_TOKEN.findall(matched.lower()))


@dataclass(frozen=True)
class Candidate:
    """A connector at ``start:end`` of a text, and the text on either side without it."""

    connector: str
    start: int
    end: int
    left: tuple[int, int]
    right: tuple[int, int]


def trimmed(text: str, start: int, end: int) -> tuple[int, int]:
    """``start:end`` without white space around it, nor final . ? ! (a sentence's end)."""
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1] in _TRAILING:
        end -= 1
    return start, end


def candidates(text: str, pattern: re.Pattern) -> list[Candidate]:
    """Every connector with words on both sides (the first ``MAX_CANDIDATES``)."""
    found = []
    for m in pattern.finditer(text):
        if len(found) == MAX_CANDIDATES:
            break
        left = trimmed(text, 0, m.start())
        right = trimmed(text, m.end(), len(text))
        if _WORD.search(text[slice(*left)]) and _WORD.search(text[slice(*right)]):
            found.append(Candidate(connector_key(m.group()), m.start(), m.end(), left, right))
    return found


def segments(text: str, cuts: Sequence[Candidate]) -> list[tuple[int, int]]:
    """The spans between the chosen candidates (in text order), each trimmed."""
    spans, start = [], 0
    for cut in cuts:
        spans.append(trimmed(text, start, cut.start))
        start = cut.end
    spans.append(trimmed(text, start, len(text)))
    return [s for s in spans if _WORD.search(text[slice(*s)])]


@dataclass
class Reading:
    """What the model says about one text: calibrated intent probabilities, in-scope score
    (0..1) and slot spans (offsets into that text)."""

    text: str
    probs: np.ndarray
    scope: float
    spans: list[SlotSpan]


def first_word(text: str) -> str:
    words = _WORD.findall(text.lower())
    return words[0] if words else ""


def last_word(text: str) -> str:
    words = _WORD.findall(text.lower())
    return words[-1] if words else ""


class SegmentModel:
    """The boundary classifier: features of a candidate, standardised, a logistic regression."""

    def __init__(
        self,
        connectors: Sequence[str],
        edge_words: dict[str, tuple[list[str], np.ndarray]],
        mean: np.ndarray,
        scale: np.ndarray,
        coef: np.ndarray,
        intercept: float,
        threshold: float = THRESHOLD,
    ):
        self.connectors = list(connectors)
        self.pattern = connector_pattern(self.connectors)
        self.edge_words = edge_words
        self._edge = {k: dict(zip(w, v.tolist(), strict=True)) for k, (w, v) in edge_words.items()}
        self.mean, self.scale = np.asarray(mean), np.asarray(scale)
        self.coef, self.intercept = np.asarray(coef), float(intercept)
        self.threshold = float(threshold)

    def candidates(self, text: str) -> list[Candidate]:
        return candidates(text, self.pattern)

    def features(self, cand: Candidate, whole: Reading, left: Reading, right: Reading):
        """One row: the connector, the model's view of each side and of the whole, the slots
        around the candidate, and how often the words next to it start or end a request."""
        return candidate_features(cand, whole, left, right, self.connectors, self._edge)

    def probabilities(self, rows: np.ndarray) -> np.ndarray:
        z = ((rows - self.mean) / self.scale) @ self.coef + self.intercept
        return 1.0 / (1.0 + np.exp(-z))

    def save(self, path: Path) -> None:
        with open(path, "wb") as f:
            np.savez_compressed(
                f,
                connectors=np.array(self.connectors),
                start_words=np.array(self.edge_words["start"][0], dtype=str),
                start_scores=self.edge_words["start"][1],
                end_words=np.array(self.edge_words["end"][0], dtype=str),
                end_scores=self.edge_words["end"][1],
                mean=self.mean,
                scale=self.scale,
                coef=self.coef,
                intercept=np.array(self.intercept),
                threshold=np.array(self.threshold),
            )

    @classmethod
    def load(cls, path: Path) -> SegmentModel:
        with np.load(path, allow_pickle=False) as z:
            edges = {
                k: ([str(w) for w in z[f"{k}_words"]], z[f"{k}_scores"]) for k in ("start", "end")
            }
            return cls(
                [str(c) for c in z["connectors"]],
                edges,
                z["mean"],
                z["scale"],
                z["coef"],
                float(z["intercept"]),
                float(z["threshold"]),
            )


def edge_scores(texts: Sequence[str]) -> dict[str, tuple[list[str], np.ndarray]]:
    """For each word, the log odds (smoothed) that it starts, and that it ends, a request
    where it appears: "play" and "book" start requests, "roll" seldom does."""
    seen, starts, ends = Counter(), Counter(), Counter()
    for text in texts:
        words = _WORD.findall(text.lower())
        if words:
            seen.update(set(words))
            starts[words[0]] += 1
            ends[words[-1]] += 1
    table = {}
    for kind, counts in (("start", starts), ("end", ends)):
        words = sorted(w for w in seen if counts[w])
        scores = np.array(
            [math.log((counts[w] + 0.5) / (seen[w] - counts[w] + 0.5)) for w in words]
        )
        table[kind] = (words, scores)
    return table


UNSEEN_EDGE = math.log(0.5 / 1.5)  # a word never seen at that edge of a training request


def candidate_features(
    cand: Candidate,
    whole: Reading,
    left: Reading,
    right: Reading,
    connectors: Sequence[str],
    edge: dict[str, dict[str, float]],
) -> np.ndarray:
    li, ri, wi = int(left.probs.argmax()), int(right.probs.argmax()), int(whole.probs.argmax())
    inside = any(s.start < cand.start and s.end > cand.end for s in whole.spans)
    slot_before = any(cand.start - 2 <= s.end <= cand.start for s in whole.spans)
    slot_after = any(cand.end <= s.start <= cand.end + 2 for s in whole.spans)
    left_ends_in_slot = any(s.end >= len(left.text) - 1 for s in left.spans)
    right_starts_in_slot = any(s.start <= 1 for s in right.spans)
    base = cand.connector.removeprefix(", ").removeprefix(",")
    one_hot = [float(base == w) for w in ("", *WORDS)]
    n_left = len(_WORD.findall(left.text))
    n_right = len(_WORD.findall(right.text))
    return np.array(
        [
            *one_hot,
            float(cand.connector.startswith(",")),
            whole.probs.max(),
            whole.scope,
            left.probs.max(),
            left.scope,
            right.probs.max(),
            right.scope,
            min(left.scope, right.scope),
            min(left.probs.max(), right.probs.max()),
            float(li == ri),
            float(li == ri) * min(left.probs.max(), right.probs.max()),
            float(left.probs @ right.probs),
            float(wi in (li, ri)),
            max(left.probs.max(), right.probs.max()) - whole.probs.max(),
            float(inside),
            float(slot_before),
            float(slot_after),
            float(slot_before and slot_after),
            float(left_ends_in_slot),
            float(right_starts_in_slot),
            edge["start"].get(first_word(right.text), UNSEEN_EDGE),
            edge["end"].get(last_word(left.text), UNSEEN_EDGE),
            math.log(n_left),
            math.log(n_right),
            float(min(n_left, n_right) <= 2),
        ]
    )


# --- building the training set from single requests --------------------------------------


def _join_piece(text: str, first: bool, rng: random.Random) -> str:
    text = text.strip()
    if not first and text and rng.random() < 0.5:
        text = text[0].lower() + text[1:]
    return text.rstrip(_TRAILING) if rng.random() < 0.7 else text


def join(parts: Sequence[str], connectors: Sequence[str], rng: random.Random):
    """Texts joined into one with a connector drawn for each join: (text, the span of each
    part in it). The first letter of a later part is lower-cased half the time, and a part's
    final . ? ! dropped most of the time, as a speaker or a transcript would."""
    text, spans = "", []
    for k, part in enumerate(parts):
        piece = _join_piece(part, k == 0, rng)
        if k:
            connector = rng.choice(connectors)
            text += (connector if connector.startswith(",") else " " + connector) + " "
        spans.append((len(text), len(text) + len(piece)))
        text += piece
    return text, spans


def is_boundary(cand: Candidate, spans: Sequence[tuple[int, int]]) -> bool:
    """Whether the candidate lies between two consecutive parts of a join."""
    return any(
        a[1] <= cand.start and cand.end <= b[0] for a, b in zip(spans, spans[1:], strict=False)
    )


def training_texts(
    utterances: Sequence[Utterance],
    parts: Sequence[Utterance],
    connectors: Sequence[str],
    seed: int,
) -> list[tuple[str, list[tuple[int, int]]]]:
    """Texts with the spans of the requests in them: joins of two or three of ``parts`` of
    different intents, and every one of ``utterances`` with a connector in it (one span)."""
    rng = random.Random(seed)
    pattern = connector_pattern(connectors)
    by_intent: dict[str, list[Utterance]] = {}
    for u in parts:
        if u.intent is not None:
            by_intent.setdefault(u.intent, []).append(u)
    joins = int(min(MAX_JOINS, max(MIN_JOINS, JOINS_PER_UTTERANCE * len(utterances))))
    singles = [u for u in utterances if candidates(u.text, pattern)]
    singles += with_connector_values(utterances, pattern, int(SWAPPED_SHARE * joins), rng)
    texts = [(u.text, [(0, len(u.text))]) for u in singles]
    intents = sorted(by_intent)
    if len(intents) < 2:
        return texts
    for _ in range(joins):
        n = 3 if rng.random() < TRIPLE_SHARE and len(intents) >= 3 else 2
        chosen = rng.sample(intents, n) if n <= len(intents) else rng.sample(intents, 2)
        parts = [rng.choice(by_intent[i]) for i in chosen]
        texts.append(join([u.text for u in parts], connectors, rng))
    return texts


def with_connector_values(
    utterances: Sequence[Utterance], pattern: re.Pattern, n: int, rng: random.Random
) -> list[Utterance]:
    """Up to ``n`` more single requests: utterances whose slot value was swapped for another
    value of that slot with a connector in it ("Diamonds" for "Diamonds and Pearls"), so the
    places not to split are not only the few the data happens to have."""
    values: dict[str, set[str]] = {}
    for u in utterances:
        for s in u.slots:
            if candidates(f"x {u.text[s.start : s.end]} x", pattern):
                values.setdefault(s.slot, set()).add(u.text[s.start : s.end])
    hosts = [(u, k) for u in utterances for k, s in enumerate(u.slots) if s.slot in values]
    made = []
    for u, k in rng.sample(hosts, min(n, len(hosts))):
        slot = u.slots[k]
        value = rng.choice(sorted(values[slot.slot]))
        made.append(Utterance(u.text[: slot.start] + value + u.text[slot.end :], u.intent))
    return made


def join_parts(train: Sequence[Utterance], dev: Sequence[Utterance]) -> Sequence[Utterance]:
    """The utterances the joins are made of: dev's when it is big enough, since the model
    reads its own training utterances with a confidence it has on no new request."""
    return dev if len(dev) >= MIN_DEV_PARTS and len({u.intent for u in dev}) > 1 else train


def fit(
    train: Sequence[Utterance],
    dev: Sequence[Utterance],
    read,
    seed: int,
    connectors: Sequence[str] = CONNECTORS,
) -> tuple[SegmentModel, dict]:
    """Fit the boundary classifier on joins of utterances (``join_parts``) and on the
    connectors inside single ones (train and dev); ``read(texts)`` gives the model's
    ``Reading`` of each text (the bundle's parser). Returns the model and a record."""
    from sklearn.linear_model import LogisticRegression

    edges = edge_scores([u.text for u in [*train, *dev]])
    model = SegmentModel(connectors, edges, np.zeros(1), np.ones(1), np.zeros(1), 0.0)
    parts = join_parts(train, dev)
    texts = training_texts([*train, *dev], parts, connectors, seed)
    rows, labels = candidate_rows(model, [t for t, _ in texts], read)
    y = np.array([is_boundary(cand, texts[i][1]) for i, cand in labels], dtype=int)
    if y.min() == y.max():
        raise ValueError("The segmenter needs utterances of at least two intents.")
    mean = rows.mean(axis=0)
    scale = rows.std(axis=0)
    scale[scale == 0] = 1.0
    classifier = LogisticRegression(C=C, max_iter=2000).fit((rows - mean) / scale, y)
    model.mean, model.scale = mean, scale
    model.coef, model.intercept = classifier.coef_[0], float(classifier.intercept_[0])
    record = {
        "threshold": model.threshold,
        "connectors": model.connectors,
        "joined": "dev" if parts is dev else "train",
        "texts": len(texts),
        "candidates": len(y),
        "boundaries": int(y.sum()),
        "seed": seed,
    }
    return model, record


def candidate_rows(model: SegmentModel, texts: Sequence[str], read):
    """Feature rows of every candidate in ``texts`` and (text index, candidate) for each."""
    found = [(i, c) for i, text in enumerate(texts) for c in model.candidates(text)]
    wanted = sorted({texts[i][slice(*c.left)] for i, c in found}
                    | {texts[i][slice(*c.right)] for i, c in found}
                    | {texts[i] for i, _ in found})  # fmt: skip
    readings = dict(zip(wanted, read(wanted), strict=True))
    rows = [
        model.features(
            c,
            readings[texts[i]],
            readings[texts[i][slice(*c.left)]],
            readings[texts[i][slice(*c.right)]],
        )
        for i, c in found
    ]
    return np.array(rows).reshape(len(rows), -1), found

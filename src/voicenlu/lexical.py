"""Lexical intent evidence: TF-IDF n-grams and a logistic regression, scored with numpy alone.

Intents are often told apart by their words, and with 10 to 50 examples per intent a bag of
n-grams learns them more surely than a fine-tuned encoder does (benchmarks/recipe.md). Every
bundle therefore carries a small lexical model next to the network; the runtime adds its log
probabilities, times a weight chosen on dev, to the network's intent logits (a product of
experts). The weight may be 0: with enough data dev says the network alone is best.

Features follow scikit-learn's ``TfidfVectorizer`` exactly (word 1-2 grams and character 2-5
grams within words, lower case, sublinear TF, smoothed IDF, L2 norm per analyzer; a test
checks it), so the classifier can be fitted with scikit-learn at training time while the
runtime needs no scikit-learn. The same model is the TF-IDF baseline of the benchmarks.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from voicenlu.data.records import Utterance

# C chosen once on the SNIPS dev set (validate files), training on the standard train split,
# from {1, 3, 10, 30, 100}; the test set played no part.
DEFAULT_C = 10.0
LEXICAL_FILE = "lexical.npz"  # in a bundle whose manifest gives the model a weight
WORD_NGRAMS = (1, 2)
CHAR_NGRAMS = (2, 5)
MAX_TERMS = 50_000  # per analyzer, the most frequent: bounds the file on large data
# Weights tried for the lexical log probabilities; dev accuracy picks one. Beyond 2 the
# lexical model overrules the network: on held-out SNIPS dev, 1 and 2 gave 94.45% and 8 gave
# 93.92% at 10 per intent; 2 gave 97.32% and 0 95.89% at 70 (benchmarks/recipe.md).
WEIGHTS = (0.0, 0.5, 1.0, 2.0)
# Data too small for a dev set has nothing to choose with: the middle of what held-out dev
# chose (1 and 2 on SNIPS at 10 per intent, 0.5 on BANKING77 at 10 per intent).
NO_DEV_WEIGHT = 1.0

_WORD = re.compile(r"(?u)\b\w\w+\b")
_SPACES = re.compile(r"\s\s+")


def word_terms(text: str) -> list[str]:
    words = _WORD.findall(text.lower())
    terms = list(words)
    for n in range(2, WORD_NGRAMS[1] + 1):
        terms += [" ".join(words[i : i + n]) for i in range(len(words) - n + 1)]
    return terms


def char_wb_words(text: str) -> list[str]:
    """The words that ``char_terms`` cuts into n-grams."""
    return _SPACES.sub(" ", text.lower()).split()


def word_char_terms(word: str) -> list[str]:
    """Character n-grams of one word padded with one space each side."""
    padded = f" {word} "
    terms = []
    for n in range(CHAR_NGRAMS[0], CHAR_NGRAMS[1] + 1):
        if len(padded) <= n:  # a word this short counts once, whole
            terms.append(padded)
            break
        terms += [padded[i : i + n] for i in range(len(padded) - n + 1)]
    return terms


def char_terms(text: str) -> list[str]:
    """Character n-grams inside words (``char_wb``)."""
    return [t for word in char_wb_words(text) for t in word_char_terms(word)]


ANALYZERS = (word_terms, char_terms)
WORD_CACHE = 50_000  # words whose character n-gram columns the runtime keeps


class _Table:
    """Vocabulary and IDF of one analyzer."""

    def __init__(self, terms: list[str], idf: np.ndarray):
        self.terms = terms
        self.index = {t: i for i, t in enumerate(terms)}
        self.idf = idf

    @classmethod
    def fit(cls, docs: list[list[str]]) -> _Table:
        df = Counter(t for doc in docs for t in set(doc))
        if len(df) > MAX_TERMS:
            total = Counter(t for doc in docs for t in doc)
            kept = set(sorted(df, key=lambda t: (-total[t], t))[:MAX_TERMS])
            df = Counter({t: c for t, c in df.items() if t in kept})
        terms = sorted(df)
        n = len(docs)
        idf = np.array([math.log((1 + n) / (1 + df[t])) + 1 for t in terms])
        return cls(terms, idf)

    def columns(self, terms: list[str]) -> list[int]:
        index = self.index
        return [index[t] for t in terms if t in index]


class LexicalModel:
    """TF-IDF features and a multinomial logistic regression over intents."""

    def __init__(self, intents: list[str], tables: list[_Table], coef, intercept):
        self.intents = list(intents)
        self.tables = tables
        self.offsets = np.cumsum([0] + [len(t.terms) for t in tables])
        self.coef = np.asarray(coef, dtype=np.float32)  # (intents, features)
        self.intercept = np.asarray(intercept, dtype=np.float32)
        self.idf = np.concatenate([t.idf for t in tables])  # both analyzers' columns
        self._word_columns: dict[str, list[int]] = {}  # char n-gram columns of seen words

    @classmethod
    def fit(
        cls, utterances: Sequence[Utterance], intents: list[str] | None = None, c=DEFAULT_C
    ) -> LexicalModel:
        """Fit on labelled utterances; ``intents`` fixes the order of the columns."""
        from scipy.sparse import csr_matrix
        from sklearn.linear_model import LogisticRegression

        labelled = [u for u in utterances if u.intent is not None]
        names = list(intents) if intents is not None else sorted({u.intent for u in labelled})
        if len({u.intent for u in labelled}) < 2:
            raise ValueError("The lexical model needs utterances of at least two intents.")
        docs = [[analyze(u.text) for u in labelled] for analyze in ANALYZERS]
        tables = [_Table.fit(d) for d in docs]
        model = cls(names, tables, np.zeros((len(names), 0)), np.zeros(len(names)))
        x = model.matrix([u.text for u in labelled], csr_matrix)
        y = np.array([names.index(u.intent) for u in labelled])
        classifier = LogisticRegression(C=c, max_iter=2000).fit(x, y)
        # Intents absent from the data (never in practice) keep a very low score.
        coef = np.zeros((len(names), x.shape[1]), dtype=np.float32)
        intercept = np.full(len(names), -30.0, dtype=np.float32)
        seen = classifier.classes_
        if len(seen) == 2:  # binary: sklearn keeps one row, for the second class
            coef[seen[1]], intercept[seen[1]] = classifier.coef_[0], classifier.intercept_[0]
            intercept[seen[0]] = 0.0
        else:
            coef[seen], intercept[seen] = classifier.coef_, classifier.intercept_
        model.coef, model.intercept = coef, intercept
        return model

    def matrix(self, texts: list[str], csr_matrix):
        """The TF-IDF rows as a scipy sparse matrix (``csr_matrix`` is passed in: the runtime
        never needs scipy)."""
        rows = [self.features(text) for text in texts]
        indptr = np.cumsum([0] + [len(cols) for cols, _ in rows])
        indices = [cols for cols, _ in rows] or [np.zeros(0, dtype=np.int64)]
        data = [values for _, values in rows] or [np.zeros(0)]
        shape = (len(texts), int(self.offsets[-1]))
        return csr_matrix((np.concatenate(data), np.concatenate(indices), indptr), shape=shape)

    def features(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        """(columns, values) of one text's TF-IDF row, both analyzers (a row of ``matrix``).

        A word's character n-gram columns are looked up once and kept (requests repeat their
        words, and cutting them is most of the cost of a text); both analyzers are weighed in
        one pass, since at this size each numpy call costs more than the terms it handles.
        """
        words, chars = self.tables
        offset = int(self.offsets[1])
        columns = words.columns(word_terms(text))
        for word in char_wb_words(text):
            known = self._word_columns.get(word)
            if known is None:
                known = [offset + c for c in chars.columns(word_char_terms(word))]
                if len(self._word_columns) < WORD_CACHE:
                    self._word_columns[word] = known
            columns += known
        counts = Counter(columns)
        cols = np.fromiter(counts, dtype=np.int64, count=len(counts))
        values = (1 + np.log(np.fromiter(counts.values(), dtype=np.float64))) * self.idf[cols]
        is_word = cols < offset
        for part in (is_word, ~is_word):  # L2 norm per analyzer
            norm = np.sqrt(np.dot(values[part], values[part]))
            if norm:
                values[part] /= norm
        return cols, values

    def decision(self, texts: Sequence[str]) -> np.ndarray:
        """Logistic-regression scores, (texts, intents)."""
        out = np.tile(self.intercept.astype(np.float64), (len(texts), 1))
        for i, text in enumerate(texts):
            cols, values = self.features(text)
            out[i] += self.coef[:, cols] @ values
        return out

    def log_probs(self, texts: Sequence[str]) -> np.ndarray:
        z = self.decision(texts)
        z -= z.max(axis=1, keepdims=True)
        return z - np.log(np.exp(z).sum(axis=1, keepdims=True))

    def predict(self, texts: Sequence[str]) -> list[str]:
        return [self.intents[i] for i in self.decision(texts).argmax(axis=1)]

    def save(self, path: Path) -> None:
        words, chars = self.tables
        with open(path, "wb") as f:
            np.savez_compressed(
                f,
                intents=np.array(self.intents),
                word_terms=np.array(words.terms, dtype=str),
                word_idf=words.idf,
                char_terms=np.array(chars.terms, dtype=str),
                char_idf=chars.idf,
                coef=self.coef,
                intercept=self.intercept,
            )

    @classmethod
    def load(cls, path: Path) -> LexicalModel:
        with np.load(path, allow_pickle=False) as z:
            tables = [
                _Table([str(t) for t in z[f"{kind}_terms"]], z[f"{kind}_idf"])
                for kind in ("word", "char")
            ]
            return cls([str(i) for i in z["intents"]], tables, z["coef"], z["intercept"])


def choose_weight(network_logits: np.ndarray, lexical: np.ndarray, labels: np.ndarray) -> float:
    """The weight of the lexical log probabilities with the best dev accuracy; the largest of
    equals, since a small dev set that the network already gets right ties them all, while
    held-out dev says 1 to 2 is best (benchmarks/recipe.md)."""

    def accuracy(weight: float) -> float:
        return float(((network_logits + weight * lexical).argmax(axis=1) == labels).mean())

    return max(WEIGHTS, key=lambda w: (accuracy(w), w))

"""The intent baseline a user would otherwise pick: TF-IDF n-grams + logistic regression.

It shows what the transformer model buys over a fast, classic pipeline (DESIGN.md section 5).
scikit-learn is imported lazily so that importing this module costs nothing.
"""

from __future__ import annotations

from collections.abc import Sequence

from voicenlu.data.records import Utterance

# Chosen once on the SNIPS dev set (validate files), training on the standard train split,
# from C in {1, 3, 10, 30, 100}; the test set played no part.
DEFAULT_C = 10.0


class TfidfLogReg:
    """Word 1-2 grams + character 2-5 grams (within words), sublinear TF-IDF, logistic regression.

    Character n-grams make it robust to inflections and unseen names; intents only, no slots.
    """

    def __init__(self, c: float = DEFAULT_C, seed: int = 0) -> None:
        self.c = c
        self.seed = seed
        self._pipeline = None

    def fit(self, utterances: Sequence[Utterance]) -> TfidfLogReg:
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import FeatureUnion, make_pipeline

        labelled = [u for u in utterances if u.intent is not None]
        if len({u.intent for u in labelled}) < 2:
            raise ValueError("TfidfLogReg needs utterances of at least two intents to fit")
        features = FeatureUnion(
            [
                ("word", TfidfVectorizer(analyzer="word", ngram_range=(1, 2), sublinear_tf=True)),
                (
                    "char",
                    TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True),
                ),
            ]
        )
        classifier = LogisticRegression(C=self.c, max_iter=2000, random_state=self.seed)
        self._pipeline = make_pipeline(features, classifier)
        self._pipeline.fit([u.text for u in labelled], [u.intent for u in labelled])
        return self

    def predict(self, texts: Sequence[str]) -> list[str]:
        if self._pipeline is None:
            raise RuntimeError("TfidfLogReg.predict called before fit")
        return [str(label) for label in self._pipeline.predict(list(texts))]

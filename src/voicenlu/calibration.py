"""Calibration: the softmax temperature, the in-scope score and the out-of-scope threshold.

Fitted on dev at the end of training, stored in the bundle's manifest, applied by the
runtime. numpy only, so the runtime stays free of torch.

There are no out-of-scope examples to fit on, so the threshold comes from in-scope requests
alone: it lets ``DEV_ACCEPT`` of dev through. The in-scope scores on offer:

- ``max_softmax``: the top calibrated probability;
- ``energy``: T * logsumexp(logits / T) (Liu et al., 2020), which keeps the logits' scale,
  where a request unlike every training intent tends to show;
- ``mahalanobis``: how close the request's utterance vector lies to the nearest intent's
  training utterances, under one covariance shared by all intents (Lee et al., 2018;
  Podolskiy et al., 2021). It reads the model's features rather than its decision, so a
  request that the intent head would confidently squeeze into a known intent still shows
  as unlike anything trained on. Its statistics (:class:`ScopeModel`) live in the bundle.
  Very short requests ("weather") have vectors unlike most training utterances, though;
- ``mahalanobis_softmax``: the mean of the two, each as the share of dev that scored lower.
  A short request the head is sure of gets through; a request unlike every intent must
  also leave the head unsure to pass.

``energy`` and ``mahalanobis`` are reported as the share of dev requests that scored lower
too, so a threshold reads the same way for every score (0 to 1).

The background (``voicenlu.data.background``: general requests of other assistants) gives
the distance a second reference. Dev alone cannot rank requests less like the assistant than
all of dev: they all share 0, an order the barista asks in other words as much as the
weather. With the background, the distance's share is the mean of the shares of dev and of
the background that lay farther: 0 to 0.5 among general requests, 0.5 between them and dev,
0.5 to 1 among the assistant's own. The threshold is then the lower of the one that lets
``DEV_ACCEPT`` of dev through and the one that rejects ``BACKGROUND_REJECT`` of the
background, so where the assistant lies apart from general requests (a small one), requests
between the two pass; where they mix (SNIPS' weather and music), dev decides as before. A
one-intent assistant, whose softmax says nothing, is scoped by the distance alone.

The leave-one-intent-out measurement (benchmarks/oos.md) chose ``mahalanobis_softmax``.
"""

from __future__ import annotations

import math

import numpy as np

SCORES = ("max_softmax", "energy", "mahalanobis", "mahalanobis_softmax")
# Put on the 0..1 scale by the dev set's scores (``reference``; the mahalanobis part's for
# mahalanobis_softmax, whose softmax part has its own ``reference_softmax``).
RANKED = ("energy", "mahalanobis", "mahalanobis_softmax")
SCOPED = ("mahalanobis", "mahalanobis_softmax")  # read utterance vectors and the scope file
DEFAULT_SCORE = "mahalanobis_softmax"
DEV_ACCEPT = 0.99  # share of in-scope dev requests the out-of-scope threshold lets through
BACKGROUND_REJECT = 0.99  # share of the background requests the threshold rejects, at least
MIN_DEV_FOR_TEMPERATURE = 100
MAX_REFERENCE = 1000  # dev scores kept in the manifest (as quantiles beyond this)
SCOPE_FILE = "scope.npz"  # the ScopeModel, in a bundle whose score is one of SCOPED


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = logits.astype(np.float64) / temperature
    z -= z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def energy(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Negative free energy, T * logsumexp(logits / T): high for requests the model knows."""
    z = logits.astype(np.float64) / temperature
    top = z.max(axis=1)
    return temperature * (top + np.log(np.exp(z - top[:, None]).sum(axis=1)))


class ScopeModel:
    """One Gaussian per intent over utterance vectors, with a shared covariance.

    Stored whitened: ``whitening`` is a square root of the precision matrix, so the squared
    Mahalanobis distance to an intent is a plain squared distance after one product.
    """

    def __init__(self, means: np.ndarray, whitening: np.ndarray):
        self.means = means  # intents x dims, already whitened
        self.whitening = whitening  # dims x dims

    @classmethod
    def fit(cls, vectors: np.ndarray, labels: np.ndarray) -> ScopeModel:
        """Intent means and their pooled covariance, shrunk towards a multiple of the
        identity by Ledoit and Wolf's rule: a few utterances per intent cannot estimate a
        covariance in hundreds of dimensions, and the rule shrinks more the fewer there are."""
        vectors = vectors.astype(np.float64)
        intents = np.unique(labels)
        means = np.stack([vectors[labels == i].mean(axis=0) for i in intents])
        covariance = ledoit_wolf(vectors - means[np.searchsorted(intents, labels)])
        whitening = np.linalg.cholesky(np.linalg.inv(covariance))
        return cls((means @ whitening).astype(np.float32), whitening.astype(np.float32))

    def density(self, vectors: np.ndarray) -> np.ndarray:
        """Minus the squared Mahalanobis distance to the nearest intent: high when in scope."""
        z = vectors.astype(np.float32) @ self.whitening
        distances = (
            (z * z).sum(axis=1, keepdims=True)
            - 2 * z @ self.means.T
            + (self.means * self.means).sum(axis=1)
        )
        return -distances.min(axis=1).astype(np.float64)

    def save(self, path) -> None:
        with open(path, "wb") as f:
            np.savez(f, means=self.means, whitening=self.whitening)

    @classmethod
    def load(cls, path) -> ScopeModel:
        with np.load(path, allow_pickle=False) as z:
            return cls(z["means"], z["whitening"])


def ledoit_wolf(centred: np.ndarray) -> np.ndarray:
    """The Ledoit-Wolf (2004) shrunk covariance of rows that are already centred."""
    n, dims = centred.shape
    sample = centred.T @ centred / n
    scale = np.trace(sample) / dims or 1.0  # all rows at their mean: fall back to identity
    spread = ((sample - scale * np.eye(dims)) ** 2).sum() / dims
    # How far each row's outer product strays from the sample covariance, on average.
    fourth = ((centred * centred).sum(axis=1) ** 2).sum() / n
    noise = min((fourth - (sample**2).sum()) / (n * dims), spread)
    shrinkage = noise / spread if spread > 0 else 1.0
    return shrinkage * scale * np.eye(dims) + (1 - shrinkage) * sample


def raw_scores(
    logits: np.ndarray, score: str, temperature: float = 1.0, density: np.ndarray | None = None
) -> np.ndarray:
    """The named score before it is put on the 0..1 scale (for ranking, as AUROC does); for
    ``mahalanobis_softmax``, its mahalanobis part.

    ``density`` is the bundle's :meth:`ScopeModel.density` of the same requests, which the
    ``mahalanobis`` score is.
    """
    if score in SCOPED:
        if density is None:
            raise ValueError(f"The {score} score needs the requests' utterance vectors.")
        return density
    if score == "energy":
        return energy(logits, temperature)
    return softmax(logits, temperature).max(axis=1)


def in_scope_scores(
    logits: np.ndarray, calibration: dict, density: np.ndarray | None = None
) -> np.ndarray:
    """0..1, higher for requests more like those the model was trained on.

    A bundle without calibration scores by the plain top probability.
    """
    temperature = float(calibration.get("temperature", 1.0))
    score = calibration.get("score", "max_softmax")
    raw = raw_scores(logits, score, temperature, density)
    if score in RANKED:
        shares = _share_below(calibration["reference"], raw)
        if "reference_background" in calibration:
            shares = (shares + _share_below(calibration["reference_background"], raw)) / 2
    if score == "mahalanobis_softmax":
        sure = softmax(logits, temperature).max(axis=1)
        return (shares + _share_below(calibration["reference_softmax"], sure)) / 2
    return shares if score in RANKED else raw


def ranking_scores(
    logits: np.ndarray, calibration: dict, density: np.ndarray | None = None
) -> np.ndarray:
    """What AUROC ranks requests by: the calibration's raw score, or the 0..1 score itself
    for ``mahalanobis_softmax``, a mean of shares with nothing rawer behind it."""
    score = calibration.get("score", "max_softmax")
    if score == "mahalanobis_softmax":
        return in_scope_scores(logits, calibration, density)
    return raw_scores(logits, score, float(calibration.get("temperature", 1.0)), density)


def _share_below(reference, scores: np.ndarray) -> np.ndarray:
    """The share of the (sorted) dev ``reference`` that each score reaches."""
    reference = np.asarray(reference)
    return np.searchsorted(reference, scores, side="right") / len(reference)


def _reference(dev: np.ndarray) -> list[float]:
    """Dev scores to rank requests against, as at most ``MAX_REFERENCE`` quantiles (six
    decimals: top probabilities crowd just below 1)."""
    points = np.linspace(0.0, 1.0, min(len(dev), MAX_REFERENCE))
    return [round(float(x), 6) for x in np.quantile(dev, points)]


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The softmax temperature that minimises dev negative log-likelihood (grid search)."""
    best_t, best_nll = 1.0, np.inf
    for t in np.exp(np.linspace(np.log(0.5), np.log(10.0), 200)):
        z = logits / t
        z = z - z.max(axis=1, keepdims=True)
        nll = -(z[np.arange(len(labels)), labels] - np.log(np.exp(z).sum(axis=1))).mean()
        if nll < best_nll:
            best_t, best_nll = float(t), nll
    return best_t


def calibrate(
    logits: np.ndarray,
    labels: np.ndarray,
    score: str = DEFAULT_SCORE,
    accept: float = DEV_ACCEPT,
    density: np.ndarray | None = None,
    background: tuple[np.ndarray, np.ndarray | None] | None = None,
) -> dict:
    """Temperature, in-scope score and the threshold that lets ``accept`` of dev through.

    A small dev set that the model gets all right says nothing about temperature (the
    likelihood only grows as it sharpens), so the temperature is fitted only on enough data.
    ``density``: dev's :meth:`ScopeModel.density`, which the scores of ``SCOPED`` need.
    ``background``: (logits, density) of the background requests, for the scores of
    ``SCOPED``: a second reference for the distance, and a threshold that rejects
    ``BACKGROUND_REJECT`` of them where that lets more through than dev's.
    """
    if score not in SCORES:
        raise ValueError(f"Unknown in-scope score {score!r}: choose one of {SCORES}.")
    enough = len(labels) >= MIN_DEV_FOR_TEMPERATURE
    temperature = fit_temperature(logits, labels) if enough else 1.0
    calibration = {
        "temperature": temperature,
        "temperature_fitted": enough,
        "score": score,
        "dev_accept": accept,
    }
    if score in RANKED:
        calibration["reference"] = _reference(raw_scores(logits, score, temperature, density))
    if score == "mahalanobis_softmax":
        calibration["reference_softmax"] = _reference(softmax(logits, temperature).max(axis=1))
    against = background if score in SCOPED else None
    if against is not None:
        calibration["reference_background"] = _reference(against[1])
    if logits.shape[1] < 2 and against is None:
        # One intent: its head is never trained (a softmax over one class has no loss), so its
        # score says nothing about scope, and without a background nothing else does either.
        calibration["threshold"] = 0.0
        return calibration
    dev_scores = in_scope_scores(logits, calibration, density)
    threshold = round(float(np.quantile(dev_scores, 1 - accept)), 4)
    if against is not None:
        others = np.sort(in_scope_scores(against[0], calibration, against[1]))
        # The lowest threshold (4 decimals) that still rejects BACKGROUND_REJECT of them.
        highest_rejected = others[math.ceil(BACKGROUND_REJECT * len(others)) - 1]
        threshold = min(threshold, math.floor(highest_rejected * 1e4) / 1e4 + 1e-4)
        calibration["background"] = {
            "requests": len(others),
            "rejected": round(float((others < threshold).mean()), 4),
        }
    calibration["threshold"] = round(threshold, 4)
    return calibration

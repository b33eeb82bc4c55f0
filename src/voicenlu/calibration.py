"""Calibration: the softmax temperature, the in-scope score and the out-of-scope threshold.

Fitted on dev at the end of training, stored in the bundle's manifest, applied by the
runtime. numpy only, so the runtime stays free of torch.

There are no out-of-scope examples to fit on, so the threshold comes from in-scope requests
alone: it lets ``DEV_ACCEPT`` of dev through. Two in-scope scores are offered:

- ``max_softmax``: the top calibrated probability;
- ``energy``: T * logsumexp(logits / T) (Liu et al., 2020), which keeps the logits' scale,
  where a request unlike every training intent tends to show. It is reported as the share
  of dev requests that scored lower, so a threshold reads the same way for both (0 to 1).

The leave-one-intent-out measurement (benchmarks/oos.md) chose ``energy``.
"""

from __future__ import annotations

import numpy as np

SCORES = ("max_softmax", "energy")
DEFAULT_SCORE = "energy"
DEV_ACCEPT = 0.99  # share of in-scope dev requests the out-of-scope threshold lets through
MIN_DEV_FOR_TEMPERATURE = 100
MAX_REFERENCE = 1000  # dev energies kept in the manifest (as quantiles beyond this)


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


def raw_scores(logits: np.ndarray, score: str, temperature: float = 1.0) -> np.ndarray:
    """The named score before it is put on the 0..1 scale (for ranking, as AUROC does)."""
    if score == "energy":
        return energy(logits, temperature)
    return softmax(logits, temperature).max(axis=1)


def in_scope_scores(logits: np.ndarray, calibration: dict) -> np.ndarray:
    """0..1, higher for requests more like those the model was trained on.

    A bundle without calibration scores by the plain top probability.
    """
    temperature = float(calibration.get("temperature", 1.0))
    score = calibration.get("score", "max_softmax")
    raw = raw_scores(logits, score, temperature)
    if score == "energy":
        reference = np.asarray(calibration["reference"])
        return np.searchsorted(reference, raw, side="right") / len(reference)
    return raw


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
) -> dict:
    """Temperature, in-scope score and the threshold that lets ``accept`` of dev through.

    A small dev set that the model gets all right says nothing about temperature (the
    likelihood only grows as it sharpens), so the temperature is fitted only on enough data.
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
    if score == "energy":
        dev = energy(logits, temperature)
        points = np.linspace(0.0, 1.0, min(len(dev), MAX_REFERENCE))
        calibration["reference"] = [round(float(x), 4) for x in np.quantile(dev, points)]
    if logits.shape[1] < 2:
        # One intent: its head is never trained (a softmax over one class has no loss), so its
        # score says nothing about scope, and such a bundle rejects nothing.
        calibration["threshold"] = 0.0
        return calibration
    dev_scores = in_scope_scores(logits, calibration)
    calibration["threshold"] = round(float(np.quantile(dev_scores, 1 - accept)), 4)
    return calibration

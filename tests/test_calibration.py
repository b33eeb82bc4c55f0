"""Calibration: the in-scope scores, the temperature, and thresholds that let 99% of dev through."""

from __future__ import annotations

import numpy as np
import pytest

from voicenlu.calibration import (
    MIN_DEV_FOR_TEMPERATURE,
    ScopeModel,
    calibrate,
    energy,
    in_scope_scores,
    ledoit_wolf,
    softmax,
)


def dev_logits(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Logits of a 4-intent model that is right about 90% of the time."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, n)
    logits = rng.normal(0, 1, (n, 4))
    logits[np.arange(n), labels] += rng.normal(4, 1.5, n)
    return logits, labels


def test_energy_is_a_temperature_scaled_logsumexp():
    logits = np.array([[2.0, 0.0, -1.0], [10.0, 10.0, 10.0]])
    np.testing.assert_allclose(energy(logits), np.log(np.exp(logits).sum(axis=1)))
    np.testing.assert_allclose(energy(logits, 2.0), 2.0 * np.log(np.exp(logits / 2).sum(axis=1)))
    assert np.isfinite(energy(np.array([[1000.0, 999.0]]))).all()  # no overflow


@pytest.mark.parametrize("score", ["energy", "max_softmax"])
def test_threshold_lets_99_percent_of_dev_through(score):
    logits, labels = dev_logits(700)
    calibration = calibrate(logits, labels, score=score)
    assert calibration["score"] == score and calibration["temperature_fitted"]
    accepted = in_scope_scores(logits, calibration) >= calibration["threshold"]
    assert 0.985 <= accepted.mean() <= 0.995
    # A request far from every intent (all logits low) is rejected.
    flat = np.full((1, 4), -3.0)
    assert in_scope_scores(flat, calibration)[0] < calibration["threshold"]


@pytest.mark.parametrize("score", ["energy", "max_softmax"])
def test_a_single_intent_rejects_nothing(score):
    """With one intent the score was never trained to mean anything: no request is refused."""
    logits = np.random.default_rng(0).normal(0, 3, (200, 1))
    calibration = calibrate(logits, np.zeros(200, dtype=int), score=score)
    assert calibration["threshold"] == 0.0
    unseen = np.array([[-50.0], [0.0], [50.0]])
    assert (in_scope_scores(unseen, calibration) >= calibration["threshold"]).all()


def test_energy_scores_are_shares_of_dev_and_rise_with_the_logits():
    logits, labels = dev_logits(300)
    calibration = calibrate(logits, labels, score="energy")
    assert calibration["reference"] == sorted(calibration["reference"])
    scores = in_scope_scores(logits, calibration)
    assert ((scores >= 0) & (scores <= 1)).all()
    scaled = np.stack([logits[0] * k for k in (0.2, 1.0, 5.0)])
    low, mid, high = in_scope_scores(scaled, calibration)
    assert low <= mid <= high and high == 1.0


def test_temperature_needs_enough_dev_data():
    logits, labels = dev_logits(MIN_DEV_FOR_TEMPERATURE - 1)
    assert calibrate(logits, labels, score="energy")["temperature"] == 1.0
    logits, labels = dev_logits(700)
    sharp = calibrate(logits * 5, labels, score="energy")["temperature"]
    assert sharp > 2.0  # over-confident logits get softened
    probs = softmax(logits * 5, sharp)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)


def test_bundles_without_a_score_use_the_top_probability():
    logits = np.array([[3.0, 0.0], [0.1, 0.0]])
    np.testing.assert_allclose(
        in_scope_scores(logits, {"temperature": 1.0}), softmax(logits).max(axis=1)
    )


def test_unknown_score_is_refused():
    logits, labels = dev_logits(10)
    with pytest.raises(ValueError, match="Unknown in-scope score"):
        calibrate(logits, labels, score="cosine")


def utterance_vectors(n_per_intent: int, dims: int, seed: int = 0):
    """Three intents' vectors around their own centres, correlated across dimensions."""
    rng = np.random.default_rng(seed)
    mixing = rng.normal(0, 1, (dims, dims))
    labels = np.repeat(np.arange(3), n_per_intent)
    centres = rng.normal(0, 4, (3, dims))
    return centres[labels] + rng.normal(0, 1, (len(labels), dims)) @ mixing, labels


@pytest.mark.parametrize("rows, dims", [(500, 8), (12, 40)])
def test_ledoit_wolf_shrinkage_matches_scikit_learn(rows, dims):
    from sklearn.covariance import ledoit_wolf as reference

    centred = np.random.default_rng(1).normal(0, 1, (rows, dims)) * np.linspace(0.2, 3, dims)
    centred -= centred.mean(axis=0)
    np.testing.assert_allclose(ledoit_wolf(centred), reference(centred, assume_centered=True)[0])


def test_scope_density_is_minus_the_squared_mahalanobis_distance_to_the_nearest_intent():
    vectors, labels = utterance_vectors(200, 6)
    scope = ScopeModel.fit(vectors, labels)
    means = np.stack([vectors[labels == i].mean(axis=0) for i in range(3)])
    centred = vectors - means[labels]
    precision = np.linalg.inv(ledoit_wolf(centred))
    probe = vectors[:5] + 0.5
    expected = -np.min(
        [np.einsum("ij,jk,ik->i", probe - m, precision, probe - m) for m in means], axis=0
    )
    np.testing.assert_allclose(scope.density(probe), expected, rtol=1e-3)


def test_scope_score_rejects_a_vector_far_from_every_intent(tmp_path):
    vectors, labels = utterance_vectors(100, 16)
    scope = ScopeModel.fit(vectors, labels)
    scope.save(tmp_path / "scope.npz")
    scope = ScopeModel.load(tmp_path / "scope.npz")  # what the runtime reads
    dev, dev_labels = utterance_vectors(100, 16, seed=0)
    logits = np.eye(3)[dev_labels] * 5.0  # a confident, right intent head
    calibration = calibrate(logits, dev_labels, score="mahalanobis", density=scope.density(dev))
    accepted = in_scope_scores(logits, calibration, scope.density(dev)) >= calibration["threshold"]
    assert 0.98 <= accepted.mean() < 1.0
    # Far from every intent, yet the head is just as sure: only the vector gives it away.
    far = vectors[:1] + 40.0
    score = in_scope_scores(logits[:1], calibration, scope.density(far))
    assert score[0] < calibration["threshold"]


def test_scope_of_few_utterances_in_many_dimensions_is_well_defined():
    """Two utterances per intent in 384 dimensions: shrinkage keeps the covariance invertible."""
    vectors, labels = utterance_vectors(2, 384)
    density = ScopeModel.fit(vectors, labels).density(vectors)
    assert np.isfinite(density).all()


def test_mahalanobis_needs_the_utterance_vectors():
    logits, labels = dev_logits(50)
    with pytest.raises(ValueError, match="utterance vectors"):
        calibrate(logits, labels, score="mahalanobis")


def test_mahalanobis_softmax_is_the_mean_of_the_two_shares_of_dev():
    vectors, _ = utterance_vectors(100, 16)
    logits, labels = dev_logits(300)
    density = ScopeModel.fit(vectors, np.arange(300) % 3).density(vectors)
    calibration = calibrate(logits, labels, score="mahalanobis_softmax", density=density)
    shares = in_scope_scores(logits, calibration, density)
    typical = in_scope_scores(logits, calibration | {"score": "mahalanobis"}, density)
    sure = softmax(logits, calibration["temperature"]).max(axis=1)
    sure = np.searchsorted(calibration["reference_softmax"], sure, side="right") / len(sure)
    np.testing.assert_allclose(shares, (typical + sure) / 2)
    assert 0.985 <= (shares >= calibration["threshold"]).mean() <= 0.995
    # Far from every intent and an unsure head: rejected.
    unsure, far = np.zeros((1, 4)), np.array([density.min() - 100.0])
    assert in_scope_scores(unsure, calibration, far)[0] < calibration["threshold"]


# --- the background: general requests as a second reference for the distance ---


def one_intent_assistant(seed: int = 0):
    """Dev densities of a one-intent assistant, and those of general requests far below."""
    rng = np.random.default_rng(seed)
    dev = -rng.gamma(4.0, 60.0, 100)  # squared distances of a few hundred
    others = -rng.gamma(40.0, 1500.0, 378)  # tens of thousands
    ones = np.zeros((len(dev), 1)), np.zeros((len(others), 1))
    return ones[0], dev, ones[1], others


def test_one_intent_is_scoped_by_the_background():
    logits, dev, background_logits, background = one_intent_assistant()
    labels = np.zeros(len(dev), dtype=int)
    calibration = calibrate(logits, labels, density=dev, background=(background_logits, background))
    threshold = calibration["threshold"]
    assert threshold > 0

    def score(density):
        return in_scope_scores(np.zeros((len(density), 1)), calibration, density)

    assert (score(dev) >= threshold).mean() >= 0.99
    assert calibration["background"] == {
        "requests": 378,
        "rejected": round(float((score(background) < threshold).mean()), 4),
    }
    assert calibration["background"]["rejected"] >= 0.99
    # Between the two, nearer than every general request: the assistant's, in other words.
    between = np.array([dev.min() * 3, background.max() / 2])
    assert (score(between) >= threshold).all()
    # As far as general requests are: rejected, however sure a one-intent head is.
    assert (score(np.array([np.median(background)])) < threshold).all()


def test_without_a_background_one_intent_still_rejects_nothing():
    logits, dev, _, _ = one_intent_assistant()
    calibration = calibrate(logits, np.zeros(len(dev), dtype=int), density=dev)
    assert calibration["threshold"] == 0.0 and "reference_background" not in calibration


def test_a_background_among_the_intents_leaves_dev_to_decide():
    """Where general requests look like the assistant's own (SNIPS' weather, music), the
    threshold is dev's: the background never makes a bundle reject more of its dev."""
    logits, labels = dev_logits(700)
    rng = np.random.default_rng(1)
    density = -rng.gamma(4.0, 60.0, 700)
    background = (dev_logits(378, seed=2)[0], -rng.gamma(4.0, 60.0, 378))  # alike
    with_background = calibrate(logits, labels, density=density, background=background)
    accepted = in_scope_scores(logits, with_background, density) >= with_background["threshold"]
    assert 0.985 <= accepted.mean() <= 0.995
    assert with_background["background"]["rejected"] < 0.5  # it cannot reject what it is alike

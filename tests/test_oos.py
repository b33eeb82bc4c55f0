"""Out-of-scope scores: the metrics on known values, and a fold scored on a real model."""

from __future__ import annotations

import numpy as np
import pytest

from voicenlu.oos import (
    auroc,
    energy,
    expected_calibration_error,
    fpr_at_tpr,
    render_oos,
    score_fold,
    summarise,
)
from voicenlu.runtime import Parser


def test_auroc_known_values():
    assert auroc(np.array([0.9, 0.8]), np.array([0.1, 0.2])) == 1.0
    assert auroc(np.array([0.1, 0.2]), np.array([0.9, 0.8])) == 0.0
    assert auroc(np.array([0.5, 0.5]), np.array([0.5, 0.5])) == 0.5
    assert auroc(np.array([0.9, 0.3]), np.array([0.5])) == 0.5


def test_fpr_at_95_tpr():
    positive = np.linspace(0.5, 1.0, 100)
    assert fpr_at_tpr(positive, np.array([0.1, 0.2, 0.3])) == 0.0
    assert fpr_at_tpr(positive, np.array([0.99, 0.2])) == 0.5


def test_ece_perfect_and_overconfident():
    assert expected_calibration_error(np.array([1.0, 1.0]), np.array([True, True])) == 0.0
    ece = expected_calibration_error(np.array([0.95] * 4), np.array([True, False, True, False]))
    assert ece == pytest.approx(0.45)


def test_energy_is_a_temperature_scaled_logsumexp():
    logits = np.array([[2.0, 0.0, -1.0], [10.0, 10.0, 10.0]])
    np.testing.assert_allclose(energy(logits), np.log(np.exp(logits).sum(axis=1)))
    np.testing.assert_allclose(energy(logits, 2.0), 2.0 * np.log(np.exp(logits / 2).sum(axis=1)))
    # Large logits must not overflow.
    assert np.isfinite(energy(np.array([[1000.0, 999.0]]))).all()


def test_fold_scores_on_a_real_model(tiny_bundle, snips, tmp_path):
    parser = Parser.load(tiny_bundle)
    in_scope = [u for u in snips.test if u.intent != "RateBook"][:120]
    outside = [u for u in snips.test if u.intent == "RateBook"][:40]
    dev = [u for u in snips.dev if u.intent != "RateBook"][:100]
    scores = score_fold(parser, dev, in_scope, outside)
    for key in ("auroc", "fpr_at_95_tpr", "in_scope_accuracy", "ece_before", "ece_after"):
        assert 0.0 <= scores[key] <= 1.0
    assert set(scores["scores"]) == {"max_softmax", "energy"}
    assert scores["threshold"] == parser.threshold
    energy_threshold = scores["scores"]["energy"]["threshold"]
    assert 0.0 <= scores["scores"]["energy"]["out_of_scope_rejected"] <= 1.0
    assert energy_threshold != parser.threshold

    result = summarise([{"held_out": "RateBook", **scores}], "test", tmp_path)
    assert (tmp_path / "oos.json").is_file()
    assert result["mean"]["auroc"] == scores["auroc"]
    assert result["mean_by_score"]["energy"]["auroc"] == scores["scores"]["energy"]["auroc"]
    table = render_oos(result)
    assert "RateBook" in table and "**mean**" in table and "| energy |" in table

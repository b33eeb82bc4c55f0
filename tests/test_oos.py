"""Out-of-scope scores: the metrics on known values, and a fold scored on a real model."""

from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pytest

from voicenlu.bundle import read_manifest, update_manifest
from voicenlu.calibration import calibrate, in_scope_scores, raw_scores, softmax
from voicenlu.config import TrainConfig
from voicenlu.data import stratified_slice
from voicenlu.data.background import background_requests
from voicenlu.errors import ConfigError
from voicenlu.experiments.oos import (
    auroc,
    expected_calibration_error,
    fpr_at_tpr,
    leave_one_intent_out,
    render_oos,
    score_fold,
    snips_folds,
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


def test_fold_scores_on_a_real_model(tiny_bundle, snips, tmp_path):
    parser = Parser.load(tiny_bundle)
    in_scope = [u for u in snips.test if u.intent != "RateBook"][:120]
    outside = [u for u in snips.test if u.intent == "RateBook"][:40]
    dev = [u for u in snips.dev if u.intent != "RateBook"][:100]
    scores = score_fold(parser, dev, in_scope, outside)
    assert set(scores["scores"]) == {"max_softmax", "energy", "mahalanobis", "mahalanobis_softmax"}
    assert scores["auroc"] == scores["scores"]["mahalanobis_softmax"]["auroc"]  # the default

    # Each figure is what its definition gives on the fold's own outputs and calibration.
    _, logits_dev, _, density_dev = parser.logits([u.text for u in dev])
    _, logits_in, _, density_in = parser.logits([u.text for u in in_scope])
    _, logits_out, _, density_out = parser.logits([u.text for u in outside])
    labels = np.array([parser.intents.index(u.intent) for u in in_scope])
    labels_dev = np.array([parser.intents.index(u.intent) for u in dev])
    background = parser.evidence(list(background_requests()))  # as training calibrates
    for name, by_score in scores["scores"].items():
        calibration = calibrate(
            logits_dev, labels_dev, score=name, density=density_dev, background=background
        )
        t = calibration["temperature"]
        assert by_score["threshold"] == calibration["threshold"]
        shares_in = in_scope_scores(logits_in, calibration, density_in)
        shares_out = in_scope_scores(logits_out, calibration, density_out)
        if name == "mahalanobis_softmax":  # a mean of shares ranks by itself
            s_in, s_out = shares_in, shares_out
        else:
            s_in = raw_scores(logits_in, name, t, density_in)
            s_out = raw_scores(logits_out, name, t, density_out)
        assert by_score["auroc"] == auroc(s_in, s_out)
        threshold = calibration["threshold"]
        accepted_in = shares_in >= threshold
        right = softmax(logits_in, t).argmax(axis=1) == labels
        assert by_score["in_scope_accuracy"] == pytest.approx((right & accepted_in).mean())
        rejected = shares_out < threshold
        assert by_score["out_of_scope_rejected"] == pytest.approx(rejected.mean())
    # The model knows most in-scope requests, and its threshold lets nearly all of them in.
    assert scores["in_scope_accuracy"] > 0.6

    result = summarise([{"held_out": "RateBook", **scores}], "test", tmp_path)
    assert (tmp_path / "oos.json").is_file()
    assert result["mean"]["auroc"] == scores["auroc"]
    assert result["mean_by_score"]["energy"]["auroc"] == scores["scores"]["energy"]["auroc"]
    table = render_oos(result, "voicenlu evaluate --oos")
    assert "RateBook" in table and "**mean**" in table and "| energy |" in table


def test_existing_fold_bundles_are_scored_without_training(tiny_bundle, snips, tmp_path):
    small = dataclasses.replace(
        snips,
        dev=stratified_slice(snips.dev, 15, seed=1),
        test=stratified_slice(snips.test, 10, seed=1),
    )
    for intent in sorted({u.intent for u in snips.train}):
        (tmp_path / f"without-{intent}").mkdir()
        (tmp_path / f"without-{intent}" / "bundle").symlink_to(tiny_bundle)
    # Training would fail on this backbone: every fold must come from the bundles above.
    config = TrainConfig(backbone=str(tmp_path / "no-such-backbone"), epochs=1)
    result = leave_one_intent_out(snips_folds(small, 5, config.seed), config, tmp_path, "test")
    assert len(result["folds"]) == 7
    assert json.loads((tmp_path / "oos.json").read_text())["mean"] == result["mean"]


def test_a_fold_stopped_halfway_is_trained_again(tiny_bundle, snips, tmp_path):
    """Resuming trusts the completion marker, not the presence of the manifest."""
    intents = sorted({u.intent for u in snips.train})
    for intent in intents[1:]:
        (tmp_path / f"without-{intent}").mkdir()
        (tmp_path / f"without-{intent}" / "bundle").symlink_to(tiny_bundle)
    half = shutil.copytree(tiny_bundle, tmp_path / f"without-{intents[0]}" / "bundle")
    manifest = json.loads((half / "voicenlu.json").read_text())
    (half / "voicenlu.json").write_text(json.dumps(manifest | {"complete": False}))
    config = TrainConfig(backbone=str(tmp_path / "no-such-backbone"), epochs=1)
    with pytest.raises(ConfigError, match="Could not load the backbone"):
        leave_one_intent_out(snips_folds(snips, 5, config.seed), config, tmp_path, "test")


def test_fold_bundles_of_an_older_recipe_are_refused(tiny_bundle, snips, tmp_path):
    """A bundle without the in-scope statistics cannot be scored by the default score."""
    intents = sorted({u.intent for u in snips.train})
    old = shutil.copytree(tiny_bundle, tmp_path / f"without-{intents[0]}" / "bundle")
    calibration = read_manifest(old)["calibration"] | {"score": "energy"}
    update_manifest(old, calibration=calibration)
    config = TrainConfig(backbone=str(tmp_path / "no-such-backbone"), epochs=1)
    with pytest.raises(ConfigError, match="older voicenlu.*delete"):
        leave_one_intent_out(snips_folds(snips, 5, config.seed), config, tmp_path, "test")

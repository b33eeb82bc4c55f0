"""Learning curve: size parsing and a real two-draw curve on a tiny slice."""

from __future__ import annotations

import dataclasses
import json
import statistics

import pytest

from voicenlu.config import TrainConfig
from voicenlu.data import stratified_slice
from voicenlu.errors import ConfigError
from voicenlu.experiments.learning_curve import (
    learning_curve,
    parse_sizes,
    render_learning_curve,
    snips_draws,
)
from voicenlu.lexical import LexicalModel
from voicenlu.plots import plot_learning_curve


def test_parse_sizes():
    assert parse_sizes("10, 70,full") == [10, 70, None]
    for bad in ("", "ten", "0", "-5", "10,,20"):
        with pytest.raises(ConfigError, match="--sizes"):
            parse_sizes(bad)


def test_a_real_curve_with_two_draws(snips, tmp_path):
    small = dataclasses.replace(snips, test=stratified_slice(snips.test, 10, seed=1))
    base = TrainConfig(epochs=1, batch_size=16, max_length=48, seed=5, min_steps=0)
    draw = snips_draws(small, dev_seed=base.seed)
    result = learning_curve(draw, small.test, base, tmp_path, sizes=[3], draws=2)

    assert [r["draw"] for r in result["runs"]] == [0, 1]
    assert [r["train_utterances"] for r in result["runs"]] == [21, 21]
    # 3 per intent is too few to spare a dev set: each draw trains on all of it, as
    # `voicenlu train` trains such a file.
    assert all(r["dev_utterances"] == 0 for r in result["runs"])
    assert all(r["choice"] == "fixed_schedule" for r in result["runs"])
    ours, baseline, frozen = result["rows"]
    assert [r["model"] for r in result["rows"]] == ["voicenlu", "tfidf_logreg", "frozen_embedding"]
    assert 0 < frozen["intent_accuracy"] <= 1 and frozen["slot_f1"] is None
    assert ours["per_intent"] == 3 and ours["draws"] == 2
    # The rows are the means of what each run's bundle scored on the test slice.
    scored = [
        json.loads((tmp_path / f"3-draw{d}" / "bundle" / "metrics.json").read_text())
        for d in (0, 1)
    ]
    assert all(m["n"] == len(small.test) for m in scored)
    for key in ("intent_accuracy", "slot_f1"):
        assert ours[key] == pytest.approx(statistics.mean(m[key] for m in scored))
    # The baseline row is TF-IDF trained on each draw and scored on the same slice.
    accuracies = []
    for draw, seed in ((0, 5), (1, 6)):
        chosen = stratified_slice(snips.train, 3, seed)
        predicted = LexicalModel.fit(chosen).predict([u.text for u in small.test])
        right = [p == u.intent for p, u in zip(predicted, small.test, strict=True)]
        accuracies.append(statistics.mean(right))
        assert result["runs"][draw]["tfidf_logreg"]["intent_accuracy"] == accuracies[-1]
    assert baseline["intent_accuracy"] == pytest.approx(statistics.mean(accuracies))
    assert baseline["slot_f1"] is None
    # Two different draws train two different models.
    first, second = (tmp_path / f"3-draw{d}" / "bundle" / "voicenlu.json" for d in (0, 1))
    assert json.loads(first.read_text())["training"]["seed"] == 5
    assert json.loads(second.read_text())["training"]["seed"] == 6
    assert not (tmp_path / "3-draw0" / "checkpoints").exists()
    assert json.loads((tmp_path / "learning_curve.json").read_text()) == result

    table = render_learning_curve(result, "voicenlu evaluate --learning-curve")
    assert "| 3 | 2 |" in table and "n/a" not in table.split("\n")[-2].split("|")[3]
    paths = plot_learning_curve(result["rows"], tmp_path / "learning_curve")
    assert [p.suffix for p in paths] == [".png", ".svg"] and all(p.stat().st_size for p in paths)

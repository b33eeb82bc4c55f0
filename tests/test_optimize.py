"""Quantization and pruning produce bundles that load, parse and keep their accuracy."""

from __future__ import annotations

import shutil

import pytest

from voicenlu.bundle import read_manifest
from voicenlu.errors import ConfigError
from voicenlu.evaluate import compute_metrics
from voicenlu.optimize import prune_layers, quantize
from voicenlu.runtime import Parser, result_to_utterance


def score(bundle, gold, precision="auto"):
    parser = Parser.load(bundle, precision=precision)
    pred = [result_to_utterance(r) for r in parser.parse_batch([u.text for u in gold])]
    return compute_metrics(gold, pred)


@pytest.fixture(scope="module")
def int8_bundle(tiny_bundle, tiny_data, tmp_path_factory):
    bundle = shutil.copytree(tiny_bundle, tmp_path_factory.mktemp("q") / "bundle")
    quantize(bundle, tiny_data.dev, tiny_data.test)
    return bundle


def test_int8_is_smaller_and_keeps_accuracy(int8_bundle, tiny_data):
    manifest = read_manifest(int8_bundle)
    q = manifest["quantization"]
    assert (int8_bundle / "model.int8.onnx").stat().st_size < 0.4 * (
        int8_bundle / "model.onnx"
    ).stat().st_size
    # On this weak model, int8 stays within 5 points of fp32 on the test slice.
    assert q["test_int8"]["intent_accuracy"] >= q["test_fp32"]["intent_accuracy"] - 0.05
    assert Parser.load(int8_bundle).precision == "int8"
    m8 = score(int8_bundle, tiny_data.test, "int8")
    assert m8["intent_accuracy"] == pytest.approx(q["test_int8"]["intent_accuracy"], abs=1e-3)


def test_pruned_bundle_is_smaller_loads_and_parses(tiny_bundle, tiny_data, tmp_path):
    bundle = prune_layers(tiny_bundle, tmp_path / "pruned", keep=3, data=tiny_data, epochs=1)
    manifest = read_manifest(bundle)
    assert manifest["encoder_config"]["num_hidden_layers"] == 3
    assert len(manifest["pruning"]["layers_kept"]) == 3
    assert (bundle / "model.onnx").stat().st_size < 0.8 * (
        tiny_bundle / "model.onnx"
    ).stat().st_size
    before = score(tiny_bundle, tiny_data.test)
    after = score(bundle, tiny_data.test)
    assert after["intent_accuracy"] >= before["intent_accuracy"] - 0.15
    result = Parser.load(bundle).parse("add Diamonds to my roadtrip playlist")
    assert result["intent"]["name"] in manifest["intents"]


def test_prune_refuses_impossible_layer_counts(tiny_bundle, tiny_data, tmp_path):
    with pytest.raises(ConfigError, match="--layers"):
        prune_layers(tiny_bundle, tmp_path / "p", keep=6, data=tiny_data)

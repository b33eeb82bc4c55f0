"""Quantization and pruning produce bundles that load, parse and keep their accuracy."""

from __future__ import annotations

import shutil

import pytest

from voicenlu.bundle import read_manifest
from voicenlu.errors import ConfigError
from voicenlu.metrics import compute_metrics
from voicenlu.pipeline import prune
from voicenlu.quantize import quantize
from voicenlu.runtime import Parser, result_to_utterance


def score(bundle, gold, precision="auto"):
    """Closed-set scores (no out-of-scope rejection), as quantize records them."""
    parser = Parser.load(bundle, precision=precision)
    results = parser.parse_batch([u.text for u in gold], threshold=0.0)
    pred = [result_to_utterance(r) for r in results]
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


def test_int8_serves_with_its_own_calibration(int8_bundle, tiny_data):
    """Quantizing fits the int8 graph's threshold on dev; fp32 keeps the one training fitted."""
    manifest = read_manifest(int8_bundle)
    int8, fp32 = Parser.load(int8_bundle, precision="int8"), Parser.load(int8_bundle, "fp32")
    assert fp32.calibration["threshold"] == manifest["calibration"]["threshold"]
    assert int8.calibration["threshold"] == manifest["quantization"]["calibration"]["threshold"]
    assert int8.calibration["score"] == manifest["calibration"]["score"] == "mahalanobis_softmax"
    assert int8.calibration["reference"].tolist() != manifest["calibration"]["reference"]
    accepted = [r["in_scope"] for r in int8.parse_batch([u.text for u in tiny_data.dev])]
    assert sum(accepted) >= len(accepted) - 1  # 99% of 70 dev requests: all but one at most


def test_removed_heads_compute_what_gated_heads_compute(tiny_bundle):
    """Slicing heads out of Q/K/V and the output projection == zeroing their gate."""
    import copy

    import torch

    from voicenlu.features import encode, pad_batch
    from voicenlu.model import load_torch_model, remove_heads

    model, tokenizer, manifest = load_torch_model(tiny_bundle)
    drop = {0: [1, 5, 7], 3: [0], 5: list(range(11))}
    feed = pad_batch(encode(tokenizer, ["play jazz", "add Diamonds to my roadtrip playlist"]), 0)
    inputs = {k: torch.from_numpy(v) for k, v in feed.items()}
    layers = model.encoder.encoder.layer
    size = layers[0].attention.self.attention_head_size
    hooks = []
    for index, heads in drop.items():
        gate = torch.ones(12)
        gate[heads] = 0.0
        hooks.append(
            layers[index].attention.output.dense.register_forward_pre_hook(
                lambda _m, args, g=gate: (args[0] * g.repeat_interleave(size),)
            )
        )
    with torch.no_grad():
        gated = model(**inputs)
    for hook in hooks:
        hook.remove()
    pruned = copy.deepcopy(model)
    remove_heads(pruned, drop)
    assert pruned.encoder.encoder.layer[5].attention.output.dense.in_features == size
    with torch.no_grad():
        sliced = pruned(**inputs)
    for name in ("intent_logits", "slot_logits"):
        assert torch.allclose(gated[name], sliced[name], atol=1e-4)  # float32 sums in another order


def test_pruned_bundle_is_smaller_loads_and_parses(tiny_bundle, tiny_data, tmp_path):
    bundle = prune(tiny_bundle, tmp_path / "pruned", layers=3, heads=0.25, epochs=1)
    manifest = read_manifest(bundle)
    assert manifest["encoder_config"]["num_hidden_layers"] == 3
    assert len(manifest["pruning"]["layers_kept"]) == 3
    assert manifest["pruning"]["heads_removed"] == 9  # a quarter of the 36 heads left
    assert (bundle / "model.onnx").stat().st_size < 0.8 * (
        tiny_bundle / "model.onnx"
    ).stat().st_size
    before = score(tiny_bundle, tiny_data.test)
    after = score(bundle, tiny_data.test)
    assert after["intent_accuracy"] >= before["intent_accuracy"] - 0.15
    result = Parser.load(bundle).parse("add Diamonds to my roadtrip playlist")
    assert result["intent"]["name"] in manifest["intents"]
    quantize(bundle, tiny_data.dev)
    assert Parser.load(bundle).parse("play jazz")["intent"]["name"] in manifest["intents"]


def test_prune_refuses_impossible_settings(tiny_bundle, tmp_path):
    with pytest.raises(ConfigError, match="--layers"):
        prune(tiny_bundle, tmp_path / "p", layers=6)
    with pytest.raises(ConfigError, match="--heads"):
        prune(tiny_bundle, tmp_path / "p")

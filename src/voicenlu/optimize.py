"""Smaller, faster bundles: int8 quantization of the ONNX graph, structured layer pruning.

Quantization is ONNX Runtime's dynamic int8 (weights stored int8, activations quantized on
the fly), after ORT's transformer graph fusions (attention, layer norm, GELU), which cut
the node count and let the quantized MatMuls run fused.
"""

from __future__ import annotations

import copy
import logging
import shutil
import tempfile
from pathlib import Path

import numpy as np

from voicenlu.bundle import read_manifest, record_files, update_manifest
from voicenlu.data.records import Utterance
from voicenlu.errors import ConfigError

log = logging.getLogger(__name__)


def fuse_transformer_graph(src: Path, dst: Path, manifest: dict) -> bool:
    """ORT's offline fusions for BERT-like encoders; False (and a plain copy) when unsupported."""
    from onnxruntime.transformers.optimizer import optimize_model

    config = manifest["encoder_config"]
    try:
        model = optimize_model(
            str(src),
            model_type="bert",
            num_heads=config.get("num_attention_heads", 0),
            hidden_size=config.get("hidden_size", 0),
            opt_level=1,
            only_onnxruntime=False,
        )
        model.save_model_to_file(str(dst))
        return True
    except Exception as exc:  # fusion is an optimisation: fall back to the plain graph
        log.warning("graph fusion skipped (%s); quantizing the plain graph", exc)
        shutil.copyfile(src, dst)
        return False


def quantize(
    bundle: Path,
    dev: list[Utterance] | None = None,
    test: list[Utterance] | None = None,
    per_channel: bool = False,
    fuse: bool = True,
) -> dict:
    """Write ``model.int8.onnx``; score it (and fp32) on dev and test when given; record it."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    bundle = Path(bundle)
    manifest = read_manifest(bundle, need=("model.onnx",))
    with tempfile.TemporaryDirectory() as tmp:
        fused = Path(tmp) / "fused.onnx"
        if fuse:
            did_fuse = fuse_transformer_graph(bundle / "model.onnx", fused, manifest)
        else:
            did_fuse = False
            shutil.copyfile(bundle / "model.onnx", fused)
        quantize_dynamic(
            str(fused),
            str(bundle / "model.int8.onnx"),
            weight_type=QuantType.QInt8,
            per_channel=per_channel,
        )
    record_files(bundle, "model.int8.onnx")
    summary = {
        "weight_type": "int8",
        "per_channel": per_channel,
        "fused": bool(did_fuse),
        "size_mb": round((bundle / "model.int8.onnx").stat().st_size / 2**20, 2),
    }
    summary.update(_score(bundle, {"dev": dev, "test": test}))
    update_manifest(bundle, quantization=summary)
    return summary


def _score(bundle: Path, splits: dict[str, list[Utterance] | None]) -> dict:
    """Headline metrics of fp32 and int8 on each split given."""
    from voicenlu.evaluate import compute_metrics
    from voicenlu.runtime import Parser, result_to_utterance

    scores = {}
    for precision in ("fp32", "int8"):
        parser = Parser.load(bundle, precision=precision)
        for split, gold in splits.items():
            if not gold:
                continue
            results = parser.parse_batch([u.text for u in gold], threshold=0.0)  # closed set
            pred = [result_to_utterance(r) for r in results]
            m = compute_metrics(gold, pred)
            scores[f"{split}_{precision}"] = {
                k: round(m[k], 4) for k in ("intent_accuracy", "slot_f1", "exact_match")
            }
    return scores


def _layers(model):
    """The encoder's list of transformer layers (torch is imported here: pruning needs it)."""
    import torch

    layers = getattr(getattr(model.encoder, "encoder", None), "layer", None)
    if not isinstance(layers, torch.nn.ModuleList):
        raise ConfigError(
            f"Layer pruning needs an encoder with a list of layers (BERT, RoBERTa, MiniLM...); "
            f"{model.encoder.config.model_type} shares or nests its layers."
        )
    return layers


def _set_layers(model, layers: list) -> None:
    import torch

    model.encoder.encoder.layer = torch.nn.ModuleList(layers)
    model.encoder.config.num_hidden_layers = len(layers)


def _dev_loss(model, batches) -> float:
    import torch

    model.eval()
    with torch.no_grad():
        return float(np.mean([model(**b)["loss"].item() for b in batches]))


def choose_layers(model, dev_batches, keep: int) -> list[int]:
    """Greedily drop the layer whose removal raises the dev loss least, until ``keep`` remain."""
    original = list(_layers(model))
    kept = list(range(len(original)))
    while len(kept) > keep:
        losses = {}
        for i in kept:
            _set_layers(model, [original[j] for j in kept if j != i])
            losses[i] = _dev_loss(model, dev_batches)
        kept.remove(min(losses, key=losses.get))
        log.info("layers kept %s (dev loss %.4f)", kept, min(losses.values()))
    _set_layers(model, [original[j] for j in kept])
    return kept


def prune_layers(
    bundle: Path, output_dir: Path, keep: int, data, epochs: float = 2.0, seed: int = 13
) -> Path:
    """A bundle with ``keep`` encoder layers, chosen on dev and recovered by distillation.

    The student starts as the bundle's model minus the least useful layers (the weight
    matrices are gone for real: a smaller file and fewer FLOPs), then is fine-tuned for
    ``epochs`` on the training data with the unpruned model's logits as soft targets.
    """
    from transformers import AutoTokenizer

    from voicenlu.train import TrainConfig, _Collator, _featurize, load_torch_model, train

    teacher, tokenizer, manifest = load_torch_model(bundle)
    n_layers = len(_layers(teacher))
    if not 0 < keep < n_layers:
        raise ConfigError(
            f"--layers must be between 1 and {n_layers - 1} for this {n_layers}-layer model."
        )
    student = copy.deepcopy(teacher)
    intents, tags = manifest["intents"], manifest["slot_tags"]
    dev_set, _ = _featurize(
        data.dev,
        tokenizer,
        {n: i for i, n in enumerate(intents)},
        {t: i for i, t in enumerate(tags)},
        0,
    )
    collate = _Collator(manifest["pad_token_id"])
    batches = []
    for i in range(0, len(dev_set), 128):
        batch = collate(dev_set.rows[i : i + 128])
        batch.pop("example_ids")
        batches.append(batch)
    before = _dev_loss(teacher, batches)
    kept = choose_layers(student, batches, keep)
    pruned_loss = _dev_loss(student, batches)
    config = TrainConfig(
        backbone=manifest["backbone"],
        epochs=epochs,
        max_length=manifest["max_length"],
        seed=seed,
        encoder_lr=manifest["training"]["encoder_lr"],
        head_lr=manifest["training"]["encoder_lr"],  # the heads are trained already
        warmup_ratio=0.0,
    )
    record = {
        "pruning": {
            "from": str(bundle),
            "layers_kept": kept,
            "layers_before": n_layers,
            "dev_loss": {"unpruned": before, "pruned": pruned_loss},
            "recovery": f"{epochs} epochs, distilled from the unpruned model",
        }
    }
    start = (student, AutoTokenizer.from_pretrained(bundle), intents, tags)
    return train(data, config, output_dir, start=start, teacher=teacher, record=record)

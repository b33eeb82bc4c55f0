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
    if manifest.get("pruned_heads"):  # layers of unequal width: ORT's attention fusion assumes one
        shutil.copyfile(src, dst)
        return False
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


def head_importance(model, batches) -> list[np.ndarray]:
    """Per layer, how much each attention head matters on dev (Michel et al. 2019).

    A gate of 1 multiplies each head's output; the importance of a head is the absolute
    gradient of the dev loss with respect to its gate, normalised within its layer.
    """
    import torch

    layers = _layers(model)
    size = layers[0].attention.self.attention_head_size
    gates = [
        torch.ones(lyr.attention.output.dense.in_features // size, requires_grad=True)
        for lyr in layers
    ]
    hooks = [
        layer.attention.output.dense.register_forward_pre_hook(
            lambda _module, args, gate=gate: (args[0] * gate.repeat_interleave(size),)
        )
        for layer, gate in zip(layers, gates, strict=True)
    ]
    model.eval()
    try:
        for batch in batches:
            model(**batch)["loss"].backward()
    finally:
        for hook in hooks:
            hook.remove()
        model.zero_grad()
    scores = [gate.grad.abs() for gate in gates]
    return [(s / s.norm().clamp(min=1e-12)).numpy() for s in scores]


def choose_heads(importance: list[np.ndarray], fraction: float) -> dict[int, list[int]]:
    """The least important ``fraction`` of all heads, keeping at least one head per layer."""
    ranked = sorted(
        (float(s), layer, head)
        for layer, scores in enumerate(importance)
        for head, s in enumerate(scores)
    )
    left = [len(scores) for scores in importance]
    drop: dict[int, list[int]] = {}
    for _, layer, head in ranked[: round(fraction * len(ranked))]:
        if left[layer] > 1:
            drop.setdefault(layer, []).append(head)
            left[layer] -= 1
    return {layer: sorted(heads) for layer, heads in drop.items()}


def _slice_linear(linear, index, dim: int):
    """A smaller nn.Linear keeping rows (dim 0: outputs) or columns (dim 1: inputs) ``index``."""
    import torch

    weight = linear.weight.detach().index_select(dim, index)
    bias = linear.bias.detach() if dim == 1 else linear.bias.detach()[index]
    smaller = torch.nn.Linear(weight.shape[1], weight.shape[0])
    smaller.weight.data.copy_(weight)
    smaller.bias.data.copy_(bias)
    return smaller


def remove_heads(model, heads: dict[int, list[int]]) -> None:
    """Cut the given heads out of their layers: fewer rows in Q, K, V and fewer columns in the
    output projection. The result computes what gating those heads to zero computes."""
    import torch

    layers = _layers(model)
    for layer_index, drop in heads.items():
        layer = layers[int(layer_index)]
        attention, output = layer.attention.self, layer.attention.output
        size = attention.attention_head_size
        n_heads = output.dense.in_features // size
        keep = [h for h in range(n_heads) if h not in set(drop)]
        index = torch.cat([torch.arange(h * size, (h + 1) * size) for h in keep])
        for name in ("query", "key", "value"):
            setattr(attention, name, _slice_linear(getattr(attention, name), index, dim=0))
        output.dense = _slice_linear(output.dense, index, dim=1)
        attention.num_attention_heads = len(keep)
        attention.all_head_size = len(index)


def _dev_batches(data, tokenizer, manifest) -> list[dict]:
    from voicenlu.train import _Collator, _featurize

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
    return batches


def prune(
    bundle: Path,
    output_dir: Path,
    data,
    layers: int | None = None,
    heads: float = 0.0,
    epochs: float = 2.0,
    seed: int = 13,
) -> Path:
    """A smaller bundle: ``layers`` encoder layers and/or ``heads`` of the heads removed, chosen
    on dev, then recovered by distillation.

    Layers go first (greedily, the one whose removal raises the dev loss least), then the
    least important heads of what is left. The weight matrices shrink for real: a smaller
    file and fewer FLOPs. The student is then fine-tuned for ``epochs`` on the training data
    with the unpruned model's logits as soft targets.
    """
    from transformers import AutoTokenizer

    from voicenlu.train import TrainConfig, load_torch_model, train

    teacher, tokenizer, manifest = load_torch_model(bundle)
    if manifest.get("pruned_heads") or manifest.get("pruning"):
        raise ConfigError(f"{bundle} is already pruned: prune the original bundle instead.")
    n_layers = len(_layers(teacher))
    if layers is not None and not 0 < layers < n_layers:
        raise ConfigError(
            f"--layers must be between 1 and {n_layers - 1} for this {n_layers}-layer model."
        )
    if not 0.0 <= heads < 1.0 or (layers is None and heads == 0.0):
        raise ConfigError("Give --layers N and/or --heads FRACTION (0 < FRACTION < 1).")
    student = copy.deepcopy(teacher)
    batches = _dev_batches(data, tokenizer, manifest)
    before = _dev_loss(teacher, batches)
    kept = choose_layers(student, batches, layers) if layers else list(range(n_layers))
    dropped_heads = choose_heads(head_importance(student, batches), heads) if heads else {}
    remove_heads(student, dropped_heads)
    pruned_loss = _dev_loss(student, batches)
    config = TrainConfig(
        backbone=manifest["backbone"],
        epochs=epochs,
        max_length=manifest["max_length"],
        seed=seed,
        encoder_lr=manifest["training"]["encoder_lr"],
        head_lr=manifest["training"]["encoder_lr"],  # the task heads are trained already
        warmup_ratio=0.0,
    )
    record = {
        "pruned_heads": {str(k): v for k, v in dropped_heads.items()},
        "pruning": {
            "from": str(bundle),
            "layers_kept": kept,
            "layers_before": n_layers,
            "heads_removed": sum(len(v) for v in dropped_heads.values()),
            "dev_loss": {"unpruned": before, "pruned": pruned_loss},
            "recovery": f"{epochs} epochs, distilled from the unpruned model",
        },
    }
    if "values" in manifest:  # the slots are the same: so are their types
        record["values"] = manifest["values"]
    start = (
        student,
        AutoTokenizer.from_pretrained(bundle),
        manifest["intents"],
        manifest["slot_tags"],
    )
    return train(data, config, output_dir, start=start, teacher=teacher, record=record)

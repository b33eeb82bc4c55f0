"""Training: transformers.Trainer on the joint model. A leaf: no bundle, export or report.

Trainer gives TensorBoard logs, checkpoint rotation, resume, early stopping on dev, seeds
and DDP through ``torchrun`` (gloo on CPU). The best checkpoint (by dev exact match) is
returned with its calibration and history; ``pipeline.py`` turns it into a bundle.
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from transformers import (
    EarlyStoppingCallback,
    Trainer,
    TrainingArguments,
    set_seed,
)
from transformers.integrations import TensorBoardCallback
from transformers.trainer_utils import get_last_checkpoint

from voicenlu.calibration import ScopeModel, calibrate
from voicenlu.config import Schedule, TrainConfig, schedule
from voicenlu.contrastive import warm_start
from voicenlu.data.augment import with_swapped_values
from voicenlu.data.background import background_requests
from voicenlu.data.records import Utterance
from voicenlu.data.snips import stratified_slice
from voicenlu.data.spoken import with_spoken_copies
from voicenlu.data.training import TrainData
from voicenlu.errors import ConfigError
from voicenlu.features import (
    decode_slots,
    decoding_scores,
    featurize,
    prepare_tokenizer,
    slot_tags,
)
from voicenlu.lexical import LexicalModel, choose_weight
from voicenlu.metrics import HEADLINE, compute_metrics
from voicenlu.model import Collator, JointModel, build_model

log = logging.getLogger(__name__)

SCOPE_PER_INTENT = 300  # training utterances per intent that the in-scope statistics see


@dataclass
class Fit:
    """A trained model and what the bundle records about its training."""

    model: JointModel
    hf_tokenizer: object  # the transformers tokenizer, saved into the bundle as it is
    tokenizer: object  # its fast tokenizer, prepared for max_length
    intents: list[str]
    tags: list[str]
    pad_id: int
    calibration: dict
    scope: ScopeModel  # statistics of the in-scope score (calibration.py)
    dev_metrics: dict
    history: list[dict]
    seconds: float
    epochs_run: float
    world_size: int
    spoken_copies: int  # spoken copies added to the training utterances
    swapped_copies: int  # slot-swapped copies added (small data)
    lexical: LexicalModel | None  # the TF-IDF intent model, when dev gives it a weight
    lexical_weight: float
    is_main: bool  # the process that writes (rank 0 under torchrun)


def _attach_teacher_logits(rows: list[dict], teacher: JointModel, collate: Collator) -> None:
    """Store a teacher's logits on each training row, computed once, for distillation."""
    teacher.eval()
    with torch.no_grad():
        for i in range(0, len(rows), 128):
            chunk = rows[i : i + 128]
            batch = collate(chunk)
            out = teacher(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
            for k, row in enumerate(chunk):
                row["teacher_intent_logits"] = out["intent_logits"][k]
                row["teacher_slot_logits"] = out["slot_logits"][k, : len(row["input_ids"])]


def predict_utterances(
    examples, intent_logits, slot_logits, intents, tags, constraints
) -> list[Utterance]:
    """Decode logits into Utterance records, with the runtime's constrained decoding."""
    pred = []
    for (u, enc), il, sl in zip(examples, intent_logits, slot_logits, strict=True):
        spans = tuple(s for s, _ in decode_slots(enc, sl, tags, constraints, u.text))
        pred.append(Utterance(u.text, intents[int(il.argmax())], spans))
    return pred


class _Metrics:
    """compute_metrics for Trainer: char-span metrics on each eval set, via example ids."""

    def __init__(self, lookup, intents, tags, model: JointModel):
        self.lookup, self.intents, self.tags, self.model = lookup, intents, tags, model

    def __call__(self, eval_pred):
        intent_logits, slot_logits = eval_pred.predictions[:2]
        example_ids = eval_pred.label_ids[2]
        examples = [self.lookup[int(i)] for i in example_ids]
        crf = self.model.crf.arrays() if self.model.crf is not None else None
        constraints = decoding_scores(self.tags, crf)
        pred = predict_utterances(
            examples, intent_logits, slot_logits, self.intents, self.tags, constraints
        )
        m = compute_metrics([u for u, _ in examples], pred)
        return {k: m[k] for k in HEADLINE}


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


class DevEarlyStopping(EarlyStoppingCallback):
    """Early stopping on the dev scores alone.

    The training sample is scored beside dev (for the learning curves); transformers' callback
    would take that evaluation as one without the dev metric and warn that early stopping is
    disabled, which it is not.
    """

    def on_evaluate(self, args, state, control, metrics, **kwargs):
        if args.metric_for_best_model in metrics:
            super().on_evaluate(args, state, control, metrics, **kwargs)


def _parameter_groups(model: JointModel, config: TrainConfig) -> list[dict]:
    """Heads and encoder at their own learning rates; no weight decay on biases and
    LayerNorm weights (decaying them toward 0 only fights the normalisation)."""
    groups: dict[tuple, list] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        lr = config.encoder_lr if name.startswith("encoder.") else config.head_lr
        decay = 0.0 if param.ndim == 1 else config.weight_decay
        groups.setdefault((lr, decay), []).append(param)
    return [{"params": ps, "lr": lr, "weight_decay": wd} for (lr, wd), ps in groups.items()]


def fit(
    data: TrainData,
    config: TrainConfig,
    output_dir: Path,
    resume: bool = False,
    start: tuple | None = None,
    teacher: JointModel | None = None,
) -> Fit:
    """Train on ``data``, choosing the checkpoint on its dev set; checkpoints and TensorBoard
    logs go under ``output_dir``.

    ``start`` is a (model, tokenizer, intents, tags) to continue from instead of the
    pretrained backbone (a pruned model); ``teacher`` adds distillation from its logits.
    """
    output_dir = Path(output_dir)
    started = time.perf_counter()
    set_seed(config.seed)
    if start is None:
        intents, tags = _labels(data)
        model, hf_tokenizer = build_model(
            config.backbone,
            len(intents),
            len(tags),
            freeze_backbone=config.freeze_backbone,
            label_smoothing=config.label_smoothing,
            mean_pooling=config.mean_pooling,
            crf=config.crf,
        )
        if config.contrastive_pairs:
            warm_start(
                model.encoder,
                hf_tokenizer,
                data.train,
                config.contrastive_pairs,
                config.seed,
                config.max_length,
            )
    else:
        model, hf_tokenizer, intents, tags = start
    tokenizer = prepare_tokenizer(hf_tokenizer.backend_tokenizer, config.max_length)
    intent_index = {name: i for i, name in enumerate(intents)}
    tag_index = {tag: i for i, tag in enumerate(tags)}

    learn = with_spoken_copies(data.train) if config.spoken_copies else data.train
    taught = learn
    if config.slot_swaps and schedule(config, len(learn)).epochs > config.epochs:
        # Data too small to fill the step budget in its epochs: vary its slot values rather
        # than repeat it, up to what fills the budget.
        extra = data.slot_types.entity_values()
        fill = math.ceil(config.min_steps * config.batch_size / config.epochs)
        taught = with_swapped_values(learn, config.slot_swaps, config.seed, extra, total=fill)
    plan = schedule(config, len(taught))
    train_set, _ = featurize(taught, tokenizer, intent_index, tag_index, 0)
    dev_set, dev_enc = featurize(data.dev, tokenizer, intent_index, tag_index, len(taught))
    # A fixed sample of the training set, scored each epoch like dev, for the learning curves.
    sample = data.train[:: max(1, len(data.train) // len(data.dev))][: len(data.dev)]
    first = len(taught) + len(data.dev)
    sample_set, sample_enc = featurize(sample, tokenizer, intent_index, tag_index, first)
    # The utterances the in-scope statistics are fitted on, once trained.
    scope_sample = stratified_slice(learn, SCOPE_PER_INTENT, config.seed)
    scope_first = first + len(sample)
    scope_set, scope_enc = featurize(scope_sample, tokenizer, intent_index, tag_index, scope_first)
    # General requests of other assistants, which calibration ranks requests against too
    # (labelled with any intent: only their logits and vectors are read).
    others = [Utterance(text, intents[0]) for text in background_requests()]
    others_first = scope_first + len(scope_sample)
    others_set, others_enc = featurize(others, tokenizer, intent_index, tag_index, others_first)
    lookup = {}
    for first_id, utts, encs in (
        (len(taught), data.dev, dev_enc),
        (first, sample, sample_enc),
        (scope_first, scope_sample, scope_enc),
        (others_first, others, others_enc),
    ):
        pairs = zip(utts, encs, strict=True)
        lookup.update({first_id + k: pair for k, pair in enumerate(pairs)})

    pad_id = tokenizer.token_to_id(hf_tokenizer.pad_token) or 0
    collate = Collator(pad_id)
    if teacher is not None:
        _attach_teacher_logits(train_set, teacher, collate)

    args = training_arguments(config, plan, output_dir)
    optimizer = torch.optim.AdamW(_parameter_groups(model, config))

    from torch.utils.tensorboard import SummaryWriter

    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=train_set,
        eval_dataset={"dev": dev_set, "train": sample_set},
        data_collator=collate,
        compute_metrics=_Metrics(lookup, intents, tags, model),
        optimizers=(optimizer, None),
        callbacks=[
            DevEarlyStopping(early_stopping_patience=plan.patience),
            TensorBoardCallback(SummaryWriter(str(output_dir / "tensorboard"))),
        ],
    )
    last = (
        get_last_checkpoint(args.output_dir) if resume and Path(args.output_dir).is_dir() else None
    )
    if resume and last is None:
        log.warning("No checkpoint in %s: training from the start.", args.output_dir)
    trainer.train(resume_from_checkpoint=last)
    seconds = time.perf_counter() - started
    dev_out = trainer.predict(dev_set, metric_key_prefix="dev")  # every rank takes part
    # Evaluation batches are length-grouped too: put the rows back in dev order (by example
    # id) so that they line up with the lexical evidence below.
    order = np.argsort(dev_out.label_ids[2])
    dev_logits, dev_labels = dev_out.predictions[0][order], dev_out.label_ids[0][order]
    scope_out = trainer.predict(scope_set, metric_key_prefix="scope")
    scope = ScopeModel.fit(scope_out.predictions[2], scope_out.label_ids[0])
    others_out = trainer.predict(others_set, metric_key_prefix="background")
    in_order = np.argsort(others_out.label_ids[2])
    others_logits = others_out.predictions[0][in_order]
    others_density = scope.density(others_out.predictions[2][in_order])
    lexical, weight = None, 0.0
    if config.lexical and len(intents) > 1:  # with one intent there is nothing to tell apart
        lexical = LexicalModel.fit(learn, intents)
        evidence = lexical.log_probs([u.text for u in data.dev])
        weight = choose_weight(dev_logits, evidence, dev_labels)
        dev_logits = dev_logits + weight * evidence
        others_logits = others_logits + weight * lexical.log_probs([u.text for u in others])
    return Fit(
        model=model,
        hf_tokenizer=hf_tokenizer,
        tokenizer=tokenizer,
        intents=intents,
        tags=tags,
        pad_id=pad_id,
        calibration=calibrate(
            dev_logits,
            dev_labels,
            density=scope.density(dev_out.predictions[2][order]),
            background=(others_logits, others_density),
        ),
        scope=scope,
        dev_metrics={
            k.removeprefix("dev_"): v
            for k, v in dev_out.metrics.items()
            if k.removeprefix("dev_") in HEADLINE
        },
        history=_history(trainer.state.log_history),
        seconds=seconds,
        epochs_run=trainer.state.epoch,
        world_size=args.world_size,
        spoken_copies=len(learn) - len(data.train),
        swapped_copies=len(taught) - len(learn),
        lexical=lexical if weight else None,
        lexical_weight=weight,
        is_main=trainer.is_world_process_zero(),
    )


def training_arguments(config: TrainConfig, plan: Schedule, output_dir: Path) -> TrainingArguments:
    """transformers' arguments for a run: its schedule, checkpoints, and batches of like length.

    Batches are drawn from length-sorted groups of shuffled utterances, so a batch pads to
    about the mean length rather than the longest of 32 random ones: half the tokens on SNIPS.
    """
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    return TrainingArguments(
        output_dir=str(output_dir / "checkpoints"),
        num_train_epochs=plan.epochs,
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=128,
        warmup_steps=config.warmup_ratio,
        weight_decay=config.weight_decay,
        lr_scheduler_type="linear",
        eval_strategy="steps" if plan.eval_steps else "epoch",
        save_strategy="steps" if plan.eval_steps else "epoch",
        logging_strategy="steps" if plan.eval_steps else "epoch",
        eval_steps=plan.eval_steps,
        save_steps=plan.eval_steps,
        logging_steps=plan.eval_steps,
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
        train_sampling_strategy="group_by_length",
    )

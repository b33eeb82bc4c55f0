"""Training: transformers.Trainer on the joint model. A leaf: no bundle, export or report.

Trainer gives TensorBoard logs, checkpoint rotation, resume, early stopping on dev, seeds
and DDP through ``torchrun`` (gloo on CPU). The best checkpoint (by dev exact match) is
returned with its history; ``scoring.py`` fits the decision layer over it and ``pipeline.py``
turns both into a bundle.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm
from transformers import (
    EarlyStoppingCallback,
    PrinterCallback,
    ProgressCallback,
    Trainer,
    TrainerCallback,
    TrainingArguments,
    set_seed,
)
from transformers.integrations import TensorBoardCallback
from transformers.trainer import TRAINER_STATE_NAME

from voicenlu.config import CHECKPOINTS, MIN_DEV_PER_INTENT, Schedule, TrainConfig, schedule
from voicenlu.contrastive import warm_start
from voicenlu.data.augment import with_swapped_values
from voicenlu.data.records import Utterance
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
from voicenlu.lexical import NO_DEV_WEIGHT
from voicenlu.metrics import HEADLINE, compute_metrics
from voicenlu.model import Collator, JointModel, build_model
from voicenlu.quiet import no_loading_bars

log = logging.getLogger(__name__)

RUN_FILE = "run.json"  # beside the checkpoints: what they were trained on, checked on resume


@dataclass
class Fit:
    """A trained network and what the bundle records about its training."""

    model: JointModel
    hf_tokenizer: object  # the transformers tokenizer, saved into the bundle as it is
    tokenizer: object  # its fast tokenizer, prepared for max_length
    intents: list[str]
    tags: list[str]
    pad_id: int
    dev_metrics: dict
    history: list[dict]
    seconds: float
    epochs_run: float
    world_size: int
    spoken_copies: int  # spoken copies added to the training utterances
    swapped_copies: int  # slot-swapped copies added (small data)
    learnt: list[Utterance]  # the training utterances with their spoken copies (no swaps)
    is_main: bool  # the process that writes (rank 0 under torchrun)
    choice: dict  # how the checkpoint and lexical weight were chosen (see ``_choice``)


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


class TrainingProgress(TrainerCallback):
    """One progress bar of optimizer steps, with the latest dev score beside it, in place of
    transformers' bar and its printed log dicts. A run that stops early says so, and where
    its best checkpoint was, rather than leaving the bar short of its end."""

    def __init__(self, patience: int | None):
        self.patience, self.bar, self.best = patience, None, None

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self.bar = tqdm(total=state.max_steps, desc="training", unit="step", initial=0)
            self.bar.update(state.global_step)

    def on_step_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.update(state.global_step - self.bar.n)

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        score = (metrics or {}).get(args.metric_for_best_model or "")
        if self.bar is not None and score is not None:
            if self.best is None or score > self.best[0]:
                self.best = (score, state.global_step)
            self.bar.set_postfix_str(
                f"dev exact match {100 * score:.1f}% (best {100 * self.best[0]:.1f}%)"
            )

    def on_train_end(self, args, state, control, **kwargs):
        if self.bar is None:
            return
        stopped = state.global_step < state.max_steps
        if stopped:  # the bar ends where training ended, and the line below says why
            self.bar.total = state.global_step
            self.bar.refresh()
        self.bar.close()
        self.bar = None
        if stopped and self.best is not None:
            print(
                f"stopped early at step {state.global_step} of {state.max_steps}: dev exact "
                f"match had not improved for {self.patience} evaluations; best "
                f"{100 * self.best[0]:.1f}% at step {self.best[1]}",
                file=sys.stderr,
                flush=True,
            )


def _run_record(data: TrainData, config: TrainConfig, intents, tags) -> dict:
    """What a run's checkpoints are trained on: a resumed run must match it."""
    rows = [
        [u.text, u.intent, [[s.slot, s.start, s.end] for s in u.slots]]
        for u in data.train + data.dev
    ]
    digest = hashlib.sha256(json.dumps(rows, ensure_ascii=False).encode()).hexdigest()
    options = {
        k: v
        for k, v in dataclasses.asdict(config).items()
        if k not in ("quantize", "keep_checkpoints", "patience")  # none changes the weights
    }
    return {
        "intents": list(intents),
        "slot_tags": list(tags),
        "train": len(data.train),
        "dev": len(data.dev),
        "data_sha256": digest,
        "options": options,
    }


def check_resumable(folder: Path, now: dict) -> None:
    """Refuse, in one line, to resume checkpoints trained on other labels, data or options:
    their weights would not load, or would continue a different run."""
    path = folder / RUN_FILE
    if not path.is_file():
        return
    then = json.loads(path.read_text(encoding="utf-8"))
    fix = "train afresh with --overwrite (or into another --output-dir)"
    changes = []
    for name, labels in (
        ("intents", lambda r: set(r["intents"])),
        ("slots", lambda r: {t[2:] for t in r["slot_tags"] if t != "O"}),
    ):
        added, removed = sorted(labels(now) - labels(then)), sorted(labels(then) - labels(now))
        changes += [f"{name} added: {', '.join(added)}"] if added else []
        changes += [f"{name} removed: {', '.join(removed)}"] if removed else []
    if changes:
        raise ConfigError(
            f"Cannot resume {folder}: its checkpoints know other labels ({'; '.join(changes)}); "
            + fix
            + "."
        )
    if then["data_sha256"] != now["data_sha256"]:
        raise ConfigError(
            f"Cannot resume {folder}: the training data changed since its checkpoints were "
            f"written ({then['train']} training and {then['dev']} dev utterances then, "
            f"{now['train']} and {now['dev']} now); {fix}."
        )
    changed = [
        f"{k} {then['options'].get(k)!r} -> {v!r}"
        for k, v in now["options"].items()
        if then["options"].get(k) != v
    ]
    if changed:
        raise ConfigError(
            f"Cannot resume {folder}: the training options changed ({', '.join(changed)}); "
            f"resume with the same options, or {fix}."
        )


def announce(data: TrainData, config: TrainConfig, plan: Schedule, spoken: int, swapped: int):
    """What is about to be trained, in one line before the progress bar (stderr)."""
    intents = len({u.intent for u in data.train})
    copies = "".join(
        f", + {n} {what} copies" for n, what in ((spoken, "spoken"), (swapped, "slot-swapped")) if n
    )
    if data.dev:
        dev = f"{len(data.dev)} dev utterances choose the checkpoint"
    else:
        dev = (
            f"no dev set (fewer than {MIN_DEV_PER_INTENT} per intent to spare), so every "
            f"utterance is trained on for a fixed {plan.steps} steps"
        )
    print(
        f"training on {len(data.train)} utterances of {intents} intents{copies}; {dev}; "
        f"{plan.steps} steps of {config.batch_size} ({plan.epochs:g} epochs), "
        f"backbone {config.backbone}",
        file=sys.stderr,
        flush=True,
    )


def last_complete_checkpoint(folder: Path) -> str | None:
    """The newest checkpoint whose save finished: the trainer writes its state file last, so a
    run killed while saving leaves a folder without one, which resuming must skip."""
    done = [
        p
        for p in folder.glob("checkpoint-*")
        if p.name.rpartition("-")[2].isdigit() and (p / TRAINER_STATE_NAME).is_file()
    ]
    return str(max(done, key=lambda p: int(p.name.rpartition("-")[2]))) if done else None


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

    Data without a dev set (too small to spare one) trains for the fixed schedule (``min_steps``
    or its epochs) and keeps the last weights. ``start`` is a (model, tokenizer, intents,
    tags) to continue from instead of the pretrained backbone (a pruned model); ``teacher``
    adds distillation from its logits.
    """
    output_dir = Path(output_dir)
    started = time.perf_counter()
    no_loading_bars()
    set_seed(config.seed)
    if start is None:
        intents, tags = _labels(data)
    else:
        _, _, intents, tags = start
    folder = output_dir / CHECKPOINTS
    record = _run_record(data, config, intents, tags)
    last = last_complete_checkpoint(folder) if resume and folder.is_dir() else None
    if resume and last is None:
        log.warning("No checkpoint in %s: training from the start.", folder)
    if last is not None:
        check_resumable(folder, record)
    if start is None:
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
        model, hf_tokenizer, _, _ = start
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
    has_dev = bool(data.dev)
    train_set, _ = featurize(taught, tokenizer, intent_index, tag_index, 0)
    check_set, check_enc = featurize(data.dev, tokenizer, intent_index, tag_index, len(taught))
    first = len(taught) + len(data.dev)
    # A fixed sample of the training set, scored each evaluation like dev, for the learning
    # curves (a run without dev is not evaluated while it trains).
    sample = data.train[:: max(1, len(data.train) // len(data.dev))] if has_dev else []
    sample = sample[: len(data.dev)]
    sample_set, sample_enc = featurize(sample, tokenizer, intent_index, tag_index, first)
    lookup = {}
    for first_id, utts, encs in ((len(taught), data.dev, check_enc), (first, sample, sample_enc)):
        pairs = zip(utts, encs, strict=True)
        lookup.update({first_id + k: pair for k, pair in enumerate(pairs)})

    pad_id = tokenizer.token_to_id(hf_tokenizer.pad_token) or 0
    collate = Collator(pad_id)
    if teacher is not None:
        _attach_teacher_logits(train_set, teacher, collate)

    args = training_arguments(config, plan, output_dir, has_dev)
    optimizer = torch.optim.AdamW(_parameter_groups(model, config))

    from torch.utils.tensorboard import SummaryWriter

    callbacks = [
        TrainingProgress(plan.patience if has_dev else None),
        TensorBoardCallback(SummaryWriter(str(output_dir / "tensorboard"))),
    ]
    if has_dev:
        callbacks.insert(0, DevEarlyStopping(early_stopping_patience=plan.patience))
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=train_set,
        eval_dataset={"dev": check_set, "train": sample_set} if has_dev else None,
        data_collator=collate,
        compute_metrics=_Metrics(lookup, intents, tags, model),
        optimizers=(optimizer, None),
        callbacks=callbacks,
    )
    # Our one progress line replaces transformers' bar and the log dicts it prints.
    trainer.remove_callback(ProgressCallback)
    trainer.remove_callback(PrinterCallback)
    if trainer.is_world_process_zero():
        announce(data, config, plan, len(learn) - len(data.train), len(taught) - len(learn))
    if last is None and trainer.is_world_process_zero():
        folder.mkdir(parents=True, exist_ok=True)
        (folder / RUN_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    trainer.train(resume_from_checkpoint=last)
    seconds = time.perf_counter() - started
    dev_metrics = {}
    if has_dev:  # every rank takes part
        measured = trainer.predict(check_set, metric_key_prefix="dev").metrics
        dev_metrics = {
            k.removeprefix("dev_"): v
            for k, v in measured.items()
            if k.removeprefix("dev_") in HEADLINE
        }
    return Fit(
        model=model,
        hf_tokenizer=hf_tokenizer,
        tokenizer=tokenizer,
        intents=intents,
        tags=tags,
        pad_id=pad_id,
        dev_metrics=dev_metrics,
        history=_history(trainer.state.log_history),
        seconds=seconds,
        epochs_run=trainer.state.epoch,
        world_size=args.world_size,
        spoken_copies=len(learn) - len(data.train),
        swapped_copies=len(taught) - len(learn),
        learnt=learn,
        is_main=trainer.is_world_process_zero(),
        choice=_choice(data, plan, trainer.state),
    )


def _choice(data: TrainData, plan: Schedule, state) -> dict:
    """How the run chose its checkpoint, lexical weight and calibration, for the manifest,
    the model card and the summary."""
    if data.dev:
        return {
            "method": "dev",
            "dev": len(data.dev),
            "best_step": _step_of(state.best_model_checkpoint),
            "steps_run": state.global_step,
            "steps_planned": plan.steps,
        }
    return {
        "method": "fixed_schedule",
        "dev": 0,
        "steps_run": state.global_step,
        "steps_planned": plan.steps,
        "lexical_weight": NO_DEV_WEIGHT,
    }


def _step_of(checkpoint: str | None) -> int | None:
    return int(checkpoint.rsplit("-", 1)[1]) if checkpoint else None


def training_arguments(
    config: TrainConfig, plan: Schedule, output_dir: Path, has_dev: bool = True
) -> TrainingArguments:
    """transformers' arguments for a run: its schedule, checkpoints, and batches of like length.

    Batches are drawn from length-sorted groups of shuffled utterances, so a batch pads to
    about the mean length rather than the longest of 32 random ones: half the tokens on SNIPS.
    Without dev nothing is evaluated and the last weights are kept; checkpoints are still
    written, for ``--resume``.
    """
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    every = "steps" if plan.eval_steps else "epoch"
    return TrainingArguments(
        output_dir=str(output_dir / CHECKPOINTS),
        num_train_epochs=plan.epochs,
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=128,
        warmup_steps=config.warmup_ratio,
        weight_decay=config.weight_decay,
        lr_scheduler_type="linear",
        eval_strategy=every if has_dev else "no",
        save_strategy=every,
        logging_strategy=every,
        eval_steps=plan.eval_steps,
        save_steps=plan.eval_steps,
        logging_steps=plan.eval_steps,
        save_total_limit=config.keep_checkpoints,
        load_best_model_at_end=has_dev,
        metric_for_best_model="eval_dev_exact_match" if has_dev else None,
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

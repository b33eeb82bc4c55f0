"""The one place that runs the steps in order: train -> bundle -> export -> evaluate.

The CLI, the Python API (``voicenlu.train``, ``voicenlu.evaluate``) and the experiments
(pruning recovery, out-of-scope folds, learning curve) all come through here, so a bundle is
made the same way whoever asks for it. Commands that work on a finished bundle find its
training data from the origin recorded in the manifest, or take other data (``data=``,
the CLI's ``--data``).

Heavy modules (torch, transformers, onnx) are imported inside the functions that need them,
after the check for the extra that provides them.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import logging
import shutil
from pathlib import Path

from voicenlu import bundle as bundles
from voicenlu import speech
from voicenlu.calibration import SCOPE_FILE
from voicenlu.config import (
    CHECKPOINTS,
    PRUNE_EPOCHS,
    QUICK_EPOCHS,
    QUICK_PER_INTENT,
    TrainConfig,
    default_output_dir,
)
from voicenlu.data.training import (
    TrainData,
    describe,
    evaluation_file,
    file_data,
    recorded_data,
    snips_data,
)
from voicenlu.errors import ConfigError, DataError
from voicenlu.extras import require_extra
from voicenlu.features import CRF_FILE
from voicenlu.lexical import LEXICAL_FILE
from voicenlu.version import __version__

log = logging.getLogger(__name__)

# --- making a bundle ----------------------------------------------------------------------


def train_bundle(
    data: TrainData,
    config: TrainConfig,
    output_dir: str | Path,
    resume: bool = False,
    start: tuple | None = None,
    teacher=None,
    record: dict | None = None,
) -> Path:
    """Train on ``data``, fit the decision layer over the network, then write, export, score
    and complete ``output_dir/bundle``.

    ``start``/``teacher`` continue from a pruned model with distillation (see
    ``train.fit``); ``record`` adds fields to the manifest. Under torchrun only rank 0 writes.
    """
    require_extra("train", "train")
    from voicenlu.scoring import fit_scoring
    from voicenlu.trainer import fit

    output_dir = Path(output_dir)
    bundle = output_dir / "bundle"
    trained = fit(data, config, output_dir, resume=resume, start=start, teacher=teacher)
    if not trained.is_main:
        return bundle
    _write_trained(bundle, trained, fit_scoring(trained, data, config), data, config, record or {})
    # The weights are in the bundle now; export loads them afresh. Dropping the training state
    # (model, optimizer moments, gradients, the Trainer's cycles) first lowers the peak.
    del trained
    gc.collect()
    _finish(bundle, data, config)
    # The bundle holds the chosen weights: the checkpoints (with their optimizer state, three
    # times the model's size each) are of no further use.
    shutil.rmtree(output_dir / CHECKPOINTS, ignore_errors=True)
    return bundle


def check_run_dir(output_dir: Path, resume: bool, overwrite: bool) -> None:
    """Training starts in ``output_dir`` only when that loses nothing by surprise: a finished
    bundle there is replaced only with ``overwrite``, an unfinished run is continued with
    ``resume`` or dropped with ``overwrite``."""
    bundle, checkpoints = output_dir / "bundle", output_dir / CHECKPOINTS
    if overwrite:
        if resume:
            raise ConfigError(
                "resume (--resume) continues a run and overwrite (--overwrite) starts afresh: "
                "choose one."
            )
        shutil.rmtree(checkpoints, ignore_errors=True)  # the bundle is replaced when written
        return
    if bundles.is_complete(bundle):
        manifest = bundles.read_manifest(bundle, verify=False)
        raise ConfigError(
            f"{output_dir} already holds a trained bundle ({len(manifest['intents'])} intents, "
            f"trained on {manifest.get('data', {}).get('description', 'data not recorded')}): "
            "pass --overwrite (overwrite=True) to train it again, or choose another "
            "--output-dir."
        )
    unfinished = checkpoints.is_dir() or (bundle / bundles.MANIFEST).is_file()
    if unfinished and not resume:
        raise ConfigError(
            f"{output_dir} holds a run that did not finish: --resume (resume=True) continues "
            "it, --overwrite (overwrite=True) starts afresh."
        )


def _write_trained(
    bundle: Path, trained, scoring, data: TrainData, config: TrainConfig, record: dict
):
    """Weights, tokenizer, decision layer and manifest of a new bundle (not complete yet)."""
    from voicenlu.model import save_weights

    encoder_config = trained.model.encoder.config
    manifest = {
        "voicenlu_version": __version__,
        "backbone": config.backbone,
        "encoder_config": encoder_config.to_diff_dict() | {"model_type": encoder_config.model_type},
        "intents": trained.intents,
        "slot_tags": trained.tags,
        # Every annotated value is a value of its entity, dev's too: dev is the user's data.
        "values": data.slot_types.manifest_section(
            data.train + data.dev, {t[2:] for t in trained.tags if t != "O"}
        ),
        "max_length": config.max_length,
        "pad_token_id": trained.pad_id,
        "calibration": scoring.calibration,
        "training": dataclasses.asdict(config)
        | {
            "train_seconds": round(trained.seconds, 1),
            "epochs_run": trained.epochs_run,
            "world_size": trained.world_size,
            "choice": trained.choice,
        },
        "data": describe(data)
        | {"spoken_copies": trained.spoken_copies, "swapped_copies": trained.swapped_copies},
        "lexical": {"weight": scoring.lexical_weight} if scoring.lexical else None,
        "dev_metrics": trained.dev_metrics,
        "history": trained.history,
        "examples": demo_examples(data.train),
    }
    bundles.create(bundle, manifest | record)
    bundles.put_file(bundle, "model.safetensors", lambda path: save_weights(trained.model, path))
    bundles.put_files(bundle, trained.hf_tokenizer.save_pretrained)
    if scoring.lexical:
        bundles.put_file(bundle, LEXICAL_FILE, scoring.lexical.save)
    bundles.put_file(bundle, SCOPE_FILE, scoring.scope.save)
    if trained.model.crf is not None:
        bundles.put_file(bundle, CRF_FILE, trained.model.crf.save)
    # The recogniser's bias for spoken requests: this training data only.
    bundles.put_text(
        bundle, speech.SETTINGS_FILE, speech.settings_json(data.train, data.slot_types)
    )


def demo_examples(utterances: list, most: int = 6) -> list[str]:
    """A few of the bundle's own training requests for the demo page to offer: one per
    intent (the first with the most slots), as many intents as ``most`` allows."""
    chosen: dict[str, object] = {}
    for u in utterances:
        best = chosen.get(u.intent)
        if best is None or len(u.slots) > len(best.slots):
            chosen[u.intent] = u
    return [u.text for u in list(chosen.values())[:most]]


def _finish(bundle: Path, data: TrainData, config: TrainConfig) -> None:
    """Export (checked on dev), quantize, score the trained (fp32) model on the held-out split,
    fit the segmenter, then mark the bundle complete."""
    from voicenlu.evaluation import evaluate_bundle
    from voicenlu.export import export_onnx

    export_onnx(bundle, [u.text for u in data.checks], partial=True)
    if config.quantize:
        from voicenlu.quantize import quantize as quantize_bundle

        quantize_bundle(bundle, data.dev, data.test, calibrate_on=data.checks, partial=True)
    if config.segmenter:
        try:
            _fit_segmenter(bundle, data, config.seed, partial=True)
        except DataError as exc:  # one intent, say: every text stays one request
            log.warning("No segmenter: %s", exc)
    split, gold = data.evaluation
    slots = data.source.get("has_slots", True)
    evaluate_bundle(
        bundle, gold, precision="fp32", split=split, write_bundle=True, partial=True, slots=slots
    )
    bundles.mark_complete(bundle)


def _fit_segmenter(bundle: Path, data: TrainData, seed: int, partial: bool = False) -> dict:
    """Learn where texts holding several requests split, from joins of the data's utterances
    read by the bundle's own model (the graph it serves), and store it in the bundle."""
    from voicenlu import segment
    from voicenlu.runtime import Parser

    parser = Parser.load(bundle, values=False, partial=partial, split=False)
    model, record = segment.fit(data.train, data.dev, parser.read, seed)
    bundles.put_file(bundle, segment.SEGMENT_FILE, model.save)
    bundles.update_manifest(bundle, segmenter=record)
    return record


# --- the Python API -----------------------------------------------------------------------


def training_data(
    data: str | Path | None = None,
    seed: int = TrainConfig.seed,
    per_intent: int = 0,
    data_dir: str | Path | None = None,
) -> TrainData:
    """A user's file (validated, 10% per intent held out as dev) or the SNIPS split."""
    if data is not None:
        if per_intent:
            raise ConfigError(
                "per_intent (--per-intent) slices the SNIPS benchmark; it does not apply to "
                "your own data (--data)."
            )
        return file_data(data, seed)
    return snips_data(data_dir, per_intent=per_intent, seed=seed, dev_per_intent=per_intent)


def train(
    data: str | Path | None = None,
    output_dir: str | Path | None = None,
    *,
    resume: bool = False,
    overwrite: bool = False,
    quick: bool = False,
    per_intent: int = 0,
    data_dir: str | Path | None = None,
    **options,
) -> Path:
    """Train a model and return the path of its bundle (``output_dir/bundle``; default
    ``runs/<data name>``).

    ``data`` is your own file (Snips NLU JSON, Rasa YAML, CSV, JSONL), validated first, with
    10% of each intent held out as dev (none when that is under 5 per intent: every utterance
    is then trained on for a fixed schedule); without it, the SNIPS benchmark (``data_dir``:
    where its files are). ``options`` are ``TrainConfig`` fields (``epochs=3``, ``seed=5``...).
    ``quick``: one epoch (no step budget), and 100 SNIPS utterances per intent. A finished
    bundle in ``output_dir`` is replaced only with ``overwrite``; ``resume`` continues an
    unfinished run on the same data. The same checks and errors as ``voicenlu train``.
    """
    config = TrainConfig.from_options(**options)
    if quick:
        config = dataclasses.replace(config, epochs=QUICK_EPOCHS, min_steps=0)
        if data is None and not per_intent:
            per_intent = QUICK_PER_INTENT
    output_dir = Path(output_dir) if output_dir is not None else default_output_dir(data)
    check_run_dir(output_dir, resume, overwrite)
    require_extra("train", "train")
    return train_bundle(
        training_data(data, config.seed, per_intent, data_dir), config, output_dir, resume
    )


def evaluate(
    bundle: str | Path,
    data: str | Path | None = None,
    *,
    out: str | Path | None = None,
    write_bundle: bool = False,
    precision: str = "auto",
    data_dir: str | Path | None = None,
    spoken_form: bool = False,
) -> dict:
    """Score a bundle and return the metrics (intent accuracy, slot F1, exact match, per
    intent and per slot, confusion matrix).

    Without ``data``, on the held-out split of the data it was trained on (the SNIPS test set,
    or the dev hold-out of your file); with ``data``, on every utterance of that file. The
    report goes to ``out`` when given; only ``write_bundle`` rewrites the bundle's own
    ``metrics.json``, ``MODEL_CARD.md`` and ``report/``. ``spoken_form`` also scores the
    spoken form of the same data (``metrics["spoken_form"]``: both forms and the drop).
    """
    if out is not None or write_bundle:
        require_extra("train", "evaluate")  # the report's figures need matplotlib
    from voicenlu.evaluation import evaluate_bundle

    manifest = bundles.read_manifest(bundle)
    if write_bundle and data is not None:
        raise ConfigError(
            "--write-bundle records the bundle's own figures: it cannot be combined with --data."
        )
    found = bundle_data(manifest, data, data_dir)
    # The bundle's own figures are what training recorded: in-sample when nothing was held out.
    split, gold = found.evaluation if write_bundle else held_out(found, data)
    return evaluate_bundle(
        Path(bundle),
        gold,
        Path(out) if out else None,
        precision,
        split,
        write_bundle,
        spoken_form=spoken_form,
        slots=found.source.get("has_slots", True),
    )


# --- commands on a finished bundle --------------------------------------------------------


def bundle_data(
    manifest: dict, data: str | Path | None = None, data_dir: str | Path | None = None
) -> TrainData:
    """``data`` (every utterance scored) or else the data the bundle records it was trained on."""
    if data is not None:
        return evaluation_file(data, like=manifest.get("data"))
    return recorded_data(manifest.get("data", {}), data_dir)


def held_out(found: TrainData, data: str | Path | None) -> tuple[str, list]:
    """(split, utterances) to score a bundle on: every utterance of ``data``, else what its
    training held out; a bundle trained on every utterance has nothing held out."""
    if data is not None:
        return "data", found.test
    split, gold = found.evaluation
    if split == "train":
        raise DataError(
            f"This bundle was trained on every utterance of {found.source.get('description')} "
            "(too few to hold out a dev set), so nothing is left to score it on: pass --data "
            "PATH with requests it was not trained on."
        )
    return split, gold


def _check_labels(manifest: dict, data: TrainData) -> None:
    """Data to train on must use the bundle's intents and slots only."""
    utterances = data.train + data.dev
    intents = sorted({u.intent for u in utterances} - set(manifest["intents"]))
    slots = {t[2:] for t in manifest["slot_tags"] if t != "O"}
    unknown_slots = sorted({s.slot for u in utterances for s in u.slots} - slots)
    if intents or unknown_slots:
        raise DataError(
            f"The data has intents or slots this bundle does not know ({intents + unknown_slots})"
            ": pass --data with the bundle's own training data, or train a new bundle on it."
        )


def export(bundle: str | Path, data: str | Path | None = None, data_dir=None) -> dict:
    """Write ``model.onnx``, checked against PyTorch on the bundle's dev texts (or ``data``)."""
    require_extra("train", "export")
    from voicenlu.export import export_onnx

    manifest = bundles.read_manifest(bundle)
    found = bundle_data(manifest, data, data_dir)
    texts = found.test if data is not None else found.checks
    return export_onnx(Path(bundle), [u.text for u in texts])


def speech_settings(bundle: str | Path, data_dir=None) -> dict:
    """Write ``speech.json`` again from the bundle's recorded training data (as training
    does), for a bundle trained before this voicenlu recorded all it holds (the grammar)."""
    manifest = bundles.read_manifest(bundle)
    found = bundle_data(manifest, None, data_dir)
    text = speech.settings_json(found.train, found.slot_types)
    bundles.put_text(Path(bundle), speech.SETTINGS_FILE, text)
    settings = json.loads(text)
    grammar = settings.get("grammar")
    return {
        "bundle": str(bundle),
        "file": speech.SETTINGS_FILE,
        "grammar": bool(grammar),
        "closed_slots": sorted(grammar["slots"]) if grammar else [],
    }


def fit_segmenter(
    bundle: str | Path, data: str | Path | None = None, seed: int = TrainConfig.seed, data_dir=None
) -> dict:
    """Add (or replace) the segmenter of a finished bundle, learned from its training data (or
    the training part of ``data``, split as the bundle split its own): how a bundle trained
    without it comes to split several requests."""
    require_extra("train", "segment")  # scikit-learn fits it
    manifest = bundles.read_manifest(bundle)
    found = bundle_data(manifest, data, data_dir)
    _check_labels(manifest, found)
    return _fit_segmenter(Path(bundle), found, seed)


def quantize(
    bundle: str | Path, data: str | Path | None = None, per_channel: bool = False, data_dir=None
) -> dict:
    """Write ``model.int8.onnx``; score it and fp32 on the bundle's dev and test data."""
    require_extra("quantize", "quantize")
    from voicenlu.quantize import quantize as quantize_bundle

    manifest = bundles.read_manifest(bundle)
    found = bundle_data(manifest, data, data_dir)
    return quantize_bundle(
        Path(bundle), found.dev, found.test, per_channel=per_channel, calibrate_on=found.checks
    )


def prune(
    bundle: str | Path,
    output_dir: str | Path,
    data: str | Path | None = None,
    *,
    layers: int | None = None,
    heads: float = 0.0,
    epochs: float = PRUNE_EPOCHS,
    seed: int = TrainConfig.seed,
    data_dir=None,
) -> Path:
    """A smaller bundle in ``output_dir/bundle``: layers and heads chosen on the bundle's dev
    data, removed, then recovered by distillation on its training data (or ``data``)."""
    require_extra("train", "prune")
    from transformers import AutoTokenizer

    from voicenlu.model import load_torch_model
    from voicenlu.prune import check_settings, prune_model

    bundle = Path(bundle)
    manifest = bundles.read_manifest(bundle)
    check_settings(manifest, layers, heads)
    found = bundle_data(manifest, data, data_dir)
    if data is not None:  # every utterance of the file is in train or dev: nothing is held out
        found = dataclasses.replace(found, test=None)
    _check_labels(manifest, found)
    teacher, tokenizer, manifest = load_torch_model(bundle)
    student, record = prune_model(teacher, tokenizer, manifest, found.checks, layers, heads)
    record["pruning"] |= {
        "from": str(bundle),
        "recovery": f"{epochs:g} epochs, distilled from the unpruned model",
    }
    if "values" in manifest:  # the slots are the same: so are their types
        record["values"] = manifest["values"]
    config = TrainConfig(
        backbone=manifest["backbone"],
        epochs=epochs,
        max_length=manifest["max_length"],
        seed=seed,
        encoder_lr=manifest["training"]["encoder_lr"],
        head_lr=manifest["training"]["encoder_lr"],  # the task heads are trained already
        warmup_ratio=0.0,
        # The rest of the recipe is the bundle's own (an older bundle's manifest lacks some).
        spoken_copies=manifest["training"].get("spoken_copies", False),
        mean_pooling=manifest["training"].get("mean_pooling", False),
        min_steps=manifest["training"].get("min_steps", 0),
        slot_swaps=manifest["training"].get("slot_swaps", 0),
        lexical=manifest["training"].get("lexical", False),
        crf=manifest["training"].get("crf", False),
    )
    start = (
        student,
        AutoTokenizer.from_pretrained(bundle),
        manifest["intents"],
        manifest["slot_tags"],
    )
    return train_bundle(found, config, output_dir, start=start, teacher=teacher, record=record)

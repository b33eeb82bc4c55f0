"""Training real models on small slices: the default backbone, ALBERT, resume, torchrun."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from voicenlu.bundle import read_manifest
from voicenlu.data import SlotSpan, stratified_slice
from voicenlu.features import allowed_transitions, decode_slots, encode, spans_to_tags
from voicenlu.metrics import compute_metrics
from voicenlu.runtime import Parser, result_to_utterance

ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}


def test_tiny_model_beats_chance_on_held_out(tiny_bundle, snips, tiny_data):
    held_out = stratified_slice(snips.dev, 30, seed=7)  # dev beyond the 10/intent used for choice
    seen = {u.text for u in tiny_data.dev}
    held_out = [u for u in held_out if u.text not in seen]
    parser = Parser.load(tiny_bundle)
    pred = [result_to_utterance(r) for r in parser.parse_batch([u.text for u in held_out])]
    metrics = compute_metrics(held_out, pred)
    assert metrics["intent_accuracy"] > 0.6, metrics["intent_accuracy"]  # chance is 1/7
    assert metrics["slot_f1"] > 0.2, metrics["slot_f1"]


def test_bundle_holds_everything_to_serve(tiny_bundle):
    manifest = read_manifest(tiny_bundle)
    for name in (
        "model.safetensors",
        "model.onnx",
        "tokenizer.json",
        "metrics.json",
        "MODEL_CARD.md",
    ):
        assert name in manifest["files"] and (tiny_bundle / name).is_file()
    assert (tiny_bundle / "report" / "report.md").is_file()
    assert (tiny_bundle / "report" / "confusion_matrix.svg").is_file()
    assert (tiny_bundle / "report" / "loss_by_epoch.png").is_file()
    assert manifest["training"]["seed"] == 3
    assert manifest["onnx_parity"]["intent_mismatches"] == 0
    assert manifest["onnx_parity"]["max_abs_logit_diff"] < 1e-3
    assert len(manifest["history"]) >= 2 and "eval_slot_f1" in manifest["history"][-1]
    assert manifest["complete"] is True and manifest["metrics"]["split"] == "test"


def test_calibration_is_fitted_on_the_dev_set(tiny_bundle, tiny_data):
    """The stored calibration is what dev and the background give: 70 dev requests are too
    few to fit a temperature (it stays 1), and the threshold lets at least 99% of dev through."""
    from voicenlu.calibration import MIN_DEV_FOR_TEMPERATURE, calibrate, in_scope_scores
    from voicenlu.data.background import background_requests

    calibration = read_manifest(tiny_bundle)["calibration"]
    assert len(tiny_data.dev) < MIN_DEV_FOR_TEMPERATURE
    assert calibration["temperature_fitted"] is False and calibration["temperature"] == 1.0
    parser = Parser.load(tiny_bundle, precision="fp32")
    _, logits, _, density = parser.logits([u.text for u in tiny_data.dev])
    labels = [parser.intents.index(u.intent) for u in tiny_data.dev]
    background = parser.evidence(list(background_requests()))
    refit = calibrate(logits, np.array(labels), density=density, background=background)
    assert calibration["score"] == "mahalanobis_softmax"
    assert calibration["threshold"] == pytest.approx(refit["threshold"], abs=0.03)
    # Training measured dev with PyTorch, the parser with ONNX Runtime: the same distances.
    assert np.allclose(calibration["reference"], refit["reference"], rtol=1e-3, atol=0.05)
    assert np.allclose(calibration["reference_softmax"], refit["reference_softmax"], atol=1e-3)
    accepted = in_scope_scores(logits, parser.calibration, density) >= parser.threshold
    assert accepted.mean() >= 0.95  # 99% of 70 rounds to all but one, or all of them
    assert calibration["background"]["requests"] == len(background_requests())
    assert list((tiny_bundle.parent / "tensorboard").glob("events.out.tfevents.*"))


def test_early_stopping_counts_dev_evaluations_alone(tmp_path, monkeypatch):
    """The training sample, scored beside dev, neither counts toward patience nor sets off
    transformers' warning that early stopping is disabled."""
    import transformers.trainer_callback as callbacks
    from transformers import TrainerControl, TrainerState

    from voicenlu.config import TrainConfig, schedule
    from voicenlu.trainer import DevEarlyStopping, training_arguments

    warnings = []
    monkeypatch.setattr(callbacks.logger, "warning", lambda msg, *a, **k: warnings.append(msg))
    config = TrainConfig()
    args = training_arguments(config, schedule(config, 100), tmp_path)
    stopper = DevEarlyStopping(early_stopping_patience=2)
    state, control = TrainerState(best_metric=0.9), TrainerControl()
    for _ in range(3):
        stopper.on_evaluate(args, state, control, {"eval_train_exact_match": 0.1})
    assert (warnings, stopper.early_stopping_patience_counter) == ([], 0)
    assert not control.should_training_stop
    for _ in range(2):
        stopper.on_evaluate(args, state, control, {"eval_dev_exact_match": 0.5})
    assert control.should_training_stop and warnings == []


def test_progress_bar_ends_where_early_stopping_ends(tmp_path, capsys):
    """The bar of a run stopped early ends at its last step, not short of a total it never
    reached, and one line says why and where the best checkpoint was."""
    from transformers import TrainerControl, TrainerState

    from voicenlu.config import TrainConfig, schedule
    from voicenlu.trainer import TrainingProgress, training_arguments

    config = TrainConfig()
    args = training_arguments(config, schedule(config, 100), tmp_path)
    progress, control = TrainingProgress(patience=2), TrainerControl()
    state = TrainerState(max_steps=400, global_step=0, is_world_process_zero=True)
    progress.on_train_begin(args, state, control)
    bar = progress.bar
    for step, score in ((20, 0.5), (40, 0.7), (60, 0.6), (80, 0.65)):
        state.global_step = step
        progress.on_step_end(args, state, control)
        progress.on_evaluate(args, state, control, metrics={"eval_dev_exact_match": score})
    progress.on_train_end(args, state, control)
    assert (bar.n, bar.total) == (80, 80)
    err = capsys.readouterr().err
    assert "stopped early at step 80 of 400" in err and "best 70.0% at step 40" in err


def _tiny_albert_backbone(path: Path, texts: list[str]) -> Path:
    """A randomly initialised ALBERT with a SentencePiece-style (Metaspace) tokenizer."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from tokenizers.processors import TemplateProcessing
    from transformers import AlbertConfig, AlbertModel, PreTrainedTokenizerFast

    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    specials = ["<pad>", "<unk>", "[CLS]", "[SEP]", "[MASK]"]
    tok.train_from_iterator(
        texts, trainers.UnigramTrainer(vocab_size=400, special_tokens=specials, unk_token="<unk>")
    )
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        unk_token="<unk>",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )
    config = AlbertConfig(
        vocab_size=tok.get_vocab_size(),
        embedding_size=16,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
        pad_token_id=0,
    )
    AlbertModel(config).save_pretrained(path)
    fast.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def tiny_albert(tmp_path_factory, tiny_data) -> Path:
    texts = [u.text for u in tiny_data.train]
    return _tiny_albert_backbone(tmp_path_factory.mktemp("albert"), texts)


def test_albert_backbone_trains_exports_and_parses(tmp_path, tiny_data, tiny_albert):
    import dataclasses

    from voicenlu.config import TrainConfig
    from voicenlu.pipeline import train_bundle

    data = dataclasses.replace(tiny_data, test=None)
    config = TrainConfig(
        backbone=str(tiny_albert), epochs=2, batch_size=32, head_lr=3e-3, min_steps=0
    )
    bundle = train_bundle(data, config, tmp_path / "run")
    manifest = read_manifest(bundle)
    assert manifest["encoder_config"]["model_type"] == "albert"
    text = "play the song “Tobymac's Diamonds” 🎵 please"
    parser = Parser.load(bundle)
    assert parser.parse(text, threshold=0.0)["intent"]["name"] in manifest["intents"]
    # The bundle's SentencePiece-style tokenizer maps spans to tags and back exactly, even
    # around curly quotes and emoji: a model that predicts these tags returns these slots.
    gold = (SlotSpan("artist", 15, 24), SlotSpan("playlist", 25, 33))
    assert [text[s.start : s.end] for s in gold] == ["Tobymac's", "Diamonds"]
    (enc,) = encode(parser.tokenizer, [text])
    tags = ["O"] + [f"{p}-{n}" for n in ("artist", "playlist") for p in "BI"]
    tag_ids = spans_to_tags(enc, gold, {t: i for i, t in enumerate(tags)})
    logits = np.full((len(enc.ids), len(tags)), -5.0, dtype=np.float32)
    for i, t in enumerate(tag_ids):
        logits[i, max(t, 0)] = 5.0
    decoded = [s for s, _ in decode_slots(enc, logits, tags, allowed_transitions(tags))]
    assert decoded == list(gold)


def _train_cmd(out: Path, backbone: Path, epochs: int, *extra: str) -> list[str]:
    """A CLI run on a SNIPS slice. Resume and DDP do not depend on the encoder, so these runs
    use the tiny ALBERT: the mechanics are tested in seconds, not minutes."""
    return [
        sys.executable,
        "-m",
        "voicenlu",
        "train",
        "--per-intent",
        "6",
        "--epochs",
        str(epochs),
        "--batch-size",
        "16",
        "--seed",
        "5",
        "--min-steps",
        "0",
        "--backbone",
        str(backbone),
        "--output-dir",
        str(out),
        *extra,
    ]


def test_killed_run_resumes_to_the_same_end(tmp_path, tiny_albert):
    # Six epochs of a tiny model: the run is killed at its first checkpoint, well before its end.
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    subprocess.run(_train_cmd(straight, tiny_albert, 6), env=ENV, check=True, capture_output=True)

    proc = subprocess.Popen(
        _train_cmd(killed, tiny_albert, 6),
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 300
    while not list((killed / "checkpoints").glob("checkpoint-*/trainer_state.json")):
        assert proc.poll() is None and time.time() < deadline, "no checkpoint was written"
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "bundle" / "voicenlu.json").exists()

    resumed = subprocess.run(
        _train_cmd(killed, tiny_albert, 6, "--resume"), env=ENV, capture_output=True, text=True
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    a = load_file(straight / "bundle" / "model.safetensors")
    b = load_file(killed / "bundle" / "model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        assert abs(a[key] - b[key]).max() < 1e-4, key
    ma = json.loads((straight / "bundle" / "metrics.json").read_text())
    mb = json.loads((killed / "bundle" / "metrics.json").read_text())
    assert ma["intent_accuracy"] == mb["intent_accuracy"]


@pytest.mark.skipif(sys.platform != "linux", reason="gloo on CPU is exercised on Linux")
def test_torchrun_two_processes(tmp_path, tiny_albert):
    torchrun = Path(sys.executable).parent / "torchrun"
    train = _train_cmd(tmp_path, tiny_albert, 1)[3:]
    cmd = [str(torchrun), "--nproc_per_node=2", "-m", "voicenlu", *train]
    done = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    manifest = read_manifest(tmp_path / "bundle")
    assert manifest["training"]["world_size"] == 2
    # A tiny random encoder after one epoch may well find any request out of scope.
    parsed = Parser.load(tmp_path / "bundle").parse("play some jazz", threshold=0.0)
    assert parsed["intent"]["name"] in manifest["intents"]


def test_resume_with_other_labels_data_or_options_says_so(tmp_path, tiny_albert, tiny_data):
    """A run stopped before its bundle leaves checkpoints; resuming them with edited data
    fails in one line naming what changed, not with torch's size mismatch."""
    import dataclasses

    from voicenlu.config import TrainConfig
    from voicenlu.errors import ConfigError
    from voicenlu.trainer import fit

    data = dataclasses.replace(tiny_data, test=None)
    config = TrainConfig(
        backbone=str(tiny_albert), epochs=1, batch_size=32, min_steps=0, quantize=False
    )
    fit(data, config, tmp_path)  # the checkpoints of a run that never wrote its bundle
    assert list((tmp_path / "checkpoints").glob("checkpoint-*"))

    def without(intent):
        return [u for u in data.train if u.intent != intent], [
            u for u in data.dev if u.intent != intent
        ]

    train, dev = without("PlayMusic")
    fewer = dataclasses.replace(data, train=train, dev=dev)
    with pytest.raises(
        ConfigError, match=r"other labels \(intents removed: PlayMusic; slots removed: album"
    ) as err:
        fit(fewer, config, tmp_path, resume=True)
    assert "\n" not in str(err.value) and "--overwrite" in str(err.value)
    edited = dataclasses.replace(data, train=data.train[:-1])
    with pytest.raises(ConfigError, match="the training data changed"):
        fit(edited, config, tmp_path, resume=True)
    with pytest.raises(ConfigError, match=r"options changed \(batch_size 32 -> 16\)"):
        fit(data, dataclasses.replace(config, batch_size=16), tmp_path, resume=True)


def test_cli_resume_on_changed_data_is_one_line_and_overwrite_starts_afresh(
    tmp_path, tiny_albert, snips
):
    from voicenlu.config import TrainConfig
    from voicenlu.data.training import snips_split
    from voicenlu.trainer import fit

    # A run stopped before its bundle, on 5 utterances per intent: its checkpoints remain.
    earlier = snips_split(snips, per_intent=5, seed=5, dev_per_intent=5)
    config = TrainConfig(backbone=str(tiny_albert), epochs=1, batch_size=16, min_steps=0)
    fit(earlier, config, tmp_path)
    plain = subprocess.run(
        _train_cmd(tmp_path, tiny_albert, 1), env=ENV, capture_output=True, text=True
    )
    assert plain.returncode == 1 and "did not finish: --resume" in plain.stderr
    # Resumed on 6 per intent: the data changed, and the one error line says so.
    resumed = subprocess.run(
        _train_cmd(tmp_path, tiny_albert, 1, "--resume"), env=ENV, capture_output=True, text=True
    )
    assert resumed.returncode == 1 and "Traceback" not in resumed.stderr
    error = [line for line in resumed.stderr.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and "the training data changed" in error[0], resumed.stderr
    assert "35 training and 35 dev utterances then, 42 and 42 now" in error[0]
    fresh = subprocess.run(
        _train_cmd(tmp_path, tiny_albert, 1, "--overwrite"), env=ENV, capture_output=True, text=True
    )
    assert fresh.returncode == 0, fresh.stderr[-2000:]
    assert read_manifest(tmp_path / "bundle")["complete"] is True
    assert not (tmp_path / "checkpoints").exists()

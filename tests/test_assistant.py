"""Every command of the README on a bundle trained on a user's own file, not on SNIPS.

The bundle (``assistant_bundle``, trained once per session on examples/assistant.rasa.yml)
records where its data came from; every command after ``train`` finds that data again and
reports its figures: three intents, four slots, and 27 utterances, too few to hold out a dev
set, so every one is trained on and nothing is held out to score on.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

import voicenlu
from voicenlu.bundle import read_manifest, update_manifest
from voicenlu.data import load_dataset
from voicenlu.errors import ConfigError, DataError

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
ASSISTANT = EXAMPLES / "assistant.rasa.yml"  # what ``assistant_bundle`` is trained on
INTENTS = {"GetWeather", "SetTimer", "SwitchLights"}
SLOTS = {"city", "duration", "room", "state"}


def copy(bundle, tmp_path):
    return shutil.copytree(bundle, tmp_path / "bundle")


def test_train_says_what_it_trains_and_how_it_chose(assistant_run):
    bundle, stdout, stderr = assistant_run
    summary = stderr.splitlines()[0]
    assert summary.startswith("training on 27 utterances of 3 intents")
    assert "no dev set (fewer than 5 per intent to spare)" in summary
    assert "\ntrain: intent accuracy" in stdout and "in-sample: nothing was held out" in stdout
    assert "test:" not in stdout and "\ndev:" not in stdout
    assert "chosen: too few utterances to hold out a dev set" in stdout
    # No log dicts of transformers, no warnings of torch's exporter or the quantizer.
    assert "{'loss'" not in stderr and "{'eval_" not in stderr
    assert "Warning" not in stderr and "WARNING" not in stderr
    choice = read_manifest(bundle)["training"]["choice"]
    assert choice["method"] == "fixed_schedule" and choice["steps_run"] == choice["steps_planned"]


def test_train_leaves_int8_beside_fp32_and_no_checkpoints(assistant_run):
    bundle, stdout, _ = assistant_run
    manifest = read_manifest(bundle)
    assert {"model.onnx", "model.int8.onnx"} <= set(manifest["files"])
    assert voicenlu.Parser.load(bundle).precision == "int8"
    agreement = manifest["quantization"]["agreement"]
    assert agreement["texts"] == 27 and agreement["same_parse"] >= 0.9
    assert "int8: model.int8.onnx" in stdout
    assert not (bundle.parent / "checkpoints").exists()


def test_train_refuses_to_replace_a_bundle_without_overwrite(assistant_run, cli):
    bundle = assistant_run[0]
    before = (bundle / "voicenlu.json").read_bytes()
    done = cli("train", "--data", str(ASSISTANT), "--output-dir", str(bundle.parent))
    assert done.returncode == 1
    assert "already holds a trained bundle" in done.stderr and "--overwrite" in done.stderr
    assert (bundle / "voicenlu.json").read_bytes() == before


def test_manifest_records_where_the_data_came_from(assistant_bundle):
    data = read_manifest(assistant_bundle)["data"]
    assert data["kind"] == "file" and data["format"] == "rasa"
    assert data["name"] == ASSISTANT.name and data["path"] == str(ASSISTANT.resolve())
    assert data["sha256"] == hashlib.sha256(ASSISTANT.read_bytes()).hexdigest()
    assert data["dev_split"] == {"holdout": 0.0, "seed": 13}  # 3 dev utterances: too few
    assert set(data["intents"]) == INTENTS and set(data["slots"]) == SLOTS
    assert data["train"] == len(load_dataset(ASSISTANT).utterances) and data["dev"] == 0


def test_model_card_describes_this_data(assistant_bundle):
    card = (assistant_bundle / "MODEL_CARD.md").read_text()
    data = read_manifest(assistant_bundle)["data"]
    for intent in INTENTS:
        assert f"{intent} ({data['intents'][intent]})" in card
    assert "assistant.rasa.yml (rasa)" in card and data["sha256"] in card
    assert "## Figures on the training utterances (in-sample)" in card
    assert "trained on every utterance for a fixed" in card
    assert "SNIPS" not in card and "English" not in card and "crowd-sourced" not in card


def test_evaluate_says_nothing_was_held_out_and_leaves_the_bundle_alone(assistant_bundle, cli):
    before = {p: p.read_bytes() for p in assistant_bundle.rglob("*") if p.is_file()}
    done = cli("evaluate", str(assistant_bundle))
    assert done.returncode == 1
    assert "trained on every utterance of assistant.rasa.yml" in done.stderr
    assert "pass --data PATH" in done.stderr and "SNIPS" not in done.stderr
    assert not (assistant_bundle.parent / "bundle-evaluation").exists()
    after = {p: p.read_bytes() for p in assistant_bundle.rglob("*") if p.is_file()}
    assert after == before


def test_evaluate_on_other_data(assistant_bundle, tmp_path, cli):
    done = cli(
        "evaluate",
        str(assistant_bundle),
        "--data",
        str(EXAMPLES / "assistant.csv"),
        "--out",
        str(tmp_path / "csv"),
    )
    assert done.returncode == 0, done.stderr
    metrics = json.loads(done.stdout)
    assert metrics["n"] == len(load_dataset(EXAMPLES / "assistant.csv").utterances)
    # The CSV annotates intents only: its slots were not missed, they are not there to score.
    assert metrics["slot_f1"] is None and metrics["exact_match"] is None
    assert metrics["intent_accuracy"] > 0.5
    report = (tmp_path / "csv" / "report.md").read_text()
    assert "SwitchLights" in report and "PlayMusic" not in report
    assert "| n/a | n/a |" in report and "## Per slot" not in report


def test_evaluate_write_bundle_updates_the_bundle(assistant_bundle, tmp_path, cli):
    bundle = copy(assistant_bundle, tmp_path)
    (bundle / "report").rename(tmp_path / "old-report")
    done = cli("evaluate", str(bundle), "--write-bundle")
    assert done.returncode == 0, done.stderr
    assert (bundle / "report" / "report.md").is_file()
    assert read_manifest(bundle)["metrics"]["split"] == "train"  # what training recorded
    assert not (tmp_path / "bundle-evaluation").exists()


def test_a_bundle_whose_data_is_gone_says_so(assistant_bundle, tmp_path, cli):
    bundle = copy(assistant_bundle, tmp_path)
    data = read_manifest(bundle)["data"]
    update_manifest(bundle, data=data | {"path": str(tmp_path / "moved-away.yml")})
    for command in ("evaluate", "export", "quantize"):
        done = cli(command, str(bundle))
        assert done.returncode == 1, command
        assert "moved-away.yml, is gone: pass --data PATH" in done.stderr, command
    changed = tmp_path / "assistant.rasa.yml"
    changed.write_text(ASSISTANT.read_text() + "\n")
    update_manifest(bundle, data=data | {"path": str(changed)})
    done = cli("evaluate", str(bundle))
    assert done.returncode == 1 and "changed since this bundle was trained" in done.stderr


def test_predict(assistant_bundle, cli):
    done = cli("predict", str(assistant_bundle), "--json", "turn on the lights in the kitchen")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["intent"]["name"] == "SwitchLights"
    assert {r["name"] for r in result["intent_ranking"]} == INTENTS


def test_export_checks_parity_on_the_bundles_own_dev_texts(assistant_bundle, tmp_path, cli):
    bundle = copy(assistant_bundle, tmp_path)
    done = cli("export", str(bundle))
    assert done.returncode == 0, done.stderr
    parity = json.loads(done.stdout.splitlines()[-1])
    assert parity["texts"] == 27 and parity["intent_mismatches"] == 0  # no dev: every text
    assert read_manifest(bundle)["onnx_parity"] == parity


@pytest.fixture(scope="module")
def quantized(assistant_bundle, tmp_path_factory, cli):
    bundle = shutil.copytree(assistant_bundle, tmp_path_factory.mktemp("q") / "bundle")
    done = cli("quantize", str(bundle))
    assert done.returncode == 0, done.stderr
    return bundle, json.loads(done.stdout)


def test_quantize_scores_on_the_bundles_own_data(quantized):
    bundle, summary = quantized
    # Nothing held out to score int8 on; what it changes is checked on every training text.
    assert "dev_fp32" not in summary and "test_fp32" not in summary
    assert summary["agreement"]["texts"] == 27 and summary["agreement"]["same_parse"] >= 0.9
    assert read_manifest(bundle)["quantization"] == summary
    parser = voicenlu.Parser.load(bundle)
    assert parser.precision == "int8"
    assert parser.parse("set a timer for 10 minutes", threshold=0.0)["intent"]["name"] == "SetTimer"


def test_prune_a_user_bundle(assistant_bundle, tmp_path, cli):
    done = cli(
        "prune",
        str(assistant_bundle),
        "--layers",
        "5",
        "--epochs",
        "1",
        "--output-dir",
        str(tmp_path / "pruned"),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "\ntrain: intent accuracy" in done.stdout
    manifest = read_manifest(tmp_path / "pruned" / "bundle")
    assert manifest["encoder_config"]["num_hidden_layers"] == 5
    assert set(manifest["intents"]) == INTENTS
    assert manifest["data"]["sha256"] == read_manifest(assistant_bundle)["data"]["sha256"]
    assert manifest["pruning"]["from"] == str(assistant_bundle)


def test_bench_measures_on_the_bundles_own_data(quantized, tmp_path, cli):
    bundle, _ = quantized
    out = tmp_path / "deploy"
    done = cli("bench", str(bundle), "--runs", "1", "--requests", "3", "--out", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.with_suffix(".json").read_text())
    # Nothing held out: timed on the training utterances, not scored, nothing recommended.
    assert result["data"].startswith("27 training utterances of assistant.rasa.yml")
    names = {row["name"] for row in result["rows"]}
    assert {"voicenlu_ort_fp32", "voicenlu_ort_int8", "tfidf_logreg"} <= names
    assert result["recommended"] is None and not any(r["recommended"] for r in result["rows"])
    assert all(row["intent_accuracy"] is None and row["p50_ms"] > 0 for row in result["rows"])
    assert "Not scored and nothing recommended" in done.stdout
    assert "assistant.rasa.yml" in done.stdout and "SNIPS" not in done.stdout
    # Its provenance: the command and the bundle it measured.
    assert result["command"].startswith("voicenlu bench ")
    assert result["bundle"]["digest"] == read_manifest(bundle)["digest"]


def test_bench_writes_beside_the_bundle_by_default(quantized, tmp_path, cli):
    bundle, _ = quantized
    done = subprocess.run(
        [sys.executable, "-m", "voicenlu", "bench", str(bundle), "--runs", "1", "--requests", "2"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert not (tmp_path / "benchmarks").exists()
    assert (bundle.parent / "bundle-bench" / "deploy.md").is_file()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_parses_over_http(assistant_bundle):
    port = free_port()
    cmd = [sys.executable, "-m", "voicenlu", "serve", str(assistant_bundle), "--port", str(port)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            assert proc.poll() is None, proc.stderr.read()
            try:
                if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.time() < deadline, "the server did not get ready"
            time.sleep(0.5)
        result = httpx.post(f"{url}/parse", json={"text": "lights off in the garage"}, timeout=30)
        assert result.raise_for_status().json()["intent"]["name"] == "SwitchLights"
        # The demo page offers the assistant's own requests, one per intent, not SNIPS ones.
        examples = httpx.get(f"{url}/metadata", timeout=30).json()["examples"]
        own = {u.text: u.intent for u in load_dataset(ASSISTANT).utterances}
        assert len(examples) == 3 and {own[e] for e in examples} == INTENTS
    finally:
        proc.terminate()
        proc.wait(timeout=30)


# --- the same from Python ----------------------------------------------------------------


def test_python_api_trains_and_evaluates(tmp_path):
    # The default recipe on a small budget: one epoch of 27 utterances cannot fill 12 steps,
    # so slot-swapped copies fill them (and more epochs, if the swaps run out).
    bundle = voicenlu.train(
        data=str(ASSISTANT), output_dir=tmp_path / "home", epochs=1, batch_size=8, min_steps=12
    )
    assert bundle == tmp_path / "home" / "bundle"
    manifest = read_manifest(bundle)
    assert manifest["training"]["epochs"] == 1 and set(manifest["intents"]) == INTENTS
    assert manifest["data"]["swapped_copies"] > 0
    taught = manifest["data"]["train"] + manifest["data"]["spoken_copies"]
    taught += manifest["data"]["swapped_copies"]
    steps = math.ceil(taught / 8) * manifest["training"]["epochs_run"]
    assert steps >= 12
    with pytest.raises(DataError, match="nothing is left to score it on"):
        voicenlu.evaluate(bundle)
    on_csv = voicenlu.evaluate(bundle, data=EXAMPLES / "assistant.csv")
    assert on_csv["n"] == 27 and set(on_csv["per_intent"]) <= INTENTS
    assert not (tmp_path / "home" / "bundle-evaluation").exists()  # no report unless asked


def test_python_api_refuses_what_the_cli_refuses(tmp_path, cli):
    with pytest.raises(ConfigError, match="Unknown training option 'epoch'"):
        voicenlu.train(data=ASSISTANT, output_dir=tmp_path, epoch=1)
    with pytest.raises(ConfigError, match=r"batch_size \(--batch-size\) must be at least 1"):
        voicenlu.train(data=ASSISTANT, output_dir=tmp_path, batch_size=0)
    done = cli("train", "--data", str(ASSISTANT), "--batch-size", "0")
    assert done.returncode == 1
    assert "batch_size (--batch-size) must be at least 1" in done.stderr
    bad = tmp_path / "tiny.csv"
    bad.write_text("text,intent\nhello,greet\n")
    with pytest.raises(DataError, match="not ready for training"):
        voicenlu.train(data=bad, output_dir=tmp_path / "run")
    with pytest.raises(ConfigError, match="per_intent"):
        voicenlu.train(data=ASSISTANT, output_dir=tmp_path, per_intent=5)


def test_every_annotated_value_is_in_its_entity_list(assistant_bundle):
    """Dev's values too: a value seen only in the held-out tenth is still one of the entity's."""
    values = read_manifest(assistant_bundle)["values"]
    data = load_dataset(ASSISTANT)
    for utt in data.utterances:
        for slot, value in utt.slot_values():
            entity = values["slot_types"].get(slot)
            if entity in values["entities"]:
                forms = values["entities"][entity]["values"]
                known = set(forms) | {s for synonyms in forms.values() for s in synonyms}
                assert value in known, (slot, value)


def test_info_shows_what_the_bundle_holds(assistant_bundle, cli):
    done = cli("info", str(assistant_bundle))
    assert done.returncode == 0, done.stderr
    text = done.stdout
    assert "intents (3, training utterances each): GetWeather (9), SetTimer (9)" in text
    assert "duration: duration (resolved by Duckling)" in text
    assert "room: entity room (6 values, extensible)" in text
    assert "entity state: on, off" in text and "Zürich" in text
    assert "data: assistant.rasa.yml (rasa); 27 training, 0 dev utterances" in text
    assert "chosen: too few utterances to hold out a dev set" in text
    assert "figures on train (in-sample)" in text and "model.int8.onnx" in text
    info = json.loads(cli("info", str(assistant_bundle), "--json").stdout)
    assert set(info["intents"]) == INTENTS and set(info["slots"]) == SLOTS
    assert info["data"]["sha256"] == read_manifest(assistant_bundle)["data"]["sha256"]


def test_hints_for_a_run_folder_and_a_wav_read_as_text(assistant_bundle, tmp_path, cli):
    run_folder = assistant_bundle.parent
    for command in (("info",), ("predict", "--json"), ("evaluate",)):
        done = cli(command[0], str(run_folder), *command[1:], *(["hi"] if len(command) > 1 else []))
        assert done.returncode == 1, command
        assert f"did you mean {run_folder / 'bundle'}?" in done.stderr, command
    wav = tmp_path / "order.wav"
    wav.write_bytes(b"RIFF")
    done = cli("predict", str(assistant_bundle), str(wav))
    assert done.returncode == 0
    assert "order.wav is a WAV file, parsed here as text: pass --audio" in done.stderr


def test_oos_runs_on_the_bundles_own_data(assistant_bundle, tmp_path, capsys):
    """Leave one intent out of the assistant's own utterances (briefly here), saying what it
    does as it goes; never a SNIPS training."""
    from voicenlu.config import TrainConfig
    from voicenlu.experiments.oos import file_folds, leave_one_intent_out

    folds = file_folds(load_dataset(ASSISTANT).utterances, 13, "assistant.rasa.yml")
    config = TrainConfig(epochs=1, batch_size=8, min_steps=0, quantize=False)
    result = leave_one_intent_out(folds, config, tmp_path, "test")
    assert "fold 3 of 3, without SwitchLights" in capsys.readouterr().err
    assert [f["held_out"] for f in result["folds"]] == sorted(INTENTS)
    fold = read_manifest(tmp_path / "without-GetWeather" / "bundle")
    assert set(fold["intents"]) == INTENTS - {"GetWeather"}
    assert fold["training"]["choice"]["method"] == "fixed_schedule"
    assert 0 <= result["mean"]["auroc"] <= 1


def test_oos_without_a_bundle_says_it_runs_on_snips(tmp_path, cli):
    env = {"VOICENLU_SNIPS_MIRROR": "", "VOICENLU_DATA_DIR": str(tmp_path / "none")}
    env["VOICENLU_SNIPS_URL"] = "http://127.0.0.1:9"  # no network: it stops at the data
    done = cli("evaluate", "--oos", "--out", str(tmp_path / "o"), env=env)
    assert done.returncode == 1
    assert "--oos without a BUNDLE: the SNIPS benchmark's protocol" in done.stderr


def test_learning_curve_runs_on_the_bundles_own_data(assistant_bundle, tmp_path):
    from voicenlu.config import TrainConfig
    from voicenlu.data.formats import load_dataset as load
    from voicenlu.experiments.learning_curve import file_draws, learning_curve

    utterances = load(ASSISTANT).utterances
    draw, test, sizes = file_draws(utterances, 13, "assistant.rasa.yml", [3, 20, None])
    assert sizes == [3, None]  # 7 per intent left after the test share: 20 is beyond it
    assert {u.intent for u in test} == INTENTS and not {u.text for u in test} & {
        u.text for u in draw(None, 13).train
    }
    base = TrainConfig(epochs=1, batch_size=8, min_steps=0, seed=13)
    result = learning_curve(draw, test, base, tmp_path, [3], draws=1, user_rule=False)
    (run,) = result["runs"]
    assert run["train_utterances"] == 9 and run["dev_utterances"] == 0


def test_several_requests_split_on_own_data(assistant_bundle):
    """The segmenter learns from the assistant's own single requests: none combines two."""
    from voicenlu.runtime import Parser

    parser = Parser.load(assistant_bundle)
    assert read_manifest(assistant_bundle)["segmenter"]["joined"] == "train"  # dev is 3
    text = "turn the lights on in the kitchen and then set a timer for 10 minutes"
    result = parser.parse(text)
    assert [r["intent"]["name"] for r in result["requests"]] == ["SwitchLights", "SetTimer"]
    assert [r["text"] for r in result["requests"]] == [
        "turn the lights on in the kitchen",
        "set a timer for 10 minutes",
    ]
    # "and" inside a duration is not a new request.
    assert "requests" not in parser.parse("can you set a timer of an hour and a half")

"""Every command of the README on a bundle trained on a user's own file, not on SNIPS.

The bundle (``assistant_bundle``, trained once per session on examples/assistant.rasa.yml)
records where its data came from; every command after ``train`` finds that data again and
reports its figures: three intents, four slots, a 3-utterance dev hold-out.
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


def test_train_reports_dev_figures_as_dev(assistant_run):
    _, stdout = assistant_run
    assert "\ndev: intent accuracy" in stdout and "test:" not in stdout


def test_manifest_records_where_the_data_came_from(assistant_bundle):
    data = read_manifest(assistant_bundle)["data"]
    assert data["kind"] == "file" and data["format"] == "rasa"
    assert data["name"] == ASSISTANT.name and data["path"] == str(ASSISTANT.resolve())
    assert data["sha256"] == hashlib.sha256(ASSISTANT.read_bytes()).hexdigest()
    assert data["dev_split"] == {"holdout": 0.1, "seed": 13}
    assert set(data["intents"]) == INTENTS and set(data["slots"]) == SLOTS
    total = len(load_dataset(ASSISTANT).utterances)
    assert data["train"] + data["dev"] == total and data["dev"] == 3


def test_model_card_describes_this_data(assistant_bundle):
    card = (assistant_bundle / "MODEL_CARD.md").read_text()
    data = read_manifest(assistant_bundle)["data"]
    for intent in INTENTS:
        assert f"{intent} ({data['intents'][intent]})" in card
    assert "assistant.rasa.yml (rasa)" in card and data["sha256"] in card
    assert "## Figures on the dev set" in card
    assert "SNIPS" not in card and "English" not in card and "crowd-sourced" not in card


def test_evaluate_scores_the_held_out_data_and_leaves_the_bundle_alone(assistant_bundle, cli):
    before = {p: p.read_bytes() for p in assistant_bundle.rglob("*") if p.is_file()}
    done = cli("evaluate", str(assistant_bundle))
    assert done.returncode == 0, done.stderr
    metrics = json.loads(done.stdout)
    assert metrics["n"] == 3  # the dev hold-out, not the 700 SNIPS test utterances
    out = assistant_bundle.parent / "bundle-evaluation"
    written = json.loads((out / "metrics.json").read_text())
    assert set(written["per_intent"]) == INTENTS
    assert str(out / "report.md") in done.stderr
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
    assert json.loads(done.stdout)["n"] == len(load_dataset(EXAMPLES / "assistant.csv").utterances)
    report = (tmp_path / "csv" / "report.md").read_text()
    assert "SwitchLights" in report and "PlayMusic" not in report


def test_evaluate_write_bundle_updates_the_bundle(assistant_bundle, tmp_path, cli):
    bundle = copy(assistant_bundle, tmp_path)
    (bundle / "report").rename(tmp_path / "old-report")
    done = cli("evaluate", str(bundle), "--write-bundle")
    assert done.returncode == 0, done.stderr
    assert (bundle / "report" / "report.md").is_file()
    assert read_manifest(bundle)["metrics"]["split"] == "dev"
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
    assert parity["texts"] == 3 and parity["intent_mismatches"] == 0
    assert read_manifest(bundle)["onnx_parity"] == parity


@pytest.fixture(scope="module")
def quantized(assistant_bundle, tmp_path_factory, cli):
    bundle = shutil.copytree(assistant_bundle, tmp_path_factory.mktemp("q") / "bundle")
    done = cli("quantize", str(bundle))
    assert done.returncode == 0, done.stderr
    return bundle, json.loads(done.stdout)


def test_quantize_scores_on_the_bundles_own_data(quantized):
    bundle, summary = quantized
    assert set(summary) >= {"dev_fp32", "dev_int8"} and "test_fp32" not in summary
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
    assert "\ndev: intent accuracy" in done.stdout
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
    assert result["data"].startswith("3 dev utterances of assistant.rasa.yml")
    names = {row["name"] for row in result["rows"]}
    assert {"voicenlu_ort_fp32", "voicenlu_ort_int8", "tfidf_logreg"} <= names
    assert sum(row["recommended"] for row in result["rows"]) == 1
    assert "assistant.rasa.yml" in done.stdout and "SNIPS" not in done.stdout


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
    metrics = voicenlu.evaluate(bundle)
    assert metrics["n"] == 3 and set(metrics["per_intent"]) <= INTENTS
    on_csv = voicenlu.evaluate(bundle, data=EXAMPLES / "assistant.csv")
    assert on_csv["n"] == 27
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

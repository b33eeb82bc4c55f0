"""A user's own assistant: validate, convert, train on Rasa YAML or CSV, reject out of scope."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from voicenlu.data import load_dataset
from voicenlu.runtime import Parser

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run(*args: str):
    done = subprocess.run([sys.executable, "-m", "voicenlu", *args], capture_output=True, text=True)
    assert "Traceback" not in done.stderr, done.stderr
    return done


@pytest.fixture(scope="module")
def rasa_bundle(assistant_bundle) -> Path:
    return assistant_bundle


def test_validate_accepts_the_examples_and_reports_bad_lines(tmp_path):
    done = run("data", "validate", str(EXAMPLES / "assistant.rasa.yml"))
    assert done.returncode == 0, done.stdout
    bad = tmp_path / "bad.yml"
    bad.write_text('version: "3.1"\nnlu:\n- intent: greet\n  examples: |\n    - hi [there(name)\n')
    done = run("data", "validate", str(bad))
    assert done.returncode == 1 and "bad.yml" in done.stdout and "line 5" in done.stdout


def test_training_refuses_invalid_data_with_the_report(tmp_path):
    bad = tmp_path / "tiny.csv"
    bad.write_text("text,intent\nhello,greet\nbye,goodbye\n")
    done = run("train", "--data", str(bad), "--output-dir", str(tmp_path / "run"))
    assert done.returncode == 1 and "not ready for training" in done.stderr
    assert "greet" in done.stderr


def test_convert_rasa_to_snips_nlu_and_back_loses_nothing(tmp_path):
    done = run("data", "convert", str(EXAMPLES / "assistant.rasa.yml"), str(tmp_path / "a.json"))
    assert done.returncode == 0, done.stderr
    run("data", "convert", str(tmp_path / "a.json"), str(tmp_path / "b.yml"))
    original = load_dataset(EXAMPLES / "assistant.rasa.yml").utterances
    assert load_dataset(tmp_path / "b.yml").utterances == original


def test_rasa_assistant_parses_its_own_examples(rasa_bundle):
    data = load_dataset(EXAMPLES / "assistant.rasa.yml").utterances
    parser = Parser.load(rasa_bundle)
    results = parser.parse_batch([u.text for u in data], threshold=0.0)
    right = sum(r["intent"]["name"] == u.intent for r, u in zip(results, data, strict=True))
    assert right / len(data) >= 0.9
    assert json.loads((rasa_bundle / "voicenlu.json").read_text())["data"]["format"] == "rasa"
    timer = parser.parse("set a timer for 10 minutes", threshold=0.0)
    assert timer["intent"]["name"] == "SetTimer"


def test_rasa_assistant_resolves_synonyms_and_durations(rasa_bundle):
    values = json.loads((rasa_bundle / "voicenlu.json").read_text())["values"]
    assert values["slot_types"]["duration"] == "duration"
    assert values["entities"]["city"]["values"]["Zürich"] == ["Zurich", "Zuerich"]
    parser = Parser.load(rasa_bundle)
    umbrella = parser.parse("do I need an umbrella in Zurich", threshold=0.0)
    [city] = [s for s in umbrella["slots"] if s["slot"] == "city"]
    assert city["value"] == "Zurich" and city["resolved"]["value"] == "Zürich"
    timer = parser.parse("set a timer for 10 minutes", threshold=0.0)
    [duration] = [s for s in timer["slots"] if s["slot"] == "duration"]
    assert duration["resolved"] == {
        "kind": "duration",
        "value": 10,
        "unit": "minute",
        "seconds": 600,
    }


def test_stored_threshold_rejects_out_of_scope_text(rasa_bundle):
    parser = Parser.load(rasa_bundle)
    assert 0 < parser.threshold < 1
    in_scope = parser.parse("turn on the lights in the kitchen")
    assert in_scope["in_scope"] and in_scope["intent"]["name"] == "SwitchLights"
    # Requests this assistant cannot serve; the one it is least sure of must be rejected.
    unrelated = ["play some jazz", "how old is the president", "book a flight to Rome"]
    results = parser.parse_batch(unrelated)
    least_sure = min(results, key=lambda r: r["intent"]["confidence"])
    assert least_sure["in_scope"] is False and least_sure["intent"]["name"] is None


def test_intent_only_csv_trains_without_slots(tmp_path):
    done = run(
        "train",
        "--data",
        str(EXAMPLES / "assistant.csv"),
        "--epochs",
        "6",
        "--batch-size",
        "8",
        "--head-lr",
        "3e-3",
        "--min-steps",
        "0",
        "--output-dir",
        str(tmp_path),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    manifest = json.loads((tmp_path / "bundle" / "voicenlu.json").read_text())
    assert manifest["slot_tags"] == ["O"]
    result = Parser.load(tmp_path / "bundle").parse("turn the lights off")
    assert result["slots"] == []


def test_a_dev_set_is_held_out_only_when_it_can_choose(snips, tmp_path):
    """10% of 50 per intent is 5 per intent: held out. 10% of 30 is 3: too few to choose a
    checkpoint with, so every utterance is trained on (and the origin records it)."""
    from voicenlu.data import stratified_slice, write_dataset
    from voicenlu.data.training import file_data, recorded_data

    for per_intent, dev_per_intent in ((50, 5), (30, 0)):
        path = tmp_path / f"{per_intent}.csv"
        write_dataset(stratified_slice(snips.train, per_intent, seed=2), path)
        data = file_data(path, seed=13)
        assert len(data.dev) == 7 * dev_per_intent
        assert len(data.train) == 7 * (per_intent - dev_per_intent)
        assert data.source["dev_split"]["holdout"] == (0.1 if dev_per_intent else 0.0)
        assert data.evaluation[0] == ("dev" if dev_per_intent else "train")
        again = recorded_data(data.source)
        assert [u.text for u in again.dev] == [u.text for u in data.dev]

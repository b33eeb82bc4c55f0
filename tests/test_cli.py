"""Every command, run as a user runs it; errors end in a clear message and a non-zero exit."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
from conftest import run_cli as run

from voicenlu.data import INTENTS


def dead_url() -> str:
    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def no_data_env(tmp_path) -> dict:
    return {
        "VOICENLU_SNIPS_MIRROR": "",
        "VOICENLU_SNIPS_URL": dead_url(),
        "VOICENLU_DATA_DIR": str(tmp_path / "empty"),
    }


COMMANDS = [
    [],
    ["data"],
    ["data", "download"],
    ["data", "stats"],
    ["data", "validate"],
    ["data", "convert"],
    ["train"],
    ["evaluate"],
    ["predict"],
    ["segment"],
    ["export"],
    ["quantize"],
    ["prune"],
    ["bench"],
    ["serve"],
]


@pytest.mark.parametrize("command", COMMANDS)
def test_help_teaches(command):
    done = run(*command, "--help")
    assert done.returncode == 0 and "usage: voicenlu" in done.stdout


def test_data_download_and_stats(tmp_path, snips_mirror):
    done = run("data", "download", "--from", str(snips_mirror), "--data-dir", str(tmp_path))
    assert done.returncode == 0, done.stderr
    stats = run("data", "stats", "--data-dir", str(tmp_path))
    assert stats.returncode == 0
    assert "13,084" in stats.stdout and "AddToPlaylist" in stats.stdout
    assert "repaired: 1" in stats.stdout


def test_download_without_network_says_how_to_use_a_local_copy(tmp_path):
    done = run("data", "download", "--data-dir", str(tmp_path / "d"), env=no_data_env(tmp_path))
    assert done.returncode == 1 and "--from" in done.stderr
    assert not (tmp_path / "d").exists()  # no empty folder left behind


def test_data_stats_on_your_own_file():
    examples = Path(__file__).resolve().parent.parent / "examples"
    done = run("data", "stats", str(examples / "assistant.rasa.yml"))
    assert done.returncode == 0, done.stderr
    assert "SwitchLights" in done.stdout and "AddToPlaylist" not in done.stdout
    assert "rasa, 27 utterances; no dev set" in done.stdout


def test_help_speaks_of_your_data_first():
    top = run("--help").stdout
    assert "voicenlu train --data assistant.yml" in top
    train = run("train", "--help").stdout
    assert "on SNIPS" not in train and "runs/<data name>" in train


def test_train_without_data_is_a_clear_error(tmp_path):
    done = run("train", "--quick", "--output-dir", str(tmp_path / "run"), env=no_data_env(tmp_path))
    assert done.returncode == 1 and "VOICENLU_SNIPS_MIRROR" in done.stderr


def test_learning_curve_errors():
    done = run("evaluate", "--learning-curve", "--sizes", "10,many")
    assert done.returncode == 1 and "'many'" in done.stderr
    done = run("evaluate", "--learning-curve", "--oos")
    assert done.returncode == 1 and "Choose one" in done.stderr


def test_train_with_unknown_backbone(tmp_path):
    done = run(
        "train",
        "--quick",
        "--backbone",
        str(tmp_path / "no-such-model"),
        "--output-dir",
        str(tmp_path / "run"),
    )
    assert done.returncode == 1 and "Could not load the backbone" in done.stderr


def test_predict_readable_json_and_stdin(tiny_bundle):
    done = run("predict", str(tiny_bundle), "add Diamonds to my roadtrip playlist", "play jazz")
    assert done.returncode == 0 and done.stdout.count("->") == 2
    # Rejected: the line names the nearest intent instead of an intent.
    done = run("predict", str(tiny_bundle), "--threshold", "1.0", "zzz qqq")
    assert done.returncode == 0 and "-> out of scope (nearest: " in done.stdout
    done = run("predict", str(tiny_bundle), "--json", "play jazz")
    result = json.loads(done.stdout)
    assert result["text"] == "play jazz" and result["intent"]["name"]
    done = run("predict", str(tiny_bundle), "--json", "-", stdin="play jazz\n\nbook a table\n")
    assert [json.loads(line)["text"] for line in done.stdout.splitlines()] == [
        "play jazz",
        "book a table",
    ]


def test_predict_errors(tiny_bundle, tmp_path):
    done = run("predict", str(tmp_path / "missing"), "play jazz")
    assert done.returncode == 1 and "No model bundle" in done.stderr
    done = run("predict", str(tiny_bundle), "  ")
    assert done.returncode == 1 and "empty" in done.stderr
    done = run("predict", str(tiny_bundle), "--timezone", "Mars/Base", "play jazz")
    assert done.returncode == 1 and "Unknown timezone 'Mars/Base'" in done.stderr
    done = run("predict", str(tiny_bundle), "--reference-time", "noonish", "play jazz")
    assert done.returncode == 1 and "not an ISO-8601 date-time" in done.stderr


def test_predict_prints_resolved_values(tiny_bundle):
    text = "book a table for four people tomorrow at 8 pm"
    args = ("--reference-time", "2026-11-28T12:00:00+01:00", "--timezone", "Europe/Zurich")
    result = json.loads(run("predict", str(tiny_bundle), "--json", *args, text).stdout)
    readable = run("predict", str(tiny_bundle), *args, text).stdout
    assert result["slots"] and all("resolved" in s for s in result["slots"])
    for s in result["slots"]:
        shown = f'{s["slot"]}="{s["value"]}" (' in readable
        assert shown == (s["resolved"] is not None)


def test_format_result_shows_values():
    from voicenlu.cli.common import format_result

    slots = [
        ("party_size_number", "four", {"kind": "number", "value": 4}),
        (
            "timeRange",
            "tonight",
            {
                "kind": "time",
                "type": "interval",
                "from": {"value": "2026-11-28T18:00:00.000+01:00", "grain": "hour"},
                "to": {"value": "2026-11-29T00:00:00.000+01:00", "grain": "hour"},
            },
        ),
        ("length", "an hour", {"kind": "duration", "value": 1, "unit": "hour", "seconds": 3600}),
        ("city", "Boston", None),
    ]
    result = {
        "text": "x",
        "intent": {"name": "BookRestaurant", "confidence": 0.99},
        "intent_ranking": [],
        "slots": [{"slot": n, "value": v, "resolved": r} for n, v, r in slots],
    }
    assert format_result(result).splitlines()[1] == (
        '  -> BookRestaurant (0.99)  party_size_number="four" (4)  timeRange="tonight" '
        "(from 2026-11-28T18:00:00.000+01:00 to 2026-11-29T00:00:00.000+01:00)  "
        'length="an hour" (1 hour = 3600 s)  city="Boston"'
    )


def test_serve_missing_bundle_is_a_clear_error(tmp_path):
    done = run("serve", str(tmp_path / "missing"), "--port", "0")
    assert done.returncode == 1 and "No model bundle" in done.stderr


def test_evaluate_a_snips_bundle_on_the_snips_test_set(tiny_bundle, tmp_path):
    """The bundle records SNIPS as its data: evaluate finds the 700 test utterances itself."""
    done = run("evaluate", str(tiny_bundle), "--out", str(tmp_path / "report"))
    assert done.returncode == 0, done.stderr
    metrics = json.loads(done.stdout)
    assert metrics["n"] == 700
    written = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert written["intent_accuracy"] == metrics["intent_accuracy"]
    assert set(written["per_intent"]) == set(INTENTS)
    assert (tmp_path / "report" / "report.md").is_file()

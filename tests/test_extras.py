"""A command whose optional extra is missing says which one to install, without a traceback.

Each case hides one package (a ``None`` entry in ``sys.modules`` makes importing it fail as
if it were not installed) and runs the command in this process.
"""

from __future__ import annotations

import sys

import pytest

from voicenlu.cli import main
from voicenlu.extras import extra_providing

CASES = [
    ("torch", "train", ["train", "--data", "examples/assistant.rasa.yml"]),
    ("torch", "train", ["evaluate", "no-such-bundle"]),
    ("matplotlib", "train", ["evaluate", "no-such-bundle"]),
    ("torch", "train", ["export", "no-such-bundle"]),
    ("torch", "train", ["prune", "no-such-bundle", "--layers", "2", "--output-dir", "x"]),
    ("torch", "train", ["bench", "no-such-bundle"]),
    ("onnx", "quantize", ["quantize", "no-such-bundle"]),
    ("fastapi", "serve", ["serve", "no-such-bundle"]),
    ("uvicorn", "serve", ["serve", "no-such-bundle"]),
    ("torch", "train", ["evaluate", "--oos"]),
    ("wyoming", "wyoming", ["wyoming", "no-such-bundle"]),
]


@pytest.mark.parametrize(("hidden", "extra", "argv"), CASES)
def test_missing_extra_names_the_install_command(monkeypatch, capsys, hidden, extra, argv):
    monkeypatch.setitem(sys.modules, hidden, None)
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: `voicenlu {argv[0]}")
    assert f"pip install 'voicenlu[{extra}]'" in err and hidden in err
    assert "Traceback" not in err


def test_with_the_extra_present_the_command_gets_past_the_check(capsys):
    # The same command as above, with nothing hidden, fails later and for its own reason.
    assert main(["export", "no-such-bundle"]) == 1
    assert "No model bundle at no-such-bundle" in capsys.readouterr().err


def test_import_errors_deeper_down_map_to_their_extra():
    assert extra_providing("torch.nn.functional") == "train"
    assert extra_providing("fastapi.responses") == "serve"
    assert extra_providing("numpy") is None

"""Shared fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from voicenlu.data import SnipsData, download, load_snips

# --- SNIPS data: fetched the way a user does, from the mirror named by VOICENLU_SNIPS_MIRROR ---


def pytest_report_header(config) -> str:
    """Say where the SNIPS data of this run comes from."""
    mirror = os.environ.get("VOICENLU_SNIPS_MIRROR")
    if mirror:
        return f"SNIPS data: the local mirror {mirror} (VOICENLU_SNIPS_MIRROR)"
    return "SNIPS data: downloaded from GitHub at the pinned commit (VOICENLU_SNIPS_MIRROR unset)"


@pytest.fixture(scope="session")
def snips_mirror(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A local copy of snipsco/nlu-benchmark (the folder holding 2017-06-custom-intent-engines/):
    $VOICENLU_SNIPS_MIRROR, or one downloaded from upstream at the pinned commit."""
    mirror = os.environ.get("VOICENLU_SNIPS_MIRROR")
    if mirror:
        return Path(mirror)
    return download(tmp_path_factory.mktemp("snips-upstream"))


@pytest.fixture(scope="session", autouse=True)
def isolated_data_dir(tmp_path_factory: pytest.TempPathFactory):
    """Commands run by the tests keep their data in a temporary folder, not the user cache."""
    os.environ["VOICENLU_DATA_DIR"] = str(tmp_path_factory.mktemp("voicenlu-data"))
    os.environ["HF_HUB_OFFLINE"] = "1"


@pytest.fixture(scope="session")
def snips_root(tmp_path_factory: pytest.TempPathFactory, snips_mirror: Path) -> Path:
    """A verified data root, copied from the mirror by ``download`` once per session."""
    return download(tmp_path_factory.mktemp("snips"), source=snips_mirror)


@pytest.fixture(scope="session")
def snips(snips_root: Path) -> SnipsData:
    """The standard SNIPS split (13,084 / 700 / 700)."""
    return load_snips(snips_root)


# --- A small real model, trained once per session on a stratified slice of SNIPS ---

TINY_PER_INTENT = 40


@pytest.fixture(scope="session")
def tiny_data(snips):
    """40 training utterances per intent; a disjoint dev slice of 10 per intent; the bundle is
    scored on 15 test utterances per intent (its recorded origin names the whole test set)."""
    import dataclasses

    from voicenlu.data import stratified_slice
    from voicenlu.data.training import snips_split

    data = snips_split(snips, per_intent=TINY_PER_INTENT, seed=1, dev_per_intent=10)
    return dataclasses.replace(data, test=stratified_slice(snips.test, 15, seed=1))


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory, tiny_data) -> Path:
    """A bundle of the default backbone fine-tuned for a few epochs on ``tiny_data``."""
    from voicenlu.config import TrainConfig
    from voicenlu.pipeline import train_bundle

    # A few epochs, not the step budget: quick, and what the tests need of a model (fp32 only:
    # the int8 tests quantize a copy, and train's int8 step is tested on the assistant).
    config = TrainConfig(
        epochs=4, batch_size=16, seed=3, max_length=48, min_steps=0, quantize=False
    )
    return train_bundle(tiny_data, config, tmp_path_factory.mktemp("tiny_run"))


# --- A user's own assistant: the Rasa example, trained once per session through the CLI ---

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
ASSISTANT = EXAMPLES / "assistant.rasa.yml"


def run_cli(*args: str, env: dict | None = None, stdin: str | None = None):
    """``voicenlu ARGS`` in a new process, as a user runs it; never a traceback."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "voicenlu", *args],
        env={**os.environ, **(env or {})},
        input=stdin,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    return done


@pytest.fixture(scope="session")
def cli():
    """Run ``voicenlu ARGS`` in a new process (see ``run_cli``)."""
    return run_cli


@pytest.fixture(scope="session")
def assistant_run(tmp_path_factory):
    """``voicenlu train --data examples/assistant.rasa.yml``: 27 utterances, 3 intents, too
    few to hold out a dev set, so every one is trained on for a fixed schedule."""
    out = tmp_path_factory.mktemp("assistant")
    done = run_cli(
        "train",
        "--data",
        str(ASSISTANT),
        "--epochs",
        "12",
        "--batch-size",
        "8",
        "--head-lr",
        "3e-3",
        "--min-steps",
        "0",
        "--output-dir",
        str(out),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return out / "bundle", done.stdout, done.stderr


@pytest.fixture(scope="session")
def assistant_bundle(assistant_run) -> Path:
    return assistant_run[0]

"""Shared fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from voicenlu.data import SnipsData, download, load_snips

# --- SNIPS data: fetched the way a user does, from the mirror named by VOICENLU_SNIPS_MIRROR ---


@pytest.fixture(scope="session")
def snips_mirror() -> Path:
    """A local copy of snipsco/nlu-benchmark (the folder holding 2017-06-custom-intent-engines/)."""
    mirror = os.environ.get("VOICENLU_SNIPS_MIRROR")
    if not mirror:
        pytest.fail(
            "VOICENLU_SNIPS_MIRROR is not set: point it at a local copy of snipsco/nlu-benchmark "
            "(the folder holding 2017-06-custom-intent-engines/) to run the data tests"
        )
    return Path(mirror)


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
    """40 training utterances per intent; a disjoint dev slice of 10 per intent."""
    from voicenlu.data import stratified_slice
    from voicenlu.train import TrainData

    return TrainData(
        train=stratified_slice(snips.train, TINY_PER_INTENT, seed=1),
        dev=stratified_slice(snips.dev, 10, seed=1),
        test=stratified_slice(snips.test, 15, seed=1),
        source={"name": "snips-2017-06", "slice": TINY_PER_INTENT},
        slot_types=snips.slot_types,
    )


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory, tiny_data) -> Path:
    """A bundle of the default backbone fine-tuned for a few epochs on ``tiny_data``."""
    from voicenlu.train import TrainConfig, train

    config = TrainConfig(epochs=4, batch_size=16, seed=3, max_length=48)
    return train(tiny_data, config, tmp_path_factory.mktemp("tiny_run"))

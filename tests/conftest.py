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


@pytest.fixture(scope="session")
def snips_root(tmp_path_factory: pytest.TempPathFactory, snips_mirror: Path) -> Path:
    """A verified data root, copied from the mirror by ``download`` once per session."""
    return download(tmp_path_factory.mktemp("snips"), source=snips_mirror)


@pytest.fixture(scope="session")
def snips(snips_root: Path) -> SnipsData:
    """The standard SNIPS split (13,084 / 700 / 700)."""
    return load_snips(snips_root)

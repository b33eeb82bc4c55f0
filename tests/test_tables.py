"""The figure tables of the README and docs/ are what the benchmarks' JSON files give, and a
figure's training configuration is today's default or says why it is not."""

import dataclasses
import json
import shutil
import sys
from pathlib import Path

import pytest

from voicenlu.config import TrainConfig
from voicenlu.experiments.provenance import provenance, undeclared_differences

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import tables  # noqa: E402

RESULTS = sorted((ROOT / "benchmarks").rglob("*.json"))

# Committed figures made with a training setting that is no longer the default, which their
# benchmark did not declare: {path under benchmarks/: why the figure stands until rerun}.
STALE: dict[str, str] = {}


def test_every_table_is_what_its_json_gives():
    assert tables.differences() == [], "run `python benchmarks/tables.py` to regenerate"


def test_every_table_has_a_place_in_the_docs():
    text = "".join(page.read_text(encoding="utf-8") for page in tables.pages())
    assert [name for name in tables.TABLES if f"<!-- table: {name} -->" not in text] == []


def test_an_edited_figure_is_caught(tmp_path: Path):
    shutil.copy(ROOT / "README.md", tmp_path)
    shutil.copytree(ROOT / "docs", tmp_path / "docs")
    (tmp_path / "benchmarks").mkdir()
    for result in (ROOT / "benchmarks").glob("*.json"):
        shutil.copy(result, tmp_path / "benchmarks")
    snips = tmp_path / "benchmarks/snips.json"
    result = json.loads(snips.read_text())
    result["variants"]["finetuned"]["intent_accuracy"]["mean"] = 0.99
    snips.write_text(json.dumps(result))
    speech = tmp_path / "docs/speech.md"
    marker = "<!-- table: speech -->\n"
    before, table = speech.read_text().split(marker, 1)
    header, rule, first_row, rest = table.split("\n", 3)
    speech.write_text(before + marker + "\n".join([header, rule, first_row + " 1%", rest]))

    assert tables.differences(tmp_path) == [
        "README.md: table 'snips' differs from benchmarks/snips.json",
        "docs/speech.md: table 'speech' differs from benchmarks/speech.json",
    ]


@pytest.mark.parametrize("path", RESULTS, ids=lambda p: str(p.relative_to(ROOT / "benchmarks")))
def test_a_figures_training_configuration_is_todays_or_says_why(path: Path):
    name = str(path.relative_to(ROOT / "benchmarks"))
    undeclared = undeclared_differences(json.loads(path.read_text(encoding="utf-8")))
    if name in STALE:
        assert undeclared, f"{name} now matches today's defaults: take it out of STALE"
    else:
        assert undeclared == {}, (
            f"{name}: its bundle was trained with {undeclared} ((then, today's default)); "
            "rerun it, or have its script declare why with provenance(differs=...)"
        )


def test_an_undeclared_training_difference_is_caught():
    training = dataclasses.asdict(TrainConfig()) | {"seed": 14, "epochs_run": 4.0}
    result = {"bundle": {"training": training}}
    assert undeclared_differences(result) == {"seed": (14, 13)}
    declared = result | provenance(differs={"seed": "a second seed, on purpose"})
    assert declared["config_differs"] == {"seed": "a second seed, on purpose"}
    assert undeclared_differences(declared) == {}


def test_the_index_gives_every_figures_origin_or_says_it_has_none(tmp_path: Path):
    (tmp_path / "benchmarks" / "soak").mkdir(parents=True)
    made = {
        "commit": "0123456789abcdef",
        "uncommitted_changes": True,
        "created": "2026-01-02T03:04:05+00:00",
        "command": "python benchmarks/a.py --note '" + "a very long note " * 5 + "'",
    }
    (tmp_path / "benchmarks" / "a.json").write_text(json.dumps(made))
    (tmp_path / "benchmarks" / "a.md").write_text("# a\n")
    (tmp_path / "benchmarks" / "soak" / "b.json").write_text(json.dumps({"rows": []}))
    lines = tables.index(tmp_path).splitlines()
    assert lines[2].startswith("| [a.json](a.md) | `0123456` with uncommitted changes, 2026-01-02")
    assert "--note 'a very long note a very long note a ver…'" in lines[2]  # 40 characters
    assert lines[3] == f"| soak/b.json | none recorded | {tables.NO_PROVENANCE} |"
    assert len(lines) == 4

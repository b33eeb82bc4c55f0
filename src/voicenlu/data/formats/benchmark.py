"""The SNIPS benchmark layout: a ``2017-06-custom-intent-engines`` folder (its
``train_<Intent>_full.json`` files) or one file ``{"<Intent>": [{"data": [...]}]}``.

Its files carry no slot types; the reader attaches the mapping shipped for the benchmark's slots
(``snips_types.json``).
"""

from __future__ import annotations

import json
from pathlib import Path

from voicenlu.data.formats.common import Dataset, Format, chunks, fail, parse_json
from voicenlu.data.records import Utterance
from voicenlu.data.snips import engines_dir, read_benchmark_file
from voicenlu.data.types import snips_benchmark_types


def read(path: Path) -> Dataset:
    if path.is_dir():
        base = engines_dir(path)
        files = [
            (d / f"train_{d.name}_full.json", d.name)
            for d in sorted(base.iterdir())
            if (d / f"train_{d.name}_full.json").is_file()
        ]
        if not files:
            raise fail(base, "", "no <Intent>/train_<Intent>_full.json files", "check the folder")
        notes = [
            "read train_<Intent>_full.json of each intent; the validate_*.json files are not "
            "included (voicenlu uses load_snips for the standard split)"
        ]
    else:
        doc = parse_json(path)
        assert isinstance(doc, dict)  # the registry checked the layout
        files = [(path, intent) for intent in doc]
        notes = []
    utterances: list[Utterance] = []
    origins: list[tuple[str, str]] = []
    repairs = 0
    for file, intent in files:
        found = read_benchmark_file(file, intent)
        utterances.extend(found.utterances)
        origins.extend(
            (str(file), f"{intent!r} utterance {i}") for i in range(len(found.utterances))
        )
        repairs += found.repairs
    if repairs:
        notes.append(f"repaired {repairs} emoji written as CESU-8 surrogate pairs")
    return Dataset(
        utterances,
        "snips-benchmark",
        True,
        notes,
        str(path),
        origins,
        slot_types=snips_benchmark_types(),
    )


def write(dataset: Dataset, path: Path, notes: list[str]) -> str:
    if dataset.slot_types.entities or dataset.slot_types.types:
        notes.append("slot types and entity values are not written: the benchmark format has none")
    doc: dict[str, list[dict]] = {}
    for utt in dataset.utterances:
        pieces = [
            {"text": piece, "entity": slot} if slot else {"text": piece}
            for piece, slot in chunks(utt)
        ]
        doc.setdefault(utt.intent or "", []).append({"data": pieces})
    return json.dumps(doc, ensure_ascii=False, indent=2) + "\n"


FORMAT = Format("snips-benchmark", read, write)

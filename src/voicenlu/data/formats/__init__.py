"""Your own training data -> ``Dataset`` records, and back: one reader/writer per format.

Formats (``FORMATS``; one module each, registered in ``REGISTRY``), detected from the path and,
for ``.json``, from the content:

* ``snips-benchmark`` (``benchmark.py``): a ``2017-06-custom-intent-engines`` folder or one
  benchmark file ``{"<Intent>": [{"data": [...]}]}``.
* ``snips-nlu`` (``snips_nlu.py``): a Snips NLU dataset ``{"language", "intents", "entities"}``.
* ``rasa`` (``rasa.py``): Rasa NLU training data YAML.
* ``csv`` and ``jsonl`` (``csv_jsonl.py``): intent only.
* ``rhino`` (``rhino.py``): a Picovoice Rhino context YAML (``context:`` with ``expressions:`` and
  ``slots:``), its templates expanded into annotated utterances; read only.

Slots always keep the text as spoken; each slot's type and the custom entities' values and
synonyms are read into ``Dataset.slot_types`` and written back where the format can hold them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from voicenlu.data.formats import benchmark, csv_jsonl, rasa, rhino, snips_nlu
from voicenlu.data.formats.common import (
    Conversion,
    Dataset,
    Format,
    FormatError,
    Problem,
    fail,
    parse_json,
)
from voicenlu.data.records import Utterance
from voicenlu.data.snips import engines_dir
from voicenlu.errors import DataError

__all__ = [
    "FORMATS",
    "REGISTRY",
    "Conversion",
    "Dataset",
    "Format",
    "FormatError",
    "Problem",
    "convert",
    "detect_format",
    "format_for_path",
    "load_dataset",
    "write_dataset",
]

log = logging.getLogger(__name__)

REGISTRY: dict[str, Format] = {
    f.name: f
    for f in (
        benchmark.FORMAT,
        snips_nlu.FORMAT,
        rasa.FORMAT,
        csv_jsonl.CSV,
        csv_jsonl.JSONL,
        rhino.FORMAT,
    )
}
FORMATS: tuple[str, ...] = tuple(REGISTRY)
_BY_EXTENSION = {ext: f.name for f in REGISTRY.values() for ext in f.extensions}


def detect_format(path: str | Path) -> str:
    """The format of ``path``: a benchmark folder, or from the extension and (JSON) the content."""
    path = Path(path)
    if path.is_dir():
        try:
            engines_dir(path)
        except DataError:
            if rasa.is_rasa_folder(path):  # a Rasa project's data folder
                return "rasa"
            raise  # with a hint: neither a benchmark folder nor one of Rasa files
        return "snips-benchmark"
    if not path.exists():
        raise fail(path, "", "no such file or folder", "check the path")
    fmt = _BY_EXTENSION.get(path.suffix.lower())
    if fmt is None:
        raise _unknown_format(path)
    if fmt == "snips-nlu":
        return _json_layout(parse_json(path), path)
    if fmt == "rasa" and rhino.is_rhino(path):
        return "rhino"
    return fmt


def format_for_path(path: str | Path) -> str:
    """The format a file is written in, from its extension (``.json`` is Snips NLU)."""
    fmt = _BY_EXTENSION.get(Path(path).suffix.lower())
    if fmt is None:
        raise _unknown_format(path)
    return fmt


def _unknown_format(path: str | Path) -> FormatError:
    return fail(
        path,
        "",
        f"unknown format {Path(path).suffix or '(no extension)'!r}",
        "use .json (Snips NLU or SNIPS benchmark), .yml/.yaml (Rasa, or a Rhino context), "
        ".csv (text,intent), "
        '.jsonl ({"text", "intent"} per line) or a SNIPS benchmark folder',
    )


def _json_layout(doc: object, path: Path) -> str:
    if isinstance(doc, dict) and "intents" in doc:
        return "snips-nlu"
    if isinstance(doc, dict) and doc and all(isinstance(v, list) for v in doc.values()):
        return "snips-benchmark"
    raise fail(
        path,
        "",
        "unknown format: this JSON is neither a Snips NLU dataset nor a SNIPS benchmark file",
        'expected {"language": ..., "intents": {...}, "entities": {...}} or '
        '{"<Intent>": [{"data": [...]}]}',
    )


def load_dataset(path: str | Path) -> Dataset:
    """Read any supported format; raises ``DataError`` naming the file, line or utterance."""
    path = Path(path)
    dataset = REGISTRY[detect_format(path)].read(path)
    for note in dataset.notes:
        log.info("%s: %s", path, note)
    return dataset


def write_dataset(
    data: Dataset | Sequence[Utterance], path: str | Path, format: str | None = None
) -> list[str]:
    """Write utterances in ``format`` (default: from the extension); returns notes on losses.

    Writing slotted data to CSV/JSONL drops the slots (noted); anything a format cannot hold
    faithfully (no intent, a bracket in Rasa text, overlapping spans) raises ``DataError``.
    """
    path = Path(path)
    fmt = format or format_for_path(path)
    if fmt not in REGISTRY:
        raise fail(path, "", f"unknown format {fmt!r}", f"choose one of {', '.join(FORMATS)}")
    dataset = data if isinstance(data, Dataset) else Dataset(list(data), fmt, True)
    for i, utt in enumerate(dataset.utterances):
        _check_writable(utt, i, path)
    notes: list[str] = []
    text = REGISTRY[fmt].write(dataset, path, notes)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8", newline="\n")
    return notes


def convert(src: str | Path, dst: str | Path, format: str | None = None) -> Conversion:
    """Read ``src`` in whatever format it is and write it to ``dst`` (format from its extension)."""
    source = load_dataset(src)
    fmt = format or format_for_path(dst)
    notes = [*source.notes, *write_dataset(source, dst, fmt)]
    return Conversion(source, fmt, notes)


def _check_writable(utt: Utterance, index: int, path: Path) -> None:
    where = f"utterance {index}"
    if not utt.intent:
        raise fail(path, where, f"{utt.text!r} has no intent", "label it before writing")
    end = 0
    for s in sorted(utt.slots, key=lambda s: s.start):
        if s.start < end or not 0 <= s.start <= s.end <= len(utt.text):
            raise fail(
                path,
                where,
                f"slot {s.slot!r} [{s.start}:{s.end}] of {utt.text!r} overlaps another slot "
                "or lies outside the text",
                "fix the spans first (voicenlu data validate lists them)",
            )
        end = s.end

"""Your own training data -> ``Utterance`` records, and back: SNIPS, Snips NLU, Rasa, CSV, JSONL.

Formats (``FORMATS``), detected from the path and, for ``.json``, from the content:

* ``snips-benchmark``: a ``2017-06-custom-intent-engines`` folder (its ``train_<Intent>_full.json``
  files) or one benchmark file ``{"<Intent>": [{"data": [...]}]}``; read by ``snips.py``.
* ``snips-nlu``: a Snips NLU dataset ``{"language", "intents", "entities"}``. The slot is the
  chunk's ``slot_name`` (``origin``, ``destination``), not its ``entity`` (``city``).
* ``rasa``: Rasa NLU training data YAML (``nlu:`` items with ``intent:`` and ``examples:``).
  ``[value](entity)`` and ``[value]{"entity": "e"}`` give slot ``e``; a role gives slot
  ``e.role`` so that two roles of one entity stay two slots and writing back restores both.
  ``synonym``/``regex``/``lookup`` items and ``group`` labels are skipped with a note.
* ``csv`` (header ``text,intent``) and ``jsonl`` (``{"text", "intent"}`` per line): intent only.
* ``rhino``: a Picovoice Rhino context YAML (``context:`` with ``expressions:`` and ``slots:``),
  expanded by ``templates.py`` into annotated utterances; read only. Its slot value lists are
  kept as the dataset's ``entities``.

Slots always keep the text as spoken: a synonym value (``(city:Zürich)``, ``"value": ...``) or a
Snips entity's value list is not part of an ``Utterance`` and is dropped with a note.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from voicenlu.data.records import SlotSpan, Utterance
from voicenlu.data.snips import decode_json_bytes, engines_dir, read_benchmark_file
from voicenlu.data.templates import (
    MAX_PER_INTENT,
    SEED,
    TemplateError,
    expand,
    is_context,
    read_context,
)
from voicenlu.errors import DataError

log = logging.getLogger(__name__)

FORMATS: tuple[str, ...] = ("snips-benchmark", "snips-nlu", "rasa", "csv", "jsonl")
READ_ONLY_FORMATS: tuple[str, ...] = ("rhino",)
_BY_EXTENSION = {
    ".json": "snips-nlu",
    ".yml": "rasa",
    ".yaml": "rasa",
    ".csv": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
}
_SNIPS_ENTITY_DEFAULTS = {
    "data": [],
    "use_synonyms": True,
    "automatically_extensible": True,
    "matching_strictness": 1.0,
}


@dataclass(frozen=True)
class Problem:
    """One defect in a data file: where it is and what the user should do about it."""

    file: str
    where: str
    message: str
    fix: str = ""

    def __str__(self) -> str:
        place = ", ".join(part for part in (self.file, self.where) if part)
        text = f"{place}: {self.message}" if place else self.message
        return f"{text}; {self.fix}" if self.fix else text


class FormatError(DataError):
    """A file that cannot be read, with every defect found so ``validate`` can list them all."""

    def __init__(self, problems: Sequence[Problem]):
        self.problems = list(problems)
        lines = [str(p) for p in self.problems[:5]]
        if len(self.problems) > 5:
            lines.append(f"... and {len(self.problems) - 5} more (voicenlu data validate)")
        super().__init__("\n".join(lines))


def _fail(file: str | Path, where: str, message: str, fix: str = "") -> FormatError:
    return FormatError([Problem(str(file), where, message, fix)])


@dataclass(frozen=True)
class Dataset:
    """Utterances read from one path, with where each came from and what the reader noticed.

    ``has_slots`` says whether the format annotates slots at all: False for CSV and JSONL, whose
    utterances are unannotated rather than slot-free. ``origins[i]`` is ``(file, where)`` of
    ``utterances[i]`` ("line 12", "intent 'X', utterance 3") for error reports.
    """

    utterances: list[Utterance]
    format: str
    has_slots: bool
    notes: list[str] = field(default_factory=list)
    path: str = ""
    origins: list[tuple[str, str]] = field(default_factory=list)
    language: str | None = None
    # slot -> its value list, as ``{canonical value: [synonyms]}``, where the format has one
    entities: dict[str, dict[str, list[str]]] = field(default_factory=dict)


@dataclass(frozen=True)
class Conversion:
    """What ``convert`` read and wrote, and what it had to leave out."""

    source: Dataset
    format: str
    notes: list[str]


# --- detection and entry points ---


def detect_format(path: str | Path) -> str:
    """The format of ``path``: a benchmark folder, or from the extension and (JSON) the content."""
    path = Path(path)
    if path.is_dir():
        engines_dir(path)  # raises with a hint when this is not a benchmark folder
        return "snips-benchmark"
    if not path.exists():
        raise _fail(path, "", "no such file or folder", "check the path")
    fmt = _BY_EXTENSION.get(path.suffix.lower())
    if fmt is None:
        raise _unknown_format(path)
    if fmt == "snips-nlu":
        return _json_layout(_parse_json(path), path)
    if fmt == "rasa" and _is_rhino(path):
        return "rhino"
    return fmt


def format_for_path(path: str | Path) -> str:
    """The format a file is written in, from its extension (``.json`` is Snips NLU)."""
    fmt = _BY_EXTENSION.get(Path(path).suffix.lower())
    if fmt is None:
        raise _unknown_format(path)
    return fmt


def _unknown_format(path: str | Path) -> FormatError:
    return _fail(
        path,
        "",
        f"unknown format {Path(path).suffix or '(no extension)'!r}",
        "use .json (Snips NLU or SNIPS benchmark), .yml/.yaml (Rasa), .csv (text,intent), "
        '.jsonl ({"text", "intent"} per line) or a SNIPS benchmark folder',
    )


def load_dataset(path: str | Path) -> Dataset:
    """Read any supported format; raises ``DataError`` naming the file, line or utterance."""
    path = Path(path)
    fmt = detect_format(path)
    reader = {
        "snips-benchmark": _read_benchmark,
        "snips-nlu": _read_snips_nlu,
        "rasa": _read_rasa,
        "csv": _read_csv,
        "jsonl": _read_jsonl,
        "rhino": _read_rhino,
    }[fmt]
    dataset = reader(path)
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
    if fmt not in FORMATS:
        read_only = " (it is read only)" if fmt in READ_ONLY_FORMATS else ""
        raise _fail(
            path, "", f"cannot write format {fmt!r}{read_only}", f"choose one of {', '.join(FORMATS)}"
        )
    utterances = data.utterances if isinstance(data, Dataset) else list(data)
    language = data.language if isinstance(data, Dataset) else None
    for i, utt in enumerate(utterances):
        _check_writable(utt, i, path)
    notes: list[str] = []
    if fmt in ("csv", "jsonl"):
        slotted = sum(1 for u in utterances if u.slots)
        if slotted:
            notes.append(f"{fmt} holds intents only: the slots of {slotted} utterances are dropped")
    if fmt == "snips-nlu":
        text = _snips_nlu_text(utterances, language or "en")
    elif fmt == "snips-benchmark":
        text = _benchmark_text(utterances)
    elif fmt == "rasa":
        text = _rasa_text(utterances, path, notes)
    elif fmt == "csv":
        text = _csv_text(utterances)
    else:
        text = "".join(
            json.dumps({"text": u.text, "intent": u.intent}, ensure_ascii=False) + "\n"
            for u in utterances
        )
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
        raise _fail(path, where, f"{utt.text!r} has no intent", "label it before writing")
    end = 0
    for s in sorted(utt.slots, key=lambda s: s.start):
        if s.start < end or not 0 <= s.start <= s.end <= len(utt.text):
            raise _fail(
                path,
                where,
                f"slot {s.slot!r} [{s.start}:{s.end}] of {utt.text!r} overlaps another slot "
                "or lies outside the text",
                "fix the spans first (voicenlu data validate lists them)",
            )
        end = s.end


# --- shared reading helpers ---


def _read_text(path: Path, *, repair_cesu8: bool = False) -> str:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise _fail(path, "", f"cannot read: {exc.strerror}", "check the path") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        if not repair_cesu8:
            raise _fail(
                path, f"byte {exc.start}", "not valid UTF-8", "save the file as UTF-8"
            ) from None
        try:
            text = decode_json_bytes(raw, path)[0]
        except DataError:
            raise _fail(
                path, f"byte {exc.start}", "not valid UTF-8", "save the file as UTF-8"
            ) from None
    return text.removeprefix("\ufeff")


def _parse_json(path: Path) -> object:
    try:
        return json.loads(_read_text(path, repair_cesu8=True))
    except json.JSONDecodeError as exc:
        hint = "fix the JSON syntax there"
        if exc.msg == "Extra data":
            hint += "; for one JSON object per line, name the file .jsonl"
        raise _fail(
            path, f"line {exc.lineno}, column {exc.colno}", f"invalid JSON: {exc.msg}", hint
        ) from None


def _json_layout(doc: object, path: Path) -> str:
    if isinstance(doc, dict) and "intents" in doc:
        return "snips-nlu"
    if isinstance(doc, dict) and doc and all(isinstance(v, list) for v in doc.values()):
        return "snips-benchmark"
    raise _fail(
        path,
        "",
        "unknown format: this JSON is neither a Snips NLU dataset nor a SNIPS benchmark file",
        'expected {"language": ..., "intents": {...}, "entities": {...}} or '
        '{"<Intent>": [{"data": [...]}]}',
    )


# --- SNIPS benchmark (reuses snips.py) ---


def _read_benchmark(path: Path) -> Dataset:
    if path.is_dir():
        base = engines_dir(path)
        files = [
            (d / f"train_{d.name}_full.json", d.name)
            for d in sorted(base.iterdir())
            if (d / f"train_{d.name}_full.json").is_file()
        ]
        if not files:
            raise _fail(base, "", "no <Intent>/train_<Intent>_full.json files", "check the folder")
        notes = [
            "read train_<Intent>_full.json of each intent; the validate_*.json files are not "
            "included (voicenlu uses load_snips for the standard split)"
        ]
    else:
        doc = _parse_json(path)
        assert isinstance(doc, dict)  # detect_format checked the layout
        files = [(path, intent) for intent in doc]
        notes = []
    utterances: list[Utterance] = []
    origins: list[tuple[str, str]] = []
    repairs = 0
    for file, intent in files:
        read = read_benchmark_file(file, intent)
        utterances.extend(read.utterances)
        origins.extend(
            (str(file), f"{intent!r} utterance {i}") for i in range(len(read.utterances))
        )
        repairs += read.repairs
    if repairs:
        notes.append(f"repaired {repairs} emoji written as CESU-8 surrogate pairs")
    return Dataset(utterances, "snips-benchmark", True, notes, str(path), origins)


def _benchmark_text(utterances: Sequence[Utterance]) -> str:
    doc: dict[str, list[dict]] = {}
    for utt in utterances:
        chunks = [
            {"text": piece, "entity": slot} if slot else {"text": piece}
            for piece, slot in _chunks(utt)
        ]
        doc.setdefault(utt.intent or "", []).append({"data": chunks})
    return json.dumps(doc, ensure_ascii=False, indent=2) + "\n"


def _chunks(utt: Utterance) -> list[tuple[str, str | None]]:
    """The text cut at slot boundaries: ``(piece, slot or None)``, empty pieces left out."""
    out: list[tuple[str, str | None]] = []
    pos = 0
    for s in sorted(utt.slots, key=lambda s: s.start):
        if s.start > pos:
            out.append((utt.text[pos : s.start], None))
        out.append((utt.text[s.start : s.end], s.slot))
        pos = s.end
    if pos < len(utt.text):
        out.append((utt.text[pos:], None))
    return out


# --- Rhino context YAML (templates.py) ---


def _is_rhino(path: Path) -> bool:
    """A YAML file whose top level holds ``context:`` (Rasa data holds ``nlu:``)."""
    import yaml

    try:
        return is_context(yaml.safe_load(_read_text(path)))
    except yaml.YAMLError:
        return False  # the Rasa reader reports the syntax error with its line


def _read_rhino(path: Path) -> Dataset:
    try:
        context = read_context(path)
    except TemplateError as exc:
        raise _fail(
            path, "", str(exc), "see the Rhino context syntax in voicenlu.data.templates"
        ) from None
    utterances = expand(context)
    types = context.slot_types()
    entities = {slot: {v: [] for v in context.slots[t]} for slot, t in types.items()}
    notes = [
        f"expanded {len(context.templates)} expressions into {len(utterances)} utterances "
        f"(at most {MAX_PER_INTENT} per intent, sampled with seed {SEED} beyond that)"
    ]
    origins = [(str(path), f"expansion {i}") for i in range(len(utterances))]
    return Dataset(utterances, "rhino", True, notes, str(path), origins, entities=entities)


# --- Snips NLU dataset JSON ---


def _read_snips_nlu(path: Path) -> Dataset:
    doc = _parse_json(path)
    assert isinstance(doc, dict)  # detect_format checked the layout
    language = doc.get("language")
    if language is not None and not isinstance(language, str):
        raise _fail(path, "'language'", "must be a language code string", 'e.g. "en"')
    intents = doc["intents"]
    if not isinstance(intents, dict):
        raise _fail(path, "'intents'", "must be an object: intent name -> intent data", "")
    entities = doc.get("entities", {})
    if not isinstance(entities, dict):
        raise _fail(path, "'entities'", "must be an object: entity name -> entity data", "")
    utterances: list[Utterance] = []
    origins: list[tuple[str, str]] = []
    for name, intent in intents.items():
        items = intent.get("utterances") if isinstance(intent, dict) else None
        if not isinstance(items, list):
            raise _fail(
                path, f"intent {name!r}", "has no 'utterances' list", 'add "utterances": [...]'
            )
        for i, item in enumerate(items):
            where = f"intent {name!r}, utterance {i}"
            utterances.append(_snips_nlu_utterance(item, name, path, where))
            origins.append((str(path), where))
    notes = []
    if any(isinstance(e, dict) and e.get("data") for e in entities.values()):
        notes.append(
            "entity value lists and synonyms in 'entities' are not used: slots come from the "
            "annotated utterances"
        )
    return Dataset(utterances, "snips-nlu", True, notes, str(path), origins, language)


def _snips_nlu_utterance(item: object, intent: str, path: Path, where: str) -> Utterance:
    if not isinstance(item, dict) or not isinstance(item.get("data"), list):
        raise _fail(path, where, "expected an object with a 'data' list of chunks", "")
    parts: list[str] = []
    slots: list[SlotSpan] = []
    offset = 0
    for j, chunk in enumerate(item["data"]):
        at = f"{where}, chunk {j}"
        if not isinstance(chunk, dict) or not isinstance(chunk.get("text"), str):
            raise _fail(path, at, "expected an object with a string 'text'", "")
        text = chunk["text"]
        slot = chunk.get("slot_name")
        if "entity" in chunk and slot is None:
            raise _fail(
                path,
                at,
                f"chunk {text!r} has an 'entity' but no 'slot_name'",
                f'add "slot_name" (often the same as the entity, {chunk["entity"]!r})',
            )
        if slot is not None:
            if not isinstance(slot, str) or not slot.strip():
                raise _fail(path, at, "'slot_name' must be a non-empty string", "")
            stripped = text.strip()
            start = offset + (len(text) - len(text.lstrip()) if stripped else 0)
            slots.append(SlotSpan(slot.strip(), start, start + len(stripped)))
        parts.append(text)
        offset += len(text)
    return Utterance("".join(parts), intent, tuple(slots))


def _snips_nlu_text(utterances: Sequence[Utterance], language: str) -> str:
    intents: dict[str, dict] = {}
    slot_names: dict[str, None] = {}
    for utt in utterances:
        data = []
        for piece, slot in _chunks(utt):
            if slot:
                data.append({"text": piece, "entity": slot, "slot_name": slot})
                slot_names[slot] = None
            else:
                data.append({"text": piece})
        intents.setdefault(utt.intent or "", {"utterances": []})["utterances"].append(
            {"data": data}
        )
    doc = {
        "language": language,
        "intents": intents,
        "entities": {name: dict(_SNIPS_ENTITY_DEFAULTS) for name in slot_names},
    }
    return json.dumps(doc, ensure_ascii=False, indent=2) + "\n"


# --- Rasa NLU training data YAML ---


class _AnnotationError(Exception):
    def __init__(self, message: str, fix: str):
        super().__init__(message)
        self.message = message
        self.fix = fix


_ENTITY_KEYS = {"entity", "role", "group", "value"}
_CLOSERS = {"(": ")", "{": "}", "[": "]"}


def _parse_rasa_example(example: str) -> tuple[str, tuple[SlotSpan, ...], set[str]]:
    """One annotated Rasa example -> (plain text, slots, what it dropped).

    Offsets are into the plain text; a span drops the value's surrounding whitespace so that
    ``text[start:end]`` is the clean value. Raises ``_AnnotationError`` on a malformed annotation.
    """
    out: list[str] = []
    slots: list[SlotSpan] = []
    extras: set[str] = set()
    length = pos = 0
    while pos < len(example):
        char = example[pos]
        if char == "]":
            raise _AnnotationError(
                f"']' without a '[' before it in {example!r}",
                "write annotations as [value](slot), or remove the stray ']'",
            )
        if char != "[":
            out.append(char)
            length += 1
            pos += 1
            continue
        close = example.find("]", pos + 1)
        nested = example.find("[", pos + 1)
        if close == -1 or -1 < nested < close:
            raise _AnnotationError(
                f"annotation {_snippet(example, pos)} is not closed: '[' has no matching ']'",
                "close it, as in [Zürich](city)",
            )
        value = example[pos + 1 : close]
        opener = example[close + 1 : close + 2]
        if opener not in _CLOSERS:
            raise _AnnotationError(
                f"annotation {example[pos : close + 1]!r} names no slot",
                'follow it with (slot) or {"entity": "slot"}',
            )
        end = example.find(_CLOSERS[opener], close + 2)
        if end == -1:
            raise _AnnotationError(
                f"annotation {_snippet(example, pos)} is not closed: '{opener}' has no matching "
                f"'{_CLOSERS[opener]}'",
                f"close it, as in [Zürich]{opener}city{_CLOSERS[opener]}"
                if opener == "("
                else f'close it, as in [Zürich]{opener}"entity": "city"{_CLOSERS[opener]}',
            )
        slot, dropped = _rasa_label(opener, example[close + 2 : end], value)
        extras |= dropped
        stripped = value.strip()
        start = length + (len(value) - len(value.lstrip()) if stripped else 0)
        slots.append(SlotSpan(slot, start, start + len(stripped)))
        out.append(value)
        length += len(value)
        pos = end + 1
    return "".join(out), tuple(slots), extras


def _snippet(example: str, pos: int) -> str:
    piece = example[pos : pos + 40]
    return repr(piece + "…" if pos + 40 < len(example) else piece)


def _rasa_label(opener: str, label: str, value: str) -> tuple[str, set[str]]:
    """The slot name of ``(entity[:synonym])``, ``{json}`` or ``[{json}]``, and what it drops."""
    if opener == "(":
        entity, colon, synonym = label.partition(":")
        if re.search(r"[(\[{]", entity):
            raise _AnnotationError(
                f"annotation [{value}]({entity} is not closed: '(' has no matching ')'",
                "close it, as in [Zürich](city)",
            )
        if not entity.strip():
            raise _AnnotationError(f"annotation [{value}]({label}) has an empty slot name", "")
        return entity.strip(), {"synonym values"} if colon and synonym != value else set()
    try:
        attrs = json.loads(opener + label + _CLOSERS[opener])
    except json.JSONDecodeError as exc:
        raise _AnnotationError(
            f"annotation [{value}]{opener}{label}{_CLOSERS[opener]} is not valid JSON ({exc.msg})",
            'write it as {"entity": "city"}, with double quotes',
        ) from None
    if isinstance(attrs, list):
        if len(attrs) != 1:
            raise _AnnotationError(
                f"annotation [{value}] carries {len(attrs)} entities; slots cannot overlap",
                "keep one entity per span",
            )
        attrs = attrs[0]
    if not isinstance(attrs, dict) or not isinstance(attrs.get("entity"), str):
        raise _AnnotationError(
            f'annotation [{value}]{opener}{label}{_CLOSERS[opener]} has no "entity" name',
            'add "entity": "<slot>"',
        )
    unknown = sorted(set(attrs) - _ENTITY_KEYS)
    if unknown or not all(isinstance(v, str) for v in attrs.values()):
        raise _AnnotationError(
            f"annotation [{value}] has unknown keys {unknown} or non-string values",
            "use only string values for entity, role, group and value",
        )
    entity = attrs["entity"].strip()
    if not entity:
        raise _AnnotationError(f"annotation [{value}] has an empty entity name", "")
    dropped = {"entity groups"} if "group" in attrs else set()
    if "value" in attrs and attrs["value"] != value:
        dropped.add("synonym values")
    role = attrs.get("role", "").strip()
    return (f"{entity}.{role}" if role else entity), dropped


def _read_rasa(path: Path) -> Dataset:
    try:
        import yaml
    except ImportError:  # pragma: no cover - pyyaml is a declared dependency
        raise DataError("reading Rasa YAML needs PyYAML: pip install pyyaml") from None
    text = _read_text(path)
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise _fail(
            path, where, f"invalid YAML: {problem}", "fix the indentation or quoting there"
        ) from None
    top = _mapping(root)
    if top is None:
        raise _fail(
            path, "", "expected a YAML mapping with an 'nlu' key", "see examples/*.rasa.yml"
        )
    if "nlu" not in top:
        hint = "see examples/assistant.rasa.yml"
        if "type" in top:
            hint = "Snips NLU YAML is not read: convert it with `snips-nlu generate-dataset`"
        raise _fail(path, "", "no 'nlu' key: this is not Rasa NLU training data", hint)
    notes = [
        f"top-level key {k!r} skipped: only nlu data is read"
        for k in top
        if k not in ("version", "nlu")
    ]
    items = top["nlu"]
    if not isinstance(items, yaml.SequenceNode):
        raise _fail(
            path, _line(items), "'nlu' must be a list of items", "start each with '- intent:'"
        )
    utterances: list[Utterance] = []
    origins: list[tuple[str, str]] = []
    problems: list[Problem] = []
    dropped: dict[str, list[int]] = {"synonym values": [], "entity groups": []}
    for n, item_node in enumerate(items.value):
        item = _mapping(item_node)
        if item is None:
            raise _fail(
                path,
                _line(item_node),
                f"nlu item {n} is not a mapping",
                "start it with '- intent: <name>'",
            )
        kind = next((k for k in ("intent", "synonym", "regex", "lookup") if k in item), None)
        if kind is None:
            raise _fail(
                path,
                _line(item_node),
                f"nlu item {n} has none of intent/synonym/regex/lookup (keys: {sorted(item)})",
                "start it with '- intent: <name>'",
            )
        if kind != "intent":
            notes.append(f"{_line(item_node)}: {kind} item skipped: it does not label utterances")
            continue
        intent_node = item["intent"]
        if not isinstance(intent_node, yaml.ScalarNode) or not intent_node.value.strip():
            raise _fail(path, _line(intent_node), "'intent' must be a name", "")
        if "examples" not in item:
            raise _fail(
                path,
                _line(item_node),
                f"intent {intent_node.value!r} has no 'examples'",
                "add 'examples: |' and '- ' lines",
            )
        for line, example in _rasa_examples(item["examples"], path):
            try:
                plain, slots, extras = _parse_rasa_example(example)
            except _AnnotationError as exc:
                problems.append(Problem(str(path), f"line {line}", exc.message, exc.fix))
                continue
            for kind in extras:
                dropped[kind].append(line)
            utterances.append(Utterance(plain, intent_node.value.strip(), slots))
            origins.append((str(path), f"line {line}"))
    if problems:
        raise FormatError(problems)
    for kind, lines in dropped.items():
        if lines:
            notes.append(
                f"{kind} ignored: {len(lines)} (first at line {lines[0]}); "
                "slots keep the text as spoken"
            )
    return Dataset(utterances, "rasa", True, notes, str(path), origins)


def _mapping(node: object) -> dict[str, object] | None:
    import yaml

    if not isinstance(node, yaml.MappingNode):
        return None
    return {k.value: v for k, v in node.value if isinstance(k, yaml.ScalarNode)}


def _line(node: object) -> str:
    mark = getattr(node, "start_mark", None)
    return f"line {mark.line + 1}" if mark else ""


def _rasa_examples(node: object, path: Path) -> list[tuple[int, str]]:
    """(1-based line, example text) for ``examples: |`` blocks and ``- text:`` lists."""
    import yaml

    if isinstance(node, yaml.SequenceNode):
        out = []
        for entry in node.value:
            text = _mapping(entry) or {}
            text_node = text.get("text")
            if not isinstance(text_node, yaml.ScalarNode):
                raise _fail(path, _line(entry), "an example in a list must have 'text'", "")
            first = text_node.start_mark.line + (2 if text_node.style in ("|", ">") else 1)
            out.append((first, text_node.value.strip()))
        return out
    if not isinstance(node, yaml.ScalarNode):
        raise _fail(path, _line(node), "'examples' must be a '|' block of '- ' lines", "")
    if node.style == ">":
        raise _fail(
            path,
            _line(node),
            "'examples: >' folds all examples into one line",
            "use 'examples: |'",
        )
    first = node.start_mark.line + (2 if node.style == "|" else 1)
    out = []
    for i, raw in enumerate(node.value.split("\n")):
        line = raw.strip()
        if not line:
            continue
        if line != "-" and not line.startswith(("- ", "-\t")):
            raise _fail(
                path,
                f"line {first + i}",
                f"example {line[:40]!r} does not start with '- '",
                "begin every example with '- '",
            )
        out.append((first + i, line[1:].strip()))
    return out


_PLAIN_SLOT = re.compile(r"[\w\-/]+")
# Characters YAML cannot hold even in a block scalar, plus line breaks, which end an example.
_NOT_IN_EXAMPLE = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x84\x86-\x9f\ud800-\udfff\ufffe\uffff\n\r\u2028\u2029]"
)
_PLAIN_INTENT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_\-/]*")


def _rasa_text(utterances: Sequence[Utterance], path: Path, notes: list[str]) -> str:
    by_intent: dict[str, list[str]] = {}
    trimmed = 0
    for i, utt in enumerate(utterances):
        bad = re.search(r"[\[\]]", utt.text) or _NOT_IN_EXAMPLE.search(utt.text)
        if bad:
            raise _fail(
                path,
                f"utterance {i}",
                f"{utt.text!r} contains {bad.group()!r} (U+{ord(bad.group()):04X}), which a Rasa "
                "example cannot hold",
                "remove it from the text or write another format",
            )
        if utt.text != utt.text.strip():
            trimmed += 1
        pieces = [
            _rasa_annotation(piece, slot, path, i) if slot else piece
            for piece, slot in _chunks(utt)
        ]
        by_intent.setdefault(utt.intent or "", []).append("".join(pieces).strip())
    if trimmed:
        notes.append(f"{trimmed} texts had leading/trailing spaces, which Rasa examples drop")
    lines = ['version: "3.1"', "nlu:"]
    for intent, examples in by_intent.items():
        name = intent if _PLAIN_INTENT.fullmatch(intent) else json.dumps(intent, ensure_ascii=False)
        lines += [f"- intent: {name}", "  examples: |"]
        lines += [f"    - {example}".rstrip() for example in examples]
    return "\n".join(lines) + "\n"


def _rasa_annotation(value: str, slot: str, path: Path, index: int) -> str:
    if _PLAIN_SLOT.fullmatch(slot):
        return f"[{value}]({slot})"
    if re.search(r"[\]}\n]", slot):
        raise _fail(
            path, f"utterance {index}", f"slot name {slot!r} cannot be written in Rasa", "rename it"
        )
    entity, dot, role = slot.partition(".")
    attrs = {"entity": entity, "role": role} if dot and entity and role else {"entity": slot}
    return f"[{value}]{json.dumps(attrs, ensure_ascii=False)}"


# --- CSV and JSONL: intent only ---


def _read_csv(path: Path) -> Dataset:
    text = _read_text(path)
    header_line = text.split("\n", 1)[0]
    delimiter = next((d for d in (",", ";", "\t") if d in header_line), ",")
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        header = [h.strip().lower() for h in next(reader)]
    except StopIteration:
        raise _fail(
            path, "line 1", "the file is empty", "start it with a 'text,intent' header"
        ) from None
    if "text" not in header or "intent" not in header:
        raise _fail(
            path,
            "line 1",
            f"the header {header} lacks 'text' or 'intent'",
            "make the first line 'text,intent'",
        )
    col_text, col_intent = header.index("text"), header.index("intent")
    notes = []
    extra = [h for h in header if h not in ("text", "intent")]
    if extra:
        notes.append(f"columns {extra} ignored")
    utterances: list[Utterance] = []
    origins: list[tuple[str, str]] = []
    start = reader.line_num + 1
    try:
        for row in reader:
            where = f"line {start}"
            start = reader.line_num + 1
            if not any(cell.strip() for cell in row):
                continue
            if len(row) != len(header):
                raise _fail(
                    path,
                    where,
                    f"{len(row)} fields where the header has {len(header)}",
                    'put text containing the delimiter in double quotes: "a, b",intent',
                )
            intent = row[col_intent].strip()
            if not intent:
                raise _fail(path, where, "the intent is empty", "fill it in or delete the row")
            utterances.append(Utterance(row[col_text].strip(), intent))
            origins.append((str(path), where))
    except csv.Error as exc:
        raise _fail(
            path, f"line {reader.line_num}", f"invalid CSV: {exc}", "check the quotes"
        ) from None
    return Dataset(utterances, "csv", False, notes, str(path), origins)


def _csv_text(utterances: Sequence[Utterance]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["text", "intent"])
    writer.writerows([u.text, u.intent] for u in utterances)
    return buffer.getvalue()


def _read_jsonl(path: Path) -> Dataset:
    utterances: list[Utterance] = []
    origins: list[tuple[str, str]] = []
    ignored: set[str] = set()
    for number, line in enumerate(_read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        where = f"line {number}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise _fail(
                path,
                where,
                f"invalid JSON at column {exc.colno}: {exc.msg}",
                "one JSON object per line",
            ) from None
        if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
            raise _fail(
                path,
                where,
                'expected an object with a string "text"',
                '{"text": "...", "intent": "..."}',
            )
        intent = obj.get("intent")
        if not isinstance(intent, str) or not intent.strip():
            raise _fail(path, where, '"intent" is missing or empty', "give every line an intent")
        ignored |= set(obj) - {"text", "intent"}
        utterances.append(Utterance(obj["text"].strip(), intent.strip()))
        origins.append((str(path), where))
    notes = [f"keys {sorted(ignored)} ignored: JSONL is read as intent-only"] if ignored else []
    return Dataset(utterances, "jsonl", False, notes, str(path), origins)

"""Rasa NLU training data YAML (``nlu:`` items with ``intent:`` and ``examples:``).

``[value](entity)`` and ``[value]{"entity": "e"}`` give slot ``e``; a role gives slot ``e.role``
so that two roles of one entity stay two slots and writing back restores both. ``group`` labels
and ``regex`` items are skipped with a note.

Types: an entity named after a Duckling dimension, as Rasa's Duckling extractor names its
entities (``time``, ``number``, ``duration``, ``amount-of-money``...; ``_`` for ``-`` works too),
has that type, roles included (``[8 pm]{"entity": "time", "role": "departure"}`` is slot
``time.departure`` of type time). Every other entity is a custom entity, extensible (Rasa has no
closed entities), whose values are its ``lookup:`` table and whose synonyms are the annotated
synonym values (``[NYC](city:New York)``, ``"value": "New York"``) and the ``synonym:`` items.
Rasa applies a ``synonym:`` item to every entity; here it goes to the entities whose annotated
values or lookup table contain one of its spellings, or to all custom entities when none does.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from voicenlu.data.formats.common import (
    Dataset,
    Format,
    FormatError,
    Problem,
    chunks,
    fail,
    read_text,
)
from voicenlu.data.records import SlotSpan, Utterance
from voicenlu.data.types import DIMENSIONS, CustomEntity, SlotTypes, dimension, normalize
from voicenlu.errors import DataError


class _AnnotationError(Exception):
    def __init__(self, message: str, fix: str):
        super().__init__(message)
        self.message = message
        self.fix = fix


_ENTITY_KEYS = {"entity", "role", "group", "value"}
_CLOSERS = {"(": ")", "{": "}", "[": "]"}


@dataclass(frozen=True)
class _Label:
    """What one annotation says: its slot, its entity, the canonical value it gives its text
    (``[NYC](city:New York)``; None when there is none) and what it drops."""

    slot: str
    entity: str
    canonical: str | None
    dropped: frozenset[str] = frozenset()


def _parse_rasa_example(example: str) -> tuple[str, tuple[SlotSpan, ...], list[_Label]]:
    """One annotated Rasa example -> (plain text, slots, their labels), in order.

    Offsets are into the plain text; a span drops the value's surrounding whitespace so that
    ``text[start:end]`` is the clean value. Raises ``_AnnotationError`` on a malformed annotation.
    """
    out: list[str] = []
    slots: list[SlotSpan] = []
    labels: list[_Label] = []
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
        label = _rasa_label(opener, example[close + 2 : end], value)
        labels.append(label)
        stripped = value.strip()
        start = length + (len(value) - len(value.lstrip()) if stripped else 0)
        slots.append(SlotSpan(label.slot, start, start + len(stripped)))
        out.append(value)
        length += len(value)
        pos = end + 1
    return "".join(out), tuple(slots), labels


def _snippet(example: str, pos: int) -> str:
    piece = example[pos : pos + 40]
    return repr(piece + "…" if pos + 40 < len(example) else piece)


def _rasa_label(opener: str, label: str, value: str) -> _Label:
    """What ``(entity[:synonym])``, ``{json}`` or ``[{json}]`` after ``[value]`` says."""
    if opener == "(":
        entity, colon, synonym = label.partition(":")
        if re.search(r"[(\[{]", entity):
            raise _AnnotationError(
                f"annotation [{value}]({entity} is not closed: '(' has no matching ')'",
                "close it, as in [Zürich](city)",
            )
        if not entity.strip():
            raise _AnnotationError(f"annotation [{value}]({label}) has an empty slot name", "")
        canonical = synonym.strip() if colon and synonym.strip() != value.strip() else None
        return _Label(entity.strip(), entity.strip(), canonical or None)
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
    dropped = frozenset({"entity groups"} if "group" in attrs else ())
    canonical = attrs.get("value", "").strip()
    canonical = canonical if canonical and canonical != value.strip() else None
    role = attrs.get("role", "").strip()
    return _Label(f"{entity}.{role}" if role else entity, entity, canonical, dropped)


def read(path: Path) -> Dataset:
    """One Rasa NLU file, or a folder of them (a Rasa project's ``data/``): every YAML file
    with an ``nlu`` key is read, together, as one training set; other YAML files (stories,
    rules, domain) are skipped with a note."""
    try:
        import yaml
    except ImportError:  # pragma: no cover - pyyaml is a declared dependency
        raise DataError("reading Rasa YAML needs PyYAML: pip install pyyaml") from None
    source = Path(path)
    notes: list[str] = []
    if source.is_dir():
        documents = _folder_documents(source, yaml, notes)
    else:
        documents = [(source, _items(source, yaml, notes))]
    utterances: list[Utterance] = []
    origins: list[tuple[str, str]] = []
    problems: list[Problem] = []
    groups_dropped: list[int] = []
    labels: dict[str, tuple[str, int, str]] = {}  # slot -> (entity, line, file), first seen
    spellings: dict[str, set[str]] = {}  # entity -> annotated texts
    synonyms: dict[str, dict[str, list[str]]] = {}  # entity -> canonical -> synonyms
    lookups: dict[str, list[str]] = {}
    global_synonyms: list[tuple[str, list[str]]] = []
    for path, items in documents:
        for n, item_node in enumerate(items.value):
            item = _mapping(item_node)
            if item is None:
                raise fail(
                    path,
                    _line(item_node),
                    f"nlu item {n} is not a mapping",
                    "start it with '- intent: <name>'",
                )
            kind = next((k for k in ("intent", "synonym", "regex", "lookup") if k in item), None)
            if kind is None:
                raise fail(
                    path,
                    _line(item_node),
                    f"nlu item {n} has none of intent/synonym/regex/lookup (keys: {sorted(item)})",
                    "start it with '- intent: <name>'",
                )
            if kind == "regex":
                notes.append(
                    f"{_line(item_node)}: regex item skipped: it does not label utterances"
                )
                continue
            if kind != "intent":
                name_node = item[kind]
                if not isinstance(name_node, yaml.ScalarNode) or not name_node.value.strip():
                    raise fail(path, _line(name_node), f"'{kind}' must be a name", "")
                if "examples" not in item:
                    raise fail(
                        path,
                        _line(item_node),
                        f"{kind} {name_node.value!r} has no 'examples'",
                        "add 'examples: |' and '- ' lines",
                    )
                forms = [text for _, text in _rasa_examples(item["examples"], path) if text]
                if kind == "lookup":
                    lookups.setdefault(name_node.value.strip(), []).extend(forms)
                else:
                    global_synonyms.append((name_node.value.strip(), forms))
                continue
            intent_node = item["intent"]
            if not isinstance(intent_node, yaml.ScalarNode) or not intent_node.value.strip():
                raise fail(path, _line(intent_node), "'intent' must be a name", "")
            if "examples" not in item:
                raise fail(
                    path,
                    _line(item_node),
                    f"intent {intent_node.value!r} has no 'examples'",
                    "add 'examples: |' and '- ' lines",
                )
            for line, example in _rasa_examples(item["examples"], path):
                try:
                    plain, slots, found = _parse_rasa_example(example)
                except _AnnotationError as exc:
                    problems.append(Problem(str(path), f"line {line}", exc.message, exc.fix))
                    continue
                for span, label in zip(slots, found, strict=True):
                    labels.setdefault(label.slot, (label.entity, line, str(path)))
                    spellings.setdefault(label.entity, set()).add(plain[span.start : span.end])
                    if label.canonical is not None:
                        forms = synonyms.setdefault(label.entity, {}).setdefault(
                            label.canonical, []
                        )
                        forms.append(plain[span.start : span.end])
                    if label.dropped:
                        groups_dropped.append(line)
                utterances.append(Utterance(plain, intent_node.value.strip(), slots))
                origins.append((str(path), f"line {line}"))
    if problems:
        raise FormatError(problems)
    if groups_dropped:
        first = groups_dropped[0]
        notes.append(f"entity groups ignored: {len(groups_dropped)} (first at line {first})")
    slot_types = _slot_types(labels, spellings, synonyms, lookups, global_synonyms, notes)
    return Dataset(utterances, "rasa", True, notes, str(source), origins, slot_types=slot_types)


def _items(path: Path, yaml, notes: list[str]):
    """The ``nlu`` list of one Rasa file (a YAML node), or a ``FormatError`` saying why not."""
    text = read_text(path)
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise fail(
            path, where, f"invalid YAML: {problem}", "fix the indentation or quoting there"
        ) from None
    top = _mapping(root)
    if top is None:
        raise fail(path, "", "expected a YAML mapping with an 'nlu' key", "see examples/*.rasa.yml")
    if "nlu" not in top:
        hint = "see examples/assistant.rasa.yml"
        if "type" in top:
            hint = "Snips NLU YAML is not read: convert it with `snips-nlu generate-dataset`"
        raise fail(path, "", "no 'nlu' key: this is not Rasa NLU training data", hint)
    notes += [
        f"{path.name}: top-level key {k!r} skipped: only nlu data is read"
        for k in top
        if k not in ("version", "nlu")
    ]
    items = top["nlu"]
    if not isinstance(items, yaml.SequenceNode):
        raise fail(
            path, _line(items), "'nlu' must be a list of items", "start each with '- intent:'"
        )
    return items


def is_rasa_folder(folder: Path) -> bool:
    """Whether ``folder`` holds YAML files (a Rasa project's data folder, read as one)."""
    return any(p.suffix.lower() in (".yml", ".yaml") for p in folder.rglob("*") if p.is_file())


def _folder_documents(folder: Path, yaml, notes: list[str]) -> list[tuple[Path, object]]:
    """(file, nlu list) of every YAML file under ``folder`` that holds NLU data."""
    documents = []
    for file in sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".yml", ".yaml")):
        try:
            top = _mapping(yaml.compose(read_text(file), Loader=yaml.SafeLoader))
        except yaml.YAMLError:
            top = {"nlu": None}  # reported by _items with its line
        if top is None or "nlu" not in top:
            notes.append(f"{file.relative_to(folder)} skipped: no nlu data (stories, domain...)")
            continue
        documents.append((file, _items(file, yaml, notes)))
    if not documents:
        raise fail(
            folder,
            "",
            "no Rasa NLU training data here: none of its YAML files has an 'nlu' key",
            "point at the folder or file that holds your nlu: examples",
        )
    return documents


def _slot_types(
    labels: dict[str, tuple[str, int, str]],
    spellings: dict[str, set[str]],
    synonyms: dict[str, dict[str, list[str]]],
    lookups: dict[str, list[str]],
    global_synonyms: list[tuple[str, list[str]]],
    notes: list[str],
) -> SlotTypes:
    """Types from entity names; custom entities from lookups and synonyms (module docstring)."""
    types = {slot: dimension(entity) or entity for slot, (entity, _, _) in labels.items()}
    origins = {slot: (file, f"line {line}") for slot, (_, line, file) in labels.items()}
    custom = {name for name in (*spellings, *lookups) if dimension(name) is None}
    for name in sorted(set(lookups) - custom):
        notes.append(f"lookup {name!r} skipped: {name!r} is resolved by Duckling as a dimension")
    values: dict[str, dict[str, list[str]]] = {name: {} for name in custom}
    for name in custom:
        for form in lookups.get(name, ()):
            values[name].setdefault(form, [])
        for canonical, forms in synonyms.get(name, {}).items():
            values[name].setdefault(canonical, []).extend(forms)
    for canonical, forms in global_synonyms:
        keys = {normalize(f) for f in (canonical, *forms)}
        targets = [
            name
            for name in sorted(custom)
            if keys & {normalize(f) for f in (*spellings.get(name, ()), *lookups.get(name, ()))}
        ]
        for name in targets or sorted(custom):
            values[name].setdefault(canonical, []).extend(forms)
    entities = {
        name: CustomEntity(name, {c: tuple(dict.fromkeys(f)) for c, f in v.items()}, True)
        for name, v in values.items()
    }
    return SlotTypes(types, entities, origins)


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
                raise fail(path, _line(entry), "an example in a list must have 'text'", "")
            first = text_node.start_mark.line + (2 if text_node.style in ("|", ">") else 1)
            out.append((first, text_node.value.strip()))
        return out
    if not isinstance(node, yaml.ScalarNode):
        raise fail(path, _line(node), "'examples' must be a '|' block of '- ' lines", "")
    if node.style == ">":
        raise fail(
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
            raise fail(
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


def write(dataset: Dataset, path: Path, notes: list[str]) -> str:
    lines = _example_lines(dataset.utterances, path, notes)
    lines += _entity_lines(dataset.utterances, dataset.slot_types, notes)
    return "\n".join(lines) + "\n"


def _example_lines(utterances: Sequence[Utterance], path: Path, notes: list[str]) -> list[str]:
    by_intent: dict[str, list[str]] = {}
    trimmed = 0
    for i, utt in enumerate(utterances):
        bad = re.search(r"[\[\]]", utt.text) or _NOT_IN_EXAMPLE.search(utt.text)
        if bad:
            raise fail(
                path,
                f"utterance {i}",
                f"{utt.text!r} contains {bad.group()!r} (U+{ord(bad.group()):04X}), which a Rasa "
                "example cannot hold",
                "remove it from the text or write another format",
            )
        if utt.text != utt.text.strip():
            trimmed += 1
        pieces = [
            _rasa_annotation(piece, slot, path, i) if slot else piece for piece, slot in chunks(utt)
        ]
        by_intent.setdefault(utt.intent or "", []).append("".join(pieces).strip())
    if trimmed:
        notes.append(f"{trimmed} texts had leading/trailing spaces, which Rasa examples drop")
    lines = ['version: "3.1"', "nlu:"]
    for intent, examples in by_intent.items():
        lines += [f"- intent: {_scalar(intent)}", "  examples: |"]
        lines += [f"    - {example}".rstrip() for example in examples]
    return lines


def _entity_lines(utterances: Sequence[Utterance], types: SlotTypes, notes: list[str]) -> list[str]:
    """``lookup:`` and ``synonym:`` items for the custom entities the slots use; notes on the
    types Rasa cannot hold (module docstring: Rasa types by entity name)."""
    names: dict[str, set[str]] = {}  # custom entity -> the Rasa entity names of its slots
    untyped: list[str] = []
    for slot in dict.fromkeys(s.slot for u in utterances for s in u.slots):
        kind, entity = types.types.get(slot), slot.partition(".")[0]
        if kind in DIMENSIONS:
            if dimension(entity) != kind:
                untyped.append(f"{slot} ({kind})")
        elif kind in types.entities:
            names.setdefault(kind, set()).add(entity)
    if untyped:
        notes.append(
            f"types of slots {', '.join(untyped)} are not written: Rasa marks a Duckling "
            "dimension by naming the entity after it"
        )
    closed = sorted(k for k in names if not types.entities[k].extensible)
    if closed:
        notes.append(f"entities {closed} will read back as extensible: Rasa has no closed entities")
    lines: list[str] = []
    written: set[tuple[str, tuple[str, ...]]] = set()
    for kind in sorted(names):
        entity = types.entities[kind]
        values = [v for v in entity.values if _writable(v)]
        for name in sorted(names[kind]):
            if values:
                lines += [f"- lookup: {_scalar(name)}", "  examples: |"]
                lines += [f"    - {v}" for v in values]
        for canonical, forms in entity.values.items():
            forms = tuple(f for f in forms if _writable(f))
            if forms and _writable(canonical) and (canonical, forms) not in written:
                written.add((canonical, forms))
                lines += [f"- synonym: {_scalar(canonical)}", "  examples: |"]
                lines += [f"    - {f}" for f in forms]
    return lines


def _writable(form: str) -> bool:
    return bool(form.strip()) and form == form.strip() and not _NOT_IN_EXAMPLE.search(form)


def _scalar(name: str) -> str:
    return name if _PLAIN_INTENT.fullmatch(name) else json.dumps(name, ensure_ascii=False)


def _rasa_annotation(value: str, slot: str, path: Path, index: int) -> str:
    if _PLAIN_SLOT.fullmatch(slot):
        return f"[{value}]({slot})"
    if re.search(r"[\]}\n]", slot):
        raise fail(
            path, f"utterance {index}", f"slot name {slot!r} cannot be written in Rasa", "rename it"
        )
    entity, dot, role = slot.partition(".")
    attrs = {"entity": entity, "role": role} if dot and entity and role else {"entity": slot}
    return f"[{value}]{json.dumps(attrs, ensure_ascii=False)}"


FORMAT = Format("rasa", read, write, (".yml", ".yaml"))

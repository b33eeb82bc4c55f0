"""Snips NLU dataset JSON: ``{"language", "intents", "entities"}``.

The slot is the chunk's ``slot_name`` (``origin``, ``destination``); its ``entity`` (``city``,
``snips/datetime``) is the slot's type. Built-in entities that Duckling resolves map to its
dimensions (``SNIPS_BUILTINS``); the gazetteer built-ins (``snips/musicArtist``, ``snips/city``
...) name things, not values, and leave the slot untyped. A custom entity takes its values and
synonyms from the ``entities`` section, and ``automatically_extensible`` (default true) marks it
extensible; with ``use_synonyms: false`` each synonym is a value of its own.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from voicenlu.data.formats.common import Dataset, Format, chunks, fail, parse_json, read_text
from voicenlu.data.records import SlotSpan, Utterance
from voicenlu.data.types import DIMENSIONS, CustomEntity, SlotTypes

SNIPS_BUILTINS: dict[str, str] = {
    "snips/datetime": "time",
    "snips/date": "time",
    "snips/time": "time",
    "snips/datePeriod": "time",
    "snips/timePeriod": "time",
    "snips/number": "number",
    "snips/ordinal": "ordinal",
    "snips/duration": "duration",
    "snips/temperature": "temperature",
    "snips/amountOfMoney": "amount-of-money",
    "snips/percentage": "percentage",
    "snips/musicAlbum": "",
    "snips/musicArtist": "",
    "snips/musicTrack": "",
    "snips/city": "",
    "snips/country": "",
    "snips/region": "",
}
"""Snips built-in entity -> dimension; "" for the gazetteer entities, which stay untyped."""

# The built-in each dimension is written as (the first entry of SNIPS_BUILTINS for it).
_WRITTEN_AS = {dim: name for name, dim in reversed(SNIPS_BUILTINS.items()) if dim}
_ENTITY_DEFAULTS = {
    "data": [],
    "use_synonyms": True,
    "automatically_extensible": True,
    "matching_strictness": 1.0,
}


def read(path: Path) -> Dataset:
    doc = parse_json(path)
    assert isinstance(doc, dict)  # the registry checked the layout
    language = doc.get("language")
    if language is not None and not isinstance(language, str):
        raise fail(path, "'language'", "must be a language code string", 'e.g. "en"')
    intents = doc["intents"]
    if not isinstance(intents, dict):
        raise fail(path, "'intents'", "must be an object: intent name -> intent data", "")
    entities = doc.get("entities", {})
    if not isinstance(entities, dict):
        raise fail(path, "'entities'", "must be an object: entity name -> entity data", "")
    utterances: list[Utterance] = []
    origins: list[tuple[str, str]] = []
    declared: dict[str, str] = {}  # slot -> entity, as first annotated
    notes: list[str] = []
    for name, intent in intents.items():
        items = intent.get("utterances") if isinstance(intent, dict) else None
        if not isinstance(items, list):
            raise fail(
                path, f"intent {name!r}", "has no 'utterances' list", 'add "utterances": [...]'
            )
        for i, item in enumerate(items):
            where = f"intent {name!r}, utterance {i}"
            utterances.append(_utterance(item, name, path, where, declared, notes))
            origins.append((str(path), where))
    slot_types = _slot_types(declared, entities, path, notes)
    return Dataset(utterances, "snips-nlu", True, notes, str(path), origins, language, slot_types)


def _utterance(
    item: object, intent: str, path: Path, where: str, declared: dict[str, str], notes: list[str]
) -> Utterance:
    if not isinstance(item, dict) or not isinstance(item.get("data"), list):
        raise fail(path, where, "expected an object with a 'data' list of chunks", "")
    parts: list[str] = []
    slots: list[SlotSpan] = []
    offset = 0
    for j, chunk in enumerate(item["data"]):
        at = f"{where}, chunk {j}"
        if not isinstance(chunk, dict) or not isinstance(chunk.get("text"), str):
            raise fail(path, at, "expected an object with a string 'text'", "")
        text = chunk["text"]
        slot = chunk.get("slot_name")
        if "entity" in chunk and slot is None:
            raise fail(
                path,
                at,
                f"chunk {text!r} has an 'entity' but no 'slot_name'",
                f'add "slot_name" (often the same as the entity, {chunk["entity"]!r})',
            )
        if slot is not None:
            if not isinstance(slot, str) or not slot.strip():
                raise fail(path, at, "'slot_name' must be a non-empty string", "")
            slot = slot.strip()
            entity = chunk.get("entity", slot)
            if not isinstance(entity, str) or not entity.strip():
                raise fail(path, at, "'entity' must be a non-empty string", "")
            entity = entity.strip()
            first = declared.setdefault(slot, entity)
            if first != entity:
                notes.append(
                    f"{at}: slot {slot!r} has entity {entity!r} here but {first!r} before; "
                    f"its type is {first!r}"
                )
            stripped = text.strip()
            start = offset + (len(text) - len(text.lstrip()) if stripped else 0)
            slots.append(SlotSpan(slot, start, start + len(stripped)))
        parts.append(text)
        offset += len(text)
    return Utterance("".join(parts), intent, tuple(slots))


def _slot_types(declared: dict[str, str], entities: dict, path: Path, notes: list[str]):
    text = read_text(path, repair_cesu8=True)
    types: dict[str, str] = {}
    custom: dict[str, CustomEntity] = {}
    origins: dict[str, tuple[str, str]] = {}
    gazetteer: set[str] = set()
    for slot, entity in declared.items():
        origins[slot] = (str(path), _line_of(text, entity))
        if entity in SNIPS_BUILTINS:
            if SNIPS_BUILTINS[entity]:
                types[slot] = SNIPS_BUILTINS[entity]
            else:
                gazetteer.add(entity)
            continue
        types[slot] = entity  # a custom entity, or an unknown snips/ name validate reports
        if not entity.startswith("snips/") and entity not in custom:
            custom[entity] = _custom_entity(entity, entities.get(entity, {}), path)
    if gazetteer:
        notes.append(
            f"gazetteer entities {sorted(gazetteer)} name things rather than values: their "
            "slots keep their text and resolve to nothing"
        )
    return SlotTypes(types, custom, origins)


def _custom_entity(name: str, spec: object, path: Path) -> CustomEntity:
    where = f"entity {name!r}"
    if not isinstance(spec, dict) or not isinstance(spec.get("data", []), list):
        raise fail(path, where, "must be an object with a 'data' list", '{"data": [...]}')
    use_synonyms = spec.get("use_synonyms", True) is not False
    values: dict[str, tuple[str, ...]] = {}
    for i, item in enumerate(spec.get("data", [])):
        if isinstance(item, str):
            item = {"value": item}
        value = item.get("value") if isinstance(item, dict) else None
        synonyms = item.get("synonyms", []) if isinstance(item, dict) else None
        if not isinstance(value, str) or not isinstance(synonyms, list):
            raise fail(
                path,
                f"{where}, value {i}",
                "expected a string or an object with a string 'value' and a 'synonyms' list",
                '{"value": "New York", "synonyms": ["NYC"]}',
            )
        synonyms = [s for s in synonyms if isinstance(s, str) and s.strip()]
        if use_synonyms:
            values[value] = (*values.get(value, ()), *synonyms)
        else:
            for form in (value, *synonyms):
                values.setdefault(form, ())
    extensible = spec.get("automatically_extensible", True) is not False
    return CustomEntity(name, values, extensible)


def _line_of(text: str, entity: str) -> str:
    """``line N`` of the first chunk naming ``entity``, for error reports."""
    found = re.search(r'"entity"\s*:\s*' + re.escape(json.dumps(entity, ensure_ascii=False)), text)
    return f"line {text.count(chr(10), 0, found.start()) + 1}" if found else ""


def write(dataset: Dataset, path: Path, notes: list[str]) -> str:
    types = dataset.slot_types
    entity_of: dict[str, str] = {}
    section: dict[str, dict] = {}
    intents: dict[str, dict] = {}
    for utt in dataset.utterances:
        data = []
        for piece, slot in chunks(utt):
            if not slot:
                data.append({"text": piece})
                continue
            if slot not in entity_of:
                entity_of[slot] = _entity(slot, types, section, notes)
            data.append({"text": piece, "entity": entity_of[slot], "slot_name": slot})
        intents.setdefault(utt.intent or "", {"utterances": []})["utterances"].append(
            {"data": data}
        )
    doc = {"language": dataset.language or "en", "intents": intents, "entities": section}
    return json.dumps(doc, ensure_ascii=False, indent=2) + "\n"


def _entity(slot: str, types: SlotTypes, section: dict[str, dict], notes: list[str]) -> str:
    """The entity ``slot`` is written with; its ``entities`` entry goes into ``section``."""
    kind = types.types.get(slot)
    if kind in types.entities and kind not in DIMENSIONS:
        entity = types.entities[kind]
        section[kind] = {
            **_ENTITY_DEFAULTS,
            "data": [{"value": v, "synonyms": list(s)} for v, s in entity.values.items()],
            "automatically_extensible": entity.extensible,
        }
        return kind
    if kind in _WRITTEN_AS:
        section[_WRITTEN_AS[kind]] = {}
        return _WRITTEN_AS[kind]
    if kind is not None and kind.startswith("snips/"):  # unknown: kept for validate to report
        return kind
    if kind is not None:
        notes.append(f"slot {slot!r}: Snips NLU has no built-in for {kind!r}; written untyped")
    section.setdefault(slot, dict(_ENTITY_DEFAULTS))
    return slot


FORMAT = Format("snips-nlu", read, write, (".json",))

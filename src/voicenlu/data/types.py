"""What each slot's value is: a Duckling dimension or a custom entity with canonical values.

Readers fill a ``SlotTypes`` from what the data says (Snips NLU ``entity`` names and its
``entities`` section, Rasa entity names, ``synonym:`` and ``lookup:`` items; the mapping shipped
for the SNIPS benchmark); training stores it in the bundle manifest with ``manifest_section``;
``voicenlu.values`` resolves slot texts with it. A type is a name from ``DIMENSIONS``, or the
name of an entry of ``entities``; anything else is unknown and ``data validate`` reports it.
"""

from __future__ import annotations

import json
import unicodedata
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib import resources

from voicenlu.data.records import Utterance

# Duckling's dimensions, by Duckling's names (the names Rasa's Duckling extractor gives its
# entities), plus ``percentage``, which Duckling reads as a number.
DIMENSIONS: tuple[str, ...] = (
    "time",
    "number",
    "ordinal",
    "duration",
    "temperature",
    "amount-of-money",
    "distance",
    "volume",
    "quantity",
    "percentage",
    "email",
    "url",
    "phone-number",
    "credit-card-number",
)


def normalize(text: str) -> str:
    """The form two spellings of one value share: NFKC, case folded, white space collapsed."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def edit_distance(a: str, b: str, limit: int | None = None, *, transpositions: bool = True) -> int:
    """Damerau-Levenshtein distance (optimal string alignment), or Levenshtein distance without
    ``transpositions`` (a swap of adjacent letters then costs two edits); ``limit + 1`` once it
    exceeds ``limit``, so comparing against a long list stays cheap."""
    if limit is not None and abs(len(a) - len(b)) > limit:
        return limit + 1
    previous2: list[int] = []
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, start=1):
        current = [i] + [0] * len(b)
        for j, cb in enumerate(b, start=1):
            cost = 0 if ca == cb else 1
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + cost)
            if transpositions and i > 1 and j > 1 and ca == b[j - 2] and a[i - 2] == cb:
                current[j] = min(current[j], previous2[j - 2] + 1)
        # Once two rows in a row exceed the limit, no later cell can come back under it.
        if limit is not None and min(current) > limit and min(previous) > limit:
            return limit + 1
        previous2, previous = previous, current
    return previous[-1]


def dimension(name: str) -> str | None:
    """The dimension ``name`` stands for (``amount_of_money`` -> ``amount-of-money``), or None."""
    key = name.strip().lower().replace("_", "-")
    return key if key in DIMENSIONS else None


@dataclass(frozen=True)
class CustomEntity:
    """One entity's canonical values, each with its synonyms, and whether it is open-ended
    (it may take values beyond its list: Snips NLU's ``automatically_extensible``)."""

    name: str
    values: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    extensible: bool = False

    def to_dict(self) -> dict:
        """The JSON form stored in a bundle manifest (read back with ``from_dict``)."""
        return {
            "extensible": self.extensible,
            "values": {canonical: list(syn) for canonical, syn in self.values.items()},
        }

    @classmethod
    def from_dict(cls, name: str, data: Mapping) -> CustomEntity:
        values = data.get("values", {})
        return cls(
            name,
            {str(k): tuple(str(s) for s in v) for k, v in values.items()},
            bool(data.get("extensible", False)),
        )

    def with_values(self, spellings: Iterable[str]) -> CustomEntity:
        """This entity plus the annotated ``spellings`` that none of its forms covers yet, each
        its own canonical value in its most frequent spelling (case and spacing ignored)."""
        known = {normalize(f) for c, syn in self.values.items() for f in (c, *syn)}
        counts = Counter(s.strip() for s in spellings if s.strip())
        new: dict[str, str] = {}
        for spelling, _ in counts.most_common():  # most frequent first; ties keep first seen
            new.setdefault(normalize(spelling), spelling)
        values = dict(self.values)
        for key, spelling in new.items():
            if key not in known:
                values[spelling] = ()
        return CustomEntity(self.name, values, self.extensible)


@dataclass(frozen=True)
class SlotTypes:
    """Slot -> type, the custom entities those types name, and where each type was declared.

    ``origins[slot]`` is ``(file, where)`` of the declaration ("line 12"), for error reports.
    """

    types: dict[str, str] = field(default_factory=dict)
    entities: dict[str, CustomEntity] = field(default_factory=dict)
    origins: dict[str, tuple[str, str]] = field(default_factory=dict)

    def unknown(self) -> dict[str, str]:
        """Slot -> type for the types that are neither a dimension nor a custom entity."""
        return {
            slot: kind
            for slot, kind in self.types.items()
            if kind not in DIMENSIONS and kind not in self.entities
        }

    def entity_values(self) -> dict[str, list[str]]:
        """Slot -> every spelling (canonical values and synonyms) of its custom entity."""
        return {
            slot: [
                f
                for canonical, syn in self.entities[kind].values.items()
                for f in (canonical, *syn)
            ]
            for slot, kind in self.types.items()
            if kind in self.entities
        }

    def manifest_section(self, annotated: Iterable[Utterance], slots: Iterable[str]) -> dict:
        """The bundle manifest's ``values`` entry for a model with ``slots``: their known types,
        and the custom entities they use with the values annotated in ``annotated`` added."""
        slots, unknown = set(slots), self.unknown()
        types = {s: t for s, t in sorted(self.types.items()) if s in slots and s not in unknown}
        spellings: dict[str, list[str]] = {}
        for utt in annotated:
            for slot, value in utt.slot_values():
                if types.get(slot) in self.entities:
                    spellings.setdefault(types[slot], []).append(value)
        entities = {
            name: self.entities[name].with_values(spellings.get(name, ())).to_dict()
            for name in sorted(set(types.values()) & set(self.entities))
        }
        return {"slot_types": types, "entities": entities}


def snips_benchmark_types() -> SlotTypes:
    """The shipped types of the SNIPS benchmark's slots (``snips_types.json``): its time and
    number slots, and synonyms for the slots whose values form a small closed set."""
    doc = json.loads(resources.files("voicenlu.data").joinpath("snips_types.json").read_text())
    entities = {
        name: CustomEntity(
            name,
            {canonical: tuple(syn) for canonical, syn in spec["values"].items()},
            spec["extensible"],
        )
        for name, spec in doc["entities"].items()
    }
    return SlotTypes(dict(doc["slot_types"]), entities)

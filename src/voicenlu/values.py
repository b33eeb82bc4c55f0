"""Slot values a program can use: custom entities mapped to their canonical value.

A custom entity is a list of canonical values, each with its synonyms (Snips NLU ``entities``,
Rasa ``synonym:`` and ``lookup:`` items, and the values annotated in the training data). A slot
text resolves to the canonical value whose value or synonym it equals, compared after
normalisation (Unicode NFKC, case folded, runs of white space made one space, ends trimmed).

For an entity marked extensible (it may take values beyond its list, Snips NLU's
``automatically_extensible``) a text with no exact match also resolves to the nearest value or
synonym within ``max_edit_distance(len(text))`` edits (Damerau-Levenshtein, adjacent swaps count
one): none for texts under 4 characters, 1 up to 8 characters, 2 beyond. When two canonical
values are equally near, the text is ambiguous and resolves to nothing. A closed entity (not
extensible) only resolves exact and synonym matches, so a near miss is never forced onto it.

Only the standard library is used: resolving custom entities needs no optional extra.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

__all__ = [
    "CustomEntity",
    "EntityResolver",
    "edit_distance",
    "max_edit_distance",
    "normalize",
]


def normalize(text: str) -> str:
    """The form two spellings of one value share: NFKC, case folded, white space collapsed."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def max_edit_distance(length: int) -> int:
    """Edits a fuzzy match may need for a normalised text of ``length`` characters."""
    if length < 4:
        return 0
    return 1 if length <= 8 else 2


def edit_distance(a: str, b: str, limit: int | None = None) -> int:
    """Damerau-Levenshtein distance (optimal string alignment); ``limit + 1`` once it exceeds
    ``limit``, so comparing against a long list stays cheap."""
    if limit is not None and abs(len(a) - len(b)) > limit:
        return limit + 1
    previous2: list[int] = []
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, start=1):
        current = [i] + [0] * len(b)
        for j, cb in enumerate(b, start=1):
            cost = 0 if ca == cb else 1
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + cost)
            if i > 1 and j > 1 and ca == b[j - 2] and a[i - 2] == cb:
                current[j] = min(current[j], previous2[j - 2] + 1)
        # Once two rows in a row exceed the limit, no later cell can come back under it.
        if limit is not None and min(current) > limit and min(previous) > limit:
            return limit + 1
        previous2, previous = previous, current
    return previous[-1]


@dataclass(frozen=True)
class CustomEntity:
    """One entity's canonical values, each with its synonyms, and whether it is open-ended."""

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


class _Table:
    """Lookup structures of one entity: normalised surface form -> canonical value."""

    def __init__(self, entity: CustomEntity):
        self.extensible = entity.extensible
        self.exact: dict[str, str] = {}
        self.kind: dict[str, str] = {}
        for canonical, synonyms in entity.values.items():
            for form, kind in ((canonical, "exact"), *((s, "synonym") for s in synonyms)):
                key = normalize(form)
                # The first listing wins: a canonical value is never remapped by a later synonym.
                if key and key not in self.exact:
                    self.exact[key] = canonical
                    self.kind[key] = kind

    def resolve(self, text: str) -> tuple[str, str] | None:
        key = normalize(text)
        if not key:
            return None
        if key in self.exact:
            return self.exact[key], self.kind[key]
        if not self.extensible:
            return None
        limit = max_edit_distance(len(key))
        if limit == 0:
            return None
        best, found = limit + 1, set()
        for form, canonical in self.exact.items():
            distance = edit_distance(key, form, limit)
            if distance < best:
                best, found = distance, {canonical}
            elif distance == best:
                found.add(canonical)
        if best > limit or len(found) != 1:
            return None
        return found.pop(), "fuzzy"


class EntityResolver:
    """Maps slot texts of custom entities to canonical values.

    >>> resolver = EntityResolver({"city": {"Zürich": ["Zurich", "Zuerich"]}}, extensible={"city"})
    >>> resolver.resolve("city", " ZURICH ")
    {'kind': 'custom', 'entity': 'city', 'value': 'Zürich', 'match': 'synonym'}
    >>> resolver.resolve("city", "Zuerihc")["match"]
    'fuzzy'
    """

    def __init__(
        self,
        entities: Mapping[str, Mapping[str, Iterable[str]] | CustomEntity],
        extensible: Iterable[str] = (),
    ):
        """``entities``: entity name -> ``{canonical: [synonyms]}`` or a ``CustomEntity``;
        ``extensible`` names the plain-dict entities that allow fuzzy matches."""
        open_ended = set(extensible)
        self.entities: dict[str, CustomEntity] = {}
        for name, spec in entities.items():
            if not isinstance(spec, CustomEntity):
                values = {str(k): tuple(str(s) for s in v) for k, v in spec.items()}
                spec = CustomEntity(name, values, name in open_ended)
            self.entities[name] = spec
        self._tables = {name: _Table(e) for name, e in self.entities.items()}

    def __contains__(self, entity: str) -> bool:
        return entity in self._tables

    def resolve(self, entity: str, text: str) -> dict | None:
        """``{"kind": "custom", "entity", "value", "match"}`` for ``text`` as a value of
        ``entity``, ``match`` being ``exact``, ``synonym`` or ``fuzzy``; None when nothing
        matches or the entity is unknown."""
        table = self._tables.get(entity)
        found = table.resolve(text) if table is not None else None
        if found is None:
            return None
        value, match = found
        return {"kind": "custom", "entity": entity, "value": value, "match": match}

    def to_dict(self) -> dict:
        """Entity name -> JSON form, as stored in a bundle manifest."""
        return {name: e.to_dict() for name, e in self.entities.items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Mapping]) -> EntityResolver:
        return cls({name: CustomEntity.from_dict(name, spec) for name, spec in data.items()})

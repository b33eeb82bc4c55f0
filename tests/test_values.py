"""Slot value resolution: custom entities (synonyms, fuzzy matching)."""

from __future__ import annotations

import pytest

from voicenlu.values import (
    CustomEntity,
    EntityResolver,
    edit_distance,
    max_edit_distance,
    normalize,
)

CITIES = {"Zürich": ["Zurich", "Zuerich"], "New York": ["NYC", "the big apple"], "Bern": []}


@pytest.fixture
def resolver() -> EntityResolver:
    return EntityResolver(
        {"city": CITIES, "state": {"on": ["switched on"], "off": []}}, extensible={"city"}
    )


def test_normalize_folds_case_width_and_spacing():
    assert normalize("  New\tYORK ") == "new york"
    assert normalize("ＮＹＣ") == "nyc"  # full-width letters (NFKC)
    assert normalize("STRASSE") == normalize("straße")  # casefold, not lower


@pytest.mark.parametrize(
    "a, b, distance",
    [
        ("zurich", "zurich", 0),
        ("zurich", "zurch", 1),  # deletion
        ("zurich", "zuerich", 1),  # insertion
        ("zurich", "zurick", 1),  # substitution
        ("zurich", "zuirch", 1),  # adjacent swap counts one
        ("kitten", "sitting", 3),
        ("", "abc", 3),
    ],
)
def test_edit_distance(a, b, distance):
    assert edit_distance(a, b) == distance
    assert edit_distance(b, a) == distance


def test_edit_distance_stops_at_the_limit():
    assert edit_distance("a" * 30, "b" * 30, limit=2) == 3
    assert edit_distance("abcdefgh", "abcdefgh", limit=0) == 0
    assert edit_distance("abcd", "abcdefgh", limit=2) == 3  # lengths alone rule it out


def test_max_edit_distance_grows_with_length():
    assert [max_edit_distance(n) for n in (1, 3, 4, 8, 9, 20)] == [0, 0, 1, 1, 2, 2]


@pytest.mark.parametrize(
    "text, value, match",
    [
        ("Zürich", "Zürich", "exact"),
        ("zürich", "Zürich", "exact"),
        ("  ZURICH ", "Zürich", "synonym"),
        ("nyc", "New York", "synonym"),
        ("The  Big\nApple", "New York", "synonym"),
        ("new york", "New York", "exact"),
        ("Zuirch", "Zürich", "fuzzy"),  # one swap from the synonym Zurich
        ("New Yrok", "New York", "fuzzy"),
        ("the big appel", "New York", "fuzzy"),  # 2 edits allowed past 8 characters
    ],
)
def test_resolves_canonical_values(resolver, text, value, match):
    assert resolver.resolve("city", text) == {
        "kind": "custom",
        "entity": "city",
        "value": value,
        "match": match,
    }


@pytest.mark.parametrize(
    "entity, text",
    [
        ("city", "Paris"),  # not listed, too far from every value
        ("city", "Brn"),  # short texts get no fuzzy match
        ("city", "New Yorkers!!"),  # 3 edits past the limit
        ("city", "   "),
        ("state", "of"),  # a closed entity: no fuzzy match at all
        ("state", "switched onn"),
        ("planet", "Mars"),  # unknown entity
    ],
)
def test_unresolved(resolver, entity, text):
    assert resolver.resolve(entity, text) is None


def test_closed_entity_still_takes_exact_and_synonym_matches(resolver):
    assert resolver.resolve("state", "Switched On")["value"] == "on"
    assert resolver.resolve("state", "OFF")["value"] == "off"


def test_equally_near_values_are_ambiguous():
    resolver = EntityResolver({"room": {"hall": [], "ball": [], "kitchen": []}}, ["room"])
    assert resolver.resolve("room", "tall") is None  # one edit from hall and from ball
    assert resolver.resolve("room", "kitchn")["value"] == "kitchen"


def test_a_synonym_never_remaps_a_canonical_value():
    resolver = EntityResolver({"drink": {"cola": [], "soda": ["cola", "pop"]}})
    assert resolver.resolve("drink", "cola")["value"] == "cola"
    assert resolver.resolve("drink", "pop")["value"] == "soda"


def test_round_trips_through_its_manifest_form(resolver):
    again = EntityResolver.from_dict(resolver.to_dict())
    assert again.to_dict() == resolver.to_dict()
    assert again.resolve("city", "Zuirch")["value"] == "Zürich"
    assert again.resolve("state", "of") is None
    assert "city" in again and "planet" not in again


def test_accepts_custom_entity_objects():
    entity = CustomEntity("size", {"large": ("big", "huge")}, extensible=True)
    resolver = EntityResolver({"size": entity})
    assert resolver.resolve("size", "HUGE")["value"] == "large"
    assert resolver.resolve("size", "larg")["match"] == "fuzzy"

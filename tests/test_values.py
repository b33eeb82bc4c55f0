"""Slot value resolution: custom entities (synonyms, fuzzy matching) and Duckling dimensions."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from voicenlu.data import load_dataset
from voicenlu.data.records import SlotSpan
from voicenlu.errors import InputError
from voicenlu.experiments.values import checked_values, value_coverage
from voicenlu.values import (
    CustomEntity,
    EntityResolver,
    ValueResolver,
    edit_distance,
    load_duckling,
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


@pytest.mark.parametrize(
    "values",
    [{"cola": [], "soda": ["cola", "pop"]}, {"soda": ["cola", "pop"], "cola": []}],
)
def test_a_synonym_never_remaps_a_canonical_value(values):
    resolver = EntityResolver({"drink": values})
    assert resolver.resolve("drink", "cola") == {
        "kind": "custom",
        "entity": "drink",
        "value": "cola",
        "match": "exact",
    }
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


# --- Duckling dimensions, in-process (the voicenlu[values] extra) ---

REF = "2026-11-28T12:00:00+01:00"  # a Saturday, noon
ZONE = "Europe/Zurich"
TYPES = {
    "when": "time",
    "n": "number",
    "nth": "ordinal",
    "length": "duration",
    "share": "percentage",
    "price": "amount-of-money",
    "heat": "temperature",
    "mail": "email",
    "link": "url",
    "city": "city",
}


@pytest.fixture(scope="module")
def values() -> ValueResolver:
    resolver = ValueResolver(TYPES, EntityResolver({"city": CITIES}), timezone=ZONE)
    resolver.warm()
    return resolver


def resolve(values: ValueResolver, text: str, slot: str, piece: str | None = None, **kw):
    """The value of the slot ``piece`` (default: the whole text) of ``text``."""
    piece = text if piece is None else piece
    start = text.index(piece)
    found = values.resolve(text, [{"slot": slot, "start": start, "end": start + len(piece)}], **kw)
    return found[0]


def instant(value: str, grain: str) -> dict:
    return {"kind": "time", "type": "value", "value": value, "grain": grain}


def interval(start: str, end: str | None, grain: str) -> dict:
    return {
        "kind": "time",
        "type": "interval",
        "from": {"value": start, "grain": grain},
        "to": None if end is None else {"value": end, "grain": grain},
    }


@pytest.mark.parametrize(
    "text, piece, value",
    [
        ("a table for four people", "four", 4),
        ("twenty one", None, 21),
        ("rate it zero", "zero", 0),
        ("a couple", None, 2),
        ("6 out of 6", "6", 6),
        ("1,250", None, 1250),
    ],
)
def test_numbers_in_digits_and_words(values, text, piece, value):
    assert resolve(values, text, "n", piece, reference_time=REF) == {
        "kind": "number",
        "value": value,
    }


@pytest.mark.parametrize(
    "text, piece, expected",
    [
        ("tomorrow at 8 pm", None, instant("2026-11-29T20:00:00.000+01:00", "hour")),
        ("next week", None, instant("2026-11-30T00:00:00.000+01:00", "week")),
        ("in one minute", None, instant("2026-11-28T12:01:00.000+01:00", "second")),
        (
            "this weekend",
            None,
            interval("2026-11-27T18:00:00.000+01:00", "2026-11-30T00:00:00.000+01:00", "hour"),
        ),
        (
            "from 3 to 5 pm",
            None,
            interval("2026-11-28T15:00:00.000+01:00", "2026-11-28T18:00:00.000+01:00", "hour"),
        ),
        ("after 5 pm", None, interval("2026-11-28T17:00:00.000+01:00", None, "hour")),
        # Context: the slot "8" means nothing alone; "at 8" in the utterance is 8 pm today.
        ("book it at 8", "8", instant("2026-11-28T20:00:00.000+01:00", "hour")),
        # Latent: a bare year, read as one because the slot is a time.
        ("2030", None, instant("2030-01-01T00:00:00.000+01:00", "year")),
        # A meal Duckling does not know, read as its usual hours.
        (
            "breakfast tomorrow",
            None,
            interval("2026-11-29T07:00:00.000+01:00", "2026-11-29T11:00:00.000+01:00", "hour"),
        ),
        ("elevenses", None, instant("2026-11-29T11:00:00.000+01:00", "hour")),
        # "Meal time" is the next main meal: at noon, lunch.
        (
            "at meal time",
            "meal",
            interval("2026-11-28T12:00:00.000+01:00", "2026-11-28T15:00:00.000+01:00", "hour"),
        ),
        # The sun's times, as the part of the day they fall in.
        (
            "weather at sunset",
            "sunset",
            interval("2026-11-28T18:00:00.000+01:00", "2026-11-29T00:00:00.000+01:00", "hour"),
        ),
        # A leading zero is the 24-hour clock: 6 in the morning, not the next 6 o'clock.
        ("06:05", None, instant("2026-11-29T06:05:00.000+01:00", "minute")),
        ("07:52 pm", None, instant("2026-11-28T19:52:00.000+01:00", "minute")),
        # A year, not an open range from it: "from" is outside the slot.
        ("an album from 1987", "1987", instant("1987-01-01T00:00:00.000+01:00", "year")),
        # Decades: ten years from their first, of the 1900s when no century is said.
        (
            "play music from the seventies",
            "seventies",
            interval("1970-01-01T00:00:00.000+01:00", "1980-01-01T00:00:00.000+01:00", "year"),
        ),
        (
            "hits of the '80s",
            "'80s",
            interval("1980-01-01T00:00:00.000+01:00", "1990-01-01T00:00:00.000+01:00", "year"),
        ),
        (
            "the 2000s",
            None,
            interval("2000-01-01T00:00:00.000+01:00", "2010-01-01T00:00:00.000+01:00", "year"),
        ),
        (
            "the nineteen fifties",
            None,
            interval("1950-01-01T00:00:00.000+01:00", "1960-01-01T00:00:00.000+01:00", "year"),
        ),
    ],
)
def test_times_relative_to_the_reference(values, text, piece, expected):
    assert resolve(values, text, "when", piece, reference_time=REF) == expected


def test_time_zone_and_reference_time(values):
    noon = instant("2026-11-28T12:00:00.000-05:00", "hour")
    # A reference without offset is read in the request's zone; one with an offset is an instant.
    assert (
        resolve(
            values,
            "at noon",
            "when",
            reference_time="2026-11-28T09:00:00",
            timezone="America/New_York",
        )
        == noon
    )
    assert (
        resolve(values, "at noon", "when", reference_time=REF, timezone="America/New_York") == noon
    )
    moment = datetime(2026, 11, 28, 11, 0, tzinfo=UTC)
    assert resolve(values, "today", "when", reference_time=moment) == instant(
        "2026-11-28T00:00:00.000+01:00", "day"
    )
    assert resolve(values, "today", "when", reference_time=moment.timestamp()) == instant(
        "2026-11-28T00:00:00.000+01:00", "day"
    )


@pytest.mark.parametrize(
    "slot, text, expected",
    [
        ("nth", "the third one", {"kind": "ordinal", "value": 3}),
        ("nth", "21st", {"kind": "ordinal", "value": 21}),
        (
            "length",
            "1 h 30 min",
            {"kind": "duration", "value": 90, "unit": "minute", "seconds": 5400},
        ),
        (
            "length",
            "two weeks",
            {"kind": "duration", "value": 2, "unit": "week", "seconds": 1209600},
        ),
        ("share", "25 percent", {"kind": "percentage", "value": 25}),
        (
            "price",
            "between 10 and 20 dollars",
            {
                "kind": "amount-of-money",
                "type": "interval",
                "from": {"value": 10, "unit": "$"},
                "to": {"value": 20, "unit": "$"},
            },
        ),
        ("price", "€42", {"kind": "amount-of-money", "type": "value", "value": 42, "unit": "EUR"}),
        (
            "heat",
            "80F",
            {"kind": "temperature", "type": "value", "value": 80, "unit": "fahrenheit"},
        ),
        ("mail", "ops@example.org", {"kind": "email", "value": "ops@example.org"}),
        (
            "link",
            "https://example.org/a",
            {"kind": "url", "value": "https://example.org/a", "domain": "example.org"},
        ),
    ],
)
def test_other_dimensions(values, slot, text, expected):
    assert resolve(values, text, slot, reference_time=REF) == expected


def test_unresolvable_untyped_and_custom_slots(values):
    assert resolve(values, "will it be a snowy day", "when", "day") is None  # no day said
    assert resolve(values, "play jazz", "genre", "jazz") is None  # no type
    assert resolve(values, "fly to nyc", "city", "nyc") == {
        "kind": "custom",
        "entity": "city",
        "value": "New York",
        "match": "synonym",
    }


def spans_of(text: str, slot: str, parts: list[str]) -> list[tuple[SlotSpan, float]]:
    spans, at = [], 0
    for part in parts:
        start = text.index(part, at)
        at = start + len(part)
        spans.append((SlotSpan(slot, start, at), 0.9))
    return spans


@pytest.mark.parametrize(
    "text, slot, parts, joined",
    [
        ("wake me up at 7:30 tomorrow morning", "when", ["7:30", "tomorrow morning"], [(14, 35)]),
        (
            "set a timer for 2 hours and 15 minutes",
            "length",
            ["2 hours and", "15 minutes"],
            [(16, 38)],
        ),
        ("set a timer for 2 hours and 15 minutes", "length", ["2 hours", "15 minutes"], [(16, 38)]),
        # Two expressions stay two: Duckling reads each on its own.
        ("will it rain tomorrow or friday", "when", ["tomorrow", "friday"], [(13, 21), (25, 31)]),
        # Too far apart to be one expression, whatever Duckling makes of them.
        ("at 8 pm, and then again on friday", "when", ["8 pm", "friday"], [(3, 7), (27, 33)]),
        # Two cities stay two: together they are no city.
        ("weather in Zurich Bern", "city", ["Zurich", "Bern"], [(11, 17), (18, 22)]),
        # Pieces of a custom entity join when together they spell one of its values...
        ("weather in the big apple", "city", ["the big", "apple"], [(11, 24)]),
        # ...exactly, not by a near miss, and only when they touch.
        ("weather in the bog apple", "city", ["the bog", "apple"], [(11, 18), (19, 24)]),
        ("weather in new or york", "city", ["new", "york"], [(11, 14), (18, 22)]),
    ],
)
def test_parts_of_one_expression_join(values, text, slot, parts, joined):
    ref = values.reference(REF)
    found = values.whole_values(text, spans_of(text, slot, parts), ref)
    assert [(s.start, s.end) for s, _ in found] == joined
    assert all(s.slot == slot for s, _ in found)
    if len(joined) == 1:  # the joined span's confidence is its weakest part's
        assert found[0][1] == 0.9


def test_joined_time_resolves_as_one_value(values):
    text = "wake me up at 7:30 tomorrow morning"
    ref = values.reference(REF)
    parts = spans_of(text, "when", ["7:30", "tomorrow morning"])
    ((span, _),) = values.whole_values(text, parts, ref)
    assert values.resolve_slot(text, "when", span.start, span.end, ref) == instant(
        "2026-11-29T07:30:00.000+01:00", "minute"
    )
    # Alone, "7:30" is the next 7:30: this evening, the wrong alarm.
    assert resolve(values, text, "when", "7:30", reference_time=REF) == instant(
        "2026-11-28T19:30:00.000+01:00", "minute"
    )


def test_a_duckling_failure_leaves_only_that_slot_unresolved(values, caplog):
    text = "in NYC at 8 pm \ud800"  # a lone surrogate: Duckling cannot encode it
    slots = [{"slot": "city", "start": 3, "end": 6}, {"slot": "when", "start": 7, "end": 16}]
    with caplog.at_level("WARNING", logger="voicenlu.values"):
        found = values.resolve(text, slots, reference_time=REF)
    assert found[0]["value"] == "New York" and found[1] is None
    assert "Duckling failed on time" in caplog.text


@pytest.mark.parametrize(
    "reference_time, zone, message",
    [
        (REF, "Mars/Olympus_Mons", "Unknown timezone 'Mars/Olympus_Mons'"),
        (REF, "", "timezone must be an IANA time zone name"),
        ("tomorrow", None, "reference_time 'tomorrow' is not an ISO-8601 date-time"),
        (True, None, "not a boolean"),
        (float("nan"), None, "must be a finite number"),
        ([2026], None, "not list"),
    ],
)
def test_bad_reference_time_or_timezone_is_an_input_error(values, reference_time, zone, message):
    with pytest.raises(InputError, match=re.escape(message)):
        values.reference(reference_time, zone)


def test_duckling_is_loaded_once_per_process():
    assert load_duckling() is load_duckling() is not None


def test_without_duckling_slots_come_back_unresolved_with_one_warning():
    code = (
        "import sys, json\n"
        "sys.modules['duckling'] = None  # what Python does when the extra is not installed\n"
        "from voicenlu.values import ValueResolver, EntityResolver\n"
        "cities = EntityResolver({'city': {'Bern': []}})\n"
        "r = ValueResolver({'when': 'time', 'city': 'city'}, cities)\n"
        "r.warm()\n"
        "slots = [{'slot': 'when', 'start': 0, 'end': 8},\n"
        "         {'slot': 'city', 'start': 12, 'end': 16}]\n"
        "print(json.dumps([r.resolve('tomorrow in bern', slots) for _ in range(3)]))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    custom = {"kind": "custom", "entity": "city", "value": "Bern", "match": "exact"}
    assert json.loads(done.stdout) == [[None, custom]] * 3
    assert done.stderr.count("pip install 'voicenlu[values]'") == 1


# --- the shipped SNIPS types and the examples' synonyms ---

SAMPLE = Path(__file__).resolve().parent / "data" / "values_checked.json"
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def resolver_for(dataset_types, train) -> ValueResolver:
    """A resolver from the manifest section a bundle trained on ``train`` records."""
    slots = {s.slot for u in train for s in u.slots}
    return ValueResolver.from_manifest(dataset_types.manifest_section(train, slots))


def test_hand_checked_snips_values_are_right(snips):
    sample = json.loads(SAMPLE.read_text(encoding="utf-8"))
    checked = checked_values(resolver_for(snips.slot_types, snips.train), snips.test, sample)
    kinds = {snips.slot_types.types[i["slot"]] for i in sample["items"]}
    assert checked["n"] >= 200 and {"time", "number", "service"} <= kinds
    assert {i["slot"] for i in sample["joined"]["items"]} == {"time", "duration"}
    assert checked["right"] >= 0.99, checked["wrong"]


def test_gold_snips_time_and_number_spans_resolve(snips):
    resolver = resolver_for(snips.slot_types, snips.train)
    coverage = value_coverage(resolver, snips.test, resolver.reference(REF, ZONE))
    assert coverage["time"] >= 0.99 and coverage["number"] >= 0.95
    for slot in ("party_size_number", "rating_value", "best_rating", "year"):
        assert coverage["per_slot"][slot] == 1.0, slot
    assert coverage["custom"] >= 0.95


@pytest.mark.parametrize("name", ["assistant.rasa.yml", "assistant.snips.json"])
def test_example_synonyms_map_to_canonical_values(name):
    data = load_dataset(EXAMPLES / name)
    resolver = resolver_for(data.slot_types, data.utterances)
    city = data.slot_types.types["city"]
    for spelling in ("Zurich", "zuerich", "ZÜRICH"):
        [found] = resolver.resolve(spelling, [{"slot": "city", "start": 0, "end": len(spelling)}])
        assert found["value"] == "Zürich"
    # Annotated values are values too, and the city entity is open: a typo still lands.
    assert resolver.entities.resolve(city, "Sao Paulo")["value"] == "São Paulo"
    assert resolver.entities.resolve(city, "Reykjavik")["match"] == "fuzzy"
    assert resolver.resolve(" 10 minutes", [{"slot": "duration", "start": 1, "end": 11}]) == [
        {"kind": "duration", "value": 10, "unit": "minute", "seconds": 600}
    ]

"""Slot values a program can use: dates, times, durations, numbers and custom entities.

Each slot of a parse gains ``resolved``: the value its text stands for, or None. The slot's type
comes from the bundle manifest's ``values`` section (``voicenlu.data.types``): a Duckling
dimension or a custom entity.

Dimensions are resolved by Duckling itself, in-process (the optional extra
``voicenlu[values]``, the ``pyduckling-native-phihos`` wheel). Its context (time zones, locale,
dimensions) is built once per process and warmed when a model loads. Without the extra, every
slot of a dimension resolves to None and one warning says how to install it. For a slot of
dimension D at ``text[start:end]``:

1. the slot's own text is parsed for D, without latent readings; the longest expression found
   wins (the earliest among equals). For a time, words Duckling does not know are first
   rewritten as ones it does: a meal (``MEAL_TIMES``: breakfast, brunch, elevenses, lunch,
   tea, dinner, supper) as the hours it usually means ("breakfast tomorrow" as "from 7 am to
   10 am tomorrow"; "meal time" is the next of breakfast, lunch and dinner), the sun's times
   (``SUN_TIMES``) as the part of the day they fall in, a clock time with a leading zero
   ("06:05") as the morning time of the 24-hour clock, and a decade ("the sixties", "the
   '80s") as its ten years;
2. when that finds nothing, the whole utterance is parsed for D and the expression overlapping
   the slot most is taken (the slot "8" of "book it at 8" resolves as "at 8"), unless the
   words around the slot make it an open range ("from 1987" is the year 1987);
3. when that finds nothing either, the slot's text is parsed again with latent readings (a bare
   "7" is an hour, "2030" a year), since the model has already said the text is a D.

Neighbouring slots of one expression are joined first (``ValueResolver.whole_values``): a
model may tag "7:30" and "tomorrow morning" apart, which resolved one at a time give 19:30
today and a morning, or "brown" and "sugar" apart, neither of them a value.

Where Duckling offers several readings (``values``), the first is taken: for times the nearest
one at or after the reference time. Numbers written as words ("four", "twenty one") resolve.
Times are computed relative to ``reference_time`` (default: now) in ``timezone`` (an IANA name;
default: the resolver's default, UTC unless set); the reference time's own UTC offset only fixes
the instant. A Duckling failure on one slot leaves that slot unresolved and is logged.

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
Custom entities need no optional extra.
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time
import zoneinfo
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from voicenlu.data.records import SlotSpan
from voicenlu.data.types import DIMENSIONS, CustomEntity, edit_distance, normalize
from voicenlu.errors import InputError

__all__ = [
    "DEFAULT_TIMEZONE",
    "MEAL_TIMES",
    "CustomEntity",
    "Duckling",
    "EntityResolver",
    "Reference",
    "ValueResolver",
    "edit_distance",
    "load_duckling",
    "max_edit_distance",
    "normalize",
    "reference",
]

log = logging.getLogger(__name__)

DEFAULT_TIMEZONE = "UTC"


def max_edit_distance(length: int) -> int:
    """Edits a fuzzy match may need for a normalised text of ``length`` characters."""
    if length < 4:
        return 0
    return 1 if length <= 8 else 2


class _Table:
    """Lookup structures of one entity: normalised surface form -> canonical value."""

    def __init__(self, entity: CustomEntity):
        self.extensible = entity.extensible
        self.exact: dict[str, str] = {}
        self.kind: dict[str, str] = {}
        # Canonical values first, so a synonym never remaps one; among synonyms, the first wins.
        forms = [(c, c, "exact") for c in entity.values]
        forms += [(s, c, "synonym") for c, synonyms in entity.values.items() for s in synonyms]
        for form, canonical, kind in forms:
            key = normalize(form)
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


# --- reference time ---


@dataclass(frozen=True)
class Reference:
    """The instant relative times are computed from, and the time zone they are given in."""

    timestamp: int  # seconds since 1970-01-01T00:00:00Z
    timezone: str  # an IANA name


def reference(
    reference_time: datetime | str | float | None = None,
    timezone: str | None = None,
    default_timezone: str = DEFAULT_TIMEZONE,
) -> Reference:
    """Check and combine a request's ``reference_time`` and ``timezone``; ``InputError`` names
    the bad one. ``reference_time`` is a datetime, an ISO-8601 string or seconds since the
    epoch (default: now); one without an offset is read in ``timezone``."""
    zone_name = default_timezone if timezone is None else timezone
    if not isinstance(zone_name, str) or not zone_name.strip():
        raise InputError(
            f"timezone must be an IANA time zone name such as Europe/Zurich, not {zone_name!r}."
        )
    try:
        zone = zoneinfo.ZoneInfo(zone_name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise InputError(
            f"Unknown timezone {zone_name!r}: use an IANA time zone name such as "
            "Europe/Zurich or America/New_York."
        ) from None
    if reference_time is None:
        return Reference(int(time.time()), zone_name)
    if isinstance(reference_time, bool):
        raise InputError("reference_time must be an ISO-8601 date-time, not a boolean.")
    if isinstance(reference_time, int | float):
        if not math.isfinite(reference_time):
            raise InputError(f"reference_time must be a finite number, not {reference_time}.")
        return Reference(int(reference_time), zone_name)
    if isinstance(reference_time, str):
        try:
            moment = datetime.fromisoformat(reference_time.strip())
        except ValueError:
            raise InputError(
                f"reference_time {reference_time!r} is not an ISO-8601 date-time: write it "
                "like 2026-11-28T20:00:00+01:00."
            ) from None
    elif isinstance(reference_time, datetime):
        moment = reference_time
    else:
        raise InputError(
            "reference_time must be a datetime or an ISO-8601 string, "
            f"not {type(reference_time).__name__}."
        )
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=zone)
    try:
        return Reference(int(moment.timestamp()), zone_name)
    except (OverflowError, ValueError, OSError):
        raise InputError(f"reference_time {reference_time!s} is out of range.") from None


# --- Duckling, in-process ---

_WARMUP = {"time": "tomorrow at 8 pm", "number": "twenty one", "duration": "an hour and a half"}


class Duckling:
    """Duckling's parser with its time zone database, English locale and dimensions loaded once.

    Build it with ``load_duckling()``, which shares one per process.
    """

    def __init__(self, module):
        self._duckling = module
        self._zones = module.load_time_zones(str(_zoneinfo_dir()))
        language = module.parse_lang("EN")
        self._locale = module.parse_locale("EN_US", module.default_locale_lang(language))
        names = {d: "number" if d == "percentage" else d for d in DIMENSIONS}
        self._dimensions = {d: module.parse_dimensions([name]) for d, name in names.items()}

    def parse(self, text: str, dimension: str, ref: Reference, latent: bool = False) -> list:
        """Duckling's entities of ``dimension`` in ``text`` (dicts with start, end, body and
        Duckling's ``value``), times relative to ``ref``."""
        when = self._duckling.parse_ref_time(self._zones, ref.timezone, ref.timestamp)
        context = self._duckling.Context(when, self._locale)
        wanted = "number" if dimension == "percentage" else dimension
        found = self._duckling.parse(text, context, self._dimensions[dimension], latent)
        return [e for e in found if e.get("dim") == wanted]

    def warm(self, dimensions: Iterable[str] = ("time", "number")) -> None:
        """Run each dimension once: Duckling's first call is about 100 times slower."""
        ref = reference()
        for dimension in dimensions:
            self.parse(_WARMUP.get(dimension, "twenty one"), dimension, ref)


def _zoneinfo_dir() -> Path:
    """The system's time zone database, or the ``tzdata`` package's copy of it."""
    for path in zoneinfo.TZPATH:
        if (Path(path) / "UTC").is_file():
            return Path(path)
    try:
        import tzdata
    except ImportError:
        raise FileNotFoundError(
            "no time zone database: install the tzdata package (pip install tzdata)"
        ) from None
    return Path(tzdata.__file__).parent / "zoneinfo"


_duckling_lock = threading.Lock()
_duckling_state: dict[str, Duckling | None] = {}


def load_duckling() -> Duckling | None:
    """The process's Duckling, built on first use; None (with one warning) when the
    ``voicenlu[values]`` extra is missing or cannot load."""
    with _duckling_lock:
        if "instance" not in _duckling_state:
            instance = None
            try:
                import duckling

                instance = Duckling(duckling)
            except (ImportError, OSError) as exc:
                log.warning(
                    "Slot values of dates, times and numbers are not resolved (they come back "
                    "with resolved: null): Duckling could not be loaded (%s). Install it with "
                    "pip install 'voicenlu[values]' (Linux x86_64).",
                    exc,
                )
            _duckling_state["instance"] = instance
        return _duckling_state["instance"]


# --- Duckling's values -> the shapes of the parse result ---

# Meals Duckling's English grammar does not know, read as the hours they usually mean.
MEAL_TIMES = {
    "breakfast": "from 7 am to 10 am",
    "brunch": "from 10 am to 1 pm",
    "elevenses": "at 11 am",
    "lunch": "from noon to 2 pm",
    "tea": "from 3 pm to 5 pm",
    "dinner": "from 6 pm to 9 pm",
    "supper": "from 6 pm to 9 pm",
}
_MEAL = re.compile(r"\b(" + "|".join(MEAL_TIMES) + r")\b", re.IGNORECASE)
# "Meal time" is whichever of these comes next.
_ANY_MEAL = re.compile(r"\bmeals?\b", re.IGNORECASE)
_MAIN_MEALS = ("breakfast", "lunch", "dinner")
# The sun's times, read as the part of the day they fall in.
SUN_TIMES = {
    "sunrise": "morning",
    "dawn": "morning",
    "daybreak": "morning",
    "sunset": "evening",
    "sundown": "evening",
    "dusk": "evening",
}
_SUN = re.compile(r"\b(" + "|".join(SUN_TIMES) + r")\b", re.IGNORECASE)
# A clock time with a leading zero ("06:05", "07:52:10") is on the 24-hour clock: morning.
_MORNING_CLOCK = re.compile(r"\b(0\d:[0-5]\d(?::[0-5]\d)?)\b(?!\s*[ap]\.?m\b)", re.IGNORECASE)
# Decades, which Duckling does not know: "the sixties", "the nineteen sixties", "the '80s",
# "1990s". One without its century is of the 1900s from the twenties on ("the fifties"),
# else of the 2000s ("the 10s").
_DECADE_WORDS = {
    "twenties": 20,
    "thirties": 30,
    "forties": 40,
    "fourties": 40,
    "fifties": 50,
    "sixties": 60,
    "seventies": 70,
    "eighties": 80,
    "nineties": 90,
}
_DECADE = re.compile(
    r"(?:\b(?:(?P<century>nineteen|twenty)\s+)?(?P<word>" + "|".join(_DECADE_WORDS) + r")\b)"
    r"|(?:(?<![\w'’])(?P<full>1[0-9]|20)?['’]?(?P<tens>\d0)['’]?s\b)",
    re.IGNORECASE,
)


def _decade(match: re.Match) -> str:
    """A decade as the span of years Duckling reads: "the sixties" as "1960 - 1969"."""
    if match["word"]:
        tens = _DECADE_WORDS[match["word"].lower()]
        century = {"nineteen": 1900, "twenty": 2000}.get((match["century"] or "").lower())
    else:
        tens = int(match["tens"])
        century = int(match["full"]) * 100 if match["full"] else None
    if century is None:
        century = 1900 if tens >= 20 else 2000
    return f"{century + tens} - {century + tens + 9}"


def _time_words(piece: str) -> str:
    """A time slot's text with the words Duckling does not read rewritten as ones it does."""
    piece = _MEAL.sub(lambda m: MEAL_TIMES[m.group(1).lower()], piece)
    piece = _SUN.sub(lambda m: SUN_TIMES[m.group(1).lower()], piece)
    piece = _MORNING_CLOCK.sub(r"\1 am", piece)
    return _DECADE.sub(_decade, piece)


# Words that may lie between two slots read as one expression: "2 hours and 15 minutes".
MAX_JOIN_WORDS = 1
_WORD = re.compile(r"\w+")

_UNIT_DIMENSIONS = {"temperature", "amount-of-money", "distance", "volume", "quantity"}


def _shape(kind: str, value: dict) -> dict | None:
    """One Duckling value as the result's ``resolved`` object (documented in docs/values.md)."""
    if kind == "time":
        if value.get("type") == "interval":
            return {
                "kind": "time",
                "type": "interval",
                "from": _bound(value.get("from"), "grain"),
                "to": _bound(value.get("to"), "grain"),
            }
        return {"kind": "time", "type": "value", "value": value["value"], "grain": value["grain"]}
    if kind == "duration":
        seconds = value["normalized"]["value"]
        return {"kind": kind, "value": value["value"], "unit": value["unit"], "seconds": seconds}
    if kind in _UNIT_DIMENSIONS:
        if value.get("type") == "interval":
            return {
                "kind": kind,
                "type": "interval",
                "from": _bound(value.get("from"), "unit"),
                "to": _bound(value.get("to"), "unit"),
            }
        shaped = {"kind": kind, "type": "value", "value": value["value"], "unit": value.get("unit")}
        if "product" in value:
            shaped["product"] = value["product"]
        return shaped
    shaped = {"kind": kind, "value": value["value"]}
    for extra in ("domain", "issuer"):  # url, credit-card-number
        if extra in value:
            shaped[extra] = value[extra]
    return shaped


def _bound(end: dict | None, key: str) -> dict | None:
    return None if end is None else {"value": end["value"], key: end.get(key)}


def _longest(entities: list[dict]) -> dict | None:
    return min(entities, key=lambda e: (e["start"] - e["end"], e["start"]), default=None)


# --- resolving the slots of a parse ---


class ValueResolver:
    """Resolves the slots of parse results from the types a bundle records.

    >>> resolver = ValueResolver({"when": "time", "city": "city"},
    ...                          EntityResolver({"city": {"New York": ["NYC"]}}))
    >>> resolver.resolve("fly to NYC", [{"slot": "city", "start": 7, "end": 10}])
    [{'kind': 'custom', 'entity': 'city', 'value': 'New York', 'match': 'synonym'}]
    """

    def __init__(
        self,
        slot_types: Mapping[str, str],
        entities: EntityResolver | None = None,
        timezone: str = DEFAULT_TIMEZONE,
    ):
        self.slot_types = dict(slot_types)
        self.entities = entities or EntityResolver({})
        self.timezone = reference(0, timezone).timezone  # checked once, here
        self.dimensions = sorted({t for t in self.slot_types.values() if t in DIMENSIONS})

    @classmethod
    def from_manifest(
        cls, section: Mapping | None, timezone: str = DEFAULT_TIMEZONE
    ) -> ValueResolver:
        """From a bundle manifest's ``values`` section (absent in older bundles: no types)."""
        section = section or {}
        entities = EntityResolver.from_dict(section.get("entities", {}))
        return cls(section.get("slot_types", {}), entities, timezone)

    def warm(self) -> None:
        """Load Duckling now, when the bundle needs it, rather than on the first request."""
        if self.dimensions:
            duckling = load_duckling()
            if duckling is not None:
                duckling.warm(self.dimensions)

    def reference(
        self, reference_time: datetime | str | float | None = None, timezone: str | None = None
    ) -> Reference:
        """A request's reference time, checked, with this resolver's default time zone."""
        return reference(reference_time, timezone, self.timezone)

    def resolve(
        self,
        text: str,
        slots: Iterable[Mapping],
        reference_time: datetime | str | float | None = None,
        timezone: str | None = None,
    ) -> list[dict | None]:
        """The resolved value of each slot (``slot``, ``start``, ``end``) of ``text``."""
        ref = self.reference(reference_time, timezone)
        return [self.resolve_slot(text, s["slot"], s["start"], s["end"], ref) for s in slots]

    def resolve_slot(self, text: str, slot: str, start: int, end: int, ref: Reference):
        """One slot's value: a custom entity's canonical value, a dimension's value, or None."""
        kind = self.slot_types.get(slot)
        if kind is None:
            return None
        if kind not in DIMENSIONS:
            return self.entities.resolve(kind, text[start:end])
        duckling = load_duckling()
        if duckling is None:
            return None
        try:
            found = self._duckling_entity(duckling, text, kind, start, end, ref)
        except Exception as exc:  # a Duckling failure must not fail the request
            log.warning("Duckling failed on %s %r: %s", kind, text[start:end], exc)
            return None
        return None if found is None else _shape(kind, found["value"])

    @staticmethod
    def _duckling_entity(duckling, text, kind, start, end, ref) -> dict | None:
        piece = text[start:end]
        if kind == "time":
            piece = _time_words(piece)
            if _ANY_MEAL.search(piece):
                return _next_meal(duckling, piece, ref)
        found = _longest(duckling.parse(piece, kind, ref))
        if found is not None:
            return found
        # The words around the slot may complete its expression ("at 8"), not make it an
        # open range ("from 1987").
        overlapping = [
            e
            for e in duckling.parse(text, kind, ref)
            if e["start"] < end and e["end"] > start and not _open_range(e["value"])
        ]
        if overlapping:
            return min(
                overlapping,
                key=lambda e: (
                    -(min(e["end"], end) - max(e["start"], start)),
                    e["start"] - e["end"],
                    e["start"],
                ),
            )
        return _longest(duckling.parse(piece, kind, ref, latent=True))

    def whole_values(
        self, text: str, spans: Iterable[tuple[SlotSpan, float]], ref: Reference
    ) -> list[tuple[SlotSpan, float]]:
        """Neighbouring spans of one slot that Duckling reads as one expression, joined into
        one span (its confidence the lower of theirs).

        A model may tag "7:30" and "tomorrow morning" of "at 7:30 tomorrow morning" as two
        slots, or "2 hours and" and "15 minutes"; resolved one at a time they give the wrong
        alarm. Two spans join when at most one word lies between them ("and", "at", "on")
        and Duckling finds one expression of the slot's dimension running across both. Spans
        of a custom entity join when they touch and together spell one of its values
        exactly or as a synonym ("brown" and "sugar" of "brown sugar").
        """
        joined: list[tuple[SlotSpan, float]] = []
        for span, score in spans:
            if joined and self._one_expression(text, joined[-1][0], span, ref):
                first, first_score = joined.pop()
                span, score = SlotSpan(span.slot, first.start, span.end), min(first_score, score)
            joined.append((span, score))
        return joined

    def _one_expression(self, text: str, first: SlotSpan, second: SlotSpan, ref) -> bool:
        kind = self.slot_types.get(first.slot)
        if first.slot != second.slot or kind is None:
            return False
        if kind not in DIMENSIONS:  # a custom entity: together they must spell one of its values
            if text[first.end : second.start].strip():
                return False
            found = self.entities.resolve(kind, text[first.start : second.end])
            return found is not None and found["match"] != "fuzzy"
        if len(_WORD.findall(text[first.end : second.start])) > MAX_JOIN_WORDS:
            return False
        duckling = load_duckling()
        if duckling is None:
            return False
        both = text[first.start : second.end]
        try:
            found = duckling.parse(both, kind, ref)
        except Exception as exc:  # a Duckling failure leaves the spans as they are
            log.warning("Duckling failed on %s %r: %s", kind, both, exc)
            return False
        gap = (first.end - first.start, second.start - first.start)
        return any(e["start"] < gap[0] and e["end"] > gap[1] for e in found)


def _open_range(value: dict) -> bool:
    ends = (value.get("from"), value.get("to"))
    return value.get("type") == "interval" and None in ends


def _next_meal(duckling, piece: str, ref: Reference) -> dict | None:
    """ "Meal time" read as the main meal (``_MAIN_MEALS``) that starts first from ``ref``."""
    found = []
    for meal in _MAIN_MEALS:
        reading = _longest(duckling.parse(_ANY_MEAL.sub(MEAL_TIMES[meal], piece), "time", ref))
        if reading is not None:
            found.append(reading)
    return min(found, key=_starts, default=None)


def _starts(entity: dict) -> datetime:
    value = entity["value"]
    bound = (value.get("from") or {}) if value.get("type") == "interval" else value
    return datetime.fromisoformat(bound.get("value") or "9999-12-31T00:00:00+00:00")

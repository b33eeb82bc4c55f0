"""Assistant definitions written as templates -> annotated ``Utterance`` records.

Rhino (Picovoice) describes an assistant as a context YAML::

    context:
      expressions:
        orderDrink:
          - "[can I get, give me] (a) $size:size $coffeeDrink:drink (please)"
      slots:
        size: ["small", "large"]
        coffeeDrink: ["latte", "iced mocha"]
      macros:                      # optional: @name stands for any of these phrases
        polite: ["please", "thank you"]

``[a, b]`` picks one alternative, ``(a)`` or ``(a, b)`` may be left out, ``$type:name`` is a slot
named ``name`` filled from the value list ``type`` (``$type`` alone names the slot ``type``), and
``@macro`` is one of the macro's phrases. Alternatives nest. Words are joined by single spaces, so
the slot offsets of every expanded utterance are exact.

An expression usually stands for far more sentences than a model needs (the Rhino coffee maker:
about 10^11), so each intent is expanded in full when it is small and otherwise sampled, each
expression equally often and each choice uniformly, with a fixed seed.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from voicenlu.data.records import SlotSpan, Utterance

# Utterances per intent when an intent's expansion is larger (then sampled, else expanded fully).
MAX_PER_INTENT = 1000
SEED = 0

_SLOT = re.compile(r"\$([A-Za-z_][\w\-]*)(?::([A-Za-z_][\w\-]*))?")
_MACRO = re.compile(r"@([A-Za-z_][\w\-]*)")


class TemplateError(ValueError):
    """A template that cannot be parsed; the message says where (the reader adds the file)."""


@dataclass(frozen=True)
class Slot:
    """``$type:name``: any value of the list ``type``, tagged as slot ``name``."""

    type: str
    name: str


@dataclass(frozen=True)
class Choice:
    """``[a, b]`` (one of them) or ``(a, b)`` (one of them, or nothing)."""

    options: tuple[tuple[Part, ...], ...]
    optional: bool


@dataclass(frozen=True)
class Macro:
    """``@name``: one of the macro's phrases."""

    name: str


Part = str | Slot | Choice | Macro


@dataclass(frozen=True)
class Template:
    intent: str
    parts: tuple[Part, ...]
    source: str  # the expression as written, for messages


@dataclass(frozen=True)
class Context:
    """A parsed assistant definition: its templates, slot value lists and macros."""

    templates: tuple[Template, ...]
    slots: Mapping[str, tuple[str, ...]]
    macros: Mapping[str, tuple[tuple[Part, ...], ...]]

    def slot_types(self) -> dict[str, str]:
        """Slot name -> the value list (type) that fills it."""
        names: dict[str, str] = {}
        for template in self.templates:
            for slot in _slots_in(template.parts):
                names.setdefault(slot.name, slot.type)
        return names


# --- parsing ---


def parse_expression(text: str) -> tuple[Part, ...]:
    """The parts of one expression; raises ``TemplateError`` naming the column of a defect."""
    parts, pos = _parse_sequence(text, 0, closers="")
    if pos != len(text):
        raise TemplateError(f"unexpected {text[pos]!r} at column {pos + 1}")
    return parts


def _parse_sequence(text: str, pos: int, closers: str) -> tuple[tuple[Part, ...], int]:
    """Parts up to (not including) one of ``closers`` or the end of the text."""
    parts: list[Part] = []
    literal: list[str] = []

    def flush() -> None:
        parts.extend(literal_words("".join(literal)))
        literal.clear()

    while pos < len(text) and text[pos] not in closers:
        char = text[pos]
        if char in "[(":
            flush()
            closer = "]" if char == "[" else ")"
            options, pos = _parse_options(text, pos + 1, closer)
            parts.append(Choice(options, optional=char == "("))
        elif char in "])":
            raise TemplateError(f"unmatched {char!r} at column {pos + 1}")
        elif char == "$":
            match = _SLOT.match(text, pos)
            if not match:
                raise TemplateError(f"'$' at column {pos + 1} must start a slot: $type:name")
            flush()
            parts.append(Slot(match[1], match[2] or match[1]))
            pos = match.end()
        elif char == "@":
            match = _MACRO.match(text, pos)
            if not match:
                raise TemplateError(f"'@' at column {pos + 1} must start a macro name: @name")
            flush()
            parts.append(Macro(match[1]))
            pos = match.end()
        else:
            literal.append(char)
            pos += 1
    flush()
    return tuple(parts), pos


def _parse_options(text: str, pos: int, closer: str) -> tuple[tuple[tuple[Part, ...], ...], int]:
    start = pos
    options = []
    while True:
        option, pos = _parse_sequence(text, pos, closers="," + closer)
        options.append(option)
        if pos >= len(text):
            opener = "[" if closer == "]" else "("
            raise TemplateError(f"{opener!r} at column {start} is never closed")
        if text[pos] == closer:
            return tuple(options), pos + 1
        pos += 1  # the comma


def literal_words(text: str) -> list[str]:
    """Plain template text as words (white space collapses, as it does when expanded)."""
    return text.split()


def _slots_in(parts: tuple[Part, ...]) -> Iterator[Slot]:
    for part in parts:
        if isinstance(part, Slot):
            yield part
        elif isinstance(part, Choice):
            for option in part.options:
                yield from _slots_in(option)


def parse_context(doc: object) -> Context:
    """A Rhino context document (already loaded from YAML) -> ``Context``.

    Raises ``TemplateError`` naming the intent, expression or slot list at fault.
    """
    context = doc.get("context") if isinstance(doc, dict) else None
    if not isinstance(context, dict) or not isinstance(context.get("expressions"), dict):
        raise TemplateError("the file needs a 'context:' mapping with 'expressions:' per intent")
    slots: dict[str, tuple[str, ...]] = {}
    for name, values in (context.get("slots") or {}).items():
        if not isinstance(values, list) or not values:
            raise TemplateError(f"slots.{name}: give a non-empty list of values")
        slots[str(name)] = tuple(" ".join(str(v).split()) for v in values)
    macros: dict[str, tuple[tuple[Part, ...], ...]] = {}
    for name, phrases in (context.get("macros") or {}).items():
        if not isinstance(phrases, list) or not phrases:
            raise TemplateError(f"macros.{name}: give a non-empty list of phrases")
        macros[str(name)] = tuple(
            _parse_in(str(p), f"macros.{name}[{i}]") for i, p in enumerate(phrases)
        )
    templates = []
    for intent, expressions in context["expressions"].items():
        if not isinstance(expressions, list) or not expressions:
            raise TemplateError(f"expressions.{intent}: give a non-empty list of expressions")
        for i, expression in enumerate(expressions):
            where = f"expressions.{intent}[{i}]"
            parts = _parse_in(str(expression), where)
            _check_names(parts, slots, macros, where)
            templates.append(Template(str(intent), parts, str(expression)))
    return Context(tuple(templates), slots, macros)


def _parse_in(text: str, where: str) -> tuple[Part, ...]:
    try:
        return parse_expression(text)
    except TemplateError as exc:
        raise TemplateError(f"{where}: {exc} in {text!r}") from None


def _check_names(parts, slots, macros, where: str) -> None:
    for part in parts:
        if isinstance(part, Slot) and part.type not in slots:
            raise TemplateError(f"{where}: ${part.type} has no value list under 'slots:'")
        if isinstance(part, Macro) and part.name not in macros:
            raise TemplateError(f"{where}: @{part.name} has no phrase list under 'macros:'")
        if isinstance(part, Choice):
            for option in part.options:
                _check_names(option, slots, macros, where)


# --- expansion ---

# A rendered piece: a word, or a slot value with its slot name.
_Piece = tuple[str, str | None]


def count(parts: tuple[Part, ...], context: Context) -> int:
    """How many sentences ``parts`` stands for (alternatives that read alike counted apart)."""
    total = 1
    for part in parts:
        if isinstance(part, Slot):
            total *= len(context.slots[part.type])
        elif isinstance(part, Macro):
            total *= sum(count(p, context) for p in context.macros[part.name])
        elif isinstance(part, Choice):
            total *= sum(count(o, context) for o in part.options) + part.optional
    return total


def _all(parts: tuple[Part, ...], context: Context) -> Iterator[list[_Piece]]:
    if not parts:
        yield []
        return
    head, rest = parts[0], parts[1:]
    for first in _alternatives(head, context):
        for tail in _all(rest, context):
            yield first + tail


def _alternatives(part: Part, context: Context) -> Iterator[list[_Piece]]:
    if isinstance(part, str):
        yield [(part, None)]
    elif isinstance(part, Slot):
        for value in context.slots[part.type]:
            yield [(value, part.name)]
    elif isinstance(part, Macro):
        for phrase in context.macros[part.name]:
            yield from _all(phrase, context)
    else:
        if part.optional:
            yield []
        for option in part.options:
            yield from _all(option, context)


def _sample(parts: tuple[Part, ...], context: Context, rng: random.Random) -> list[_Piece]:
    pieces: list[_Piece] = []
    for part in parts:
        if isinstance(part, str):
            pieces.append((part, None))
        elif isinstance(part, Slot):
            pieces.append((rng.choice(context.slots[part.type]), part.name))
        elif isinstance(part, Macro):
            pieces += _sample(rng.choice(context.macros[part.name]), context, rng)
        else:
            index = rng.randrange(len(part.options) + part.optional)
            if index < len(part.options):
                pieces += _sample(part.options[index], context, rng)
    return pieces


def render(pieces: list[_Piece], intent: str) -> Utterance:
    """Join pieces with single spaces; each slot piece becomes a span at its exact offsets."""
    text, spans = "", []
    for value, slot in pieces:
        if text:
            text += " "
        if slot is not None:
            spans.append(SlotSpan(slot, len(text), len(text) + len(value)))
        text += value
    return Utterance(text, intent, tuple(spans))


def expand(context: Context, max_per_intent: int = MAX_PER_INTENT, seed: int = SEED):
    """Every intent's sentences: all of them up to ``max_per_intent``, else a seeded sample.

    Sentences that read the same are kept once, so a sample may come out a little short; a
    reading with nothing in it (every part optional and left out) is skipped.
    """
    by_intent: dict[str, list[Template]] = {}
    for template in context.templates:
        by_intent.setdefault(template.intent, []).append(template)
    utterances: list[Utterance] = []
    for intent, templates in by_intent.items():
        seen: dict[Utterance, None] = {}
        if sum(count(t.parts, context) for t in templates) <= max_per_intent:
            for template in templates:
                for pieces in _all(template.parts, context):
                    if pieces:  # a template read with every optional part left out
                        seen.setdefault(render(pieces, intent))
        else:
            rng = random.Random(f"{seed}:{intent}")
            for attempt in range(4 * max_per_intent):
                if len(seen) >= max_per_intent:
                    break
                template = templates[attempt % len(templates)]
                pieces = _sample(template.parts, context, rng)
                if pieces:
                    seen.setdefault(render(pieces, intent))
        utterances += seen
    return utterances


def read_context(path: str | Path) -> Context:
    """Read a Rhino context YAML file; raises ``TemplateError`` (the caller adds the file)."""
    import yaml

    try:
        doc = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise TemplateError(f"not valid YAML: {exc}") from None
    return parse_context(doc)


def is_context(doc: object) -> bool:
    """Whether a loaded YAML document is a Rhino context (rather than, say, Rasa data)."""
    return isinstance(doc, dict) and isinstance(doc.get("context"), dict)

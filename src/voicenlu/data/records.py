"""The common record every reader produces and every later stage consumes."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field

# Characters that show nothing on their own: controls (NUL...), format characters (zero-width
# spaces, the BOM) and combining marks with nothing to combine with.
INVISIBLE = frozenset({"Cc", "Cf", "Mn", "Me"})
# Letters and symbols that are drawn blank: the Hangul fillers and the braille blank.
BLANK_GLYPHS = frozenset("\u115f\u1160\u3164\uffa0\u2800")


def is_blank(text: str) -> bool:
    """True when the text shows nothing: only white space and invisible or blank characters."""
    return all(
        c.isspace() or c in BLANK_GLYPHS or unicodedata.category(c) in INVISIBLE for c in text
    )


@dataclass(frozen=True)
class SlotSpan:
    """A typed span of the utterance text: ``text[start:end]`` is the slot value."""

    slot: str
    start: int
    end: int


@dataclass(frozen=True)
class Utterance:
    """One request: its raw text, its intent (None when unknown/out of scope) and its slots.

    Offsets are Python character offsets into ``text`` exactly as read, so
    ``text[s.start:s.end]`` is the value of slot ``s``. Slots are sorted and do not overlap.
    """

    text: str
    intent: str | None
    slots: tuple[SlotSpan, ...] = field(default_factory=tuple)

    def slot_values(self) -> list[tuple[str, str]]:
        return [(s.slot, self.text[s.start : s.end]) for s in self.slots]

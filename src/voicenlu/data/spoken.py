"""The spoken form of text and utterances: what a speech recogniser writes.

Recognisers write lower case, no punctuation and numbers as words ("book a table for four at
eight thirty"), while written training data has "Book a table for 4 at 8:30.". The spoken form
is deterministic, so a dataset and its spoken copy can be compared utterance by utterance:

- lower case; whitespace collapsed to single spaces;
- punctuation and symbols dropped (a word-internal apostrophe, as in "what's", is part of the
  spelling and kept); "&", "%", "+", "@" and "#" are read as "and", "percent", "plus", "at",
  "number";
- numbers as words: "4" -> "four", "1,500" -> "one thousand five hundred", "3.5" -> "three
  point five", "21st" -> "twenty first", "8:30" -> "eight thirty", "8:05" -> "eight oh five",
  "8:00" -> "eight", "1990" -> "nineteen ninety", "2005" -> "two thousand five",
  "90s" -> "nineties", "1/15/2019" -> "january fifteenth twenty nineteen",
  "007" -> "zero zero seven".

Slots are carried over exactly: each slot is transformed on its own, so the new text at the
new offsets is the spoken form of the old slot value, and a slot whose value has no spoken
form (only punctuation) is dropped. Standard library only.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable

from voicenlu.data.records import SlotSpan, Utterance

_ONES = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen"
).split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_SCALES = ((10**12, "trillion"), (10**9, "billion"), (10**6, "million"), (1000, "thousand"))
_ORDINAL_WORDS = {
    "one": "first",
    "two": "second",
    "three": "third",
    "five": "fifth",
    "eight": "eighth",
    "nine": "ninth",
    "twelve": "twelfth",
}
_MONTHS = (
    "january february march april may june july august september october november december"
).split()
_SYMBOLS = {"&": "and", "%": "percent", "+": "plus", "@": "at", "#": "number"}
_APOSTROPHES = "'\u2019\u2018\u02bc"

# One pass over the digits of a string, most specific reading first. Digits are ASCII only:
# other scripts' digits are left as they are.
_NUMBER = re.compile(
    r"(?P<date>(?<![0-9])[0-9]{1,2}/[0-9]{1,2}/[0-9]{4}(?![0-9]))"
    r"|(?P<time>(?<![0-9])[0-9]{1,2}:[0-9]{2}(?::[0-9]{2})?(?![0-9]))"
    r"|(?P<number>[0-9]{1,3}(?:,[0-9]{3})+(?![0-9])|[0-9]+)(?P<decimal>\.[0-9]+)?"
    r"(?:(?P<ordinal>st|nd|rd|th)|(?P<decade>'?s))?(?![a-z])"
    r"|(?P<digits>[0-9]+)",
    re.IGNORECASE,
)


def cardinal(n: int) -> str:
    """English words for a non-negative integer: 121 -> "one hundred twenty one"."""
    if n < 0:
        raise ValueError(f"cardinal() takes a non-negative integer, got {n}")
    if n < 20:
        return _ONES[n]
    if n < 100:
        tens, ones = divmod(n, 10)
        return _TENS[tens] + (f" {_ONES[ones]}" if ones else "")
    if n < 1000:
        hundreds, rest = divmod(n, 100)
        return f"{_ONES[hundreds]} hundred" + (f" {cardinal(rest)}" if rest else "")
    for scale, name in _SCALES:
        if n >= scale:
            if n >= 1000 * 10**12:  # beyond trillions: read the digits
                return " ".join(_ONES[int(d)] for d in str(n))
            high, rest = divmod(n, scale)
            return f"{cardinal(high)} {name}" + (f" {cardinal(rest)}" if rest else "")
    raise AssertionError("unreachable")


def ordinal(n: int) -> str:
    """English ordinal words: 21 -> "twenty first", 100 -> "one hundredth"."""
    words = cardinal(n).split()
    last = words[-1]
    if last in _ORDINAL_WORDS:
        words[-1] = _ORDINAL_WORDS[last]
    elif last.endswith("y"):
        words[-1] = last[:-1] + "ieth"
    else:
        words[-1] = last + "th"
    return " ".join(words)


def year(n: int) -> str:
    """How a year is said: 1990 -> "nineteen ninety", 1905 -> "nineteen oh five",
    1900 -> "nineteen hundred", 2005 -> "two thousand five", 2019 -> "twenty nineteen"."""
    if not 1100 <= n <= 2099 or 2000 <= n <= 2009:
        return cardinal(n)
    high, low = divmod(n, 100)
    if low == 0:
        return f"{cardinal(high)} hundred"
    return f"{cardinal(high)} {'oh ' if low < 10 else ''}{cardinal(low)}"


def _plural(words: str) -> str:
    """ "nineteen ninety" -> "nineteen nineties", "six" -> "sixes"."""
    if words.endswith("y"):
        return words[:-1] + "ies"
    return words + ("es" if words.endswith(("x", "s")) else "s")


def _integer(digits: str) -> str:
    """Digits as said: leading zeros digit by digit ("007"), four-digit years as years."""
    if len(digits) > 1 and digits.startswith("0"):
        return " ".join(_ONES[int(d)] for d in digits)
    n = int(digits.replace(",", ""))
    return year(n) if len(digits) == 4 else cardinal(n)


def _time(text: str) -> str:
    parts = [int(p) for p in text.split(":")]
    hour, minute = parts[0], parts[1]
    if hour > 24 or minute > 59:  # not a clock time (a score, a ratio): read each number
        return " ".join(cardinal(p) for p in parts)
    words = cardinal(hour)
    if minute:
        words += (" oh " if minute < 10 else " ") + cardinal(minute)
    if len(parts) == 3 and parts[2]:
        words += f" and {cardinal(parts[2])} seconds"
    return words


def _date(text: str) -> str:
    month, day, yr = (int(p) for p in text.split("/"))
    if 1 <= month <= 12 and 1 <= day <= 31:
        return f"{_MONTHS[month - 1]} {ordinal(day)} {year(yr)}"
    return " ".join(_integer(p) for p in text.split("/"))


def _number_words(match: re.Match) -> str:
    if match["date"]:
        words = _date(match["date"])
    elif match["time"]:
        words = _time(match["time"])
    elif match["digits"]:
        words = _integer(match["digits"])
    elif match["decimal"]:
        words = _integer(match["number"]) + " point "
        words += " ".join(_ONES[int(d)] for d in match["decimal"][1:])
        if match["ordinal"] or match["decade"]:  # "2.5th" is not a reading: keep the suffix
            words += " " + (match["ordinal"] or match["decade"])
    elif match["ordinal"]:
        words = ordinal(int(match["number"].replace(",", "")))
    elif match["decade"]:
        words = _plural(_integer(match["number"]))
    else:
        words = _integer(match["number"])
    return f" {words} "


def _is_letter(ch: str) -> bool:
    """A letter or a combining mark: lower-casing "İ" gives "i" and a combining dot."""
    return ch.isalpha() or unicodedata.category(ch) == "Mn"


def _drop_punctuation(text: str, left: str, right: str) -> str:
    """Punctuation and symbols become spaces; a word-internal apostrophe stays.

    ``left`` and ``right`` are the characters around ``text`` in the utterance, so an
    apostrophe at a slot boundary ("Beyoncé" + "'s") is judged by its real neighbours.
    """
    out = []
    padded = left + text + right
    for i, ch in enumerate(text, start=len(left)):
        if ch in _APOSTROPHES:
            inside = 0 < i < len(padded) - 1
            keep = inside and _is_letter(padded[i - 1]) and _is_letter(padded[i + 1])
            out.append("'" if keep else " ")
        elif ch in _SYMBOLS:
            out.append(f" {_SYMBOLS[ch]} ")
        elif _is_letter(ch) or ch.isalnum() or ch.isspace():
            out.append(ch)
        else:  # punctuation, symbols, emoji, control characters
            out.append(" ")
    return "".join(out)


def _spoken(text: str, left: str = "", right: str = "") -> str:
    text = _NUMBER.sub(_number_words, text)
    text = _drop_punctuation(text, left, right)
    return " ".join(text.lower().split())


def spoken_text(text: str) -> str:
    """The spoken form of a string (see the module docstring)."""
    return _spoken(text)


def _joined(text: str, boundary: int, before: str, after: str) -> bool:
    """Whether the spoken pieces ``before`` and ``after``, which meet at ``boundary`` of
    ``text``, are one word: the two characters there are spoken as themselves, unspaced."""
    pair = _spoken(
        text[boundary - 1 : boundary + 1],
        text[boundary - 2 : boundary - 1],
        text[boundary + 1 : boundary + 2],
    )
    return len(pair) == 2 and " " not in pair and before[-1] + after[0] == pair


def spoken_utterance(utterance: Utterance) -> Utterance:
    """The spoken form of an utterance, its slots carried over to the new offsets.

    The text is cut at slot boundaries and each piece is transformed on its own, so for every
    slot ``new.text[s.start:s.end] == spoken_text(value)``; pieces that were one word stay
    joined, others are separated by one space.
    """
    text = utterance.text
    pieces: list[tuple[str | None, int, int]] = []
    pos = 0
    for s in utterance.slots:
        pieces += [(None, pos, s.start), (s.slot, s.start, s.end)]
        pos = s.end
    pieces.append((None, pos, len(text)))

    out = ""
    slots = []
    last_end = None  # where the last piece that produced words ended in the original text
    for name, start, end in pieces:
        if name is None:
            words = _spoken(text[start:end], text[start - 1 : start], text[end : end + 1])
        else:
            words = spoken_text(text[start:end])
        if not words:
            continue
        if out:
            joined = last_end == start and _joined(text, start, out, words)
            out += "" if joined else " "
        if name is not None:
            slots.append(SlotSpan(name, len(out), len(out) + len(words)))
        out += words
        last_end = end
    return Utterance(out, utterance.intent, tuple(slots))


def differs_when_spoken(utterance: Utterance) -> bool:
    """Whether the spoken form says more than lower-casing the text would (digits, punctuation).

    An uncased tokenizer already sees written and lower-cased text alike, so only these
    utterances teach a model anything new in their spoken form.
    """
    spoken = spoken_utterance(utterance)
    lowered = utterance.text.lower()
    if spoken.text != lowered:
        return True
    return spoken.slot_values() != [(s.slot, lowered[s.start : s.end]) for s in utterance.slots]


def with_spoken_copies(utterances: Iterable[Utterance]) -> list[Utterance]:
    """The utterances, then the spoken copy of each one that differs when spoken."""
    utterances = list(utterances)
    copies = [spoken_utterance(u) for u in utterances if differs_when_spoken(u)]
    return utterances + copies

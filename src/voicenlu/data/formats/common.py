"""What every format module shares: the dataset record, error reports and reading helpers."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from voicenlu.data.records import Utterance
from voicenlu.data.snips import decode_json_bytes
from voicenlu.data.types import SlotTypes
from voicenlu.errors import DataError


@dataclass(frozen=True)
class Problem:
    """One defect in a data file: where it is and what the user should do about it."""

    file: str
    where: str
    message: str
    fix: str = ""

    def __str__(self) -> str:
        place = ", ".join(part for part in (self.file, self.where) if part)
        text = f"{place}: {self.message}" if place else self.message
        return f"{text}; {self.fix}" if self.fix else text


class FormatError(DataError):
    """A file that cannot be read, with every defect found so ``validate`` can list them all."""

    def __init__(self, problems: Sequence[Problem]):
        self.problems = list(problems)
        lines = [str(p) for p in self.problems[:5]]
        if len(self.problems) > 5:
            lines.append(f"... and {len(self.problems) - 5} more (voicenlu data validate)")
        super().__init__("\n".join(lines))


def fail(file: str | Path, where: str, message: str, fix: str = "") -> FormatError:
    """A ``FormatError`` with one problem, to raise where reading cannot go on."""
    return FormatError([Problem(str(file), where, message, fix)])


@dataclass(frozen=True)
class Dataset:
    """Utterances read from one path, with where each came from and what the reader noticed.

    ``has_slots`` says whether the format annotates slots at all: False for CSV and JSONL, whose
    utterances are unannotated rather than slot-free. ``origins[i]`` is ``(file, where)`` of
    ``utterances[i]`` ("line 12", "intent 'X', utterance 3") for error reports.
    ``slot_types`` holds each slot's type and the custom entities' values and synonyms.
    """

    utterances: list[Utterance]
    format: str
    has_slots: bool
    notes: list[str] = field(default_factory=list)
    path: str = ""
    origins: list[tuple[str, str]] = field(default_factory=list)
    language: str | None = None
    slot_types: SlotTypes = field(default_factory=SlotTypes)


@dataclass(frozen=True)
class Conversion:
    """What ``convert`` read and wrote, and what it had to leave out."""

    source: Dataset
    format: str
    notes: list[str]


@dataclass(frozen=True)
class Format:
    """One entry of the format registry: its reader, its writer and the extensions it owns.

    ``write(dataset, path, notes)`` returns the file's text and appends a note for anything the
    format cannot hold; it raises ``DataError`` for what it cannot write faithfully.
    """

    name: str
    read: Callable[[Path], Dataset]
    write: Callable[[Dataset, Path, list[str]], str]
    extensions: tuple[str, ...] = ()


def read_text(path: Path, *, repair_cesu8: bool = False) -> str:
    """The file as text (UTF-8, byte-order mark dropped); a clear error when it is not."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise fail(path, "", f"cannot read: {exc.strerror}", "check the path") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        if not repair_cesu8:
            raise fail(
                path, f"byte {exc.start}", "not valid UTF-8", "save the file as UTF-8"
            ) from None
        try:
            text = decode_json_bytes(raw, path)[0]
        except DataError:
            raise fail(
                path, f"byte {exc.start}", "not valid UTF-8", "save the file as UTF-8"
            ) from None
    return text.removeprefix("\ufeff")


def parse_json(path: Path) -> object:
    """The JSON document in ``path``, or a ``FormatError`` with the line and column."""
    try:
        return json.loads(read_text(path, repair_cesu8=True))
    except json.JSONDecodeError as exc:
        hint = "fix the JSON syntax there"
        if exc.msg == "Extra data":
            hint += "; for one JSON object per line, name the file .jsonl"
        raise fail(
            path, f"line {exc.lineno}, column {exc.colno}", f"invalid JSON: {exc.msg}", hint
        ) from None


def chunks(utt: Utterance) -> list[tuple[str, str | None]]:
    """The text cut at slot boundaries: ``(piece, slot or None)``, empty pieces left out."""
    out: list[tuple[str, str | None]] = []
    pos = 0
    for s in sorted(utt.slots, key=lambda s: s.start):
        if s.start > pos:
            out.append((utt.text[pos : s.start], None))
        out.append((utt.text[s.start : s.end], s.slot))
        pos = s.end
    if pos < len(utt.text):
        out.append((utt.text[pos:], None))
    return out

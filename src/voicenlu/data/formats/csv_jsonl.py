"""Intent-only formats: CSV with a ``text,intent`` header and JSONL ``{"text", "intent"}`` lines."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from voicenlu.data.formats.common import Dataset, Format, FormatError, Problem, fail, read_text
from voicenlu.data.records import Utterance, is_blank

# Names of the intent column, in order of preference ("category": BANKING77, "label": many).
INTENT_COLUMNS = ("intent", "label", "category")


def read_csv(path: Path) -> Dataset:
    text = read_text(path)
    header_line = text.split("\n", 1)[0]
    delimiter = next((d for d in (",", ";", "\t") if d in header_line), ",")
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        header = [h.strip().lower() for h in next(reader)]
    except StopIteration:
        raise fail(
            path, "line 1", "the file is empty", "start it with a 'text,intent' header"
        ) from None
    label = next((h for h in INTENT_COLUMNS if h in header), None)
    if "text" not in header or label is None:
        raise fail(
            path,
            "line 1",
            f"the header {header} lacks 'text' or 'intent'",
            "make the first line 'text,intent'",
        )
    col_text, col_intent = header.index("text"), header.index(label)
    notes = []
    extra = [h for h in header if h not in ("text", label)]
    if extra:
        notes.append(f"columns {extra} ignored")
    utterances: list[Utterance] = []
    origins: list[tuple[str, str]] = []
    problems: list[Problem] = []  # every bad row, so one run lists them all
    start = reader.line_num + 1
    try:
        for row in reader:
            where = f"line {start}"
            start = reader.line_num + 1
            if not any(cell.strip() for cell in row):
                continue
            if len(row) != len(header):
                problems.append(
                    Problem(
                        str(path),
                        where,
                        f"{len(row)} fields where the header has {len(header)}",
                        'put text containing the delimiter in double quotes: "a, b",intent',
                    )
                )
                continue
            text, intent = row[col_text].strip(), row[col_intent].strip()
            blank = [name for name, cell in (("text", text), ("intent", intent)) if is_blank(cell)]
            if blank:
                fields = " and the ".join(blank)
                problems.append(
                    Problem(
                        str(path),
                        where,
                        f"the {fields} {'is' if len(blank) == 1 else 'are'} empty",
                        "fill it in or delete the row",
                    )
                )
                continue
            utterances.append(Utterance(text, intent))
            origins.append((str(path), where))
    except csv.Error as exc:
        problems.append(
            Problem(str(path), f"line {reader.line_num}", f"invalid CSV: {exc}", "check the quotes")
        )
    if problems:
        raise FormatError(problems)
    return Dataset(utterances, "csv", False, notes, str(path), origins)


def write_csv(dataset: Dataset, path: Path, notes: list[str]) -> str:
    _note_dropped_slots(dataset, "csv", notes)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["text", "intent"])
    writer.writerows([u.text, u.intent] for u in dataset.utterances)
    return buffer.getvalue()


def read_jsonl(path: Path) -> Dataset:
    utterances: list[Utterance] = []
    origins: list[tuple[str, str]] = []
    ignored: set[str] = set()
    problems: list[Problem] = []  # every bad line, so one run lists them all
    for number, line in enumerate(read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        where = f"line {number}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            problems.append(
                Problem(
                    str(path),
                    where,
                    f"invalid JSON at column {exc.colno}: {exc.msg}",
                    "one JSON object per line",
                )
            )
            continue
        if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
            problems.append(
                Problem(
                    str(path),
                    where,
                    'expected an object with a string "text"',
                    '{"text": "...", "intent": "..."}',
                )
            )
            continue
        intent = obj.get("intent")
        if not isinstance(intent, str) or not intent.strip():
            problems.append(
                Problem(
                    str(path), where, '"intent" is missing or empty', "give every line an intent"
                )
            )
            continue
        ignored |= set(obj) - {"text", "intent"}
        utterances.append(Utterance(obj["text"].strip(), intent.strip()))
        origins.append((str(path), where))
    if problems:
        raise FormatError(problems)
    notes = [f"keys {sorted(ignored)} ignored: JSONL is read as intent-only"] if ignored else []
    return Dataset(utterances, "jsonl", False, notes, str(path), origins)


def write_jsonl(dataset: Dataset, path: Path, notes: list[str]) -> str:
    _note_dropped_slots(dataset, "jsonl", notes)
    return "".join(
        json.dumps({"text": u.text, "intent": u.intent}, ensure_ascii=False) + "\n"
        for u in dataset.utterances
    )


def _note_dropped_slots(dataset: Dataset, fmt: str, notes: list[str]) -> None:
    slotted = sum(1 for u in dataset.utterances if u.slots)
    if slotted:
        notes.append(f"{fmt} holds intents only: the slots of {slotted} utterances are dropped")


CSV = Format("csv", read_csv, write_csv, (".csv",))
JSONL = Format("jsonl", read_jsonl, write_jsonl, (".jsonl", ".ndjson"))

"""Checks that training data is usable, run before training so bad data fails with a report.

Every check returns ``Problem`` records (file, where, message, fix) instead of raising, so one
run lists everything to fix; ``format_problems`` renders them for the CLI.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path

from voicenlu.data.formats import Dataset, FormatError, Problem, load_dataset
from voicenlu.data.formats.snips_nlu import SNIPS_BUILTINS
from voicenlu.data.records import Utterance, is_blank
from voicenlu.data.types import edit_distance
from voicenlu.errors import DataError

__all__ = ["Problem", "format_problems", "validate", "validate_path"]


def validate(
    data: Dataset | Sequence[Utterance],
    *,
    min_per_intent: int = 5,
    splits: Mapping[str, Sequence[Utterance]] | None = None,
) -> list[Problem]:
    """Problems in ``data``, and between ``splits`` (e.g. train/dev/test) when given.

    Checks: no utterances, empty texts, intents with fewer than ``min_per_intent`` examples,
    empty / out-of-range / overlapping slot spans, a slot name used rarely beside a common one
    it is a typo of (``[garage](rom)`` where ``room`` is used everywhere else), one text
    labelled with two intents, slot types that are neither a Duckling dimension nor a custom
    entity, and intents or slots present in some splits but missing from others.
    """
    problems: list[Problem] = []
    if isinstance(data, Dataset):
        utterances, origins, file = data.utterances, data.origins, data.path
        problems.extend(_unknown_types(data))
    else:
        utterances, origins, file = list(data), [], ""
    if len(origins) != len(utterances):
        origins = [(file, f"utterance {i}") for i in range(len(utterances))]
    if not utterances and not splits:
        problems.append(Problem(file, "", "no utterances", "add examples for each intent"))
    for utt, (src, where) in zip(utterances, origins, strict=True):
        problems.extend(_utterance_problems(utt, src, where))
    problems.extend(_small_intents(utterances, file, min_per_intent))
    problems.extend(_slot_name_typos(utterances, origins))
    problems.extend(_conflicting_duplicates(utterances, origins))
    if splits:
        problems.extend(_split_coverage(splits, file))
    return problems


def validate_path(path: str | Path, *, min_per_intent: int = 5) -> list[Problem]:
    """Read ``path`` in any supported format and validate it; read errors become problems too."""
    try:
        dataset = load_dataset(path)
    except FormatError as exc:
        return exc.problems
    except DataError as exc:  # raised by the SNIPS benchmark reader, whose message says where
        return [Problem("", "", str(exc))]
    return validate(dataset, min_per_intent=min_per_intent)


def format_problems(problems: Sequence[Problem]) -> str:
    """A report for the terminal: one problem per line with its fix indented under it."""
    if not problems:
        return "no problems found"
    lines = [f"{len(problems)} problem{'s' if len(problems) != 1 else ''}:"]
    for p in problems:
        place = ", ".join(part for part in (p.file, p.where) if part)
        lines.append(f"  {place}: {p.message}" if place else f"  {p.message}")
        if p.fix:
            lines.append(f"      fix: {p.fix}")
    return "\n".join(lines)


def _utterance_problems(utt: Utterance, file: str, where: str) -> list[Problem]:
    problems = []
    if is_blank(utt.text):
        problems.append(
            Problem(file, where, "empty utterance", "write the request's text or delete it")
        )
    previous = None
    for s in sorted(utt.slots, key=lambda s: (s.start, s.end)):
        if not 0 <= s.start <= s.end <= len(utt.text):
            problems.append(
                Problem(
                    file,
                    where,
                    f"slot {s.slot!r} span [{s.start}:{s.end}] lies outside the text "
                    f"{utt.text!r} ({len(utt.text)} characters)",
                    "fix the offsets",
                )
            )
            continue
        value = utt.text[s.start : s.end]
        if is_blank(value):
            problems.append(
                Problem(
                    file,
                    where,
                    f"slot {s.slot!r} is empty in {utt.text!r}",
                    "annotate the spoken value, or remove the annotation",
                )
            )
        if previous is not None and s.start < previous.end:
            problems.append(
                Problem(
                    file,
                    where,
                    f"slot {s.slot!r} ({value!r}) overlaps slot {previous.slot!r} "
                    f"({utt.text[previous.start : previous.end]!r}) in {utt.text!r}",
                    "keep one slot per stretch of text",
                )
            )
        if previous is None or s.end > previous.end:
            previous = s
    return problems


def _unknown_types(data: Dataset) -> list[Problem]:
    builtins = ", ".join(name for name, dim in SNIPS_BUILTINS.items() if dim)
    problems = []
    for slot, kind in data.slot_types.unknown().items():
        file, where = data.slot_types.origins.get(slot, (data.path, ""))
        problems.append(
            Problem(
                file,
                where,
                f"slot {slot!r} has the unknown type {kind!r}: neither a built-in voicenlu "
                "resolves nor a custom entity",
                f"use one of {builtins}, or a custom entity declared in 'entities'",
            )
        )
    return problems


def _small_intents(utterances: Sequence[Utterance], file: str, minimum: int) -> list[Problem]:
    counts = Counter(u.intent for u in utterances if u.intent is not None)
    return [
        Problem(
            file,
            f"intent {intent!r}",
            f"has {n} example{'s' if n != 1 else ''}, fewer than the {minimum} needed",
            f"add at least {minimum - n} more, or remove the intent",
        )
        for intent, n in counts.items()
        if n < minimum
    ]


# A slot name is taken for a typo of another when it is used at most this often, the other at
# least TYPO_RATIO times as often, and they are within one edit (two for names of 8 or more;
# none for names under 3).
TYPO_MAX_USES = 2
TYPO_RATIO = 3


def _slot_name_typos(
    utterances: Sequence[Utterance], origins: Sequence[tuple[str, str]]
) -> list[Problem]:
    """Slot names that look like a misspelling of a common one: rare, and an edit or two away."""
    uses: dict[str, list[int]] = defaultdict(list)
    for i, utt in enumerate(utterances):
        for span in utt.slots:
            uses[span.slot].append(i)
    problems = []
    for rare, where in sorted(uses.items()):
        if len(where) > TYPO_MAX_USES or len(rare) < 3:  # "x" and "y" are not typos of each other
            continue
        limit = 2 if len(rare) >= 8 else 1
        near = [
            name
            for name, used in uses.items()
            if name != rare
            and len(used) >= TYPO_RATIO * len(where)
            and edit_distance(rare.casefold(), name.casefold(), limit) <= limit
        ]
        if not near:
            continue
        common = max(near, key=lambda name: len(uses[name]))
        first = origins[where[0]]
        places = "; ".join(origins[i][1] for i in where)
        problems.append(
            Problem(
                first[0],
                places,
                f"slot {rare!r} is used {len(where)} time{'s' if len(where) != 1 else ''}, and "
                f"{common!r} {len(uses[common])} times: a typo?",
                f"write {common!r}, or give the slot a name further from {common!r} if it is "
                "another slot",
            )
        )
    return problems


def _conflicting_duplicates(
    utterances: Sequence[Utterance], origins: Sequence[tuple[str, str]]
) -> list[Problem]:
    """Texts that differ only in case or spacing but carry different intents."""
    groups: dict[str, list[int]] = defaultdict(list)
    for i, utt in enumerate(utterances):
        groups[" ".join(utt.text.casefold().split())].append(i)
    problems = []
    for indices in groups.values():
        intents = sorted({str(utterances[i].intent) for i in indices})
        if len(intents) < 2:
            continue
        first = utterances[indices[0]]
        file = origins[indices[0]][0]
        places = "; ".join(where for _, where in (origins[i] for i in indices[:4]))
        problems.append(
            Problem(
                file,
                places + ("; ..." if len(indices) > 4 else ""),
                f"{first.text!r} is labelled with different intents: {', '.join(intents)}",
                "keep one intent for this text",
            )
        )
    return problems


def _split_coverage(splits: Mapping[str, Sequence[Utterance]], file: str) -> list[Problem]:
    """Intents and slots that some splits use and others lack."""
    problems = []
    for kind, labels_of in (
        ("intent", lambda u: {u.intent} if u.intent is not None else set()),
        ("slot", lambda u: {s.slot for s in u.slots}),
    ):
        present = {name: set().union(*map(labels_of, utts)) for name, utts in splits.items()}
        for label in sorted(set().union(*present.values())):
            missing = [name for name, labels in present.items() if label not in labels]
            if not missing:
                continue
            having = [name for name in present if name not in missing]
            if "train" in missing:
                fix = f"add training examples with it, or remove it from {', '.join(having)}"
            else:
                fix = f"add examples with it to {', '.join(missing)}, or it goes unevaluated"
            problems.append(
                Problem(
                    file,
                    f"{kind} {label!r}",
                    f"appears in {', '.join(having)} but not in {', '.join(missing)}",
                    fix,
                )
            )
    return problems

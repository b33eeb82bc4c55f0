"""The SNIPS 2017-06 custom-intent-engines benchmark: reader, standard split and statistics.

The split is the one of Goo et al. 2018 (13,084 train / 700 dev / 700 test) that published
results use, applied to the raw benchmark text so casing, punctuation and offsets are kept.
"""

from __future__ import annotations

import json
import random
import re
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from voicenlu.data.records import SlotSpan, Utterance
from voicenlu.data.types import SlotTypes, snips_benchmark_types
from voicenlu.errors import ConfigError, DataError

INTENTS: tuple[str, ...] = (
    "AddToPlaylist",
    "BookRestaurant",
    "GetWeather",
    "PlayMusic",
    "RateBook",
    "SearchCreativeWork",
    "SearchScreeningEvent",
)
UPSTREAM_REPO = "snipsco/nlu-benchmark"
UPSTREAM_COMMIT = "b86ac7f1577868c42158d0dec77db50956046696"
ENGINES_DIR = "2017-06-custom-intent-engines"
SPLIT_SIZES = {"train": 13_084, "dev": 700, "test": 700}

_SURROGATE_PAIR = re.compile("[\ud800-\udbff][\udc00-\udfff]")
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


@dataclass(frozen=True)
class FileRead:
    """The utterances of one benchmark file, in file order, and how many emoji were repaired."""

    utterances: list[Utterance]
    repairs: int


@dataclass(frozen=True)
class SnipsData:
    """The standard split, the number of CESU-8 repairs made reading it, the data commit, and
    the types shipped for the benchmark's slots."""

    train: list[Utterance]
    dev: list[Utterance]
    test: list[Utterance]
    repairs: int
    commit: str = UPSTREAM_COMMIT
    slot_types: SlotTypes = field(default_factory=snips_benchmark_types)

    def splits(self) -> dict[str, list[Utterance]]:
        return {"train": self.train, "dev": self.dev, "test": self.test}


def decode_json_bytes(raw: bytes, path: str | Path) -> tuple[str, int]:
    """Decode a benchmark file, repairing emoji that were written as CESU-8 surrogate pairs.

    ``train_PlayMusic_full.json`` encodes astral characters as two 3-byte surrogates
    (ED A0-AF xx ED B0-BF xx), which strict UTF-8 rejects. Each pair becomes its real
    character so no utterance is lost; the count of repairs is returned.
    """
    try:
        return raw.decode("utf-8"), 0
    except UnicodeDecodeError:
        pass
    try:
        # surrogatepass accepts the encoded surrogates but still rejects any other bad byte,
        # reporting its offset in the original bytes.
        text = raw.decode("utf-8", errors="surrogatepass")
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{path}: invalid UTF-8 at byte offset {exc.start} ({exc.reason}); "
            "the file is corrupted: download it again (voicenlu data download)"
        ) from None
    text, repairs = _SURROGATE_PAIR.subn(_join_surrogates, text)
    lone = _LONE_SURROGATE.search(text)
    if lone is not None:
        offset = len(text[: lone.start()].encode("utf-8", errors="surrogatepass"))
        raise DataError(
            f"{path}: invalid UTF-8 at byte offset {offset} (unpaired surrogate "
            f"U+{ord(lone.group()):04X}); the file is corrupted: download it again "
            "(voicenlu data download)"
        )
    return text, repairs


def _join_surrogates(match: re.Match[str]) -> str:
    high, low = (ord(c) for c in match.group())
    return chr(0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00))


def read_benchmark_file(path: str | Path, intent: str) -> FileRead:
    """Read one ``train_*`` or ``validate_*`` file into utterances of ``intent``.

    The text is the concatenation of the chunk texts. A slot's span drops the chunk's
    leading/trailing whitespace (some gold chunks are ``"in a year "``) so that
    ``text[start:end]`` is a clean value; an all-whitespace slot chunk gives no slot.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(
            f"cannot read {path}: {exc.strerror}; fetch the data with `voicenlu data download`"
        ) from None
    text, repairs = decode_json_bytes(raw, path)
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(
            f"{path}: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
        ) from None
    if not isinstance(doc, dict) or intent not in doc:
        found = sorted(doc) if isinstance(doc, dict) else type(doc).__name__
        raise DataError(f"{path}: expected a top-level object with key {intent!r}, found {found}")
    items = doc[intent]
    if not isinstance(items, list):
        raise DataError(f"{path}: {intent!r} must be a list of utterances")
    return FileRead(
        [_parse_utterance(item, intent, path, i) for i, item in enumerate(items)], repairs
    )


def _parse_utterance(item: object, intent: str, path: Path, index: int) -> Utterance:
    where = f"{path}: utterance {index}"
    if not isinstance(item, dict) or not isinstance(item.get("data"), list):
        raise DataError(f"{where}: expected an object with a 'data' list of chunks")
    text_parts: list[str] = []
    slots: list[SlotSpan] = []
    offset = 0
    for j, chunk in enumerate(item["data"]):
        if not isinstance(chunk, dict):
            raise DataError(f"{where}, chunk {j}: expected an object, got {type(chunk).__name__}")
        chunk_text = chunk.get("text")
        if not isinstance(chunk_text, str):
            raise DataError(f"{where}, chunk {j}: field 'text' must be a string")
        entity = chunk.get("entity")
        if entity is not None and (not isinstance(entity, str) or not entity):
            raise DataError(f"{where}, chunk {j}: field 'entity' must be a non-empty string")
        if entity is not None and chunk_text.strip():
            start = offset + len(chunk_text) - len(chunk_text.lstrip())
            end = offset + len(chunk_text.rstrip())
            slots.append(SlotSpan(entity, start, end))
        text_parts.append(chunk_text)
        offset += len(chunk_text)
    return Utterance("".join(text_parts), intent, tuple(slots))


def engines_dir(root: str | Path) -> Path:
    """The ``2017-06-custom-intent-engines`` folder, given it or the folder that holds it."""
    root = Path(root)
    if (root / ENGINES_DIR).is_dir():
        return root / ENGINES_DIR
    if (root / INTENTS[0]).is_dir():
        return root
    raise DataError(
        f"{root}: no {ENGINES_DIR}/ folder here; fetch the data with `voicenlu data download` "
        "or point at a copy of snipsco/nlu-benchmark"
    )


def _test_index() -> dict[str, set[int]]:
    """The shipped test membership: intent -> 0-based indices into ``train_<Intent>_full.json``."""
    ref = resources.files("voicenlu.data").joinpath("snips_test_index.json")
    entries = json.loads(ref.read_text(encoding="utf-8"))["test"]
    index: dict[str, set[int]] = defaultdict(set)
    for entry in entries:
        if entry["intent"] not in INTENTS or entry["index"] in index[entry["intent"]]:
            raise DataError(f"snips_test_index.json: bad or duplicate entry {entry}")
        index[entry["intent"]].add(entry["index"])
    return index


def load_snips(root: str | Path) -> SnipsData:
    """Load the standard split from a data root (see ``ensure_data``)."""
    base = engines_dir(root)
    test_index = _test_index()
    train: list[Utterance] = []
    dev: list[Utterance] = []
    test: list[Utterance] = []
    repairs = 0
    for intent in INTENTS:
        full_path = base / intent / f"train_{intent}_full.json"
        full = read_benchmark_file(full_path, intent)
        outside = sorted(i for i in test_index[intent] if i >= len(full.utterances))
        if outside:
            raise DataError(
                f"{full_path}: has {len(full.utterances)} utterances but the test index "
                f"points at {outside}; the file is not the pinned upstream version "
                f"({UPSTREAM_COMMIT[:7]}): download it again"
            )
        for i, utt in enumerate(full.utterances):
            (test if i in test_index[intent] else train).append(utt)
        valid = read_benchmark_file(base / intent / f"validate_{intent}.json", intent)
        dev.extend(valid.utterances)
        repairs += full.repairs + valid.repairs
    data = SnipsData(train=train, dev=dev, test=test, repairs=repairs)
    sizes = {name: len(utts) for name, utts in data.splits().items()}
    if sizes != SPLIT_SIZES:
        raise DataError(
            f"{base}: split sizes {sizes} differ from the standard {SPLIT_SIZES}; "
            "the files are not the pinned upstream version: download them again"
        )
    return data


def load_small_train(root: str | Path) -> list[Utterance]:
    """The 300-per-intent ``train_<Intent>.json`` files (2,100 utterances), for learning curves.

    They are a subset of the ``_full`` files, so some overlap the standard test set: use
    them only with the dev set for choices.
    """
    base = engines_dir(root)
    out: list[Utterance] = []
    for intent in INTENTS:
        out.extend(read_benchmark_file(base / intent / f"train_{intent}.json", intent).utterances)
    return out


def stratified_slice(
    utterances: Sequence[Utterance], per_intent: int, seed: int
) -> list[Utterance]:
    """Up to ``per_intent`` utterances of each intent, chosen at random but reproducibly.

    Each intent draws from its own generator seeded by ``(seed, intent)``, so an intent's pick
    does not depend on which other intents are present; the input order is kept.
    """
    if per_intent < 0:
        raise ConfigError(f"per_intent must be >= 0, got {per_intent}")
    positions: dict[str | None, list[int]] = defaultdict(list)
    for i, utt in enumerate(utterances):
        positions[utt.intent].append(i)
    keep: set[int] = set()
    for intent, idx in positions.items():
        rng = random.Random(f"{seed}/{intent}")
        keep.update(idx if len(idx) <= per_intent else rng.sample(idx, per_intent))
    return [utt for i, utt in enumerate(utterances) if i in keep]


def holdout(
    utterances: Sequence[Utterance], fraction: float, seed: int
) -> tuple[list[Utterance], list[Utterance]]:
    """(train, dev): ``fraction`` of each intent (at least one, if it has 5+) held out for dev.

    For user data, which has no dev set of its own: dev chooses the checkpoint and calibrates.
    A ``fraction`` of 0 holds nothing out.
    """
    if fraction <= 0:
        return list(utterances), []
    counts = Counter(u.intent for u in utterances)
    dev: list[Utterance] = []
    for intent, n in counts.items():
        k = max(1, round(fraction * n)) if n >= 5 else 0
        dev += stratified_slice([u for u in utterances if u.intent == intent], k, seed)
    chosen = {id(u) for u in dev}
    return [u for u in utterances if id(u) not in chosen], dev


@dataclass(frozen=True)
class StatsRow:
    """One line of ``voicenlu data stats``: a count per split for a total, an intent or a slot."""

    group: str  # "total", "intent" or "slot"
    name: str
    counts: dict[str, int]


def stats(data: SnipsData | Mapping[str, Sequence[Utterance]]) -> list[StatsRow]:
    """Utterances per intent and slot occurrences per slot type, for each split."""
    splits = data.splits() if isinstance(data, SnipsData) else dict(data)
    intents: dict[str, Counter[str]] = {}
    slots: dict[str, Counter[str]] = {}
    for name, utts in splits.items():
        intents[name] = Counter(u.intent or "(none)" for u in utts)
        slots[name] = Counter(s.slot for u in utts for s in u.slots)
    rows = [StatsRow("total", "utterances", {n: len(u) for n, u in splits.items()})]
    rows.append(StatsRow("total", "slots", {n: sum(c.values()) for n, c in slots.items()}))
    for group, counters in (("intent", intents), ("slot", slots)):
        names = sorted(set().union(*counters.values()))
        rows.extend(StatsRow(group, k, {n: c[k] for n, c in counters.items()}) for k in names)
    return rows


def format_stats(rows: Sequence[StatsRow]) -> str:
    """Render ``stats`` rows as an aligned text table."""
    if not rows:
        return ""
    splits = list(rows[0].counts)
    header = ["group", "name", *splits]
    body = [[r.group, r.name, *(f"{r.counts.get(s, 0):,}" for s in splits)] for r in rows]
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]

    def render(line: list[str]) -> str:
        left = [cell.ljust(w) for cell, w in zip(line[:2], widths[:2], strict=True)]
        right = [cell.rjust(w) for cell, w in zip(line[2:], widths[2:], strict=True)]
        return "  ".join(left + right).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([render(header), rule, *(render(line) for line in body)])

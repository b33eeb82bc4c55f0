"""Training data with its origin: the SNIPS standard split or a user's file, split for dev.

The origin goes into the bundle's manifest, so every command after ``train`` can find the
same data again (the same dev split, the same test set) without being told, and can say
what is missing when it is gone.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from voicenlu.config import DEV_FRACTION, MIN_DEV_PER_INTENT, TrainConfig
from voicenlu.data.download import ensure_data
from voicenlu.data.formats import load_dataset
from voicenlu.data.records import Utterance
from voicenlu.data.snips import (
    UPSTREAM_COMMIT,
    SnipsData,
    holdout,
    load_snips,
    stratified_slice,
)
from voicenlu.data.types import SlotTypes
from voicenlu.data.validate import format_problems, validate
from voicenlu.errors import DataError
from voicenlu.hashing import file_sha256

SNIPS_LANGUAGE = "en"


@dataclass
class TrainData:
    """The utterances to learn from and to choose checkpoints on, and where they came from.

    ``test`` is the held-out set a bundle is scored on; data without one (a user's file) is
    scored on ``dev``. Data too small to spare a dev set has none: every utterance is trained
    on, for a fixed schedule. ``source`` is the origin recorded in the bundle (see
    ``describe``); ``slot_types`` the slot types it records for resolving slot values.
    """

    train: list[Utterance]
    dev: list[Utterance]
    test: list[Utterance] | None = None
    source: dict = dataclasses.field(default_factory=dict)
    slot_types: SlotTypes = dataclasses.field(default_factory=SlotTypes)

    @property
    def evaluation(self) -> tuple[str, list[Utterance]]:
        """(split name, utterances) to report a model's figures on: held out if anything is,
        else the training utterances themselves (``train``: in-sample figures)."""
        if self.test:
            return "test", self.test
        return ("dev", self.dev) if self.dev else ("train", self.train)

    @property
    def checks(self) -> list[Utterance]:
        """What calibration and the export and int8 checks run on: dev, or without one the
        training utterances."""
        return self.dev or self.train


def snips_data(data_dir: str | Path | None = None, **slicing) -> TrainData:
    """The SNIPS standard split, fetched first if missing, sliced as ``snips_split`` does."""
    return snips_split(load_snips(ensure_data(data_dir)), **slicing)


def snips_split(
    snips: SnipsData,
    per_intent: int = 0,
    seed: int = 0,
    dev_per_intent: int = 0,
    dev_seed: int | None = None,
    exclude: tuple[str, ...] = (),
    final_fit: bool = False,
) -> TrainData:
    """The standard split as training data, optionally sliced; the slicing is recorded.

    ``per_intent`` keeps that many training utterances per intent (drawn with ``seed``),
    ``dev_per_intent`` that many dev utterances (drawn with ``dev_seed``, default ``seed``);
    ``exclude`` drops intents from every split (the out-of-scope folds). The test set is
    kept whole otherwise. ``final_fit`` drops dev, as a user's file too small for one does.
    The arguments are recorded, so a bundle finds its data again.
    """
    dev_seed = seed if dev_seed is None else dev_seed
    train, dev, test = snips.train, snips.dev, snips.test
    if exclude:
        train, dev, test = ([u for u in s if u.intent not in exclude] for s in (train, dev, test))
    if per_intent:
        train = stratified_slice(train, per_intent, seed)
    if dev_per_intent:
        dev = stratified_slice(dev, dev_per_intent, dev_seed)
    if final_fit:
        dev = []
    source = {
        "kind": "snips",
        "description": f"SNIPS 2017-06 at commit {snips.commit} with the standard split "
        "(Goo et al. 2018)",
        "commit": snips.commit,
        "split": "goo2018",
        "per_intent": per_intent,
        "seed": seed,
        "dev_per_intent": dev_per_intent,
        "dev_seed": dev_seed,
        "exclude": list(exclude),
        "final_fit": final_fit,
        "language": SNIPS_LANGUAGE,
    }
    return TrainData(train=train, dev=dev, test=test, source=source, slot_types=snips.slot_types)


def dev_fraction(utterances: list[Utterance]) -> float:
    """``DEV_FRACTION``, or 0 when that share would give a dev set too small to choose with
    (fewer than ``MIN_DEV_PER_INTENT`` per intent on average): every utterance is trained on."""
    _, dev = holdout(utterances, DEV_FRACTION, 0)
    intents = len({u.intent for u in utterances})
    return DEV_FRACTION if len(dev) >= MIN_DEV_PER_INTENT * intents else 0.0


def file_data(path: str | Path, seed: int, fraction: float | None = None) -> TrainData:
    """A user's dataset, validated first (refused with the full report), ``fraction`` of each
    intent held out as dev with ``seed`` (default: ``dev_fraction``)."""
    path = Path(path)
    dataset = load_dataset(path)
    problems = validate(dataset)
    if problems:
        raise DataError(f"{path} is not ready for training.\n{format_problems(problems)}")
    if fraction is None:
        fraction = dev_fraction(dataset.utterances)
    train, dev = holdout(dataset.utterances, fraction, seed)
    source = _file_source(path, dataset, {"holdout": fraction, "seed": seed})
    return TrainData(train=train, dev=dev, source=source, slot_types=dataset.slot_types)


def evaluation_file(path: str | Path, like: dict | None = None) -> TrainData:
    """Data given with ``--data`` to a command after training: every utterance is scored.

    Train and dev (for pruning) are drawn from it as the bundle drew its own (``like``: the
    bundle's recorded origin), so a copy of the training file gives the same split.
    """
    path = Path(path)
    dataset = load_dataset(path)
    if not dataset.utterances:
        raise DataError(f"{path} has no utterances.")
    split = (like or {}).get("dev_split") or {"holdout": DEV_FRACTION, "seed": TrainConfig.seed}
    train, dev = holdout(dataset.utterances, split["holdout"], split["seed"])
    return TrainData(
        train=train,
        dev=dev or dataset.utterances,
        test=dataset.utterances,
        source=_file_source(path, dataset, split),
        slot_types=dataset.slot_types,
    )


def _file_source(path: Path, dataset, dev_split: dict) -> dict:
    """The origin of a user's file as a bundle records it: enough to find the file again,
    notice that it changed, and split it the same way (``dev_split``: holdout and seed)."""
    return {
        "kind": "file",
        "description": f"{path.name} ({dataset.format})",
        "format": dataset.format,
        "name": path.name,
        "path": str(path.resolve()),
        "sha256": data_sha256(path),
        "dev_split": dev_split,
        "language": dataset.language,
        "has_slots": dataset.has_slots,
    }


def recorded_data(origin: dict, data_dir: str | Path | None = None) -> TrainData:
    """The data a bundle was trained on, found again from its recorded ``origin``."""
    kind = origin.get("kind")
    if kind == "snips":
        if origin.get("commit") != UPSTREAM_COMMIT:
            raise DataError(
                f"This bundle was trained on SNIPS at commit {origin.get('commit')}, but this "
                f"voicenlu reads commit {UPSTREAM_COMMIT}: pass --data PATH to choose data."
            )
        return snips_data(
            data_dir,
            per_intent=origin["per_intent"],
            seed=origin["seed"],
            dev_per_intent=origin["dev_per_intent"],
            dev_seed=origin["dev_seed"],
            exclude=tuple(origin["exclude"]),
            final_fit=origin.get("final_fit", False),
        )
    if kind == "file":
        path = Path(origin["path"])
        if not path.exists():
            raise DataError(
                f"The training data of this bundle, {path}, is gone: pass --data PATH with a "
                "copy of it (or other data to score on)."
            )
        if data_sha256(path) != origin.get("sha256"):
            raise DataError(
                f"{path} changed since this bundle was trained (its SHA-256 differs), so its "
                "dev split is no longer the one training held out: pass --data PATH to use it "
                "anyway."
            )
        split = origin["dev_split"]
        data = file_data(path, split["seed"], split["holdout"])
        return dataclasses.replace(data, source=origin)
    raise DataError(
        "This bundle does not record where its training data came from: pass --data PATH."
    )


def describe(data: TrainData) -> dict:
    """The origin plus what the data holds, for the manifest and the model card."""
    slots = Counter(s.slot for u in data.train for s in u.slots)
    return data.source | {
        "train": len(data.train),
        "dev": len(data.dev),
        "test": len(data.test) if data.test else 0,
        "intents": dict(sorted(Counter(u.intent for u in data.train).items())),
        "slots": dict(sorted(slots.items())),
    }


def data_sha256(path: Path) -> str:
    """SHA-256 of a data file; of a folder (the SNIPS benchmark layout), of its files in order."""
    path = Path(path)
    if path.is_file():
        return file_sha256(path)
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(str(file.relative_to(path)).encode() + b"\0" + file_sha256(file).encode())
    return digest.hexdigest()

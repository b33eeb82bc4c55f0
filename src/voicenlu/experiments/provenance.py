"""Where a committed figure came from: the code, the command, the data and the bundle.

Every benchmark script (and ``voicenlu bench``) puts the fields of ``provenance(...)`` at the
top of the JSON it writes, so a reader (and a test) can tell whether a figure is current: the
commit it ran at (and whether the tree had uncommitted changes), when, the exact command, the
SHA-256 of the data it read, and the bundle's manifest digest and training configuration, with
each setting the benchmark chose over today's default under ``config_differs`` and why.

    from voicenlu.experiments.provenance import provenance
    result = {**provenance(bundle=bundle, data=[data_file]), ...}
"""

from __future__ import annotations

import dataclasses
import datetime
import shlex
import subprocess
import sys
from pathlib import Path

from voicenlu.bundle import read_manifest
from voicenlu.config import TrainConfig
from voicenlu.data.training import data_sha256

PACKAGE = Path(__file__).resolve().parent.parent
ROOT = PACKAGE.parent.parent  # the checkout's root, when the package runs from one


# What benchmarks write: a figure made after another in the same sitting is still of clean code.
FIGURES = [f":(top,exclude,glob)benchmarks/**/*.{ext}" for ext in ("json", "md", "png", "svg")]


def git_commit() -> tuple[str | None, bool]:
    """HEAD of the project's checkout and whether tracked files other than figures differ from
    it; (None, True) for an installed package, which no commit describes."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=PACKAGE, capture_output=True, text=True, check=True
        ).stdout.strip()

    try:
        if Path(git("rev-parse", "--show-toplevel")).resolve() != ROOT:
            return None, True  # site-packages inside some other repository
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no", "--", ":/", *FIGURES))
    except (OSError, subprocess.CalledProcessError):
        return None, True
    return commit, dirty


def command_line() -> str:
    """The command as it was typed: ``voicenlu ...``, or a script with its path relative to
    the repository."""
    script = Path(sys.argv[0]).resolve()
    if script.name in ("voicenlu", "__main__.py"):
        return shlex.join(["voicenlu", *sys.argv[1:]])
    try:
        script = script.relative_to(ROOT)
    except ValueError:
        pass
    return shlex.join(["python", str(script), *sys.argv[1:]])


def provenance(
    bundle: str | Path | None = None,
    data: list[str | Path] | tuple[str | Path, ...] = (),
    differs: dict[str, str] | None = None,
) -> dict:
    """The record of one run: commit, created (UTC), command, data digests, bundle digest and
    training configuration (from its manifest).

    ``differs`` names each training setting the benchmark chose on purpose over today's
    ``TrainConfig`` default, with the reason, so a test can tell a deliberate difference
    from a figure made by an outdated recipe."""
    commit, dirty = git_commit()
    record = {
        "commit": commit,
        "uncommitted_changes": dirty,
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": command_line(),
        "data": {str(path): data_sha256(Path(path)) for path in data},
    }
    if bundle is not None:
        manifest = read_manifest(Path(bundle), verify=False)
        record["bundle"] = {
            "path": str(bundle),
            "digest": manifest.get("digest"),
            "training": manifest.get("training"),
            "data_origin": {
                k: v
                for k, v in manifest.get("data", {}).items()
                if k not in ("intents", "slots", "path")
            },
        }
    if differs:
        record["config_differs"] = dict(differs)
    return record


def undeclared_differences(result: dict) -> dict[str, tuple]:
    """Training settings of a result's bundle that differ from today's ``TrainConfig``
    defaults and are not declared under ``config_differs``: {setting: (then, now)}."""
    bundle = result.get("bundle")  # older results name the bundle's path only
    training = bundle.get("training") if isinstance(bundle, dict) else None
    if not training:
        return {}
    today = dataclasses.asdict(TrainConfig())
    declared = result.get("config_differs", {})
    return {
        key: (value, today[key])
        for key, value in training.items()
        if key in today and value != today[key] and key not in declared
    }

"""The model bundle: one directory holding everything needed to serve a model.

``voicenlu.json`` is the manifest: format version, labels, tokenizer settings, calibration,
training record, the training data's origin and a SHA-256 for every file it lists. Loading
checks all of it, so a bundle that was half copied or tampered with is refused with the file
named, not served wrongly.

This module is the only writer of bundle files. Every file is written under a temporary name
and renamed into place, so a reader sees the old file or the new one, never half of one;
files get mode ``FILE_MODE`` (0644: readable by everyone, as a model shipped to a server
must be, writable by its owner). A new bundle's manifest says ``"complete": false`` until
the last file is in; a run that stops halfway leaves a bundle that loading refuses and that
resumed experiments train again.

The manifest also records a SHA-256 digest of its own content (``digest``: labels,
calibration, settings and the checksums of the files), so an edited manifest is refused like
an edited file, and its fields are checked at load, each error naming its field. The digest
is what ``voicenlu bundle sign`` signs.

Only the standard library is used here: the torch-free runtime loads bundles too.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

from voicenlu.calibration import RANKED, SCORES
from voicenlu.errors import BundleError
from voicenlu.hashing import file_sha256

# 2: the completion marker and the training data's origin; 3: the manifest's digest of itself
FORMAT_VERSION = 3
MANIFEST = "voicenlu.json"
FILE_MODE = 0o644
DIR_MODE = 0o755


def create(bundle: Path, manifest: dict) -> None:
    """Start a new, incomplete bundle at ``bundle``, replacing an earlier bundle there.

    A folder that exists and is not a bundle is left alone: nothing is deleted that voicenlu
    did not write.
    """
    bundle = Path(bundle)
    if bundle.exists():
        if (bundle / MANIFEST).is_file():
            shutil.rmtree(bundle)
        elif any(bundle.iterdir()):
            raise BundleError(
                f"{bundle} exists and is not a voicenlu bundle: choose another output directory "
                "or empty this one."
            )
    bundle.mkdir(parents=True, exist_ok=True)
    bundle.chmod(DIR_MODE)
    _write_manifest(
        bundle, {"format_version": FORMAT_VERSION, "complete": False, **manifest, "files": {}}
    )


def put_file(bundle: Path, name: str, write: Callable[[Path], object]) -> None:
    """Write file ``name`` with ``write(path)`` and record its checksum.

    The old entry leaves the manifest before the new file takes its place, so a run stopped
    in between leaves a bundle without that file, never a file that fails its checksum.
    """
    bundle = Path(bundle)
    tmp = bundle / f".{name}.partial"
    tmp.unlink(missing_ok=True)
    try:
        write(tmp)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _install(bundle, [(tmp, name)])


def put_text(bundle: Path, name: str, text: str) -> None:
    """Write a text file (UTF-8) into the bundle and record its checksum."""
    put_file(bundle, name, lambda path: path.write_text(text, encoding="utf-8"))


def put_unlisted_text(bundle: Path, name: str, text: str) -> Path:
    """Write a text file (UTF-8) that the manifest does not list: the manifest itself, and the
    signature (``voicenlu.sig``), which signs the manifest's digest and so cannot be in it."""
    path = Path(bundle) / name
    tmp = path.with_name(f".{name}.partial")
    tmp.write_text(text, encoding="utf-8")
    tmp.chmod(FILE_MODE)
    os.replace(tmp, path)
    return path


def put_files(bundle: Path, write: Callable[[Path], object]) -> list[str]:
    """Let ``write(folder)`` fill a temporary folder (a tokenizer's files), then move every
    file in and record it. Returns the names."""
    bundle = Path(bundle)
    with tempfile.TemporaryDirectory(dir=bundle, prefix=".partial-") as tmp:
        write(Path(tmp))
        moves = [(p, p.name) for p in sorted(Path(tmp).iterdir()) if p.is_file()]
        _install(bundle, moves)
    return [name for _, name in moves]


def put_folder(bundle: Path, name: str, write: Callable[[Path], object]) -> None:
    """Replace the folder ``name`` (the report) with what ``write(folder)`` puts in a new one.

    Its files are derived (figures, tables) and not checksummed.
    """
    bundle = Path(bundle)
    tmp = Path(tempfile.mkdtemp(dir=bundle, prefix=".partial-"))
    try:
        write(tmp)
        for path in [tmp, *tmp.rglob("*")]:
            path.chmod(DIR_MODE if path.is_dir() else FILE_MODE)
        shutil.rmtree(bundle / name, ignore_errors=True)
        tmp.rename(bundle / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def update_manifest(bundle: Path, **fields) -> dict:
    """Set top-level manifest fields (metrics summary, calibration...) and return the manifest."""
    manifest = read_manifest(bundle, verify=False, require_complete=False)
    manifest.update(fields)
    _write_manifest(Path(bundle), manifest)
    return manifest


def mark_complete(bundle: Path) -> None:
    """The last write of a new bundle: from now on it loads."""
    update_manifest(bundle, complete=True)


def is_complete(bundle: Path) -> bool:
    """Whether ``bundle`` is a finished bundle of this format (for runs that resume)."""
    try:
        read_manifest(bundle, verify=False)
    except BundleError:
        return False
    return True


def manifest_digest(manifest: dict) -> str:
    """SHA-256 of the manifest without its ``digest`` field, as canonical JSON (sorted keys)."""
    content = {k: v for k, v in manifest.items() if k != "digest"}
    text = json.dumps(content, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def read_manifest(
    bundle: Path | str,
    verify: bool | Iterable[str] = True,
    need: tuple[str, ...] = (),
    require_complete: bool = True,
) -> dict:
    """The manifest of a bundle, after checking its version, digest, fields and checksums.

    ``verify``: True checks every listed file present, False none, a list of names exactly
    those (a server checks the files it reads, and no others). Files in ``need`` must exist.
    ``require_complete=False`` is for the pipeline, which reads a bundle it is still writing.
    """
    bundle = Path(bundle)
    if not bundle.exists():
        raise BundleError(
            f"No model bundle at {bundle}: the directory does not exist. "
            "Train one with `voicenlu train --output-dir DIR` and pass DIR/bundle."
        )
    if not bundle.is_dir():
        raise BundleError(
            f"{bundle} is a file, not a bundle: pass the bundle's directory (the one holding "
            f"{MANIFEST})."
        )
    path = bundle / MANIFEST
    if not path.is_file():
        if (bundle / "bundle" / MANIFEST).is_file():
            raise BundleError(
                f"{bundle} is a training run folder, not a bundle: did you mean "
                f"{bundle / 'bundle'}?"
            )
        raise BundleError(f"{bundle} is not a voicenlu bundle: {MANIFEST} is missing.")
    try:
        manifest = json.loads(_read(path).decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"{path} is not valid JSON: {exc}") from exc
    version = manifest.get("format_version") if isinstance(manifest, dict) else None
    if version != FORMAT_VERSION:
        raise BundleError(
            f"{path}: bundle format version {version!r}, but this voicenlu reads version "
            f"{FORMAT_VERSION} (which records the training data, when the bundle is complete "
            "and a digest of the manifest). Train the bundle again with this version."
        )
    if manifest.get("digest") != manifest_digest(manifest):
        raise BundleError(
            f"{path} was changed after the bundle was written: its content no longer matches "
            "the digest it records (an edited label, threshold or checksum is never served). "
            "Copy the bundle again or train it again."
        )
    if require_complete and manifest.get("complete") is not True:
        raise BundleError(
            f"{bundle} is an incomplete bundle: the run that wrote it stopped before it "
            "finished. Run that command again (`voicenlu train --resume` continues training "
            "from its last checkpoint)."
        )
    check_fields(manifest, path, complete=require_complete)
    files = manifest["files"]
    for name in need:
        if name not in files or not (bundle / name).is_file():
            raise BundleError(f"{bundle}: the bundle has no {name}.")
    if verify is True:
        verify_files(bundle, manifest, [n for n in files if (bundle / n).is_file()])
    elif verify:
        verify_files(bundle, manifest, verify)
    return manifest


def verify_files(bundle: Path, manifest: dict, names: Iterable[str]) -> None:
    """Check ``names`` against the checksums the manifest records; each must be listed."""
    for name in names:
        file = Path(bundle) / name
        if name not in manifest["files"]:
            raise BundleError(f"{bundle}: {name} is not listed in {MANIFEST}.")
        if _checksum(file) != manifest["files"][name]:
            raise BundleError(
                f"{file} does not match the checksum recorded in {MANIFEST}: the file was "
                "changed or damaged after the bundle was written. Copy the bundle again "
                "or re-export it."
            )


def _read(file: Path) -> bytes:
    """A bundle file's bytes, or a one-line error saying why it cannot be read."""
    try:
        return file.read_bytes()
    except OSError as exc:
        raise _unreadable(file, exc) from None


def _checksum(file: Path) -> str:
    try:
        return file_sha256(file)
    except OSError as exc:
        raise _unreadable(file, exc) from None


def _unreadable(file: Path, exc: OSError) -> BundleError:
    if isinstance(exc, FileNotFoundError):
        return BundleError(f"{file} is missing: copy the bundle again.")
    if isinstance(exc, IsADirectoryError):
        return BundleError(f"{file} is a directory, where the bundle needs a file.")
    if isinstance(exc, PermissionError):
        return BundleError(
            f"Cannot read {file}: permission denied. Make the bundle readable by this user "
            f"(bundles are written with mode {FILE_MODE:o}: `chmod -R a+rX {file.parent}`)."
        )
    return BundleError(f"Cannot read {file}: {exc.strerror or exc}.")


SHA256 = re.compile(r"[0-9a-f]{64}")
# Sub-tokens a bundle may ask its model to read; loading also runs the model at its own
# max_length, so this only keeps that check cheap (no encoder served here reads more).
MAX_LENGTH = 4096


def check_fields(manifest: dict, path: Path, complete: bool = True) -> None:
    """The manifest's fields have the types and ranges loading relies on; say which does not.

    A bundle still being written (``complete=False``) has only some of them yet.
    """

    def bad(field: str, expected: str) -> BundleError:
        value = manifest
        for part in field.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        shown = repr(value) if len(repr(value)) < 60 else repr(value)[:57] + "..."
        return BundleError(f"{path}: {field} must be {expected}, not {shown}.")

    def number(value) -> bool:
        return (
            isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
        )

    files = manifest.get("files")
    if not isinstance(files, dict) or not all(
        isinstance(v, str) and SHA256.fullmatch(v) for v in files.values()
    ):
        raise bad("files", "an object of file names and SHA-256 checksums")
    if not complete and "intents" not in manifest:
        return
    intents = manifest.get("intents")
    if not (
        isinstance(intents, list)
        and intents
        and all(isinstance(i, str) and i for i in intents)
        and len(set(intents)) == len(intents)
    ):
        raise bad("intents", "a list of distinct intent names")
    tags = manifest.get("slot_tags")
    if not (
        isinstance(tags, list)
        and tags[:1] == ["O"]
        and all(isinstance(t, str) and t[:2] in ("B-", "I-") and t[2:] for t in tags[1:])
        and len(set(tags)) == len(tags)
    ):
        raise bad("slot_tags", 'a list of distinct tags, "O" first and then B-/I- tags')
    for field, least, most in (("max_length", 2, MAX_LENGTH), ("pad_token_id", 0, None)):
        value = manifest.get(field)
        if not (
            isinstance(value, int)
            and not isinstance(value, bool)
            and least <= value <= (most or value)
        ):
            bounds = f"from {least} to {most}" if most else f"of at least {least}"
            raise bad(field, f"a whole number {bounds}")
    if not isinstance(manifest.get("backbone"), str):
        raise bad("backbone", "the name or path of the encoder")
    # The calibration, and the int8 graph's own when quantization fitted one.
    int8 = manifest.get("quantization", {}).get("calibration")
    for field, calibration in (("calibration", manifest.get("calibration", {})),) + (
        (("quantization.calibration", int8),) if int8 is not None else ()
    ):
        if not isinstance(calibration, dict):
            raise bad(field, "an object")
        if "temperature" in calibration and not (
            number(calibration["temperature"]) and calibration["temperature"] > 0
        ):
            raise bad(f"{field}.temperature", "a number above 0")
        if "threshold" in calibration and not (
            number(calibration["threshold"]) and 0 <= calibration["threshold"] <= 1
        ):
            raise bad(f"{field}.threshold", "a number from 0 to 1")
        if calibration.get("score", "max_softmax") not in SCORES:
            raise bad(f"{field}.score", f"one of {', '.join(SCORES)}")
        for key, scores in (("reference", RANKED), ("reference_softmax", ("mahalanobis_softmax",))):
            reference = calibration.get(key)
            if calibration.get("score") in scores and not (
                isinstance(reference, list) and reference and all(map(number, reference))
            ):
                raise bad(f"{field}.{key}", "a list of numbers (the dev set's scores)")
    lexical = manifest.get("lexical")
    if lexical is not None and not (
        isinstance(lexical, dict) and number(lexical.get("weight")) and lexical["weight"] > 0
    ):
        raise bad("lexical", 'null or {"weight": a number above 0}')
    segmenter = manifest.get("segmenter")
    if segmenter is not None and not (
        isinstance(segmenter, dict)
        and number(segmenter.get("threshold"))
        and 0 < segmenter["threshold"] < 1
    ):
        raise bad("segmenter", 'null or {"threshold": a number between 0 and 1, ...}')


def _install(bundle: Path, moves: list[tuple[Path, str]]) -> None:
    """Move temporary files to their names, dropping and then recording their checksums."""
    manifest = read_manifest(bundle, verify=False, require_complete=False)
    if any(name in manifest["files"] for _, name in moves):
        for _, name in moves:
            manifest["files"].pop(name, None)
        _write_manifest(bundle, manifest)
    for tmp, name in moves:
        tmp.chmod(FILE_MODE)
        os.replace(tmp, bundle / name)
        manifest["files"][name] = file_sha256(bundle / name)
    _write_manifest(bundle, manifest)


def _write_manifest(bundle: Path, manifest: dict) -> None:
    manifest = {**manifest, "digest": manifest_digest(manifest)}
    put_unlisted_text(bundle, MANIFEST, json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")

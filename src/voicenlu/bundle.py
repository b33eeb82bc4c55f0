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

Only the standard library is used here: the torch-free runtime loads bundles too.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from voicenlu.data.download import file_sha256 as sha256_file
from voicenlu.errors import BundleError

FORMAT_VERSION = 2  # 2: the completion marker and the training data's origin
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


def read_manifest(
    bundle: Path | str,
    verify: bool = True,
    need: tuple[str, ...] = (),
    require_complete: bool = True,
) -> dict:
    """The manifest of a bundle, after checking its version, completeness and checksums.

    With ``verify``, every listed file present is checked; files in ``need`` must exist.
    ``require_complete=False`` is for the pipeline, which reads a bundle it is still writing.
    """
    bundle = Path(bundle)
    if not bundle.is_dir():
        raise BundleError(
            f"No model bundle at {bundle}: the directory does not exist. "
            "Train one with `voicenlu train --output-dir DIR` and pass DIR/bundle."
        )
    path = bundle / MANIFEST
    if not path.is_file():
        raise BundleError(f"{bundle} is not a voicenlu bundle: {MANIFEST} is missing.")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"{path} is not valid JSON: {exc}") from exc
    version = manifest.get("format_version") if isinstance(manifest, dict) else None
    if version != FORMAT_VERSION:
        raise BundleError(
            f"{path}: bundle format version {version!r}, but this voicenlu reads version "
            f"{FORMAT_VERSION} (which records the training data and when the bundle is "
            "complete). Train the bundle again with this version."
        )
    if require_complete and manifest.get("complete") is not True:
        raise BundleError(
            f"{bundle} is an incomplete bundle: the run that wrote it stopped before it "
            "finished. Run that command again (`voicenlu train --resume` continues training "
            "from its last checkpoint)."
        )
    files = manifest.get("files", {})
    for name in need:
        if name not in files or not (bundle / name).is_file():
            raise BundleError(f"{bundle}: the bundle has no {name}.")
    if verify:
        for name, expected in files.items():
            file = bundle / name
            if not file.is_file():
                continue
            if sha256_file(file) != expected:
                raise BundleError(
                    f"{file} does not match the checksum recorded in {MANIFEST}: the file was "
                    "changed or damaged after the bundle was written. Copy the bundle again "
                    "or re-export it."
                )
    return manifest


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
        manifest["files"][name] = sha256_file(bundle / name)
    _write_manifest(bundle, manifest)


def _write_manifest(bundle: Path, manifest: dict) -> None:
    tmp = bundle / f".{MANIFEST}.partial"
    tmp.write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.chmod(FILE_MODE)
    os.replace(tmp, bundle / MANIFEST)

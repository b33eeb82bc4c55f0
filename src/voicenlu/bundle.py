"""The model bundle: one directory holding everything needed to serve a model.

``voicenlu.json`` is the manifest: format version, labels, tokenizer settings, calibration,
training record and a SHA-256 for every file it lists. Loading checks both, so a bundle
that was half copied or tampered with is refused with the file named, not served wrongly.
Only the standard library is used here: the torch-free runtime loads bundles too.
"""

from __future__ import annotations

import json
from pathlib import Path

from voicenlu.data.download import file_sha256 as sha256_file
from voicenlu.errors import BundleError

FORMAT_VERSION = 1
MANIFEST = "voicenlu.json"


def write_manifest(bundle: Path, manifest: dict) -> None:
    """Write ``voicenlu.json``; the ``files`` checksums are kept as the caller recorded them."""
    manifest = {"format_version": FORMAT_VERSION, **manifest}
    manifest.setdefault("files", {})
    (bundle / MANIFEST).write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")


def record_files(bundle: Path, *names: str) -> dict:
    """Add (or refresh) the checksums of ``names`` in the manifest and return it."""
    manifest = read_manifest(bundle, verify=False)
    for name in names:
        manifest["files"][name] = sha256_file(bundle / name)
    (bundle / MANIFEST).write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    return manifest


def update_manifest(bundle: Path, **fields) -> dict:
    """Set top-level manifest fields (metrics summary, calibration...) and return the manifest."""
    manifest = read_manifest(bundle, verify=False)
    manifest.update(fields)
    (bundle / MANIFEST).write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    return manifest


def read_manifest(bundle: Path | str, verify: bool = True, need: tuple[str, ...] = ()) -> dict:
    """The manifest of a bundle, after checking its version and the checksums of ``need``.

    With ``verify``, every listed file present is checked; files in ``need`` must exist.
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
            f"{FORMAT_VERSION}. Re-train or re-export the bundle with this version."
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

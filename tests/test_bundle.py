"""The bundle writer: atomic files with one mode, checksums, and the completion marker."""

from __future__ import annotations

import json
import os
import stat

import pytest

from voicenlu import bundle as bundles
from voicenlu.errors import BundleError

# The fields a complete bundle must have for loading to accept it.
FIELDS = {"backbone": "b", "intents": ["A"], "slot_tags": ["O"], "max_length": 8, "pad_token_id": 0}


@pytest.fixture
def strict_umask():
    """A umask that would make new files private: the writer must still make them readable."""
    old = os.umask(0o077)
    yield
    os.umask(old)


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_new_bundle_loads_only_once_complete(tmp_path, strict_umask):
    bundle = tmp_path / "bundle"
    bundles.create(bundle, FIELDS)
    bundles.put_text(bundle, "notes.txt", "hello")
    bundles.put_files(bundle, lambda d: (d / "tokenizer.json").write_text("{}"))
    assert not bundles.is_complete(bundle)
    with pytest.raises(BundleError, match="incomplete bundle.*Run that command again"):
        bundles.read_manifest(bundle)
    bundles.mark_complete(bundle)
    manifest = bundles.read_manifest(bundle)
    assert bundles.is_complete(bundle)
    assert set(manifest["files"]) == {"notes.txt", "tokenizer.json"}
    assert manifest["intents"] == ["A"] and manifest["format_version"] == bundles.FORMAT_VERSION
    for name in ("notes.txt", "tokenizer.json", bundles.MANIFEST):
        assert mode(bundle / name) == bundles.FILE_MODE, name
    assert mode(bundle) == bundles.DIR_MODE
    assert not [p for p in bundle.iterdir() if p.name.startswith(".")]  # no temporary left


def test_a_failed_write_leaves_no_file_and_no_entry(tmp_path):
    bundle = tmp_path / "bundle"
    bundles.create(bundle, {})

    def broken(path):
        path.write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        bundles.put_file(bundle, "model.onnx", broken)
    assert not (bundle / "model.onnx").exists()
    assert "model.onnx" not in bundles.read_manifest(bundle, require_complete=False)["files"]
    assert not [p for p in bundle.iterdir() if p.name.startswith(".")]


def test_checksums_catch_a_changed_file(tmp_path):
    bundle = tmp_path / "bundle"
    bundles.create(bundle, FIELDS)
    bundles.put_text(bundle, "metrics.json", "{}")
    bundles.mark_complete(bundle)
    (bundle / "metrics.json").write_text('{"intent_accuracy": 1.0}')
    with pytest.raises(BundleError, match="metrics.json does not match the checksum"):
        bundles.read_manifest(bundle)
    bundles.put_text(bundle, "metrics.json", "{}")  # rewriting through the writer is fine
    bundles.read_manifest(bundle)


def test_report_folder_is_replaced_whole(tmp_path):
    bundle = tmp_path / "bundle"
    bundles.create(bundle, {})
    bundles.put_folder(bundle, "report", lambda d: (d / "old.md").write_text("old"))
    bundles.put_folder(bundle, "report", lambda d: (d / "report.md").write_text("new"))
    assert [p.name for p in (bundle / "report").iterdir()] == ["report.md"]
    assert mode(bundle / "report" / "report.md") == bundles.FILE_MODE


def test_older_format_is_refused_with_a_clear_message(tmp_path):
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / bundles.MANIFEST).write_text(json.dumps({"format_version": 1, "files": {}}))
    with pytest.raises(BundleError, match="format version 1.*Train the bundle again"):
        bundles.read_manifest(bundle)
    assert not bundles.is_complete(bundle)


def test_create_replaces_a_bundle_but_not_other_folders(tmp_path):
    bundle = tmp_path / "bundle"
    bundles.create(bundle, {})
    bundles.put_text(bundle, "stale.txt", "x")
    bundles.create(bundle, {})
    assert not (bundle / "stale.txt").exists()
    other = tmp_path / "mine"
    other.mkdir()
    (other / "thesis.tex").write_text("precious")
    with pytest.raises(BundleError, match="not a voicenlu bundle"):
        bundles.create(other, {})
    assert (other / "thesis.tex").read_text() == "precious"

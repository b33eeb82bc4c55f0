"""A bundle cannot be altered silently: the manifest's digest, its fields, the files serving
reads, and optional Ed25519 signatures."""

from __future__ import annotations

import json
import shutil

import pytest

from voicenlu import bundle as bundles
from voicenlu.cli import main
from voicenlu.errors import BundleError
from voicenlu.runtime import Parser
from voicenlu.server import serve
from voicenlu.signing import generate_key, sign_bundle, verify_bundle


@pytest.fixture
def copy(tiny_bundle, tmp_path):
    return shutil.copytree(
        tiny_bundle, tmp_path / "bundle", ignore=shutil.ignore_patterns("report")
    )


def _edit(bundle, change) -> None:
    """Edit voicenlu.json by hand, as someone with write access to the storage might."""
    path = bundle / "voicenlu.json"
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest, indent=2))


def _swap_two(m):
    m["intents"][0], m["intents"][1] = m["intents"][1], m["intents"][0]


@pytest.mark.parametrize(
    "change",
    [
        _swap_two,
        lambda m: m["intents"].__setitem__(0, "Renamed"),
        lambda m: m["intents"].pop(),
        lambda m: m["calibration"].__setitem__("threshold", 0.0),
        lambda m: m["files"].__setitem__("model.onnx", "0" * 64),
    ],
    ids=["swapped intents", "renamed intent", "removed intent", "threshold", "checksum"],
)
def test_an_edited_manifest_is_refused(copy, change):
    Parser.load(copy)  # as written, it loads
    _edit(copy, change)
    with pytest.raises(BundleError, match="voicenlu.json was changed after the bundle was written"):
        Parser.load(copy)


@pytest.mark.parametrize(
    "fields,message",
    [
        (
            {"calibration": {"threshold": "high"}},
            "calibration.threshold must be a number from 0 to 1, not 'high'",
        ),
        ({"calibration": {"threshold": 1.5}}, "calibration.threshold must be a number from 0 to 1"),
        (
            {"calibration": {"score": "vibes"}},
            "calibration.score must be one of max_softmax, energy, mahalanobis, mahalanobis_",
        ),
        ({"max_length": "64"}, "max_length must be a whole number from 2 to 4096, not '64'"),
        ({"max_length": 100000}, "max_length must be a whole number from 2 to 4096, not 100000"),
        ({"intents": ["A", "A"]}, "intents must be a list of distinct intent names"),
        ({"slot_tags": ["B-x", "O"]}, 'slot_tags must be a list of distinct tags, "O" first'),
    ],
)
def test_manifest_fields_are_checked_by_name(copy, fields, message):
    """A manifest written with a bad field (its digest fits) is refused, the field named."""
    bundles.update_manifest(copy, **fields)
    with pytest.raises(BundleError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Parser.load(copy)


def test_labels_must_match_the_model(copy):
    intents = bundles.read_manifest(copy)["intents"]
    bundles.update_manifest(copy, intents=intents[:-1])
    with pytest.raises(
        BundleError,
        match=f"scores {len(intents)} intents but the manifest lists {len(intents) - 1}",
    ):
        Parser.load(copy)


def test_serving_checks_only_the_files_it_reads(copy):
    """The training weights are not read by the runtime, so they are not checked by it."""
    (copy / "model.safetensors").write_bytes(b"not the weights")
    assert Parser.load(copy).parse("play some jazz")["intent"]["name"]
    with pytest.raises(BundleError, match="model.safetensors does not match the checksum"):
        bundles.read_manifest(copy)
    scope = (copy / "scope.npz").read_bytes()
    (copy / "scope.npz").write_bytes(scope[:-8] + bytes(8))
    with pytest.raises(BundleError, match="scope.npz does not match the checksum"):
        Parser.load(copy)
    (copy / "scope.npz").write_bytes(scope)
    (copy / "tokenizer.json").write_text("{}")
    with pytest.raises(BundleError, match="tokenizer.json does not match the checksum"):
        Parser.load(copy)


def test_a_graph_without_the_utterance_vector_is_sent_back_to_export(copy):
    """The in-scope score reads the vector; a graph exported before it existed cannot serve."""
    import onnx

    graph = onnx.load(copy / "model.onnx")
    kept = [o for o in graph.graph.output if o.name != "utterance_vector"]
    del graph.graph.output[:]
    graph.graph.output.extend(kept)
    bundles.put_file(copy, "model.onnx", lambda path: onnx.save(graph, path))
    with pytest.raises(BundleError, match="no utterance_vector output.*voicenlu export"):
        Parser.load(copy, precision="fp32")


def test_files_are_written_world_readable(tiny_bundle):
    modes = {p.name: p.stat().st_mode & 0o777 for p in tiny_bundle.iterdir() if p.is_file()}
    assert modes and set(modes.values()) == {0o644}, modes


def test_paths_get_accurate_one_line_errors(copy, tmp_path, capsys):
    file = tmp_path / "notes.txt"
    file.write_text("hi")
    with pytest.raises(BundleError, match="is a file, not a bundle"):
        Parser.load(file)
    with pytest.raises(BundleError, match="does not exist"):
        Parser.load(tmp_path / "nowhere")
    (copy / "tokenizer.json").unlink()
    (copy / "tokenizer.json").mkdir()
    with pytest.raises(BundleError, match="has no tokenizer.json"):
        Parser.load(copy)
    assert main(["predict", str(file), "play jazz"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is a file, not a bundle" in err


def test_signed_bundles(copy, tmp_path, capsys):
    key = tmp_path / "ops.key"
    public = generate_key(key)
    assert key.stat().st_mode & 0o777 == 0o600
    with pytest.raises(BundleError, match="is not signed"):
        verify_bundle(copy, public)
    with pytest.raises(BundleError, match="is not signed"):
        serve(copy, require_signature=public)  # refused before anything is served

    assert main(["bundle", "sign", str(copy), "--key", str(key)]) == 0
    assert main(["bundle", "verify", str(copy), "--public-key", str(public)]) == 0
    assert "signature good" in capsys.readouterr().out
    digest = bundles.read_manifest(copy)["digest"]
    assert Parser.load(copy, digest=digest).parse("play jazz")

    other = generate_key(tmp_path / "other.key")
    with pytest.raises(BundleError, match="signed with another key"):
        verify_bundle(copy, other)
    # Re-written by a tool with write access to the storage: the digest fits, the signature not.
    bundles.update_manifest(copy, calibration={"threshold": 0.0, "temperature": 1.0})
    assert main(["bundle", "verify", str(copy), "--public-key", str(public)]) == 1
    assert "changed after it was signed" in capsys.readouterr().err
    with pytest.raises(BundleError, match="changed after its signature was checked"):
        Parser.load(copy, digest=digest)
    sign_bundle(copy, key)
    assert verify_bundle(copy, public) == bundles.read_manifest(copy)["digest"]

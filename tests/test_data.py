"""SNIPS reading, the standard split, and the verified download (HTTP and local copy)."""

from __future__ import annotations

import functools
import http.server
import json
import shutil
import socket
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from voicenlu.data import (
    FILES,
    INTENTS,
    SlotSpan,
    SnipsData,
    Utterance,
    decode_json_bytes,
    download,
    ensure_data,
    format_stats,
    load_small_train,
    load_snips,
    read_benchmark_file,
    stats,
    stratified_slice,
    verify,
)
from voicenlu.errors import ConfigError, DataError

ENGINES = "2017-06-custom-intent-engines"
PLAYMUSIC_FULL = f"{ENGINES}/PlayMusic/train_PlayMusic_full.json"


# --- the standard split ---


def test_split_sizes_and_intents(snips: SnipsData) -> None:
    assert (len(snips.train), len(snips.dev), len(snips.test)) == (13_084, 700, 700)
    for split in snips.splits().values():
        assert {u.intent for u in split} == set(INTENTS)
    assert Counter(u.intent for u in snips.dev) == {i: 100 for i in INTENTS}
    assert len(snips.commit) == 40


def test_slots_are_clean_sorted_spans(snips: SnipsData) -> None:
    for split in snips.splits().values():
        for utt in split:
            previous_end = 0
            for slot in utt.slots:
                value = utt.text[slot.start : slot.end]
                assert value and value == value.strip(), (utt, slot)
                assert slot.start >= previous_end
                previous_end = slot.end


def test_cesu8_emoji_repaired(snips: SnipsData, snips_root: Path) -> None:
    assert snips.repairs == 1
    pizza = [u for u in snips.train + snips.test if "\U0001f355" in u.text]
    assert len(pizza) == 1
    assert ("playlist", "Pop Punk Perfection \U0001f355") in pizza[0].slot_values()
    assert not any("\ufffd" in u.text or "\ud83c" in u.text for u in snips.train + snips.test)
    assert read_benchmark_file(snips_root / PLAYMUSIC_FULL, "PlayMusic").repairs == 1


@pytest.mark.parametrize("rel", sorted(FILES))
def test_no_utterance_dropped(snips_root: Path, rel: str) -> None:
    intent = rel.split("/")[1]
    raw = (snips_root / rel).read_bytes()
    # An independent count: lossy decoding cannot change the number of list items.
    expected = len(json.loads(raw.decode("utf-8", errors="replace"))[intent])
    assert len(read_benchmark_file(snips_root / rel, intent).utterances) == expected


def test_test_set_is_the_indexed_utterances(snips: SnipsData, snips_root: Path) -> None:
    index = json.loads(
        (Path(__file__).parents[1] / "src/voicenlu/data/snips_test_index.json").read_text()
    )["test"]
    full = {
        i: read_benchmark_file(snips_root / ENGINES / i / f"train_{i}_full.json", i).utterances
        for i in INTENTS
    }
    assert [full[e["intent"]][e["index"]] for e in index] == snips.test
    assert len(snips.train) + len(snips.test) == sum(len(v) for v in full.values())


def test_small_train(snips_root: Path) -> None:
    small = load_small_train(snips_root)
    assert Counter(u.intent for u in small) == {i: 300 for i in INTENTS}


def test_load_accepts_engines_folder_and_rejects_other(snips_root: Path, tmp_path: Path) -> None:
    assert len(load_snips(snips_root / ENGINES).test) == 700
    with pytest.raises(DataError, match="voicenlu data download"):
        load_snips(tmp_path)


def test_stats_table(snips: SnipsData) -> None:
    rows = stats(snips)
    assert rows[0].name == "utterances"
    assert rows[0].counts == {"train": 13_084, "dev": 700, "test": 700}
    intent_rows = [r for r in rows if r.group == "intent"]
    assert [r.name for r in intent_rows] == list(INTENTS)
    slot_rows = [r for r in rows if r.group == "slot"]
    assert sum(r.counts["test"] for r in slot_rows) == rows[1].counts["test"]
    table = format_stats(rows).splitlines()
    assert len(table) == len(rows) + 2
    assert len({len(line) for line in table[:3]}) == 1  # columns line up
    assert "13,084" in table[2]


# --- decoding and malformed files ---


def test_decode_repairs_surrogate_pair() -> None:
    raw = b'{"t": "pizza \xed\xa0\xbc\xed\xbd\x95!"}'
    text, repairs = decode_json_bytes(raw, "x.json")
    assert repairs == 1
    assert json.loads(text)["t"] == "pizza \U0001f355!"
    assert decode_json_bytes("caf\u00e9".encode(), "x.json") == ("caf\u00e9", 0)


@pytest.mark.parametrize(
    ("raw", "offset"),
    [
        (b'{"t": "ab\xffc"}', 9),  # a lone invalid byte
        (b'{"t": "\xed\xa0\xbc\xed\xbd\x95 ok \xc3"}', 17),  # invalid byte after a repair
        (b'{"t": "x\xed\xa0\xbc"}', 8),  # an unpaired high surrogate
    ],
)
def test_decode_rejects_invalid_bytes(raw: bytes, offset: int) -> None:
    with pytest.raises(DataError, match=rf"bad\.json: invalid UTF-8 at byte offset {offset}\b"):
        decode_json_bytes(raw, "bad.json")


def test_read_trims_whitespace_around_slots(tmp_path: Path) -> None:
    doc = {
        "GetWeather": [
            {
                "data": [
                    {"text": "weather "},
                    {"text": " in a year ", "entity": "timeRange"},
                    {"text": "  ", "entity": "city"},
                    {"text": "in Paris", "entity": "city"},
                ]
            }
        ]
    }
    path = tmp_path / "f.json"
    path.write_text(json.dumps(doc))
    (utt,) = read_benchmark_file(path, "GetWeather").utterances
    assert utt == Utterance(
        "weather  in a year   in Paris",
        "GetWeather",
        (SlotSpan("timeRange", 9, 18), SlotSpan("city", 21, 29)),
    )
    assert utt.slot_values() == [("timeRange", "in a year"), ("city", "in Paris")]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"PlayMusic": [', r"invalid JSON at line 1, column 16"),
        ('{"GetWeather": []}', r"top-level object with key 'PlayMusic'"),
        ("[1, 2]", r"top-level object with key 'PlayMusic', found list"),
        ('{"PlayMusic": {}}', r"must be a list"),
        ('{"PlayMusic": [{"text": "hi"}]}', r"utterance 0: expected an object with a 'data'"),
        ('{"PlayMusic": [{"data": ["hi"]}]}', r"utterance 0, chunk 0: expected an object"),
        ('{"PlayMusic": [{"data": []}, {"data": [{"text": 3}]}]}', r"utterance 1, chunk 0.*'text'"),
        ('{"PlayMusic": [{"data": [{"text": "a", "entity": 1}]}]}', r"chunk 0: field 'entity'"),
    ],
)
def test_malformed_files(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "broken_PlayMusic.json"
    path.write_text(content)
    with pytest.raises(DataError, match=message) as info:
        read_benchmark_file(path, "PlayMusic")
    assert "broken_PlayMusic.json" in str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="nope.json"):
        read_benchmark_file(tmp_path / "nope.json", "PlayMusic")


# --- stratified_slice ---


def test_stratified_slice(snips: SnipsData) -> None:
    sliced = stratified_slice(snips.train, 50, seed=3)
    assert Counter(u.intent for u in sliced) == {i: 50 for i in INTENTS}
    assert sliced == stratified_slice(snips.train, 50, seed=3)
    assert sliced != stratified_slice(snips.train, 50, seed=4)
    position = {id(u): i for i, u in enumerate(snips.train)}
    assert [position[id(u)] for u in sliced] == sorted(position[id(u)] for u in sliced)
    # An intent's pick does not depend on the other intents present.
    weather = [u for u in snips.train if u.intent == "GetWeather"]
    assert stratified_slice(weather, 50, seed=3) == [u for u in sliced if u.intent == "GetWeather"]
    assert stratified_slice(snips.dev, 1000, seed=0) == snips.dev
    assert stratified_slice(snips.dev, 0, seed=0) == []
    with pytest.raises(ConfigError):
        stratified_slice(snips.dev, -1, seed=0)


# --- download: HTTP, local copy, checksums ---


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def serve() -> Iterator:
    """Start a loopback HTTP server for a directory; returns its base URL."""
    servers: list[http.server.ThreadingHTTPServer] = []

    def start(directory: Path) -> str:
        handler = functools.partial(_QuietHandler, directory=str(directory))
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def _copy_files(src: Path, dest: Path) -> Path:
    for rel in FILES:
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src / rel, dest / rel)
    return dest


def _corrupt(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[100] ^= 0x20
    path.write_bytes(bytes(data))


def test_http_download_via_env_url(
    serve, snips_mirror: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("VOICENLU_SNIPS_MIRROR", raising=False)
    monkeypatch.setenv("VOICENLU_SNIPS_URL", serve(snips_mirror))
    dest = download(tmp_path / "data")
    assert verify(dest) == []
    assert not list(dest.rglob("*.part"))
    assert len(load_snips(dest).train) == 13_084


def test_http_download_refuses_corrupted_file(serve, snips_root: Path, tmp_path: Path) -> None:
    served = _copy_files(snips_root, tmp_path / "served")
    _corrupt(served / PLAYMUSIC_FULL)
    dest = tmp_path / "data"
    with pytest.raises(DataError) as info:
        download(dest, base_url=serve(served))
    message = str(info.value)
    assert PLAYMUSIC_FULL in message and "checksum mismatch" in message
    assert FILES[PLAYMUSIC_FULL] in message
    assert not (dest / PLAYMUSIC_FULL).exists()
    assert not [p for p in dest.rglob("*") if p.name.startswith(".")]  # no temp file left


def test_http_missing_file(serve, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="HTTP 404.*train_AddToPlaylist.json"):
        download(tmp_path / "data", base_url=serve(tmp_path / "empty"))


def test_unreachable_network_points_to_local_copy(tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port with nothing listening once closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(DataError, match="could not reach the network") as info:
        download(tmp_path / "data", base_url=f"http://127.0.0.1:{port}", timeout=5)
    assert "--from" in str(info.value) and "VOICENLU_SNIPS_MIRROR" in str(info.value)


def test_copy_from_local_dir(snips_root: Path, snips_mirror: Path, tmp_path: Path) -> None:
    assert verify(snips_root) == []
    dest = download(tmp_path / "data", source=snips_mirror / ENGINES)  # the inner folder works too
    assert verify(dest) == []
    mtimes = {rel: (dest / rel).stat().st_mtime_ns for rel in FILES}
    download(dest, source=snips_mirror)  # verified files are skipped
    assert mtimes == {rel: (dest / rel).stat().st_mtime_ns for rel in FILES}


def test_copy_refuses_corrupted_local_file(snips_root: Path, tmp_path: Path) -> None:
    source = _copy_files(snips_root, tmp_path / "copy")
    _corrupt(source / PLAYMUSIC_FULL)
    dest = tmp_path / "data"
    with pytest.raises(DataError, match=f"checksum mismatch for {PLAYMUSIC_FULL}"):
        download(dest, source=source)
    assert not (dest / PLAYMUSIC_FULL).exists()
    assert not [p for p in dest.rglob("*") if p.name.startswith(".")]  # no temp file left


def test_copy_from_bad_dir(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="nlu-benchmark"):
        download(tmp_path / "data", source=tmp_path)


def test_ensure_data_fetches_and_repairs(
    snips_mirror: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VOICENLU_DATA_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("VOICENLU_SNIPS_MIRROR", str(snips_mirror))
    root = ensure_data()
    assert root == tmp_path / "cache" and verify(root) == []
    _corrupt(root / PLAYMUSIC_FULL)
    assert verify(root) == [PLAYMUSIC_FULL]
    assert ensure_data() == root and verify(root) == []

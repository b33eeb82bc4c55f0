"""Several requests in one text: candidates, the learned segmenter on a real model, the result."""

from __future__ import annotations

import json
import random
import re
import shutil

import numpy as np
import pytest

from voicenlu.bundle import read_manifest
from voicenlu.errors import BundleError
from voicenlu.runtime import Parser
from voicenlu.segment import (
    CONNECTORS,
    MAX_CANDIDATES,
    SEGMENT_FILE,
    candidates,
    connector_pattern,
    is_boundary,
    join,
    segments,
    training_texts,
)

PATTERN = connector_pattern(CONNECTORS)


def parts(text: str) -> list[str]:
    return [text[s:e] for s, e in segments(text, candidates(text, PATTERN))]


# --- Candidates and segments, without a model ----------------------------------------------


def test_candidates_are_connectors_with_words_on_both_sides():
    assert parts("turn off the lights and close the blinds") == [
        "turn off the lights",
        "close the blinds",
    ]
    assert parts("play jazz, and then set an alarm at 7.") == ["play jazz", "set an alarm at 7"]
    assert parts("what's the weather  AND   THEN play Queen") == [
        "what's the weather",
        "play Queen",
    ]
    keys = [c.connector for c in candidates("a, b after that c as well as d also e", PATTERN)]
    assert keys == [",", "after that", "as well as", "also"]
    # No words on one side, inside a word, or a thousands separator: not a candidate.
    for text in ("and play jazz", "play jazz and", "play the band Sandman", "book 1,000 seats"):
        assert candidates(text, PATTERN) == [], text


def test_a_list_of_commas_costs_a_bounded_number_of_candidates():
    text = ", ".join(f"item{i}" for i in range(50))
    assert len(candidates(text, PATTERN)) == MAX_CANDIDATES


def test_joins_mark_only_the_connectors_between_parts():
    rng = random.Random(3)
    text, spans = join(["Add Diamonds and Pearls to my playlist.", "Will it rain?"], ["and"], rng)
    found = candidates(text, PATTERN)
    assert [is_boundary(c, spans) for c in found] == [False, True]
    assert text[slice(*spans[1])].lower().startswith("will it rain")


def test_training_texts_join_different_intents(tiny_data):
    texts = training_texts(tiny_data.train, tiny_data.train, CONNECTORS, seed=5)
    joined = [(t, spans) for t, spans in texts if len(spans) > 1]
    single = [(t, spans) for t, spans in texts if len(spans) == 1]
    assert joined and single
    by_text = {u.text.strip().rstrip(" .?!").lower(): u.intent for u in tiny_data.train}
    for text, spans in joined[:200]:
        intents = [by_text.get(text[s:e].lower()) for s, e in spans]
        assert None not in intents and len(set(intents)) == len(intents), text
    assert all(candidates(t, PATTERN) for t, _ in single)


# --- The segmenter of a real bundle -----------------------------------------------------------


@pytest.fixture(scope="module")
def parser(tiny_bundle) -> Parser:
    return Parser.load(tiny_bundle)


@pytest.fixture(scope="module")
def whole(tiny_bundle) -> Parser:
    return Parser.load(tiny_bundle, split=False)


@pytest.fixture(scope="module")
def sure_pairs(whole, tiny_data):
    """Pairs of test requests of different intents that the model gets right on their own."""
    sure = [
        u
        for u in tiny_data.test
        if not candidates(u.text, PATTERN) and whole.parse(u.text)["intent"]["name"] == u.intent
    ]
    rng = random.Random(7)
    pairs = []
    while len(pairs) < 40:
        a, b = rng.sample(sure, 2)
        if a.intent != b.intent:
            pairs.append((a, b))
    return pairs


def summary(result: dict, shift: int = 0) -> tuple:
    """What a result says, without the confidences (a batch's padding moves their last digit);
    ``shift`` moves the slot offsets."""
    requests = [
        (r.get("start"), r["intent"]["name"], [(s["slot"], s["start"] + shift) for s in r["slots"]])
        for r in result.get("requests", [])
    ]
    slots = [(s["slot"], s["start"] + shift, s["end"] + shift) for s in result["slots"]]
    return result["text"], result["intent"]["name"], slots, requests


def check_requests(result: dict) -> None:
    """The shape of DESIGN section 4 for several requests."""
    text, requests = result["text"], result["requests"]
    assert len(requests) > 1
    for key in ("intent", "in_scope", "intent_ranking", "slots"):
        assert result[key] == requests[0][key]
    ends = 0
    for request in requests:
        assert ends <= request["start"] < request["end"] <= len(text)
        assert text[request["start"] : request["end"]] == request["text"]
        for slot in request["slots"]:
            assert request["start"] <= slot["start"] < slot["end"] <= request["end"]
            assert text[slot["start"] : slot["end"]] == slot["value"]
        ends = request["end"]


def test_bundle_records_its_segmenter(tiny_bundle):
    manifest = read_manifest(tiny_bundle)
    record = manifest["segmenter"]
    assert SEGMENT_FILE in manifest["files"] and manifest["training"]["segmenter"] is True
    assert record["boundaries"] > 1000 and record["candidates"] > record["boundaries"]
    assert record["connectors"] == list(CONNECTORS)


def test_two_requests_come_back_as_two(parser, whole, sure_pairs):
    right = 0
    for k, (a, b) in enumerate(sure_pairs):
        connector = ["and", "and then", ",", "then", "also", "after that"][k % 6]
        glue = ", " if connector == "," else f" {connector} "
        text = a.text.strip().rstrip(".?!") + glue + b.text.strip()
        result = parser.parse(text)
        if "requests" in result:
            check_requests(result)
            intents = [r["intent"]["name"] for r in result["requests"]]
            right += intents == [a.intent, b.intent]
            # Each request is parsed as it would be on its own.
            second = result["requests"][1]
            assert summary(whole.parse(second["text"]), second["start"]) == summary(second)
    assert right >= 0.8 * len(sure_pairs), f"{right} of {len(sure_pairs)} pairs split right"


def test_single_requests_with_and_stay_whole(parser, tiny_data, snips):
    """Training and test requests with a connector inside ("Diamonds and Pearls"): kept."""
    with_and = [u.text for u in snips.test if re.search(r"\band\b", u.text)]
    results = parser.parse_batch(with_and)
    kept = sum("requests" not in r for r in results)
    assert kept >= 0.9 * len(with_and), [r["text"] for r in results if "requests" in r]


def test_texts_without_a_connector_are_parsed_as_before(parser, whole, tiny_data):
    texts = [u.text for u in tiny_data.test if not candidates(u.text, PATTERN)][:30]
    assert parser.parse_batch(texts) == whole.parse_batch(texts)


def test_batches_split_like_single_parses(parser, sure_pairs):
    texts = [f"{a.text.strip()} and then {b.text.strip()}" for a, b in sure_pairs[:6]]
    texts += [a.text for a, _ in sure_pairs[:4]]
    batch = parser.parse_batch(texts, batch_size=3)
    assert [summary(r) for r in batch] == [summary(parser.parse(t)) for t in texts]
    assert any("requests" in r for r in batch)


def test_segmenter_fits_onto_a_bundle_trained_without(tiny_bundle, tiny_data, tmp_path, cli):
    """``voicenlu segment`` adds it to a copy; a damaged file is refused like any other."""
    copy = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, copy)
    done = cli("segment", str(copy), "--seed", "4")
    assert done.returncode == 0, done.stderr[-2000:]
    record = json.loads(done.stdout)
    assert record["seed"] == 4 and read_manifest(copy)["segmenter"] == record
    text = f"{tiny_data.test[0].text} and then {tiny_data.test[-1].text}"
    assert Parser.load(copy).parse(text)["text"] == text
    data = dict(np.load(copy / SEGMENT_FILE))
    data["coef"] = -data["coef"]
    np.savez_compressed(copy / SEGMENT_FILE, **data)
    with pytest.raises(BundleError, match="checksum"):
        Parser.load(copy)
    assert Parser.load(copy, split=False).segmenter is None  # a parser that never splits


def test_predict_shows_each_request(parser, tiny_bundle, sure_pairs, cli):
    a, b = next(
        (a, b)
        for a, b in sure_pairs
        if "requests" in parser.parse(f"{a.text.strip()} and then {b.text.strip()}")
    )
    text = f"{a.text.strip()} and then {b.text.strip()}"
    done = cli("predict", str(tiny_bundle), text)
    lines = done.stdout.splitlines()
    assert done.returncode == 0 and lines[0] == text and len(lines) == 3
    requests = parser.parse(text)["requests"]
    for line, request in zip(lines[1:], requests, strict=True):
        assert line.startswith(f"  -> {request['intent']['name']} (")
        assert line.endswith(f'"{request["text"]}"')
    done = cli("predict", str(tiny_bundle), "--no-split", "--json", text)
    assert "requests" not in json.loads(done.stdout)

"""The spoken form: readings of numbers, exact slot offsets (property-tested), the training
copies and ``evaluate --spoken-form`` on a real bundle."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from voicenlu.data.records import SlotSpan, Utterance
from voicenlu.data.spoken import (
    cardinal,
    differs_when_spoken,
    ordinal,
    spoken_text,
    spoken_utterance,
    with_spoken_copies,
    year,
)


@pytest.mark.parametrize(
    ("written", "spoken"),
    [
        ("Book a table for 4 at 8:30.", "book a table for four at eight thirty"),
        ("the 21st of May", "the twenty first of may"),
        ("wake me at 8:05, not 8:00", "wake me at eight oh five not eight"),
        ("23:59:30", "twenty three fifty nine and thirty seconds"),
        ("what's the weather?", "what's the weather"),
        ("Play music from 1990", "play music from nineteen ninety"),
        (
            "1905 1900 2005 2019",
            "nineteen oh five nineteen hundred two thousand five twenty nineteen",
        ),
        ("1,500 people", "one thousand five hundred people"),
        ("rate it 3.5 stars", "rate it three point five stars"),
        ("50% chance", "fifty percent chance"),
        ("the 90s and 1990s and 80's", "the nineties and nineteen nineties and eighties"),
        ("on 1/15/2019", "on january fifteenth twenty nineteen"),
        ("agent 007", "agent zero zero seven"),
        ("Rock & Roll", "rock and roll"),
        ("top-10 of AKB48", "top ten of akb forty eight"),
        ("the 3rd, 12th and 100th", "the third twelfth and one hundredth"),
        ("  Hello ,   World!  ", "hello world"),
        ("score 99:99", "score ninety nine ninety nine"),
        ("'quoted' words", "quoted words"),
    ],
)
def test_spoken_text_examples(written, spoken):
    assert spoken_text(written) == spoken


def test_number_words():
    assert [cardinal(n) for n in (0, 13, 40, 99, 101, 1000, 1_000_001)] == [
        "zero",
        "thirteen",
        "forty",
        "ninety nine",
        "one hundred one",
        "one thousand",
        "one million one",
    ]
    assert cardinal(2_500_000_000) == "two billion five hundred million"
    assert [ordinal(n) for n in (1, 2, 3, 5, 8, 9, 12, 20, 21, 100)] == [
        "first",
        "second",
        "third",
        "fifth",
        "eighth",
        "ninth",
        "twelfth",
        "twentieth",
        "twenty first",
        "one hundredth",
    ]
    assert [year(n) for n in (1066, 1776, 1800, 2000, 2010, 2100)] == [
        "one thousand sixty six",
        "seventeen seventy six",
        "eighteen hundred",
        "two thousand",
        "twenty ten",
        "two thousand one hundred",
    ]
    with pytest.raises(ValueError, match="non-negative"):
        cardinal(-1)


def test_utterance_slots_move_to_their_spoken_offsets():
    text = "Play Beyoncé's song 21st Century at 8:30."
    u = Utterance(
        text,
        "PlayMusic",
        (SlotSpan("artist", 5, 12), SlotSpan("track", 20, 32), SlotSpan("time", 36, 40)),
    )
    v = spoken_utterance(u)
    assert v.text == "play beyoncé's song twenty first century at eight thirty"
    assert v.intent == "PlayMusic"
    assert v.slot_values() == [
        ("artist", "beyoncé"),
        ("track", "twenty first century"),
        ("time", "eight thirty"),
    ]


def test_a_slot_of_punctuation_only_is_dropped_and_pieces_of_one_word_stay_joined():
    text = "rate it 5-6 ! Jay'Z"
    slots = ("a", 8, 9), ("b", 10, 11), ("mark", 12, 13), ("artist", 14, 17), ("x", 18, 19)
    v = spoken_utterance(Utterance(text, "Rate", tuple(SlotSpan(*s) for s in slots)))
    assert v.text == "rate it five six jay'z"
    assert v.slot_values() == [("a", "five"), ("b", "six"), ("artist", "jay"), ("x", "z")]


# Text built from the characters that matter: letters (cased, accented), ASCII digits, the
# punctuation and symbols read aloud or dropped, apostrophes, other scripts' digits, spaces.
ALPHABET = "aZbé İß0123456789 .,:;/-'’&%+#@?!\"()$٣½\n\t"


@st.composite
def utterances(draw):
    text = draw(st.text(alphabet=ALPHABET, max_size=40))
    cuts = sorted(draw(st.lists(st.integers(0, len(text)), max_size=8)))
    pairs = zip(cuts[::2], cuts[1::2], strict=False)  # an odd cut out is dropped
    slots = [SlotSpan(f"slot{i}", a, b) for i, (a, b) in enumerate(pairs) if a < b]
    return Utterance(text, "Intent", tuple(slots))


@settings(max_examples=400, deadline=None)
@given(utterances())
def test_slots_are_carried_over_exactly(u):
    v = spoken_utterance(u)
    expected = [(s.slot, spoken_text(u.text[s.start : s.end])) for s in u.slots]
    assert v.slot_values() == [(name, value) for name, value in expected if value]
    ends = [0]
    for s in v.slots:
        assert ends[-1] <= s.start < s.end <= len(v.text)
        ends.append(s.end)
    assert v.text == " ".join(v.text.split())
    assert not any(c.isdigit() and c.isascii() for c in v.text)
    assert not any(c in v.text for c in '.,:;/-&%+#@?!"()$')


@settings(max_examples=300, deadline=None)
@given(utterances())
def test_a_slot_on_word_boundaries_stays_on_word_boundaries(u):
    def on_boundaries(utt, span):
        return (span.start == 0 or utt.text[span.start - 1].isspace()) and (
            span.end == len(utt.text) or utt.text[span.end].isspace()
        )

    aligned = {s.slot for s in u.slots if on_boundaries(u, s)}
    v = spoken_utterance(u)
    for s in v.slots:
        if s.slot in aligned:
            assert on_boundaries(v, s), (u, v)


@settings(max_examples=300, deadline=None)
@given(utterances())
def test_the_spoken_form_is_already_spoken(u):
    v = spoken_utterance(u)
    assert spoken_utterance(v) == v
    assert not differs_when_spoken(v)


def test_training_copies_are_the_spoken_forms_that_differ(tiny_data):
    train = tiny_data.train
    learned = with_spoken_copies(train)
    differing = [u for u in train if differs_when_spoken(u)]
    assert 0 < len(differing) < len(train)
    assert learned[: len(train)] == train
    copies = learned[len(train) :]
    assert len(copies) == len(differing)
    for original, copy in zip(differing, copies, strict=True):
        assert copy.text == spoken_text(original.text)
        assert copy.intent == original.intent
        spoken_values = [(n, spoken_text(v)) for n, v in original.slot_values()]
        assert copy.slot_values() == [(n, v) for n, v in spoken_values if v]
    # Lower-casing alone is no reason for a copy: the backbone's tokenizer is uncased.
    assert not differs_when_spoken(Utterance("Play Jazz", "PlayMusic", (SlotSpan("genre", 5, 9),)))
    assert differs_when_spoken(Utterance("play jazz.", "PlayMusic", (SlotSpan("genre", 5, 9),)))


def test_the_trained_bundle_records_its_spoken_copies(tiny_bundle, tiny_data):
    manifest = json.loads((tiny_bundle / "voicenlu.json").read_text())
    assert manifest["training"]["spoken_copies"] is True
    assert manifest["data"]["spoken_copies"] == sum(map(differs_when_spoken, tiny_data.train))


def test_evaluate_spoken_form_reports_both_forms(tiny_bundle, tmp_path, snips):
    from voicenlu.metrics import compute_metrics
    from voicenlu.runtime import Parser, result_to_utterance

    out = tmp_path / "eval"
    done = subprocess.run(
        [sys.executable, "-m", "voicenlu", "evaluate", str(tiny_bundle), "--spoken-form"]
        + ["--out", str(out)],
        capture_output=True,
        text=True,
        env={**os.environ},
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split() == ["written", "spoken", "drop"]
    assert [line.split()[0] for line in lines[1:4]] == ["intent", "slot", "exact"]

    metrics = json.loads((out / "metrics.json").read_text())
    comparison = metrics["spoken_form"]
    for key in ("intent_accuracy", "slot_f1", "exact_match"):
        assert comparison["written"][key] == metrics[key]
        drop = comparison["written"][key] - comparison["spoken"][key]
        assert comparison["drop"][key] == pytest.approx(drop)
    assert json.loads(lines[-1])["intent_accuracy"] == metrics["intent_accuracy"]

    # The spoken figures are the bundle's own scores on the spoken test texts.
    gold = [spoken_utterance(u) for u in snips.test]
    parser = Parser.load(tiny_bundle)
    pred = [
        result_to_utterance(r) for r in parser.parse_batch([u.text for u in gold], threshold=0.0)
    ]
    expected = compute_metrics(gold, pred)
    assert comparison["spoken"] == {
        k: expected[k] for k in ("intent_accuracy", "slot_f1", "exact_match")
    }
    spoken_report = json.loads((out / "spoken" / "metrics.json").read_text())
    assert spoken_report["n"] == 700 and spoken_report["slot_f1"] == expected["slot_f1"]
    assert "spoken form" in (out / "spoken" / "report.md").read_text()


def test_spoken_copies_are_on_by_default_and_the_cli_turns_them_off():
    from voicenlu.cli import build_parser
    from voicenlu.config import TrainConfig

    assert TrainConfig().spoken_copies is True
    parser = build_parser()
    assert parser.parse_args(["train"]).spoken_copies is True
    assert parser.parse_args(["train", "--no-spoken-copies"]).spoken_copies is False

"""Assistant templates (Rhino context YAML) -> annotated utterances with exact offsets."""

import os
import re
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from voicenlu.data import load_dataset
from voicenlu.data.formats import detect_format
from voicenlu.data.templates import (
    Choice,
    Slot,
    TemplateError,
    count,
    expand,
    parse_context,
    parse_expression,
)
from voicenlu.errors import DataError

PICOVOICE = Path(
    os.environ.get(
        "VOICENLU_PICOVOICE_DIR",
        Path(__file__).resolve().parents[2] / "shared/data/picovoice-speech-to-intent",
    )
)


def context(expressions, slots=None, macros=None):
    doc = {"context": {"expressions": {"order": expressions}, "slots": slots or {}}}
    if macros:
        doc["context"]["macros"] = macros
    return parse_context(doc)


def test_choices_and_optional_parts_expand_with_exact_offsets():
    ctx = context(
        ["[can I get, give me] (a, the) $size:cup $drink (please)"],
        {"size": ["small", "extra large"], "drink": ["latte", "iced mocha"]},
    )
    utterances = expand(ctx)
    texts = {u.text for u in utterances}
    assert len(utterances) == count(ctx.templates[0].parts, ctx) == 2 * 3 * 2 * 2 * 2
    assert "give me extra large iced mocha please" in texts
    assert "can I get the small latte" in texts
    for u in utterances:
        assert [s.slot for s in u.slots] == ["cup", "drink"]
        assert u.text[u.slots[0].start : u.slots[0].end] in ("small", "extra large")
        assert u.text[u.slots[1].start : u.slots[1].end] in ("latte", "iced mocha")
        assert "  " not in u.text and u.text == u.text.strip()


def test_nested_alternatives_and_macros():
    parts = parse_expression("[a, b (c, $x:y)] d")
    assert parts == (
        Choice((("a",), ("b", Choice((("c",), (Slot("x", "y"),)), optional=True))), False),
        "d",
    )
    ctx = context(["@greet $drink"], {"drink": ["tea"]}, {"greet": ["hi", "[hello, hey] there"]})
    assert sorted(u.text for u in expand(ctx)) == ["hello there tea", "hey there tea", "hi tea"]


@pytest.mark.parametrize(
    "expression, message",
    [
        ("[a, b", "never closed"),
        ("a) b", "unmatched ')'"),
        ("a $ b", "must start a slot"),
        ("$nolist", "has no value list"),
        ("@nomacro", "has no phrase list"),
    ],
)
def test_bad_expressions_are_named(expression, message):
    with pytest.raises(TemplateError, match=re.escape(message)):
        context([expression], {"size": ["small"]})


def test_a_huge_expansion_is_sampled_with_a_fixed_seed():
    values = [f"v{i}" for i in range(50)]
    ctx = context(["$a $b $c"], {"a": values, "b": values, "c": values})
    first = expand(ctx, max_per_intent=200, seed=1)
    assert len(first) == 200 and len(set(first)) == 200
    assert first == expand(ctx, max_per_intent=200, seed=1)
    assert first != expand(ctx, max_per_intent=200, seed=2)


words = st.sampled_from(["a", "an", "I'd", "get", "me", "some", "café"])
values = st.lists(
    st.lists(words, min_size=1, max_size=3).map(" ".join), min_size=1, max_size=3, unique=True
)


@st.composite
def templates(draw):
    """A random expression over slot lists s0..s2: words, slots, choices and optional parts."""
    slots = {f"s{i}": draw(values) for i in range(3)}

    def piece(depth):
        kind = draw(st.sampled_from(["word", "slot", "choice"] if depth < 2 else ["word", "slot"]))
        if kind == "word":
            return draw(words)
        if kind == "slot":
            return f"$s{draw(st.integers(0, 2))}:n{draw(st.integers(0, 1))}"
        options = [
            " ".join(piece(depth + 1) for _ in range(draw(st.integers(1, 2))))
            for _ in range(draw(st.integers(1, 3)))
        ]
        opener, closer = draw(st.sampled_from(["[]", "()"]))
        return opener + ", ".join(options) + closer

    expression = " ".join(piece(0) for _ in range(draw(st.integers(1, 4))))
    return expression, slots


@settings(max_examples=150, deadline=None)
@given(templates())
def test_every_expansion_has_exact_slot_offsets(case):
    expression, slots = case
    ctx = context([expression], slots)
    utterances = expand(ctx, max_per_intent=400)
    assert all(u.text for u in utterances)
    assert len(utterances) <= count(ctx.templates[0].parts, ctx)
    for u in utterances:
        end = 0
        for span in u.slots:
            value = u.text[span.start : span.end]
            assert span.start >= end and value in sum(slots.values(), [])
            assert span.start == 0 or u.text[span.start - 1] == " "
            assert span.end == len(u.text) or u.text[span.end] == " "
            end = span.end
        assert " ".join(u.text.split()) == u.text


def test_rhino_context_is_a_training_format(tmp_path):
    path = tmp_path / "coffee.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "context": {
                    "expressions": {"orderDrink": ["[brew, make me] (a) $size:size $drink:drink"]},
                    "slots": {"size": ["small", "large"], "drink": ["latte", "iced mocha"]},
                }
            }
        )
    )
    assert detect_format(path) == "rhino"
    data = load_dataset(path)
    assert data.format == "rhino" and len(data.utterances) == 2 * 2 * 2 * 2
    assert data.slot_types.types == {"size": "size", "drink": "drink"}
    assert set(data.slot_types.entities["drink"].values) == {"latte", "iced mocha"}
    path.write_text("context:\n  expressions:\n    order:\n      - '$nowhere'\n")
    with pytest.raises(DataError, match=r"coffee.yaml.*\$nowhere has no value list"):
        load_dataset(path)


@pytest.mark.skipif(not PICOVOICE.is_dir(), reason="set VOICENLU_PICOVOICE_DIR")
def test_the_rhino_coffee_maker_expands():
    data = load_dataset(PICOVOICE / "rhino/coffee_maker.yaml")
    assert len(data.utterances) == 1000  # sampled: the full expansion is about 1.2e8
    assert {u.intent for u in data.utterances} == {"orderDrink"}
    assert "twelve ounce" in data.slot_types.entities["size"].values
    for u in data.utterances[:200]:
        for slot, value in u.slot_values():
            assert value in data.slot_types.entities[data.slot_types.types[slot]].values

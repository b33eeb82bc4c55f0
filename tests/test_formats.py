"""Reading and writing user data formats, conversion without loss, and the data validator."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from voicenlu.data import SlotSpan, Utterance
from voicenlu.data.formats import (
    FormatError,
    convert,
    detect_format,
    load_dataset,
    write_dataset,
)
from voicenlu.data.validate import Problem, format_problems, validate, validate_path
from voicenlu.errors import DataError

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
RASA = EXAMPLES / "assistant.rasa.yml"
SNIPS_NLU = EXAMPLES / "assistant.snips.json"


def rasa_file(tmp_path: Path, body: str, name: str = "nlu.yml") -> Path:
    path = tmp_path / name
    path.write_text('version: "3.1"\nnlu:\n' + body, encoding="utf-8")
    return path


def one_intent(tmp_path: Path, *examples: str) -> Path:
    lines = "".join(f"    - {e}\n" for e in examples)
    return rasa_file(tmp_path, f"- intent: Ask\n  examples: |\n{lines}")


def assert_spans_clean(utterances: list[Utterance]) -> None:
    for u in utterances:
        for s in u.slots:
            value = u.text[s.start : s.end]
            assert value and value == value.strip(), (u, s)


# --- the example files ---


def test_examples_agree_across_formats():
    rasa = load_dataset(RASA)
    snips = load_dataset(SNIPS_NLU)
    csv_data = load_dataset(EXAMPLES / "assistant.csv")
    jsonl = load_dataset(EXAMPLES / "assistant.jsonl")
    assert (rasa.format, snips.format, csv_data.format, jsonl.format) == (
        "rasa",
        "snips-nlu",
        "csv",
        "jsonl",
    )
    assert rasa.has_slots and snips.has_slots
    assert not csv_data.has_slots and not jsonl.has_slots
    assert len(rasa.utterances) == 27
    assert rasa.utterances == snips.utterances
    unlabelled = [(u.text, u.intent) for u in rasa.utterances]
    assert [(u.text, u.intent) for u in csv_data.utterances] == unlabelled
    assert [(u.text, u.intent) for u in jsonl.utterances] == unlabelled
    assert all(not u.slots for u in csv_data.utterances + jsonl.utterances)
    assert_spans_clean(rasa.utterances)
    values = {v for u in rasa.utterances for _, v in u.slot_values()}
    assert {"Zürich", "Zurich", "São Paulo", "東京", "½ hour", "café corner"} <= values
    for path in EXAMPLES.iterdir():
        assert validate_path(path) == [], path


def test_examples_record_where_each_utterance_is():
    rasa = load_dataset(RASA)
    lines = RASA.read_text(encoding="utf-8").splitlines()
    first_file, first_where = rasa.origins[0]
    assert first_file == str(RASA)
    assert lines[int(first_where.removeprefix("line ")) - 1].strip().startswith("- turn [on]")
    assert load_dataset(SNIPS_NLU).origins[9][1] == "intent 'SetTimer', utterance 0"
    assert load_dataset(EXAMPLES / "assistant.csv").origins[0][1] == "line 2"


def test_rasa_reads_synonyms_lookups_and_dimensions():
    data = load_dataset(RASA)
    types = data.slot_types
    assert types.types == {"state": "state", "room": "room", "duration": "duration", "city": "city"}
    # The synonym item and the inline "value" both map to Zürich; the lookup lists the rooms.
    assert types.entities["city"].values == {"Zürich": ("Zurich", "Zuerich")}
    assert list(types.entities["room"].values) == [
        "kitchen",
        "living room",
        "bedroom",
        "hallway",
        "garage",
    ]
    assert all(e.extensible for e in types.entities.values())
    assert "duration" not in types.entities  # a Duckling dimension, named as Rasa names it
    assert types.origins["duration"] == (str(RASA), "line 19")
    assert not any("synonym" in n or "lookup" in n for n in data.notes)


def test_snips_nlu_reads_entities_and_builtins():
    data = load_dataset(SNIPS_NLU)
    types = data.slot_types
    assert types.types == {
        "state": "on_off",
        "room": "room",
        "duration": "duration",
        "city": "city",
    }
    assert types.entities["city"].values == {"Zürich": ("Zurich", "Zuerich")}
    assert types.entities["on_off"].values == {"on": (), "off": ()}
    assert not types.entities["on_off"].extensible and types.entities["city"].extensible
    assert types.unknown() == {}


def test_snips_nlu_slot_comes_from_slot_name_not_entity():
    utts = load_dataset(SNIPS_NLU).utterances
    timer = next(u for u in utts if u.intent == "SetTimer")
    assert timer.slot_values() == [("duration", "10 minutes")]  # entity is snips/duration


# --- Rasa annotation syntax ---


def test_rasa_annotation_forms(tmp_path):
    path = one_intent(
        tmp_path,
        'fly from [Berlin]{"entity": "city", "role": "origin"} to '
        '[LA]{"entity": "city", "role": "destination", "value": "Los Angeles"}',
        "weather in [NYC](city:New York City) [today](date)",
        'two [large]{"entity": "size", "group": "1"} pizzas',
        'one [small][{"entity": "size"}] pizza',
    )
    data = load_dataset(path)
    assert [u.slot_values() for u in data.utterances] == [
        [("city.origin", "Berlin"), ("city.destination", "LA")],
        [("city", "NYC"), ("date", "today")],
        [("size", "large")],
        [("size", "small")],
    ]
    assert data.utterances[0].text == "fly from Berlin to LA"
    assert data.slot_types.types == {
        "city.origin": "city",
        "city.destination": "city",
        "city": "city",
        "date": "date",
        "size": "size",
    }
    assert data.slot_types.entities["city"].values == {
        "Los Angeles": ("LA",),
        "New York City": ("NYC",),
    }
    assert any("entity groups ignored: 1" in n for n in data.notes)


def test_rasa_list_examples_and_other_top_level_keys(tmp_path):
    path = tmp_path / "data.yaml"
    path.write_text(
        "version: '3.1'\n"
        "nlu:\n"
        "- intent: greet\n"
        "  examples:\n"
        "  - text: hello [Ana](name)\n"
        "    metadata: {sentiment: neutral}\n"
        "  - text: hi\n"
        "- regex: zipcode\n"
        "  examples: |\n"
        "    - \\d{5}\n"
        "rules:\n"
        "- rule: say hi\n",
        encoding="utf-8",
    )
    data = load_dataset(path)
    assert [(u.text, u.slot_values()) for u in data.utterances] == [
        ("hello Ana", [("name", "Ana")]),
        ("hi", []),
    ]
    assert [where for _, where in data.origins] == ["line 5", "line 7"]
    assert any("regex item skipped" in n for n in data.notes)
    assert any("'rules' skipped" in n for n in data.notes)


ODD = [
    "👩‍👩‍👧‍👦",  # ZWJ family: 7 code points
    "Zu\u0308rich",  # combining diaeresis
    "Zü\u200brich",  # zero-width space inside
    "\u200dBern",  # leading zero-width joiner
    "🇨🇭 Genève",  # flag (regional indicators) + precomposed
    "תל אביב",  # right-to-left
    "e\u0301\u0301",  # stacked combining marks
]


@pytest.mark.parametrize("value", ODD)
def test_rasa_odd_unicode_keeps_offsets(tmp_path, value):
    path = one_intent(
        tmp_path,
        f'🚀 fly to [{value}](city) and [{value}]{{"entity": "city", "role": "back"}} ✈️',
    )
    (utt,) = load_dataset(path).utterances
    assert utt.text == f"🚀 fly to {value} and {value} ✈️"
    assert utt.slot_values() == [("city", value), ("city.back", value)]
    out = tmp_path / "out.json"
    convert(path, out)
    assert load_dataset(out).utterances == [utt]


# --- other readers ---


def benchmark_doc(intent: str) -> dict:
    return {
        intent: [
            {"data": [{"text": "add "}, {"text": "Björk ", "entity": "artist"}]},
            {"data": [{"text": "play something"}]},
        ]
    }


def test_snips_benchmark_folder_and_file(tmp_path):
    folder = tmp_path / "2017-06-custom-intent-engines" / "PlayMusic"
    folder.mkdir(parents=True)
    (folder / "train_PlayMusic_full.json").write_text(
        json.dumps(benchmark_doc("PlayMusic")), encoding="utf-8"
    )
    single = tmp_path / "bench.json"
    single.write_text(json.dumps(benchmark_doc("PlayMusic")), encoding="utf-8")
    for path in (tmp_path, single):
        data = load_dataset(path)
        assert data.format == "snips-benchmark"
        assert data.utterances[0] == Utterance(
            "add Björk ", "PlayMusic", (SlotSpan("artist", 4, 9),)
        )
        assert data.origins[1][1] == "'PlayMusic' utterance 1"


def test_csv_variants(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text('\ufeffid;Text;Intent\n1;lights on;Lights\n\n2;"a; b";Other\n', "utf-8")
    data = load_dataset(path)
    assert [(u.text, u.intent) for u in data.utterances] == [
        ("lights on", "Lights"),
        ("a; b", "Other"),
    ]
    assert data.origins[1][1] == "line 4"
    assert data.notes == ["columns ['id'] ignored"]
    # BANKING77's header names the intent "category"; "label" is read the same way.
    for name in ("category", "label"):
        path.write_text(f"text,{name}\nI am still waiting on my card?,card_arrival\n", "utf-8")
        assert load_dataset(path).utterances[0].intent == "card_arrival"


# --- writers and conversion ---


def test_round_trip_snips_nlu_rasa_loses_nothing(tmp_path):
    original = load_dataset(SNIPS_NLU)
    convert(SNIPS_NLU, tmp_path / "a.yml")
    convert(tmp_path / "a.yml", tmp_path / "b.json")
    convert(tmp_path / "b.json", tmp_path / "c.yaml")
    for name in ("a.yml", "b.json", "c.yaml"):
        assert load_dataset(tmp_path / name).utterances == original.utterances, name
    assert (tmp_path / "a.yml").read_text("utf-8") == (tmp_path / "c.yaml").read_text("utf-8")
    assert json.loads((tmp_path / "b.json").read_text("utf-8"))["language"] == "en"


def test_round_trip_keeps_types_and_synonyms(tmp_path):
    rasa = load_dataset(RASA).slot_types
    convert(RASA, tmp_path / "a.json")
    doc = json.loads((tmp_path / "a.json").read_text("utf-8"))
    assert doc["entities"]["snips/duration"] == {}
    assert doc["entities"]["city"]["data"] == [
        {"value": "Zürich", "synonyms": ["Zurich", "Zuerich"]}
    ]
    back = load_dataset(tmp_path / "a.json").slot_types
    assert back.types == rasa.types
    assert {n: e.values for n, e in back.entities.items()} == {
        n: e.values for n, e in rasa.entities.items()
    }
    convert(tmp_path / "a.json", tmp_path / "b.yml")
    again = load_dataset(tmp_path / "b.yml").slot_types
    assert again.types == rasa.types
    assert again.entities["city"].values == {"Zürich": ("Zurich", "Zuerich")}
    assert list(again.entities["room"].values) == list(rasa.entities["room"].values)


def test_rasa_writer_notes_what_rasa_cannot_hold(tmp_path):
    result = convert(SNIPS_NLU, tmp_path / "a.yml")
    assert any("['on_off'] will read back as extensible" in n for n in result.notes)
    text = (tmp_path / "a.yml").read_text("utf-8")
    assert "- lookup: state\n  examples: |\n    - on\n    - off\n" in text
    assert load_dataset(tmp_path / "a.yml").slot_types.entities["state"].values == {
        "on": (),
        "off": (),
    }
    path = tmp_path / "typed.json"
    path.write_text(
        json.dumps(
            {
                "language": "en",
                "intents": {
                    "Wake": {
                        "utterances": [
                            {
                                "data": [
                                    {"text": "wake me "},
                                    {
                                        "text": "at 7",
                                        "entity": "snips/datetime",
                                        "slot_name": "when",
                                    },
                                ]
                            }
                        ]
                    }
                },
                "entities": {"snips/datetime": {}},
            }
        ),
        "utf-8",
    )
    notes = convert(path, tmp_path / "typed.yml").notes
    assert any("types of slots when (time) are not written" in n for n in notes)


def test_round_trip_rasa_roles(tmp_path):
    path = one_intent(
        tmp_path,
        'from [Köln]{"entity": "city", "role": "from"} to [Wien]{"entity": "city", "role": "to"}',
    )
    convert(path, tmp_path / "x.json")
    convert(tmp_path / "x.json", tmp_path / "y.yml")
    assert load_dataset(tmp_path / "y.yml").utterances == load_dataset(path).utterances
    assert '[Köln]{"entity": "city", "role": "from"}' in (tmp_path / "y.yml").read_text("utf-8")


def test_write_intent_only_formats_note_dropped_slots(tmp_path):
    result = convert(RASA, tmp_path / "out.csv")
    assert result.format == "csv" and len(result.source.utterances) == 27
    assert any("slots of 26 utterances are dropped" in n for n in result.notes)
    convert(tmp_path / "out.csv", tmp_path / "out.jsonl")
    assert (
        load_dataset(tmp_path / "out.jsonl").utterances
        == load_dataset(EXAMPLES / "assistant.jsonl").utterances
    )
    write_dataset(load_dataset(RASA), tmp_path / "bench.json", "snips-benchmark")
    assert load_dataset(tmp_path / "bench.json").utterances == load_dataset(RASA).utterances


def test_writers_refuse_what_they_cannot_hold(tmp_path):
    with pytest.raises(DataError, match=r"utterance 1.*'\['"):
        write_dataset([Utterance("ok", "A"), Utterance("a [b] c", "A")], tmp_path / "x.yml")
    with pytest.raises(DataError, match="utterance 0.*no intent"):
        write_dataset([Utterance("hello", None)], tmp_path / "x.json")
    overlapping = Utterance("abcdef", "A", (SlotSpan("x", 0, 4), SlotSpan("y", 2, 6)))
    with pytest.raises(DataError, match="overlaps"):
        write_dataset([overlapping], tmp_path / "x.json")
    with pytest.raises(DataError, match="unknown format '.txt'"):
        write_dataset([Utterance("hi", "A")], tmp_path / "x.txt")


_TEXT = st.text(
    st.characters(
        blacklist_categories=("Cs", "Cc", "Zl", "Zp"), blacklist_characters="[]\ufffe\uffff"
    ),
    min_size=1,
    max_size=8,
).map(str.strip)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(_TEXT, _TEXT), min_size=1, max_size=4))
def test_round_trip_property(tmp_path_factory, pieces):
    """Random unicode text with a slot after each plain piece survives rasa -> snips-nlu."""
    text, slots = "", []
    for plain, value in pieces:
        if not value:
            continue
        text += f"{plain} " if plain else ""  # a blank piece adds nothing: no leading space
        slots.append(SlotSpan(f"s{len(slots)}", len(text), len(text) + len(value)))
        text += value + " "
    utt = Utterance(text.strip(), "I", tuple(slots))
    tmp = tmp_path_factory.mktemp("prop")
    write_dataset([utt], tmp / "a.yml")
    convert(tmp / "a.yml", tmp / "b.json")
    assert load_dataset(tmp / "b.json").utterances == [utt]


# --- malformed input: DataError naming file and line ---


@pytest.mark.parametrize(
    ("example", "message"),
    [
        ("weather in [Zürich(city)", r"'\[' has no matching '\]'"),
        ("weather in [Zürich](city", r"'\(' has no matching '\)'"),
        ("weather in [Zürich](city and more", r"'\(' has no matching '\)'"),
        ('weather in [Zürich]{"entity": "city"', r"'\{' has no matching '\}'"),
        ("weather in [Zürich] today", "names no slot"),
        ("weather in Zürich](city)", r"'\]' without a '\['"),
        ("weather in [Zürich]{entity: city}", "not valid JSON"),
        ('in [Zürich]{"entity": "city", "colour": "red"}', "unknown keys"),
        ('in [Zürich][{"entity": "city"}, {"entity": "town"}]', "2 entities"),
    ],
)
def test_rasa_bad_annotations(tmp_path, example, message):
    path = one_intent(tmp_path, "fine [example](x)", example)
    with pytest.raises(FormatError, match=message) as info:
        load_dataset(path)
    assert f"{path}, line 6: " in str(info.value)
    (problem,) = validate_path(path)
    assert (problem.file, problem.where) == (str(path), "line 6")


def test_rasa_reports_every_bad_annotation(tmp_path):
    path = one_intent(tmp_path, "[a](x", "ok", "[b", "c]")
    problems = validate_path(path)
    assert [p.where for p in problems] == ["line 5", "line 7", "line 8"]


@pytest.mark.parametrize(
    ("name", "content", "where", "message"),
    [
        ("bad.yml", "nlu:\n- intent: a\n  examples: |\n    - x\n   - y: [\n", "line ", "YAML"),
        (
            "bad.yml",
            'version: "3.1"\nnlu:\n- intent: a\n  examples: |\n    hello\n',
            "line 5",
            "- ",
        ),
        ("bad.yml", "nlu:\n- greeting: a\n", "line 2", "none of intent"),
        ("bad.yml", "type: intent\nname: a\n", "", "snips-nlu generate-dataset"),
        ("bad.csv", "text,intent\nhi,A\na,b,c\n", "line 3", "3 fields"),
        ("bad.csv", "text,intent\nhi,\n", "line 2", "intent is empty"),
        ("bad.csv", "words,label\nhi,A\n", "line 1", "text,intent"),
        ("bad.jsonl", '{"text": "a", "intent": "A"}\n\n{"text": "b", intent}\n', "line 3", "JSON"),
        ("bad.jsonl", '{"text": "a"}\n', "line 1", "intent"),
        ("bad.json", '{"language": "en",\n "intents": {,}}', "line 2", "invalid JSON"),
        ("bad.json", '[{"text": "a"}]', "", "neither a Snips NLU dataset"),
        (
            "bad.json",
            '{"intents": {"A": {"utterances": [{"data": []}, '
            '{"data": [{"text": "x", "entity": "e"}]}]}}}',
            "intent 'A', utterance 1, chunk 0",
            "no 'slot_name'",
        ),
        ("bad.txt", "hello", "", "unknown format '.txt'"),
        ("bad.csv", b"text,intent\nd\xe9j\xe0,A\n", "byte 13", "UTF-8"),
    ],
)
def test_malformed_files(tmp_path, name, content, where, message):
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match=message) as info:
        load_dataset(path)
    assert str(info.value).startswith(f"{path}, {where}" if where else f"{path}: ")
    assert validate_path(path)[0].where.startswith(where)


def test_missing_path_and_non_benchmark_folder(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        load_dataset(tmp_path / "nope.yml")
    (problem,) = validate_path(tmp_path)
    assert "2017-06-custom-intent-engines" in problem.message
    assert detect_format(EXAMPLES / "assistant.snips.json") == "snips-nlu"


# --- validate ---


def test_validate_reports_each_problem(tmp_path):
    path = one_intent(
        tmp_path,
        "",
        "what's on [](show)",
        "Turn it up",
        "turn  it UP",
    )
    path.write_text(
        path.read_text("utf-8")
        + "- intent: Volume\n  examples: |\n    - turn it up\n    - \u200b\u200b\n",
        "utf-8",
    )
    problems = validate_path(path, min_per_intent=3)
    text = format_problems(problems)
    assert [(p.where, p.message.split(" ")[0]) for p in problems] == [
        ("line 5", "empty"),
        ("line 6", "slot"),
        ("line 12", "empty"),
        ("intent 'Volume'", "has"),
        ("line 7; line 8; line 11", "'Turn"),
    ]
    assert "slot 'show' is empty" in text
    assert "has 2 examples, fewer than the 3 needed" in text
    assert "labelled with different intents: Ask, Volume" in text
    assert text.startswith("5 problems:") and "      fix: add at least 1 more" in text


def test_validate_reports_unknown_types_by_line(tmp_path):
    doc = json.loads(SNIPS_NLU.read_text("utf-8"))
    for utterance in doc["intents"]["SetTimer"]["utterances"]:
        for chunk in utterance["data"]:
            if chunk.get("entity") == "snips/duration":
                chunk["entity"] = "snips/durationn"
    path = tmp_path / "typo.json"
    path.write_text(json.dumps(doc, indent=2, ensure_ascii=False), "utf-8")
    problems = validate_path(path)
    assert len(problems) == 1
    line = int(problems[0].where.removeprefix("line "))
    assert '"snips/durationn"' in path.read_text("utf-8").splitlines()[line - 1]
    assert problems[0].file == str(path)
    assert "slot 'duration' has the unknown type 'snips/durationn'" in problems[0].message
    assert "snips/datetime" in problems[0].fix
    # Reading still works: the slot is kept, untyped until the type is fixed.
    assert load_dataset(path).slot_types.unknown() == {"duration": "snips/durationn"}


def test_validate_spans_on_records():
    utts = [
        Utterance("abcdef", "A", (SlotSpan("x", 0, 4), SlotSpan("y", 2, 6))),
        Utterance("abc", "A", (SlotSpan("x", 1, 9),)),
        Utterance("a b", "A", (SlotSpan("x", 1, 2),)),
    ]
    problems = validate(utts, min_per_intent=1)
    assert [(p.where, p.message) for p in problems] == [
        ("utterance 0", "slot 'y' ('cdef') overlaps slot 'x' ('abcd') in 'abcdef'"),
        ("utterance 1", "slot 'x' span [1:9] lies outside the text 'abc' (3 characters)"),
        ("utterance 2", "slot 'x' is empty in 'a b'"),
    ]
    assert validate([]) == [Problem("", "", "no utterances", "add examples for each intent")]


def test_validate_split_coverage():
    train = [Utterance("hi ann", "Greet", (SlotSpan("name", 3, 6),)), Utterance("bye", "Bye")]
    test = [Utterance("hi", "Greet"), Utterance("weather", "Weather")]
    problems = validate(train, min_per_intent=1, splits={"train": train, "test": test})
    assert [(p.where, p.message) for p in problems] == [
        ("intent 'Bye'", "appears in train but not in test"),
        ("intent 'Weather'", "appears in test but not in train"),
        ("slot 'name'", "appears in train but not in test"),
    ]
    assert problems[1].fix.startswith("add training examples")
    assert problems[0].fix.endswith("or it goes unevaluated")


def test_format_problems_without_problems():
    assert format_problems([]) == "no problems found"


def test_a_slot_name_typo_is_flagged(tmp_path):
    text = RASA.read_text("utf-8").replace(
        "lights in the [garage](room) [on](state) now",
        "lights in the [garage](rom) [on](state) now",
    )
    path = tmp_path / "typo.yml"
    path.write_text(text, "utf-8")
    (problem,) = validate_path(path)
    assert "[garage](rom)" in text.splitlines()[int(problem.where.removeprefix("line ")) - 1]
    assert problem.message == "slot 'rom' is used 1 time, and 'room' 5 times: a typo?"
    assert "write 'room'" in problem.fix
    assert validate_path(RASA) == []  # the example's own slot names are all different enough


def test_a_csv_with_several_blank_fields_reports_each(tmp_path):
    path = tmp_path / "blanks.csv"
    path.write_text(
        "text,intent,note\nhello,Greet,\n,Greet,x\nbye,,x\n,,x\nhi,Greet,\n,,\nyo,,\n",
        encoding="utf-8",
    )
    problems = validate_path(path)
    assert [(p.where, p.message) for p in problems] == [
        ("line 3", "the text is empty"),
        ("line 4", "the intent is empty"),
        ("line 5", "the text and the intent are empty"),
        ("line 8", "the intent is empty"),  # line 7 holds nothing: skipped
    ]
    with pytest.raises(DataError, match="line 3.*\n.*line 4"):
        load_dataset(path)


def test_a_jsonl_file_reports_every_bad_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "a"}\n{"text": "b", "intent": "B"}\nnope\n', encoding="utf-8")
    assert [p.where for p in validate_path(path)] == ["line 1", "line 3"]


def test_a_folder_of_rasa_files_is_read_as_rasa(tmp_path):
    """A Rasa project's data folder: its NLU files are read together, stories and the domain
    are skipped with a note, and the result is the same as the one file they came from."""
    import yaml

    from voicenlu.data.formats import detect_format, load_dataset

    source = Path(__file__).resolve().parent.parent / "examples" / "assistant.rasa.yml"
    items = yaml.safe_load(source.read_text())["nlu"]
    (tmp_path / "data").mkdir()
    for name, part in (("nlu_a.yml", items[:2]), ("nlu_b.yml", items[2:])):
        (tmp_path / "data" / name).write_text(yaml.safe_dump({"version": "3.1", "nlu": part}))
    (tmp_path / "data" / "stories.yml").write_text("version: '3.1'\nstories: []\n")
    (tmp_path / "domain.yml").write_text("version: '3.1'\nintents: [greet]\n")
    assert detect_format(tmp_path) == "rasa"
    folder, single = load_dataset(tmp_path), load_dataset(source)
    assert sorted(folder.utterances, key=repr) == sorted(single.utterances, key=repr)
    assert folder.slot_types.types == single.slot_types.types
    assert folder.slot_types.entities == single.slot_types.entities
    assert "domain.yml skipped: no nlu data (stories, domain...)" in folder.notes
    assert folder.slot_types.origins["city"][0].endswith("nlu_b.yml")

"""Metrics on hand-built cases with known answers, the written report, and the TF-IDF baseline."""

from __future__ import annotations

import json

import pytest

from voicenlu.data.records import SlotSpan, Utterance
from voicenlu.evaluation import write_report
from voicenlu.metrics import OUT_OF_SCOPE, compute_metrics, misclassified

TEXT_A = "add Diamonds to my roadtrip playlist"  # entity_name 4:12, playlist 19:27
TEXT_B = "what is the weather in Paris"  # city 23:28
TEXT_C = "play some jazz"  # genre 10:14


def utt(text: str, intent: str | None, *slots: tuple[str, int, int]) -> Utterance:
    return Utterance(text, intent, tuple(SlotSpan(*s) for s in slots))


GOLD = [
    utt(TEXT_A, "AddToPlaylist", ("entity_name", 4, 12), ("playlist", 19, 27)),
    utt(TEXT_B, "GetWeather", ("city", 23, 28)),
    utt(TEXT_C, "PlayMusic", ("genre", 10, 14)),
]


def test_perfect_predictions_score_one():
    m = compute_metrics(GOLD, GOLD)
    assert m["n"] == 3
    for key in ("intent_accuracy", "slot_precision", "slot_recall", "slot_f1", "exact_match"):
        assert m[key] == 1.0
    json.dumps(m)  # JSON-serialisable


def test_right_span_wrong_type_is_a_false_positive_and_a_false_negative():
    pred = [
        utt(TEXT_A, "AddToPlaylist", ("artist", 4, 12), ("playlist", 19, 27)),
        GOLD[1],
        GOLD[2],
    ]
    m = compute_metrics(GOLD, pred)
    # 4 gold slots, 4 predicted, 3 right.
    assert m["slot_precision"] == pytest.approx(3 / 4)
    assert m["slot_recall"] == pytest.approx(3 / 4)
    assert m["slot_f1"] == pytest.approx(3 / 4)
    assert m["per_slot"]["entity_name"] == {
        "precision": 0.0,
        "recall": 0.0,
        "f1": 0.0,
        "support": 1,
    }
    assert m["per_slot"]["artist"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert m["intent_accuracy"] == 1.0
    assert m["exact_match"] == pytest.approx(2 / 3)


def test_partial_overlap_counts_as_wrong():
    pred = [GOLD[0], utt(TEXT_B, "GetWeather", ("city", 23, 27)), utt(TEXT_C, "PlayMusic")]
    m = compute_metrics(GOLD, pred)
    # Gold 4, predicted 3 (one with a short span), right 2.
    assert m["slot_precision"] == pytest.approx(2 / 3)
    assert m["slot_recall"] == pytest.approx(2 / 4)
    assert m["slot_f1"] == pytest.approx(2 * (2 / 3) * (1 / 2) / (2 / 3 + 1 / 2))
    assert m["per_slot"]["city"]["f1"] == 0.0
    assert m["per_slot"]["genre"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert m["exact_match"] == pytest.approx(1 / 3)


def test_exact_match_needs_intent_and_all_slots():
    pred = [
        utt(TEXT_A, "PlayMusic", ("entity_name", 4, 12), ("playlist", 19, 27)),  # intent wrong
        utt(TEXT_B, "GetWeather", ("city", 23, 28), ("country", 0, 4)),  # extra slot
        GOLD[2],
    ]
    m = compute_metrics(GOLD, pred)
    assert m["exact_match"] == pytest.approx(1 / 3)
    assert m["intent_accuracy"] == pytest.approx(2 / 3)
    assert m["slot_recall"] == 1.0
    assert m["slot_precision"] == pytest.approx(4 / 5)


def test_per_intent_and_confusion_matrix():
    gold = GOLD + [utt(TEXT_C, "PlayMusic", ("genre", 10, 14)), utt("hello", None)]
    pred = [
        utt(TEXT_A, "PlayMusic"),
        GOLD[1],
        GOLD[2],
        utt(TEXT_C, "GetWeather"),
        utt("hello", "PlayMusic"),
    ]
    m = compute_metrics(gold, pred)
    conf = m["confusion"]
    assert conf["labels"] == ["AddToPlaylist", "GetWeather", "PlayMusic", OUT_OF_SCOPE]
    assert conf["matrix"] == [
        [0, 0, 1, 0],
        [0, 1, 0, 0],
        [0, 1, 1, 0],
        [0, 0, 1, 0],
    ]
    assert sum(map(sum, conf["matrix"])) == m["n"] == 5
    assert m["intent_accuracy"] == pytest.approx(2 / 5)
    play = m["per_intent"]["PlayMusic"]
    assert play["support"] == 2
    assert play["precision"] == pytest.approx(1 / 3)
    assert play["recall"] == pytest.approx(1 / 2)
    assert m["per_intent"]["AddToPlaylist"] == {
        "precision": 0.0,
        "recall": 0.0,
        "f1": 0.0,
        "support": 1,
    }
    assert m["per_intent"][OUT_OF_SCOPE]["support"] == 1


def test_no_slots_anywhere_gives_zero_not_an_error():
    gold = [utt("hello", "Greet")]
    m = compute_metrics(gold, gold)
    assert m["slot_f1"] == m["slot_precision"] == m["slot_recall"] == 0.0
    assert m["per_slot"] == {}
    assert m["exact_match"] == 1.0


def test_misaligned_inputs_are_rejected():
    with pytest.raises(ValueError, match="3 utterances"):
        compute_metrics(GOLD, GOLD[:2])
    with pytest.raises(ValueError, match="differs"):
        compute_metrics(GOLD, [GOLD[0], GOLD[2], GOLD[1]])


def test_misclassified_lists_wrong_utterances_with_slot_values():
    pred = [
        GOLD[0],
        utt(TEXT_B, "GetWeather", ("city", 23, 27)),
        utt(TEXT_C, "GetWeather", ("genre", 10, 14)),
    ]
    errors = misclassified(GOLD, pred)
    assert [e["text"] for e in errors] == [TEXT_B, TEXT_C]
    assert errors[0]["gold_slots"] == ["city=Paris"]
    assert errors[0]["pred_slots"] == ["city=Pari"]
    assert errors[1]["gold_intent"] == "PlayMusic"
    assert errors[1]["pred_intent"] == "GetWeather"


def _assert_image(path):
    data = path.read_bytes()
    assert data, path
    if path.suffix == ".png":
        assert data.startswith(b"\x89PNG\r\n\x1a\n")
    else:
        head = data[:2000].decode("utf-8", "replace")
        assert head.startswith("<?xml") or "<svg" in head


def test_write_report(tmp_path):
    pred = [
        GOLD[0],
        utt(TEXT_B, "GetWeather", ("city", 23, 27)),
        utt(TEXT_C, "GetWeather", ("genre", 10, 14)),
    ]
    piped = "rain in Paris | Rome"
    gold = GOLD + [utt(piped, "GetWeather", ("city", 8, 13), ("city", 16, 20))]
    pred = pred + [utt(piped, "PlayMusic", ("city", 8, 13), ("country", 16, 20))]
    metrics = compute_metrics(gold, pred)
    history = [
        {
            "epoch": 1,
            "train_loss": 1.2,
            "eval_loss": 0.9,
            "eval_intent_accuracy": 0.8,
            "eval_slot_f1": 0.6,
        },
        {
            "epoch": 2,
            "train_loss": 0.5,
            "eval_loss": 0.4,
            "train_intent_accuracy": 0.9,
            "eval_intent_accuracy": 0.9,
        },
        {"epoch": 3, "train_loss": 0.2, "eval_slot_f1": 0.8},
    ]
    out = tmp_path / "report"
    report = write_report(out, metrics, gold, pred, history, title="Test | run")

    assert report == out / "report.md"
    assert json.loads((out / "metrics.json").read_text()) == metrics
    for stem in ("confusion_matrix", "accuracy_by_epoch", "loss_by_epoch"):
        for ext in ("png", "svg"):
            _assert_image(out / f"{stem}.{ext}")
    text = report.read_text()
    assert "![Intent confusion matrix](confusion_matrix.png)" in text
    assert "(accuracy_by_epoch.png)" in text and "(loss_by_epoch.png)" in text
    assert "rain in Paris \\| Rome" in text and "Test \\| run" in text
    assert "city=Paris; city=Rome" in text
    assert "Misclassified utterances (3 of 4)" in text
    # Per-slot table sorted by support, most first.
    slot_section = text.split("## Per slot")[1].split("##")[0]
    rows = [
        line
        for line in slot_section.splitlines()
        if line.startswith("| ") and "precision" not in line
    ]
    assert [r.split("|")[1].strip() for r in rows] == [
        "city",
        "entity_name",
        "genre",
        "playlist",
        "country",
    ]
    assert [r.split("|")[-2].strip() for r in rows] == ["3", "1", "1", "1", "0"]


def test_write_report_without_history(tmp_path):
    write_report(tmp_path, compute_metrics(GOLD, GOLD), GOLD, GOLD, None, title="no history")
    assert (tmp_path / "confusion_matrix.png").stat().st_size > 0
    assert not (tmp_path / "loss_by_epoch.png").exists()
    assert "(0 of 3)" in (tmp_path / "report.md").read_text()


def test_tfidf_baseline_beats_chance_on_a_snips_slice(snips):
    from voicenlu.data import stratified_slice

    train = stratified_slice(snips.train, per_intent=40, seed=0)
    dev = stratified_slice(snips.dev, per_intent=20, seed=0)
    from voicenlu.lexical import LexicalModel

    model = LexicalModel.fit(train)
    predicted = model.predict([u.text for u in dev])
    accuracy = sum(p == u.intent for p, u in zip(predicted, dev, strict=True)) / len(dev)
    n_intents = len({u.intent for u in train})
    assert n_intents == 7
    assert accuracy > 0.8  # chance is 1/7

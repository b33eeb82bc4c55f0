"""Metrics and the evaluation report (DESIGN.md section 5).

Slots are scored on character spans, not on BIO tags: a predicted slot counts only if its
(type, start, end) equals a gold one exactly. That is seqeval's strict entity-level F1, but
independent of any tokenizer, so every model (and the baselines) is scored the same way.
No torch here: the report can be rebuilt from predictions alone.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from voicenlu.data.records import Utterance

OUT_OF_SCOPE = "<out of scope>"


def _intent_name(intent: str | None) -> str:
    return OUT_OF_SCOPE if intent is None else intent


def _ratio(num: float, den: float) -> float:
    return num / den if den else 0.0


def _prf(tp: int, fp: int, fn: int) -> dict:
    precision = _ratio(tp, tp + fp)
    recall = _ratio(tp, tp + fn)
    f1 = _ratio(2 * precision * recall, precision + recall)
    return {"precision": precision, "recall": recall, "f1": f1, "support": tp + fn}


def _spans(u: Utterance) -> set[tuple[str, int, int]]:
    return {(s.slot, s.start, s.end) for s in u.slots}


def _check_aligned(gold: Sequence[Utterance], pred: Sequence[Utterance]) -> None:
    if len(gold) != len(pred):
        raise ValueError(f"gold has {len(gold)} utterances but pred has {len(pred)}")
    for i, (g, p) in enumerate(zip(gold, pred, strict=True)):
        if g.text != p.text:
            raise ValueError(f"utterance {i} differs: gold {g.text!r} vs pred {p.text!r}")


def compute_metrics(gold: Sequence[Utterance], pred: Sequence[Utterance]) -> dict:
    """Score predictions against gold, aligned by position; returns a JSON-serialisable dict."""
    _check_aligned(gold, pred)
    slot_counts: dict[str, Counter] = {}
    intent_counts: dict[str, Counter] = {}
    pairs: Counter = Counter()
    intent_right = exact = 0
    for g, p in zip(gold, pred, strict=True):
        gi, pi = _intent_name(g.intent), _intent_name(p.intent)
        pairs[gi, pi] += 1
        intent_counts.setdefault(gi, Counter())
        intent_counts.setdefault(pi, Counter())
        if gi == pi:
            intent_right += 1
            intent_counts[gi]["tp"] += 1
        else:
            intent_counts[pi]["fp"] += 1
            intent_counts[gi]["fn"] += 1

        gs, ps = _spans(g), _spans(p)
        for span in gs | ps:
            kind = "tp" if span in gs and span in ps else ("fn" if span in gs else "fp")
            slot_counts.setdefault(span[0], Counter())[kind] += 1
        exact += gi == pi and gs == ps

    totals = sum(slot_counts.values(), Counter())
    slot_all = _prf(totals["tp"], totals["fp"], totals["fn"])
    labels = sorted(n for n in intent_counts if n != OUT_OF_SCOPE)
    labels += [OUT_OF_SCOPE] if OUT_OF_SCOPE in intent_counts else []
    n = len(gold)
    return {
        "n": n,
        "intent_accuracy": _ratio(intent_right, n),
        "slot_precision": slot_all["precision"],
        "slot_recall": slot_all["recall"],
        "slot_f1": slot_all["f1"],
        "exact_match": _ratio(exact, n),
        "per_intent": {
            k: _prf(c["tp"], c["fp"], c["fn"]) for k, c in sorted(intent_counts.items())
        },
        "per_slot": {k: _prf(c["tp"], c["fp"], c["fn"]) for k, c in sorted(slot_counts.items())},
        "confusion": {"labels": labels, "matrix": [[pairs[g, p] for p in labels] for g in labels]},
    }


def _slot_strings(u: Utterance) -> list[str]:
    return [f"{slot}={value}" for slot, value in u.slot_values()]


def misclassified(gold: Sequence[Utterance], pred: Sequence[Utterance]) -> list[dict]:
    """The utterances with a wrong intent or any wrong slot, to read the model's mistakes."""
    _check_aligned(gold, pred)
    return [
        {
            "text": g.text,
            "gold_intent": g.intent,
            "pred_intent": p.intent,
            "gold_slots": _slot_strings(g),
            "pred_slots": _slot_strings(p),
        }
        for g, p in zip(gold, pred, strict=True)
        if g.intent != p.intent or _spans(g) != _spans(p)
    ]


def _md(value: object) -> str:
    """Make a value safe inside a markdown table cell."""
    text = OUT_OF_SCOPE if value is None else str(value)
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _pct(x: float) -> str:
    return f"{100 * x:.2f}%"


def _prf_table(title: str, name: str, rows: list[tuple[str, dict]]) -> list[str]:
    lines = [
        f"## {title}",
        "",
        f"| {name} | precision | recall | F1 | support |",
        "|---|---:|---:|---:|---:|",
    ]
    for key, m in rows:
        scores = " | ".join(_pct(m[k]) for k in ("precision", "recall", "f1"))
        lines.append(f"| {_md(key)} | {scores} | {m['support']} |")
    return lines + [""]


def write_report(
    out_dir: Path,
    metrics: dict,
    gold: Sequence[Utterance],
    pred: Sequence[Utterance],
    history: list[dict] | None,
    title: str,
) -> Path:
    """Write metrics.json, report.md and the plots (PNG + SVG) into out_dir; return report.md."""
    from voicenlu.plots import plot_confusion, plot_history  # matplotlib: only for reports

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")

    conf = metrics["confusion"]
    plots = plot_confusion(conf["labels"], conf["matrix"], out_dir / "confusion_matrix")
    if history:
        plots += plot_history(history, out_dir)
    figures = {p.stem: p.name for p in plots if p.suffix == ".png"}

    lines = [
        f"# {_md(title)}",
        "",
        "| intent accuracy | slot F1 | exact match | n |",
        "|---:|---:|---:|---:|",
        f"| {_pct(metrics['intent_accuracy'])} | {_pct(metrics['slot_f1'])} "
        f"| {_pct(metrics['exact_match'])} | {metrics['n']} |",
        "",
        f"Slot precision {_pct(metrics['slot_precision'])}, recall {_pct(metrics['slot_recall'])} "
        "(micro, entity level: type and character span must both match exactly).",
        "",
    ]
    lines += _prf_table("Per intent", "intent", list(metrics["per_intent"].items()))
    by_support = sorted(metrics["per_slot"].items(), key=lambda kv: (-kv[1]["support"], kv[0]))
    lines += _prf_table("Per slot", "slot", by_support)

    lines += ["## Figures", ""]
    captions = {
        "confusion_matrix": "Intent confusion matrix",
        "accuracy_by_epoch": "Accuracy by epoch",
        "loss_by_epoch": "Loss by epoch",
    }
    for stem, caption in captions.items():
        if stem in figures:
            lines += [f"![{caption}]({figures[stem]}) ([SVG]({stem}.svg))", ""]

    errors = misclassified(gold, pred)
    lines += [f"## Misclassified utterances ({len(errors)} of {len(gold)})", ""]
    if errors:
        lines += [
            "| text | gold intent | predicted intent | gold slots | predicted slots |",
            "|---|---|---|---|---|",
        ]
        for e in errors:
            cells = [
                e["text"],
                e["gold_intent"],
                e["pred_intent"],
                "; ".join(e["gold_slots"]),
                "; ".join(e["pred_slots"]),
            ]
            lines.append("| " + " | ".join(_md(c) for c in cells) + " |")
        lines.append("")
    report = out_dir / "report.md"
    report.write_text("\n".join(lines), encoding="utf-8")
    return report


HEADLINE = ("intent_accuracy", "slot_f1", "exact_match")


def spoken_form_comparison(written: dict, spoken: dict) -> dict:
    """Headline figures of both forms and the drop from written to spoken (positive: worse)."""
    return {
        "written": {k: written[k] for k in HEADLINE},
        "spoken": {k: spoken[k] for k in HEADLINE},
        "drop": {k: written[k] - spoken[k] for k in HEADLINE},
    }


def evaluate_bundle(
    bundle: Path,
    gold: Sequence[Utterance],
    out_dir: Path | None = None,
    precision: str = "auto",
    split: str = "test",
    spoken_form: bool = False,
) -> dict:
    """Score a bundle on ``gold`` with the runtime that serves it and write the report.

    Scoring is closed-set (no out-of-scope threshold): benchmark data is all in scope, and
    rejection is measured separately, by the leave-one-intent-out protocol.

    Without ``out_dir`` the report goes to ``bundle/report`` and the bundle's own
    ``metrics.json`` and ``MODEL_CARD.md`` are (re)written. With ``spoken_form`` the spoken
    form of ``gold`` (what a speech recogniser writes) is scored too: its full report goes to
    ``spoken/`` inside the report folder and ``metrics["spoken_form"]`` holds both forms'
    figures and the drop.
    """
    from voicenlu.bundle import read_manifest, record_files
    from voicenlu.data.spoken import spoken_utterance
    from voicenlu.runtime import Parser, result_to_utterance

    parser = Parser.load(bundle, precision=precision)
    manifest = read_manifest(bundle, verify=False)
    report_dir = Path(out_dir or Path(bundle) / "report")

    def score(utterances: Sequence[Utterance]) -> tuple[dict, list[Utterance]]:
        results = parser.parse_batch([u.text for u in utterances], threshold=0.0)
        pred = [result_to_utterance(r) for r in results]
        return compute_metrics(utterances, pred), pred

    metrics, pred = score(gold)
    title = f"{manifest['backbone']} ({parser.precision}), {len(gold)} {split} utterances"
    if spoken_form:
        spoken_gold = [spoken_utterance(u) for u in gold]
        spoken_metrics, spoken_pred = score(spoken_gold)
        metrics["spoken_form"] = spoken_form_comparison(metrics, spoken_metrics)
        write_report(
            report_dir / "spoken",
            spoken_metrics,
            spoken_gold,
            spoken_pred,
            None,
            f"{title}, spoken form",
        )
    write_report(report_dir, metrics, gold, pred, manifest.get("history"), title)
    if out_dir is None:
        (Path(bundle) / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        write_model_card(Path(bundle), manifest, metrics, split)
        record_files(Path(bundle), "metrics.json", "MODEL_CARD.md")
    return metrics


def write_model_card(bundle: Path, manifest: dict, metrics: dict, split: str) -> None:
    """MODEL_CARD.md: what the model was trained on, how well it does, and its limits."""
    training = manifest.get("training", {})
    data = manifest.get("data", {})
    lines = [
        f"# voicenlu model: {bundle.name}",
        "",
        f"- Backbone: `{manifest['backbone']}`, fine-tuned with an intent head and a slot head"
        + (" (backbone frozen)" if training.get("freeze_backbone") else "")
        + ".",
        f"- Intents ({len(manifest['intents'])}): {', '.join(manifest['intents'])}.",
        f"- Slots: {len({t[2:] for t in manifest['slot_tags'] if t != 'O'})} types, BIO-tagged on"
        " every sub-token, decoded with BIO constraints.",
        f"- Data: {json.dumps(data, ensure_ascii=False)}.",
        f"- Training: seed {training.get('seed')}, {training.get('epochs_run')} epochs, "
        f"{training.get('train_seconds')} s.",
        "",
        f"## Figures on the {split} set",
        "",
        "| intent accuracy | slot F1 | exact match | utterances |",
        "|---|---|---|---|",
        f"| {_pct(metrics['intent_accuracy'])} | {_pct(metrics['slot_f1'])} | "
        f"{_pct(metrics['exact_match'])} | {metrics['n']} |",
        "",
        "## Limits",
        "",
        "- English only, and only the intents above: anything else gets the closest of them "
        "unless the out-of-scope threshold in `voicenlu.json` rejects it.",
        f"- Requests longer than {manifest['max_length']} sub-tokens are truncated; slots past "
        "that point are not found.",
        "- Trained on crowd-sourced written requests; speech-recogniser errors were not seen.",
        "",
    ]
    (bundle / "MODEL_CARD.md").write_text("\n".join(lines))

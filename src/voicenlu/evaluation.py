"""The evaluation report (markdown, JSON, plots) and scoring a bundle on data.

No torch here: a bundle is scored with the runtime that serves it, and the report can be
rebuilt from predictions alone. The metrics themselves are in ``metrics.py``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from voicenlu.data.records import Utterance
from voicenlu.metrics import HEADLINE, OUT_OF_SCOPE, compute_metrics, misclassified


def _md(value: object) -> str:
    """Make a value safe inside a markdown table cell."""
    text = OUT_OF_SCOPE if value is None else str(value)
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.2f}%"


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
        "(micro, entity level: type and character span must both match exactly)."
        if metrics["slot_f1"] is not None
        else "The data annotates intents only: slot figures and exact match do not apply.",
        "",
    ]
    lines += _prf_table("Per intent", "intent", list(metrics["per_intent"].items()))
    if metrics["slot_f1"] is not None:
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


def spoken_form_comparison(written: dict, spoken: dict) -> dict:
    """Headline figures of both forms and the drop from written to spoken (positive: worse)."""
    return {
        "written": {k: written[k] for k in HEADLINE},
        "spoken": {k: spoken[k] for k in HEADLINE},
        "drop": {k: None if written[k] is None else written[k] - spoken[k] for k in HEADLINE},
    }


def evaluate_bundle(
    bundle: Path,
    gold: Sequence[Utterance],
    out_dir: Path | None = None,
    precision: str = "auto",
    split: str = "test",
    write_bundle: bool = False,
    partial: bool = False,
    spoken_form: bool = False,
    slots: bool = True,
) -> dict:
    """Score a bundle on ``gold`` with the runtime that serves it; return the metrics.
    ``slots=False``: ``gold`` annotates intents only (slot figures are then None).

    Scoring is closed-set (no out-of-scope threshold): benchmark data is all in scope, and
    rejection is measured separately, by the leave-one-intent-out protocol.

    The report goes to ``out_dir`` when given. Only with ``write_bundle`` does the bundle's
    own ``metrics.json``, ``MODEL_CARD.md`` and ``report/`` change: scoring a bundle on other
    data must not rewrite what it says about itself. ``partial``: the pipeline is still
    writing the bundle.

    ``spoken_form`` also scores the spoken form of ``gold`` (what a speech recogniser
    writes): ``metrics["spoken_form"]`` holds both forms' figures and the drop, and the
    spoken form's own report goes to ``spoken/`` inside the report folder.
    """
    from voicenlu import bundle as bundles
    from voicenlu.data.spoken import spoken_utterance
    from voicenlu.runtime import Parser, result_to_utterance

    bundle = Path(bundle)
    parser = Parser.load(bundle, precision=precision, partial=partial)

    def score(utterances: Sequence[Utterance]) -> tuple[dict, list[Utterance]]:
        results = parser.parse_batch([u.text for u in utterances], threshold=0.0)
        pred = [result_to_utterance(r) for r in results]
        return compute_metrics(utterances, pred, slots=slots), pred

    metrics, pred = score(gold)
    manifest = parser.manifest
    title = f"{manifest['backbone']} ({parser.precision}), {len(gold)} {split} utterances"
    if split == "train":
        title += " (in-sample: every utterance was trained on)"
    if spoken_form:
        spoken_gold = [spoken_utterance(u) for u in gold]
        spoken_metrics, spoken_pred = score(spoken_gold)
        metrics["spoken_form"] = spoken_form_comparison(metrics, spoken_metrics)

    def report(folder: Path) -> Path:
        if spoken_form:
            spoken_title = f"{title}, spoken form"
            write_report(
                folder / "spoken", spoken_metrics, spoken_gold, spoken_pred, None, spoken_title
            )
        return write_report(folder, metrics, gold, pred, manifest.get("history"), title)

    if out_dir is not None:
        report(Path(out_dir))
    if write_bundle:
        bundles.put_folder(bundle, "report", report)
        bundles.put_text(bundle, "metrics.json", json.dumps(metrics, indent=2) + "\n")
        summary = {"split": split, **{k: metrics[k] for k in ("n", *HEADLINE)}}
        bundles.put_text(bundle, "MODEL_CARD.md", model_card(bundle.name, manifest, summary))
        bundles.update_manifest(bundle, metrics=summary)
    return metrics


def describe_choice(choice: dict) -> str:
    """How a run chose its checkpoint, lexical weight and calibration, in a few words."""
    if choice.get("method") == "fixed_schedule":
        return (
            "too few utterances to hold out a dev set, so the model trained on every "
            f"utterance for a fixed {choice['steps_run']} steps and kept the last weights "
            f"(lexical weight fixed at {choice['lexical_weight']:g}; out-of-scope calibration "
            "on the training utterances)"
        )
    best = choice.get("best_step")
    return (
        f"checkpoint chosen on {choice['dev']} dev utterances"
        + (f" (step {best} of {choice['steps_run']} run)" if best else "")
        + ", which also chose the lexical weight and calibrated"
    )


def model_card(name: str, manifest: dict, metrics: dict) -> str:
    """MODEL_CARD.md: what the model was trained on, how well it does, and its limits.

    Everything comes from the bundle's own record of its data: nothing is assumed of it.
    """
    training = manifest.get("training", {})
    data = manifest.get("data", {})
    counts = data.get("intents") or {}
    slot_counts = data.get("slots") or {}
    intents = ", ".join(f"{i} ({counts[i]})" if i in counts else i for i in manifest["intents"])
    slot_names = sorted({t[2:] for t in manifest["slot_tags"] if t != "O"})
    slots = ", ".join(f"{s} ({slot_counts[s]})" if s in slot_counts else s for s in slot_names)
    language = data.get("language")
    origin = data.get("description") or "not recorded"
    split = data.get("dev_split")
    held_out = (
        f" ({split['holdout']:.0%} of each intent held out, seed {split['seed']})"
        if split and split["holdout"]
        else ""
    )
    choice = training.get("choice")
    in_sample = metrics["split"] == "train"
    lines = [
        f"# voicenlu model: {name}",
        "",
        f"- Backbone: `{manifest['backbone']}`, fine-tuned with an intent head and a slot head"
        + (" (backbone frozen)" if training.get("freeze_backbone") else "")
        + ".",
        f"- Data: {origin}; {data.get('train', '?')} training and {data.get('dev', '?')} dev "
        "utterances"
        + held_out
        + (f", SHA-256 `{data['sha256']}`" if data.get("sha256") else "")
        + ".",
        f"- Language: {language or 'not recorded by the data'}.",
        f"- Intents ({len(manifest['intents'])}, training utterances each): {intents}.",
        f"- Slots ({len(slot_names)}, training examples each): {slots or 'none'}; BIO-tagged on "
        + "every sub-token, decoded with BIO constraints"
        + (" and a CRF's learned transitions." if training.get("crf") else "."),
        f"- Training: seed {training.get('seed')}, {training.get('epochs_run')} epochs, "
        f"{training.get('train_seconds')} s" + (f"; {describe_choice(choice)}." if choice else "."),
        "",
        "## Figures on the training utterances (in-sample)"
        if in_sample
        else f"## Figures on the {metrics['split']} set",
        "",
        *(
            [
                "Nothing was held out, so these figures say the model learnt its data, not how "
                "it does on new requests: score it on other requests with `voicenlu evaluate "
                "BUNDLE --data PATH`.",
                "",
            ]
            if in_sample
            else []
        ),
        "| intent accuracy | slot F1 | exact match | utterances |",
        "|---|---|---|---|",
        f"| {_pct(metrics['intent_accuracy'])} | {_pct(metrics['slot_f1'])} | "
        f"{_pct(metrics['exact_match'])} | {metrics['n']} |",
        "",
        "## Limits",
        "",
        "- Only the intents above: anything else gets the closest of them unless the "
        "out-of-scope threshold in `voicenlu.json` rejects it"
        + _background_note(manifest.get("calibration", {}))
        + ".",
        f"- Requests longer than {manifest['max_length']} sub-tokens are truncated; slots past "
        "that point are not found.",
        "- Trained on written requests and their spoken form (lower case, no punctuation, "
        "numbers as words), as a speech recogniser writes them; recognition errors were not "
        "seen."
        if training.get("spoken_copies")
        else "- Trained on written requests: text from a speech recogniser (lower case, no "
        "punctuation, numbers as words) may score lower.",
        "",
    ]
    return "\n".join(lines)


def _background_note(calibration: dict) -> str:
    """What the threshold does with the shipped background of general requests."""
    background = calibration.get("background")
    if not background:
        return ""
    return (
        f" (it rejects {100 * background['rejected']:.1f}% of the "
        f"{background['requests']} general requests of other assistants shipped as the "
        "background)"
    )

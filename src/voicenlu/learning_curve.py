"""Learning curve: test scores against the number of training examples per intent.

People bring 10 to 70 examples per intent, not 2,000. Each point trains on a stratified
draw of the standard training split (never the 300-per-intent ``train_<Intent>.json``
files, which share utterances with the standard test set), chooses its checkpoint on a
fixed 20-per-intent slice of dev and is scored on the 700 test utterances, side by side
with the TF-IDF + logistic regression baseline on the same draw.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import statistics
from pathlib import Path

from voicenlu.baselines import TfidfLogReg
from voicenlu.bundle import is_complete
from voicenlu.config import MIN_STEPS
from voicenlu.data.training import snips_split
from voicenlu.errors import ConfigError

SMALL = 300  # sizes below this get several draws: one draw of 10 says little
DEV_PER_INTENT = 20


def parse_sizes(text: str) -> list[int | None]:
    """``"10,20,full"`` -> ``[10, 20, None]`` (None is the whole training split)."""
    sizes: list[int | None] = []
    for item in text.split(","):
        item = item.strip()
        if item == "full":
            sizes.append(None)
        elif item.isdigit() and int(item) > 0:
            sizes.append(int(item))
        else:
            raise ConfigError(
                f"--sizes: {item!r} is not a positive number of examples per intent or 'full'."
            )
    return sizes


def config_for(base, n_train: int, min_steps: int = MIN_STEPS):
    """The base recipe, with enough epochs for ``min_steps`` steps and patience to match."""
    steps_per_epoch = math.ceil(n_train / base.batch_size)
    epochs = max(base.epochs, math.ceil(min_steps / steps_per_epoch))
    return dataclasses.replace(base, epochs=epochs, patience=max(base.patience, epochs // 3))


def learning_curve(
    snips, base, output_dir: Path, sizes, draws: int = 3, min_steps: int = MIN_STEPS
) -> dict:
    """Train and score every (size, draw); write the rows, means over draws, as they come.

    A run whose bundle is complete in ``output_dir`` is scored without training again, so an
    interrupted curve picks up where it stopped; a run stopped halfway is trained again.
    """
    from voicenlu.pipeline import train_bundle

    runs: list[dict] = []
    for size in sizes:
        for draw in range(draws if size is not None and size < SMALL else 1):
            seed = base.seed + draw
            data = snips_split(
                snips,
                per_intent=size or 0,
                seed=seed,
                dev_per_intent=DEV_PER_INTENT,
                dev_seed=base.seed,
            )
            chosen = data.train
            label = "full" if size is None else size
            config = dataclasses.replace(config_for(base, len(chosen), min_steps), seed=seed)
            run_dir = output_dir / f"{label}-draw{draw}"
            bundle = run_dir / "bundle"
            if not is_complete(bundle):  # else an interrupted run made it
                train_bundle(data, config, run_dir)
                shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)  # bundles suffice
            metrics = json.loads((bundle / "metrics.json").read_text())
            baseline = TfidfLogReg(seed=seed).fit(chosen)
            predicted = baseline.predict([u.text for u in snips.test])
            runs.append(
                {
                    "per_intent": label,
                    "draw": draw,
                    "train_utterances": len(chosen),
                    "mean_per_intent": len(chosen) / len({u.intent for u in chosen}),
                    "epochs": config.epochs,
                    "voicenlu": {k: metrics[k] for k in ("intent_accuracy", "slot_f1")},
                    "tfidf_logreg": {
                        "intent_accuracy": statistics.mean(
                            p == u.intent for p, u in zip(predicted, snips.test, strict=True)
                        )
                    },
                }
            )
            result = summarise(runs)  # written after every run: a partial curve survives
            (output_dir / "learning_curve.json").write_text(json.dumps(result, indent=2) + "\n")
    return summarise(runs)


def summarise(runs: list[dict]) -> dict:
    """Rows of means over draws, one per (size, model); the baseline has no slots."""
    rows = []
    for label in dict.fromkeys(r["per_intent"] for r in runs):
        same = [r for r in runs if r["per_intent"] == label]
        for model in ("voicenlu", "tfidf_logreg"):
            row = {
                "per_intent": label,
                "model": model,
                "draws": len(same),
                "mean_per_intent": statistics.mean(r["mean_per_intent"] for r in same),
            }
            for key in ("intent_accuracy", "slot_f1"):
                values = [r[model][key] for r in same if key in r[model]]
                row[key] = statistics.mean(values) if values else None
                row[f"{key}_std"] = statistics.pstdev(values) if values else None
            rows.append(row)
    return {"rows": rows, "runs": runs}


def _pct(value: float | None, std: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{100 * value:.2f}" + (f" ± {100 * std:.2f}" if std else "")


def render_learning_curve(result: dict, command: str) -> str:
    lines = [
        "# Learning curve on SNIPS",
        "",
        "Test scores (700 utterances) against training examples per intent: mean ± standard "
        f"deviation over draws. Checkpoints are chosen on {DEV_PER_INTENT} dev utterances per "
        "intent. The baseline is TF-IDF + logistic regression on the same draw (intents only). "
        f"Made by `{command}`.",
        "",
        "| per intent | draws | voicenlu intent acc. | voicenlu slot F1 | TF-IDF intent acc. |",
        "|---|---|---|---|---|",
    ]
    rows = result["rows"]
    for ours, theirs in zip(rows[::2], rows[1::2], strict=True):
        lines.append(
            f"| {ours['per_intent']} | {ours['draws']} | "
            f"{_pct(ours['intent_accuracy'], ours['intent_accuracy_std'])} | "
            f"{_pct(ours['slot_f1'], ours['slot_f1_std'])} | "
            f"{_pct(theirs['intent_accuracy'], theirs['intent_accuracy_std'])} |"
        )
    return "\n".join(lines) + "\n"

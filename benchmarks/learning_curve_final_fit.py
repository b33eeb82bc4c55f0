"""The learning curve at few examples per intent, trained as `voicenlu train` now trains such
data: no dev set, every utterance trained on for the fixed schedule, the last weights kept.

    python benchmarks/learning_curve_final_fit.py [--sizes 10,20] [--draws 3]
        [--banking77 PATH] [--banking77-sizes 10]
    python benchmarks/learning_curve_final_fit.py --render    # the .md again, from the .json

The draws (seeds 13, 14, 15) are those of benchmarks/learning_curve.md and
learning_curve_banking77.md, whose rows chose the checkpoint and lexical weight on 20 dev
utterances per intent that a user with 10 examples per intent does not have. Each row here
is set beside that one. Runs are kept under runs/learning-curve-final-fit; results go to
benchmarks/learning_curve_final_fit.{json,md}, rewritten after every curve; a run whose
bundle is complete is scored without training again, so more draws can be added later.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from pathlib import Path

from voicenlu.config import TrainConfig
from voicenlu.data import ensure_data, load_snips, stratified_slice
from voicenlu.data.formats import load_dataset
from voicenlu.data.training import TrainData
from voicenlu.experiments.learning_curve import (
    DEV_PER_INTENT,
    learning_curve,
    parse_sizes,
    snips_draws,
    summarise,
)
from voicenlu.experiments.provenance import provenance

ROOT = Path(__file__).resolve().parent
RUNS = ROOT.parent / "runs" / "learning-curve-final-fit"
OUT = ROOT / "learning_curve_final_fit"


def banking77(folder: Path, base: TrainConfig):
    """BANKING77's draws and test set, as benchmarks/learning_curve_banking77.py makes them."""
    train = load_dataset(folder / "train.csv").utterances
    test = load_dataset(folder / "test.csv").utterances
    dev = stratified_slice(train, DEV_PER_INTENT, base.seed)
    held = {u.text for u in dev}
    pool = [u for u in train if u.text not in held]
    source = {"kind": "benchmark", "description": "BANKING77", "language": "en"}

    def draw(per_intent: int | None, seed: int) -> TrainData:
        chosen = stratified_slice(pool, per_intent, seed) if per_intent else pool
        return TrainData(train=chosen, dev=dev, source=source)

    return draw, test


def before(name: str, label, draws: set[int]) -> dict:
    """The published runs of the same size and draws (checkpoint chosen on 20 dev utterances
    per intent), as a row of means: the same training utterances, trained the earlier way."""
    path = ROOT / ("learning_curve.json" if name == "SNIPS" else "learning_curve_banking77.json")
    runs = json.loads(path.read_text())["runs"]
    same = [r for r in runs if r["per_intent"] == label and r["draw"] in draws]
    if not same:
        return {}
    return next(r for r in summarise(same)["rows"] if r["model"] == "voicenlu")


def pct(value, std=None) -> str:
    if value is None:
        return "n/a"
    return f"{100 * value:.2f}" + (f" ± {100 * std:.2f}" if std else "")


def render(result: dict) -> str:
    lines = [
        "# Learning curve at few examples per intent, trained without dev",
        "",
        "Draws too small to spare a dev set (a tenth under 5 per intent) train as `voicenlu "
        "train` now trains them: on every utterance, for the fixed schedule of the recipe "
        "(at least 400 steps), keeping the last weights, with the lexical weight fixed at 1. "
        "Beside each row, the same draws (same seeds, same training utterances) as the "
        "published curve trained them: checkpoint and lexical weight chosen on "
        f"{DEV_PER_INTENT} dev utterances per intent that such a user does not have. Test "
        "scores, mean ± standard deviation over draws. "
        f"Made by `{result['command']}` at commit {result['commit'][:10]} on a 2-core machine "
        "shared with other jobs (train times are indicative only)."
        + (f" Stopped after {result['stopped_after']}." if result.get("stopped_after") else ""),
        "",
        "| data | per intent | draws | intent acc., no dev | intent acc., 20 dev/intent "
        "| slot F1, no dev | slot F1, 20 dev/intent | TF-IDF intent acc. | train s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, curve in result["curves"].items():
        by = {(r["per_intent"], r["model"]): r for r in curve["rows"]}
        for label in dict.fromkeys(r["per_intent"] for r in curve["rows"]):
            ours, tfidf = by[label, "voicenlu"], by[label, "tfidf_logreg"]
            runs = [r for r in curve["runs"] if r["per_intent"] == label]
            prev = before(name, label, {r["draw"] for r in runs})
            seconds = sum(r["train_seconds"] for r in runs) / len(runs)
            lines.append(
                f"| {name} | {label} | {ours['draws']} | "
                f"{pct(ours['intent_accuracy'], ours['intent_accuracy_std'])} | "
                f"{pct(prev.get('intent_accuracy'), prev.get('intent_accuracy_std'))} | "
                f"{pct(ours['slot_f1'], ours['slot_f1_std'])} | "
                f"{pct(prev.get('slot_f1'), prev.get('slot_f1_std'))} | "
                f"{pct(tfidf['intent_accuracy'], tfidf['intent_accuracy_std'])} | "
                f"{seconds:.0f} |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--render", action="store_true", help="only write the .md again from the .json"
    )
    parser.add_argument("--sizes", default="10,20")
    parser.add_argument("--draws", type=int, default=3)
    parser.add_argument("--banking77", default=os.environ.get("VOICENLU_BANKING77"))
    parser.add_argument("--banking77-sizes", default="10")
    args = parser.parse_args()
    if args.render:
        OUT.with_suffix(".md").write_text(render(json.loads(OUT.with_suffix(".json").read_text())))
        return
    base = TrainConfig()
    snips = load_snips(ensure_data(None))
    jobs = [("SNIPS", snips_draws(snips, dev_seed=base.seed), snips.test, args.sizes)]
    if args.banking77:
        draw, test = banking77(Path(args.banking77), base)
        jobs.append(("BANKING77", draw, test, args.banking77_sizes))
    result = {**provenance(), "config": dataclasses.asdict(base), "curves": {}}
    for name, draw, test, sizes in jobs:
        folder = RUNS / name.lower()
        folder.mkdir(parents=True, exist_ok=True)
        curve = learning_curve(draw, test, base, folder, parse_sizes(sizes), args.draws)
        result["curves"][name] = curve
        OUT.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
        OUT.with_suffix(".md").write_text(render(result))
    print(render(result))


if __name__ == "__main__":
    main()

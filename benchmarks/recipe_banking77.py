"""Recipe variants on BANKING77 dev: the few-shot case with many fine-grained intents.

    python benchmarks/recipe_banking77.py --data PATH/banking77 --variants default,contrastive_2800

Each run trains on the learning curve's draw of 10 utterances per intent (the same dev of 20
per intent chooses the checkpoint and the lexical weight) and is scored on 30 other training
utterances per intent that neither the draw nor that dev holds: its test set picks nothing.
A ``default`` run reuses the learning curve's bundle of the same draw. Results go to
benchmarks/recipe_banking77.{json,md}.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import statistics
import sys
from pathlib import Path

from recipe import VARIANTS

from voicenlu.bundle import is_complete
from voicenlu.config import TrainConfig
from voicenlu.data import stratified_slice
from voicenlu.data.formats import load_dataset
from voicenlu.data.training import TrainData
from voicenlu.experiments.learning_curve import DEV_PER_INTENT
from voicenlu.experiments.provenance import provenance
from voicenlu.pipeline import train_bundle
from voicenlu.runtime import Parser

ROOT = Path(__file__).resolve().parent
CURVE = ROOT.parent / "runs" / "learning-curve-banking77"
RUNS = ROOT.parent / "runs" / "recipe-banking77"
SCORED_PER_INTENT = 30


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=os.environ.get("VOICENLU_BANKING77"))
    parser.add_argument("--per-intent", type=int, default=10)
    parser.add_argument("--draws", type=int, default=1)
    parser.add_argument("--variants", default="default,contrastive_2800")
    args = parser.parse_args()
    if not args.data:
        sys.exit("Pass --data PATH (a folder with train.csv) or set VOICENLU_BANKING77.")
    train = load_dataset(Path(args.data) / "train.csv").utterances
    base = TrainConfig()
    dev = stratified_slice(train, DEV_PER_INTENT, base.seed)  # as the learning curve holds out
    held = {u.text for u in dev}
    pool = [u for u in train if u.text not in held]
    source = {"kind": "benchmark", "description": "BANKING77", "language": "en"}
    runs = []
    for index in range(args.draws):
        seed = base.seed + index
        chosen = stratified_slice(pool, args.per_intent, seed)
        drawn = {u.text for u in chosen}
        rest = [u for u in pool if u.text not in drawn]
        scored = stratified_slice(rest, SCORED_PER_INTENT, seed)
        data = TrainData(train=chosen, dev=dev, test=scored, source=source)
        for variant in args.variants.split(","):
            if variant == "default":
                run_dir = CURVE / f"{args.per_intent}-draw{index}"
            else:
                run_dir = RUNS / f"{variant}-{args.per_intent}-draw{index}"
            if not is_complete(run_dir / "bundle"):
                config = dataclasses.replace(base, seed=seed, **VARIANTS[variant])
                train_bundle(data, config, run_dir)
                shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
            bundle = Parser.load(run_dir / "bundle")
            results = bundle.parse_batch([u.text for u in scored], threshold=0.0)
            accuracy = statistics.mean(
                r["intent"]["name"] == u.intent for r, u in zip(results, scored, strict=True)
            )
            manifest = json.loads((run_dir / "bundle" / "voicenlu.json").read_text())
            runs.append(
                {
                    "variant": variant,
                    "per_intent": args.per_intent,
                    "draw": index,
                    "dev_scored": len(scored),
                    "intent_accuracy": accuracy,
                    "train_seconds": manifest["training"]["train_seconds"],
                }
            )
            result = {**provenance(), "runs": runs}
            (ROOT / "recipe_banking77.json").write_text(json.dumps(result, indent=2) + "\n")
    command = "python benchmarks/recipe_banking77.py " + " ".join(sys.argv[1:])
    lines = [
        "# Recipe variants on BANKING77 dev",
        "",
        f"Made by `{command}`. Intent accuracy on {SCORED_PER_INTENT} training utterances per "
        "intent held out from the draw and from the dev set that chose the checkpoint.",
        "",
        "| variant | per intent | draw | intent acc. | train s |",
        "|---|---|---|---|---|",
    ]
    for r in runs:
        lines.append(
            f"| {r['variant']} | {r['per_intent']} | {r['draw']} | "
            f"{100 * r['intent_accuracy']:.2f} | {r['train_seconds']:.0f} |"
        )
    (ROOT / "recipe_banking77.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

"""The learning curve on BANKING77: 77 fine-grained banking intents, intents only.

    python benchmarks/learning_curve_banking77.py --data PATH/banking77 [--sizes 10,30,full]

PATH/banking77 holds ``train.csv`` and ``test.csv`` (columns ``text,category``) from
github.com/PolyAI-LDN/task-specific-datasets (``banking_data/``; CC BY 4.0); the variable
VOICENLU_BANKING77 may name it instead of ``--data``. Its test set chooses nothing: 20
utterances per intent of the training file are held out as dev (checkpoints, the lexical
weight, calibration) and the draws come from the rest. Runs are kept under
runs/learning-curve-banking77; results go to benchmarks/learning_curve_banking77.{json,md,png}.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from voicenlu.config import TrainConfig
from voicenlu.data import stratified_slice
from voicenlu.data.formats import load_dataset
from voicenlu.data.training import TrainData
from voicenlu.experiments.learning_curve import (
    DEV_PER_INTENT,
    learning_curve,
    parse_sizes,
    render_learning_curve,
)
from voicenlu.plots import plot_learning_curve

ROOT = Path(__file__).resolve().parent
RUNS = ROOT.parent / "runs" / "learning-curve-banking77"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=os.environ.get("VOICENLU_BANKING77"))
    parser.add_argument("--sizes", default="10,30,full")
    parser.add_argument("--draws", type=int, default=3)
    args = parser.parse_args()
    if not args.data:
        sys.exit(
            "Pass --data PATH (a folder with train.csv and test.csv) or set VOICENLU_BANKING77."
        )
    folder = Path(args.data)
    train = load_dataset(folder / "train.csv").utterances
    test = load_dataset(folder / "test.csv").utterances
    base = TrainConfig()
    dev = stratified_slice(train, DEV_PER_INTENT, base.seed)
    held = {u.text for u in dev}
    pool = [u for u in train if u.text not in held]
    source = {
        "kind": "benchmark",
        "description": "BANKING77 (PolyAI task-specific-datasets, banking_data)",
        "language": "en",
    }

    def draw(per_intent: int | None, seed: int) -> TrainData:
        chosen = stratified_slice(pool, per_intent, seed) if per_intent else pool
        return TrainData(train=chosen, dev=dev, source=source)

    RUNS.mkdir(parents=True, exist_ok=True)
    sizes = parse_sizes(args.sizes)
    result = learning_curve(draw, test, base, RUNS, sizes, args.draws)
    command = "python benchmarks/learning_curve_banking77.py " + " ".join(sys.argv[1:])
    (ROOT / "learning_curve_banking77.json").write_text(json.dumps(result, indent=2) + "\n")
    table = render_learning_curve(result, command, name="BANKING77")
    (ROOT / "learning_curve_banking77.md").write_text(table)
    plot_learning_curve(result["rows"], ROOT / "learning_curve_banking77", name="BANKING77")
    print(table)


if __name__ == "__main__":
    main()

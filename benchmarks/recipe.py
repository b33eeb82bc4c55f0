"""The training recipe's ingredients, each measured on SNIPS dev (the test set picks nothing).

    python benchmarks/recipe.py                 # sizes 10 and 70 per intent, one draw each
    python benchmarks/recipe.py --sizes 10 --draws 2
    python benchmarks/recipe.py --sizes full --variants crf   # the whole training split

Each run trains on a stratified draw of the standard training split, chooses its checkpoint
(and the lexical weight) on 20 dev utterances per intent, as the learning curve does, and is
scored on the rest of dev (559 utterances). ``default`` is the shipped recipe; every other
variant changes one setting of it, and ``previous`` is the recipe before these ingredients.
Runs are kept under runs/recipe, so an interrupted benchmark picks up where it stopped;
results go to benchmarks/recipe.json and recipe_runs.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import statistics
import sys
from pathlib import Path

from voicenlu.bundle import is_complete
from voicenlu.config import TrainConfig
from voicenlu.data import ensure_data, load_snips
from voicenlu.data.training import snips_split
from voicenlu.evaluation import evaluate_bundle
from voicenlu.experiments.learning_curve import DEV_PER_INTENT, parse_sizes
from voicenlu.experiments.provenance import provenance
from voicenlu.metrics import compute_metrics
from voicenlu.pipeline import train_bundle
from voicenlu.runtime import Parser, result_to_utterance

ROOT = Path(__file__).resolve().parent
RUNS = ROOT.parent / "runs" / "recipe"
VARIANTS = {
    "default": {},
    "no_lexical": None,  # the default run's network alone: the lexical model is applied after
    "no_slot_swaps": {"slot_swaps": 0},
    "slot_swaps_16": {"slot_swaps": 16},
    "first_token": {"mean_pooling": False},
    "label_smoothing_0.1": {"label_smoothing": 0.1},
    "one_learning_rate": {"head_lr": TrainConfig().encoder_lr},  # heads at the encoder's rate
    "contrastive_2800": {"contrastive_pairs": 2800},
    "crf": {"crf": True},
    "previous": {"lexical": False, "slot_swaps": 0, "mean_pooling": False},
}
METRICS = ("intent_accuracy", "slot_f1", "exact_match")


def run(snips, variant: str, size: int | None, draw: int) -> dict:
    """One variant trained on one draw (``size`` None: the whole training split), scored on
    the dev utterances that did not choose its checkpoint."""
    base = TrainConfig()
    seed = base.seed + draw
    data = snips_split(
        snips, per_intent=size or 0, seed=seed, dev_per_intent=DEV_PER_INTENT, dev_seed=base.seed
    )
    chosen = {u.text for u in data.dev}
    held = [u for u in snips.dev if u.text not in chosen]
    data = dataclasses.replace(data, test=held)  # the bundle is scored on the rest of dev
    trained = "default" if VARIANTS[variant] is None else variant
    label = "full" if size is None else size
    run_dir = RUNS / f"{trained}-{label}-draw{draw}"
    bundle = run_dir / "bundle"
    if not is_complete(bundle):
        config = dataclasses.replace(base, seed=seed, **VARIANTS[trained])
        train_bundle(data, config, run_dir)
        shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
    manifest = json.loads((bundle / "voicenlu.json").read_text())
    if VARIANTS[variant] is None:
        metrics, manifest["lexical"] = network_alone(bundle, held), None
    else:  # scored here, not read from the bundle: a bundle may come from the learning curve
        metrics = evaluate_bundle(bundle, held, split="dev")
    return {
        "variant": variant,
        "per_intent": label,
        "draw": draw,
        "dev_scored": metrics["n"],
        **{k: metrics[k] for k in METRICS},
        "lexical_weight": (manifest.get("lexical") or {}).get("weight", 0.0),
        "train_seconds": manifest["training"]["train_seconds"],
    }


def network_alone(bundle: Path, gold) -> dict:
    """Scores of a bundle with its lexical model switched off."""
    parser = Parser.load(bundle)
    parser.lexical = None
    results = parser.parse_batch([u.text for u in gold], threshold=0.0)
    return compute_metrics(gold, [result_to_utterance(r) for r in results])


def render(runs: list[dict], command: str) -> str:
    lines = [
        "# Recipe ingredients on SNIPS dev",
        "",
        f"Made by `{command}`. Scores on the dev utterances not used to choose the checkpoint "
        "(mean over draws). `default` is the shipped recipe; each other row changes one "
        "setting of it; `previous` is the recipe before these ingredients.",
        "",
        "| variant | per intent | draws | intent acc. | slot F1 | exact match | lexical weight "
        "| train s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    keys = dict.fromkeys((r["variant"], r["per_intent"]) for r in runs)
    order = list(VARIANTS)  # ingredients measured and then deleted come last

    def rank(key):
        size = float("inf") if key[1] == "full" else key[1]
        return size, order.index(key[0]) if key[0] in order else len(order), key[0]

    for variant, size in sorted(keys, key=rank):
        same = [r for r in runs if r["variant"] == variant and r["per_intent"] == size]
        cells = [f"{100 * statistics.mean(r[m] for r in same):.2f}" for m in METRICS]
        weights = "/".join(f"{r['lexical_weight']:g}" for r in same)
        seconds = statistics.mean(r["train_seconds"] for r in same)
        lines.append(
            f"| {variant} | {size} | {len(same)} | {' | '.join(cells)} | {weights} | "
            f"{seconds:.0f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="10,70")
    parser.add_argument("--draws", type=int, default=1)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    args = parser.parse_args()
    snips = load_snips(ensure_data(None))
    out = ROOT / "recipe.json"
    runs = json.loads(out.read_text())["runs"] if out.exists() else []
    for size in parse_sizes(args.sizes):
        for draw in range(args.draws):
            for variant in args.variants.split(","):
                new = run(snips, variant, size, draw)
                key = (variant, new["per_intent"], draw)
                runs = [r for r in runs if (r["variant"], r["per_intent"], r["draw"]) != key]
                runs.append(new)
                out.write_text(json.dumps({**provenance(), "runs": runs}, indent=2) + "\n")
                table = render(runs, "python benchmarks/recipe.py " + " ".join(sys.argv[1:]))
                (ROOT / "recipe_runs.md").write_text(table)
                print(table, flush=True)


if __name__ == "__main__":
    main()

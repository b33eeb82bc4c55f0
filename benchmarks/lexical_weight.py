"""How well dev chooses the lexical weight: the learning curve's bundles, re-scored on SNIPS dev.

    python benchmarks/lexical_weight.py [--runs runs/learning-curve]

Each bundle of ``voicenlu evaluate --learning-curve`` chose its weight on 20 dev utterances
per intent (140). This scores its intent accuracy with each weight on those 140 and on the
other 559 dev utterances, which chose nothing, so the rule that picks the weight can be judged
without the test set. Results go to benchmarks/lexical_weight.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from voicenlu.bundle import read_manifest
from voicenlu.data import ensure_data, load_snips, stratified_slice
from voicenlu.experiments.provenance import provenance
from voicenlu.lexical import WEIGHTS
from voicenlu.runtime import Parser

ROOT = Path(__file__).resolve().parent
SCORED = (*WEIGHTS, 4.0, 8.0)  # the weights dev chooses from, and two beyond


def accuracies(parser: Parser, utterances) -> dict[float, float]:
    """Intent accuracy with each weight of the bundle's lexical evidence."""
    texts = [u.text for u in utterances]
    labels = np.array([parser.intents.index(u.intent) for u in utterances])
    chunks = [texts[i : i + 64] for i in range(0, len(texts), 64)]
    served = np.concatenate([parser.logits(chunk)[1] for chunk in chunks])
    lexical = parser.lexical.log_probs(texts)
    network = served - parser.lexical_weight * lexical  # the logits hold the chosen weight
    return {w: float(((network + w * lexical).argmax(1) == labels).mean()) for w in SCORED}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", default="runs/learning-curve")
    args = parser.parse_args()
    snips = load_snips(ensure_data(None))
    rows = []
    for bundle in sorted(Path(args.runs).glob("*/bundle"), key=_size_then_draw):
        bundle_parser = Parser.load(bundle, precision="fp32")
        data = read_manifest(bundle)["data"]  # the bundle's own dev draw
        choosing = stratified_slice(snips.dev, data["dev_per_intent"], data["dev_seed"])
        chosen = {u.text for u in choosing}
        held = [u for u in snips.dev if u.text not in chosen]
        rows.append(
            {
                "run": bundle.parent.name,
                "chosen_weight": bundle_parser.lexical_weight,
                "choosing_dev": accuracies(bundle_parser, choosing),
                "held_out_dev": accuracies(bundle_parser, held),
            }
        )
    command = " ".join(["python benchmarks/lexical_weight.py", *sys.argv[1:]])
    (ROOT / "lexical_weight.json").write_text(
        json.dumps({**provenance(), "held_out": len(held), "rows": rows}, indent=2) + "\n"
    )
    table = render(rows, command, len(choosing), len(held))
    (ROOT / "lexical_weight.md").write_text(table)
    print(table)


def _size_then_draw(bundle: Path) -> tuple[float, str]:
    size = bundle.parent.name.split("-")[0]
    return (float("inf") if size == "full" else int(size), bundle.parent.name)


def render(rows: list[dict], command: str, n_choosing: int, n_held: int) -> str:
    head = " | ".join(f"w={w:g}" for w in SCORED)
    lines = [
        "# The lexical weight on SNIPS dev",
        "",
        f"Intent accuracy of the learning curve's bundles with each lexical weight: on the "
        f"{n_choosing} dev utterances that chose it (first line of each run) and on the other "
        f"{n_held}, which chose nothing (second line); **bold** is the weight chosen. Dev "
        f"chooses from {', '.join(f'{w:g}' for w in WEIGHTS)}. Made by `{command}`.",
        "",
        f"| run | dev part | {head} |",
        "|---|---|" + "---|" * len(SCORED),
    ]
    for row in rows:
        for part, key in (("choosing", "choosing_dev"), ("held out", "held_out_dev")):
            cells = [
                f"**{100 * acc:.2f}**" if w == row["chosen_weight"] else f"{100 * acc:.2f}"
                for w, acc in ((float(w), a) for w, a in row[key].items())
            ]
            lines.append(f"| {row['run']} | {part} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()

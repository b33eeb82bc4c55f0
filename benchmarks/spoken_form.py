"""Written against spoken form: the default recipe on SNIPS, scored on both forms of the test set.

    python benchmarks/spoken_form.py      # trains what is missing under runs/bench, then
                                          # writes benchmarks/spoken_form.json and spoken_form.md

Each seed is the bundle of ``benchmarks/snips.py`` (an ordinary ``voicenlu train`` with the
shipped defaults, so the training set includes the spoken copies) scored by
``voicenlu evaluate BUNDLE --spoken-form``. A seed's figures are kept
in its run folder as soon as it finishes, and the JSON and table are rewritten after every seed,
so an interrupted benchmark resumes where it stopped and always shows the seeds done so far.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from snips import METRICS, RUNS, SEEDS, summary, trained_run

from voicenlu.data import ensure_data
from voicenlu.experiments.provenance import provenance

ROOT = Path(__file__).resolve().parent
FORMS = ("written", "spoken")
GOAL = {"intent_accuracy": 0.2, "slot_f1": 0.5, "exact_match": 1.0}  # largest drop, in points
NAMES = {"intent_accuracy": "intent accuracy", "slot_f1": "slot F1", "exact_match": "exact match"}


def voicenlu(*args: str) -> None:
    cmd = [sys.executable, "-m", "voicenlu", *args]
    print("+", " ".join(cmd[1:]), flush=True)
    subprocess.run(cmd, check=True)


def seed_run(seed: int) -> dict:
    """Train snips.py's bundle for this seed if missing, and score both forms of the test set."""
    run_dir = RUNS / f"finetuned-{seed}"
    result_file = run_dir / "spoken_form.json"
    if result_file.is_file():
        return json.loads(result_file.read_text())
    trained = trained_run("finetuned", seed, existing_only=False)
    out = run_dir / "spoken-form"
    voicenlu("evaluate", str(run_dir / "bundle"), "--spoken-form", "--out", str(out))
    metrics = json.loads((out / "metrics.json").read_text())
    result = {form: metrics["spoken_form"][form] for form in FORMS}
    result["train_seconds"] = trained["train_seconds"]
    result_file.write_text(json.dumps(result, indent=2) + "\n")
    return result


def render(result: dict) -> str:
    points = {
        form: {k: [100 * v for v in result[form][k]["runs"]] for k in METRICS} for form in FORMS
    }
    n = len(result["seeds"])
    lines = [
        "# Spoken form: SNIPS test set as a speech recogniser writes it",
        "",
        "The 700 test utterances of the standard split (Goo et al. 2018), written as in the "
        "benchmark and in their spoken form (lower case, no punctuation, numbers as words; "
        "`voicenlu.data.spoken`). Default recipe, which adds the spoken copy of each training "
        "utterance whose spoken form differs from it; CPU only (2 cores).",
        "",
        f"Mean ± std over {n} seed{'s' if n != 1 else ''} "
        f"({', '.join(str(s) for s in result['seeds'])})"
        + ("." if n == len(SEEDS) else f"; {len(SEEDS) - n} of the planned {SEEDS} not run."),
        f"Command: `{result['command']}` at commit `{(result['commit'] or 'none')[:7]}` "
        f"({result['created']}).",
        "",
        "| metric | written | spoken | drop (points) | goal: drop at most |",
        "|---|---|---|---|---|",
    ]
    for key in METRICS:
        cells = []
        for form in FORMS:
            mean = 100 * result[form][key]["mean"]
            cells.append(f"{mean:.2f} ± {100 * result[form][key]['std']:.2f}")
        drop = 100 * (result["written"][key]["mean"] - result["spoken"][key]["mean"])
        lines.append(f"| {NAMES[key]} | {' | '.join(cells)} | {drop:.2f} | {GOAL[key]:.1f} |")
    lines += ["", "Per seed (written / spoken):", ""]
    for i, seed in enumerate(result["seeds"]):
        figures = ", ".join(
            f"{NAMES[k]} {points['written'][k][i]:.2f} / {points['spoken'][k][i]:.2f}"
            for k in METRICS
        )
        lines.append(f"- seed {seed}: {figures}")
    return "\n".join(lines) + "\n"


def main() -> None:
    # The bundle of the first seed; every seed's is an ordinary run of snips.py.
    record = provenance(bundle=RUNS / f"finetuned-{SEEDS[0]}" / "bundle", data=[ensure_data()])
    runs: list[tuple[int, dict]] = []
    for seed in SEEDS:
        runs.append((seed, seed_run(seed)))
        result = record | {
            form: {k: summary([r[form][k] for _, r in runs]) for k in METRICS} for form in FORMS
        }
        result["seeds"] = [s for s, _ in runs]
        (ROOT / "spoken_form.json").write_text(json.dumps(result, indent=2) + "\n")
        (ROOT / "spoken_form.md").write_text(render(result))
        print(render(result), flush=True)


if __name__ == "__main__":
    main()

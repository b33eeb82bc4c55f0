"""Reference SNIPS figures: the default recipe over 3 seeds, and the TF-IDF + logistic regression
intent baseline, on the 700 test utterances of the standard split. (The frozen-backbone reference
is a row of the learning curve.)

    python benchmarks/snips.py            # trains what is missing under runs/bench, then writes
                                          # benchmarks/snips.json, snips.md and snips_plots/
    python benchmarks/snips.py --existing # only summarise the runs already there

Each training run is an ordinary ``voicenlu train`` whose bundle is kept under runs/bench, so an
interrupted benchmark picks up where it stopped (a run with checkpoints resumes from them);
``benchmarks/spoken_form.py`` scores the same bundles.
"""

from __future__ import annotations

import json
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from voicenlu.bundle import read_manifest
from voicenlu.data import ensure_data, load_snips
from voicenlu.experiments.provenance import provenance
from voicenlu.lexical import LexicalModel

ROOT = Path(__file__).resolve().parent
RUNS = ROOT.parent / "runs" / "bench"
SEEDS = [13, 14, 15]
VARIANTS = {"finetuned": []}
METRICS = ("intent_accuracy", "slot_f1", "exact_match")


def summary(values: list[float]) -> dict:
    return {
        "mean": statistics.mean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        "runs": values,
    }


def trained_run(variant: str, seed: int, existing_only: bool) -> dict | None:
    run_dir = RUNS / f"{variant}-{seed}"
    metrics_file = run_dir / "bundle" / "metrics.json"
    if not metrics_file.is_file():
        if existing_only:
            return None
        cmd = [
            sys.executable,
            "-m",
            "voicenlu",
            "train",
            "--output-dir",
            str(run_dir),
            "--seed",
            str(seed),
            *VARIANTS[variant],
            *(["--resume"] if (run_dir / "checkpoints").is_dir() else []),
        ]
        print("+", " ".join(cmd[1:]), flush=True)
        subprocess.run(cmd, check=True)
    metrics = json.loads(metrics_file.read_text())
    manifest = read_manifest(run_dir / "bundle", verify=False)
    return {
        **{k: metrics[k] for k in METRICS},
        "train_seconds": manifest["training"]["train_seconds"],
        "bundle_digest": manifest["digest"],
    }


def tfidf_run(snips, seed: int) -> dict:
    started = time.perf_counter()
    model = LexicalModel.fit(snips.train)
    seconds = time.perf_counter() - started
    predicted = model.predict([u.text for u in snips.test])
    accuracy = sum(p == u.intent for p, u in zip(predicted, snips.test, strict=True)) / len(
        snips.test
    )
    return {"intent_accuracy": accuracy, "train_seconds": seconds}


def main() -> None:
    existing_only = "--existing" in sys.argv[1:]
    data_dir = ensure_data()
    snips = load_snips(data_dir)
    result = {
        # The bundle of the first seed; every seed's digest is under its variant.
        **provenance(bundle=RUNS / f"finetuned-{SEEDS[0]}" / "bundle", data=[data_dir]),
        "split": "goo2018",
        "seeds": SEEDS,
        "machine": platform.processor() or platform.machine(),
        "variants": {},
    }
    for variant in VARIANTS:
        runs = [trained_run(variant, seed, existing_only) for seed in SEEDS]
        seeds = [seed for seed, run in zip(SEEDS, runs, strict=True) if run]
        runs = [run for run in runs if run]
        result["variants"][variant] = {
            "seeds": seeds,
            "bundle_digests": [r["bundle_digest"] for r in runs],
        } | {k: summary([r[k] for r in runs]) for k in (*METRICS, "train_seconds")}
    runs = [tfidf_run(snips, seed) for seed in SEEDS]
    result["variants"]["tfidf_logreg"] = {
        k: summary([r[k] for r in runs]) for k in ("intent_accuracy", "train_seconds")
    }
    (ROOT / "snips.json").write_text(json.dumps(result, indent=2) + "\n")

    lines = [
        "| variant | seeds | intent accuracy | slot F1 | exact match | train time |",
        "|---|---|---|---|---|---|",
    ]
    for name, v in result["variants"].items():
        cells = [
            f"{100 * v[k]['mean']:.2f} ± {100 * v[k]['std']:.2f}" if k in v else "n/a"
            for k in METRICS
        ]
        seeds = ", ".join(str(s) for s in v.get("seeds", SEEDS))
        minutes = v["train_seconds"]["mean"] / 60
        lines.append(f"| {name} | {seeds} | {' | '.join(cells)} | {minutes:.1f} min |")
    table = "\n".join(lines)
    (ROOT / "snips.md").write_text(
        "# SNIPS, standard split (Goo et al. 2018), 700 test utterances\n\n"
        f"Mean ± std over seeds {SEEDS}; CPU only (2 cores).\n"
        f"Command: `{result['command']}` at commit {str(result['commit'])[:10]}.\n\n"
        f"{table}\n"
    )
    plots = ROOT / "snips_plots"
    plots.mkdir(exist_ok=True)
    report = RUNS / f"finetuned-{SEEDS[0]}" / "bundle" / "report"
    for path in report.glob("*.*"):
        if path.suffix in (".png", ".svg"):
            shutil.copyfile(path, plots / path.name)
    print(table)


if __name__ == "__main__":
    main()

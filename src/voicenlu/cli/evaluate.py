"""``voicenlu evaluate``: score a bundle and write its report, or run the out-of-scope protocol
or the learning curve (``voicenlu.experiments``) on its data."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from voicenlu.cli.common import add_data_dir, add_data_option, add_precision_option, add_seed_option
from voicenlu.config import OOS_EPOCHS, OOS_PER_INTENT
from voicenlu.errors import ConfigError
from voicenlu.extras import require_extra


def add_commands(sub) -> None:
    p = sub.add_parser(
        "evaluate",
        help="score a bundle on its held-out data (or --data) and write the report",
        description="Intent accuracy, slot F1 (entity level, on character spans), exact match, "
        "per-intent and per-slot figures, confusion matrix and training curves. Scores the "
        "split the bundle was not trained on (the SNIPS test set, or the dev hold-out of your "
        "own file), or every utterance of --data. The report goes beside the bundle; the "
        "bundle itself changes only with --write-bundle.",
    )
    p.add_argument("bundle", nargs="?", help="model bundle directory")
    add_data_dir(p)
    add_data_option(p, "score on every utterance of this file instead")
    p.add_argument("--out", help="report directory (default: BUNDLE-evaluation, beside the bundle)")
    p.add_argument(
        "--write-bundle",
        action="store_true",
        help="update the bundle's own metrics.json, MODEL_CARD.md and report/ instead",
    )
    add_precision_option(p)
    p.add_argument(
        "--spoken-form",
        action="store_true",
        help="also score the spoken form of the data (lower case, no punctuation, numbers as "
        "words, as a speech recogniser writes it) and report the drop",
    )
    p.add_argument(
        "--oos",
        action="store_true",
        help="out-of-scope protocol on BUNDLE's data (without BUNDLE: SNIPS): one model per "
        "intent, each trained without it, whose utterances must be rejected (AUROC, "
        "FPR@95%%TPR, in-scope accuracy, ECE)",
    )
    p.add_argument(
        "--oos-per-intent", type=int, default=OOS_PER_INTENT, help="training budget per fold"
    )
    p.add_argument("--oos-epochs", type=float, default=OOS_EPOCHS, help="epochs per fold")
    p.add_argument(
        "--learning-curve",
        action="store_true",
        help="on BUNDLE's data (without BUNDLE: SNIPS), train on a few examples per intent up "
        "to the full set, score each on held-out data beside the TF-IDF baseline, and plot it",
    )
    p.add_argument(
        "--sizes",
        default="10,20,50,70,300,full",
        help="examples per intent for --learning-curve, comma-separated ('full': all)",
    )
    p.add_argument(
        "--draws", type=int, default=3, help="random draws per size below 300 (--learning-curve)"
    )
    add_seed_option(p)
    p.set_defaults(func=cmd_evaluate)


def cmd_evaluate(args) -> int:
    from voicenlu.pipeline import evaluate

    if args.oos and args.learning_curve:
        raise ConfigError("Choose one of --oos and --learning-curve: each trains its own models.")
    if args.oos:
        return _evaluate_oos(args)
    if args.learning_curve:
        return _evaluate_learning_curve(args)
    if not args.bundle:
        raise ConfigError(
            "evaluate needs a BUNDLE (or --oos or --learning-curve, which train their own models)."
        )
    bundle = Path(args.bundle)
    out = Path(args.out) if args.out else None
    if out is None and not args.write_bundle:
        out = default_evaluation_dir(bundle)
    metrics = evaluate(
        bundle,
        args.data,
        out=out,
        write_bundle=args.write_bundle,
        precision=args.precision,
        data_dir=args.data_dir,
        spoken_form=args.spoken_form,
    )
    if args.spoken_form:
        print(format_spoken_form(metrics["spoken_form"]))
    print(json.dumps({k: metrics[k] for k in ("n", "intent_accuracy", "slot_f1", "exact_match")}))
    for folder in ([bundle / "report"] if args.write_bundle else []) + ([out] if out else []):
        print(f"report: {folder / 'report.md'}", file=sys.stderr)
    return 0


def format_spoken_form(comparison: dict) -> str:
    """The written and spoken forms' figures side by side, with the drop, in points."""
    names = {
        "intent_accuracy": "intent accuracy",
        "slot_f1": "slot F1",
        "exact_match": "exact match",
    }
    lines = [f"{'':16} {'written':>8} {'spoken':>8} {'drop':>6}"]
    for key, name in names.items():
        w, s, d = (100 * comparison[form][key] for form in ("written", "spoken", "drop"))
        lines.append(f"{name:16} {w:8.2f} {s:8.2f} {d:6.2f}")
    return "\n".join(lines)


def default_evaluation_dir(bundle: Path) -> Path:
    """Where ``evaluate`` writes its report by default: beside the bundle, never inside it."""
    bundle = bundle.resolve()
    return bundle.parent / f"{bundle.name}-evaluation"


def _experiment_data(args, what: str):
    """(name, the bundle's data or None for SNIPS, out folder) for --oos and --learning-curve:
    the data of BUNDLE when given (or --data), else the SNIPS benchmark, said out loud."""
    default = {"--oos": "oos", "--learning-curve": "learning-curve"}[what]
    if not args.bundle:
        if args.data:
            raise ConfigError(f"{what} --data PATH needs the BUNDLE whose labels it uses.")
        print(
            f"{what} without a BUNDLE: the SNIPS benchmark's protocol (several trainings, "
            "see --help); pass BUNDLE to run it on that bundle's own data",
            file=sys.stderr,
        )
        return "SNIPS", None, Path(args.out or f"runs/{default}")
    from voicenlu.bundle import read_manifest
    from voicenlu.pipeline import bundle_data

    bundle = Path(args.bundle).resolve()
    found = bundle_data(read_manifest(bundle), args.data, args.data_dir)
    out = Path(args.out) if args.out else bundle.parent / f"{bundle.name}-{default}"
    if found.source.get("kind") == "snips":
        return "SNIPS", None, out
    utterances = found.test if args.data else found.train + found.dev
    return found.source.get("description", "the data"), utterances, out


def _evaluate_oos(args) -> int:
    require_extra("train", "evaluate --oos")
    from voicenlu.experiments.oos import run_oos

    name, utterances, out = _experiment_data(args, "--oos")
    table = run_oos(
        out,
        name,
        utterances,
        per_intent=args.oos_per_intent,
        epochs=args.oos_epochs,
        seed=args.seed,
        command=args.command_line,
        data_dir=args.data_dir,
    )
    print(table)
    return 0


def _evaluate_learning_curve(args) -> int:
    from voicenlu.experiments.learning_curve import parse_sizes, run_learning_curve

    sizes = parse_sizes(args.sizes)
    if args.draws < 1:
        raise ConfigError(f"--draws must be at least 1, got {args.draws}.")
    require_extra("train", "evaluate --learning-curve")
    name, utterances, out = _experiment_data(args, "--learning-curve")
    table = run_learning_curve(
        out,
        name,
        utterances,
        sizes,
        draws=args.draws,
        seed=args.seed,
        command=args.command_line,
        data_dir=args.data_dir,
    )
    print(table)
    print(f"plot: {out / 'learning_curve.png'}")
    return 0

"""``voicenlu train``: fine-tune an encoder on your data (or SNIPS) and write a model bundle."""

from __future__ import annotations

import dataclasses

from voicenlu.cli.common import add_config_options, add_data_dir, print_bundle_summary
from voicenlu.config import (
    DEV_FRACTION,
    MIN_DEV_PER_INTENT,
    QUICK_EPOCHS,
    QUICK_PER_INTENT,
    TrainConfig,
)


def add_commands(sub) -> None:
    p = sub.add_parser(
        "train",
        help="fine-tune an encoder on your data (or SNIPS) and write a model bundle",
        description="Fine-tune a transformer encoder with an intent head and a slot head on "
        "your data (--data) or the standard SNIPS split; write OUTPUT_DIR/bundle (weights, "
        "ONNX graphs fp32 and int8, report). Several processes: torchrun --nproc_per_node=2 "
        "-m voicenlu train ...",
    )
    add_data_dir(p)
    p.add_argument(
        "--data",
        metavar="PATH",
        help="your data: Snips NLU JSON, Rasa YAML, a Rhino context, CSV or JSONL (validated "
        f"first; {100 * DEV_FRACTION:.0f}%% per intent held out as dev, or none when that is "
        f"under {MIN_DEV_PER_INTENT} per intent); without it, the SNIPS benchmark",
    )
    p.add_argument(
        "--output-dir",
        help="run directory (default: runs/<data name>, e.g. runs/assistant for "
        "assistant.rasa.yml, runs/snips without --data)",
    )
    add_config_options(p)
    p.add_argument(
        "--per-intent",
        type=int,
        default=0,
        help="train on a stratified slice of N per intent (dev sliced alike; test kept whole)",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help=f"a few minutes: {QUICK_EPOCHS:g} epoch on {QUICK_PER_INTENT} utterances per "
        "intent, to see it work",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue an unfinished run from its last checkpoint in OUTPUT_DIR (same data and "
        "options)",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the bundle (or unfinished run) in OUTPUT_DIR: retrain after editing the data",
    )
    p.set_defaults(func=cmd_train)


def cmd_train(args) -> int:
    from voicenlu.pipeline import train

    options = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)}
    bundle = train(
        args.data,
        args.output_dir,
        resume=args.resume,
        overwrite=args.overwrite,
        quick=args.quick,
        per_intent=args.per_intent,
        data_dir=args.data_dir,
        **options,
    )
    print_bundle_summary(bundle)
    return 0

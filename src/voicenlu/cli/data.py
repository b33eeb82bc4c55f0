"""``voicenlu data``: check, convert and inspect training data; get the SNIPS benchmark."""

from __future__ import annotations

from pathlib import Path

from voicenlu.cli.common import add_data_dir, add_seed_option
from voicenlu.config import MIN_DEV_PER_INTENT


def add_commands(sub) -> None:
    data = sub.add_parser(
        "data", help="check, convert and inspect training data; get the SNIPS benchmark"
    )
    data_sub = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    p = data_sub.add_parser(
        "download",
        help="fetch the benchmark files at the pinned commit and check their SHA-256",
        description="Fetch the 2017-06 SNIPS files from the upstream repository at a pinned "
        "commit, or copy them from a local copy (--from), checking every file's SHA-256.",
    )
    add_data_dir(p)
    p.add_argument(
        "--from",
        dest="source",
        metavar="DIR",
        help="copy from a local copy of the benchmark repository instead of the network "
        "(also: $VOICENLU_SNIPS_MIRROR)",
    )
    p.set_defaults(func=cmd_data_download)
    p = data_sub.add_parser(
        "stats",
        help="utterances per intent and per slot of your data (as train splits it) or of SNIPS",
        description="With PATH: utterances per intent and slot occurrences per slot of that "
        "file or folder, in the train/dev split `voicenlu train --data PATH` would make. "
        "Without it: the SNIPS benchmark's train/dev/test.",
    )
    p.add_argument("path", nargs="?", help="your dataset file or folder (default: SNIPS)")
    add_seed_option(p)
    add_data_dir(p)
    p.set_defaults(func=cmd_data_stats)
    p = data_sub.add_parser(
        "validate",
        help="check a training file and report every problem with file, line and fix",
        description="Reads a SNIPS benchmark folder, a Snips NLU dataset (.json), Rasa NLU "
        "YAML (.yml), or CSV/JSONL with text,intent; exits non-zero when it finds problems.",
    )
    p.add_argument("path", help="dataset file or folder")
    p.set_defaults(func=cmd_data_validate)
    p = data_sub.add_parser(
        "convert",
        help="convert between Snips NLU JSON, Rasa YAML, CSV and JSONL",
        description="Converts through voicenlu's utterance records; the output format "
        "follows OUT's extension unless --format is given. Losses (slots into CSV) are noted.",
    )
    p.add_argument("source", metavar="IN")
    p.add_argument("target", metavar="OUT")
    p.add_argument("--format", help="output format: snips-nlu, rasa, csv or jsonl")
    p.set_defaults(func=cmd_data_convert)


def cmd_data_download(args) -> int:
    from voicenlu.data import default_data_dir, download

    dest = Path(args.data_dir) if args.data_dir else default_data_dir()
    root = download(dest, source=args.source)
    print(f"SNIPS benchmark files verified in {root}")
    return 0


def cmd_data_stats(args) -> int:
    from voicenlu.data import ensure_data, format_stats, load_snips, stats

    if args.path:
        return _file_stats(Path(args.path), args.seed)
    data = load_snips(ensure_data(args.data_dir))
    print(format_stats(stats(data)))
    print(f"\nCESU-8 surrogate pairs repaired: {data.repairs}; upstream commit {data.commit}")
    return 0


def _file_stats(path: Path, seed: int) -> int:
    """Utterances per intent and slot of a user's file, split as ``train`` would split it."""
    from voicenlu.data import format_stats, holdout, load_dataset, stats
    from voicenlu.data.training import dev_fraction

    dataset = load_dataset(path)
    fraction = dev_fraction(dataset.utterances)
    train, dev = holdout(dataset.utterances, fraction, seed)
    print(format_stats(stats({"train": train, "dev": dev})))
    if fraction:
        held = f"{100 * fraction:.0f}% of each intent held out as dev (seed {seed})"
    else:
        held = (
            f"no dev set: a tenth would be under {MIN_DEV_PER_INTENT} per intent, so `train` "
            "trains on every utterance for a fixed schedule"
        )
    print(f"\n{path}: {dataset.format}, {len(dataset.utterances)} utterances; {held}")
    if not dataset.has_slots:
        print("intents only: this format annotates no slots")
    return 0


def cmd_data_validate(args) -> int:
    from voicenlu.data import format_problems, validate_path

    problems = validate_path(args.path)
    print(format_problems(problems))
    return 1 if problems else 0


def cmd_data_convert(args) -> int:
    from voicenlu.data import convert

    result = convert(args.source, args.target, args.format)
    print(
        f"{len(result.source.utterances)} utterances: {result.source.format} -> {result.format}"
        f" ({args.target})"
    )
    for note in result.notes:
        print(f"note: {note}")
    return 0

"""The ``voicenlu`` command. Thin: it parses arguments and calls the modules that do the work.

Heavy imports (torch, transformers) happen inside the commands that need them, so
``voicenlu predict`` starts fast on a runtime-only install.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import shlex
import sys
from pathlib import Path

from voicenlu.config import (
    DEV_FRACTION,
    MIN_DEV_PER_INTENT,
    OOS_EPOCHS,
    OOS_PER_INTENT,
    PRUNE_EPOCHS,
    QUICK_EPOCHS,
    QUICK_PER_INTENT,
    WYOMING_URI,
    Limits,
    TrainConfig,
    WyomingLimits,
    field_type,
    flag,
)
from voicenlu.errors import ConfigError, VoiceNLUError
from voicenlu.extras import extra_providing, missing_extra
from voicenlu.values import DEFAULT_TIMEZONE
from voicenlu.version import __version__


def _snips(args):
    from voicenlu.data import ensure_data, load_snips

    return load_snips(ensure_data(args.data_dir))


def cmd_data_download(args) -> int:
    from voicenlu.data import default_data_dir, download

    dest = Path(args.data_dir) if args.data_dir else default_data_dir()
    root = download(dest, source=args.source)
    print(f"SNIPS benchmark files verified in {root}")
    return 0


def cmd_data_stats(args) -> int:
    from voicenlu.data import format_stats, stats

    if args.path:
        return _file_stats(Path(args.path), args.seed)
    data = _snips(args)
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
    _print_bundle_summary(bundle)
    return 0


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}%"


def _print_bundle_summary(bundle: Path) -> None:
    from voicenlu.bundle import is_complete, read_manifest
    from voicenlu.evaluation import describe_choice

    if not is_complete(bundle):  # not the writing process under torchrun
        return
    manifest = read_manifest(bundle, verify=False)
    m = manifest["metrics"]
    print(f"\nbundle: {bundle}")
    choice = manifest["training"].get("choice")
    if choice:
        print(f"chosen: {describe_choice(choice)}")
    print(
        f"{m['split']}: intent accuracy {_pct(m['intent_accuracy'])}  slot F1 "
        f"{_pct(m['slot_f1'])}  exact match {_pct(m['exact_match'])}  (n={m['n']})"
        + ("  (in-sample: nothing was held out)" if m["split"] == "train" else "")
    )
    quantization = manifest.get("quantization")
    if quantization and "agreement" in quantization:
        a = quantization["agreement"]
        print(
            f"int8: model.int8.onnx ({quantization['size_mb']:.1f} MB, served by default) "
            f"parses {100 * a['same_parse']:.1f}% of {a['texts']} texts exactly as fp32 does"
        )
    print(f"report: {bundle / 'report' / 'report.md'}")


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
    from voicenlu.extras import require_extra

    require_extra("train", "evaluate --oos")
    from voicenlu.experiments.oos import file_folds, leave_one_intent_out, render_oos, snips_folds

    name, utterances, out = _experiment_data(args, "--oos")
    config = TrainConfig(epochs=args.oos_epochs, seed=args.seed, quantize=False)
    if utterances is None:
        folds = snips_folds(_snips(args), args.oos_per_intent, args.seed)
        protocol = (
            f"leave one intent out, {args.oos_per_intent} training utterances per intent, "
            f"{config.epochs:g} epochs and at least {config.min_steps} steps"
        )
    else:
        folds = file_folds(utterances, args.seed, name)
        protocol = (
            f"leave one intent out of {name}: 20% of each intent held out as the in-scope "
            "test set, each fold trained on the rest of the other intents as `train` trains "
            f"a file, {config.epochs:g} epochs and at least {config.min_steps} steps"
        )
    out.mkdir(parents=True, exist_ok=True)
    result = leave_one_intent_out(folds, config, out, protocol)
    table = render_oos(result, args.command_line, name)
    (out / "oos.md").write_text(table)
    print(table)
    return 0


def _evaluate_learning_curve(args) -> int:
    from voicenlu.experiments.learning_curve import parse_sizes
    from voicenlu.extras import require_extra

    sizes = parse_sizes(args.sizes)
    if args.draws < 1:
        raise ConfigError(f"--draws must be at least 1, got {args.draws}.")
    require_extra("train", "evaluate --learning-curve")
    from voicenlu.experiments.learning_curve import (
        file_draws,
        learning_curve,
        render_learning_curve,
        snips_draws,
    )
    from voicenlu.plots import plot_learning_curve

    name, utterances, out = _experiment_data(args, "--learning-curve")
    out.mkdir(parents=True, exist_ok=True)
    base = TrainConfig(seed=args.seed)
    if utterances is None:
        snips = _snips(args)
        draw, test = snips_draws(snips, dev_seed=args.seed), snips.test
        result = learning_curve(draw, test, base, out, sizes, args.draws)
    else:
        draw, test, sizes = file_draws(utterances, args.seed, name, sizes)
        result = learning_curve(draw, test, base, out, sizes, args.draws, user_rule=False)
    table = render_learning_curve(result, args.command_line, name)
    (out / "learning_curve.md").write_text(table)
    plot_learning_curve(result["rows"], out / "learning_curve", name=name)
    print(table)
    print(f"plot: {out / 'learning_curve.png'}")
    return 0


def _read_texts(args) -> list[str]:
    if args.texts == ["-"]:
        texts = [line.rstrip("\n") for line in sys.stdin]
        return [t for t in texts if t.strip()]
    return args.texts


def format_result(result: dict) -> str:
    """The text, then one line per request: intent (confidence) then slot="value" pairs.

    A rejected request names the nearest intent: its probability can be high even so, since
    rejection looks at how unlike the training data the request is, not at that probability.
    """
    requests = result.get("requests") or [result]
    lines = [result["text"]]
    for request in requests:
        lines.append(
            f"  -> {_request_text(request)}"
            + (f'  "{request["text"]}"' if len(requests) > 1 else "")
        )
    if result.get("truncated"):
        lines.append("  (truncated: longer than the model reads; only its start was parsed)")
    return "\n".join(line.rstrip() for line in lines)


def _request_text(result: dict) -> str:
    intent = result["intent"]
    if intent["name"] is None:
        nearest = result["intent_ranking"][0]
        head = f"out of scope (nearest: {nearest['name']} {nearest['confidence']:.2f})"
    else:
        head = f"{intent['name']} ({intent['confidence']:.2f})"
    slots = "  ".join(
        f'{s["slot"]}="{s["value"]}"'
        + (f" ({_value_text(s['resolved'])})" if s["resolved"] else "")
        for s in result["slots"]
    )
    return f"{head}  {slots}".rstrip()


def _value_text(resolved: dict) -> str:
    """A resolved slot value in a few words: ``2026-11-29T20:00:00.000+01:00``, ``4``,
    ``90 minute = 5400 s``, ``20 $``, ``from ... to ...``."""
    if resolved.get("type") == "interval":
        ends = [(k, resolved[k]) for k in ("from", "to") if resolved[k] is not None]
        return " ".join(f"{k} {_value_text(end)}" for k, end in ends)
    text = str(resolved["value"])
    if resolved.get("unit") is not None:
        text += f" {resolved['unit']}"
    if "seconds" in resolved:
        text += f" = {resolved['seconds']} s"
    return text


def cmd_predict(args) -> int:
    from voicenlu.runtime import Parser

    parser = Parser.load(args.bundle, precision=args.precision, split=args.split)
    if args.audio:
        results = [
            parser.parse_audio(
                path,
                threshold=args.threshold,
                reference_time=args.reference_time,
                timezone=args.timezone,
            )
            for path in args.texts
        ]
    else:
        _audio_hint(args.texts)
        results = parser.parse_batch(
            _read_texts(args),
            threshold=args.threshold,
            reference_time=args.reference_time,
            timezone=args.timezone,
        )
    for result in results:
        print(json.dumps(result, ensure_ascii=False) if args.json else format_result(result))
    return 0


def cmd_info(args) -> int:
    from voicenlu.info import bundle_info, render_info

    info = bundle_info(args.bundle)
    print(json.dumps(info, indent=2, ensure_ascii=False) if args.json else render_info(info))
    return 0


def _audio_hint(texts: list[str]) -> None:
    """A request that names a recording was most likely meant as one: say how."""
    wavs = [t for t in texts if t.lower().endswith(".wav") and Path(t).is_file()]
    if wavs:
        print(
            f"note: {wavs[0]} is a WAV file, parsed here as text: pass --audio to transcribe "
            "it (needs voicenlu[speech])",
            file=sys.stderr,
        )


def cmd_export(args) -> int:
    from voicenlu.pipeline import export

    print(json.dumps(export(args.bundle, args.data, args.data_dir)))
    return 0


def cmd_segment(args) -> int:
    from voicenlu.pipeline import fit_segmenter

    record = fit_segmenter(args.bundle, args.data, args.seed, args.data_dir)
    print(json.dumps(record, indent=2))
    return 0


def cmd_quantize(args) -> int:
    from voicenlu.pipeline import quantize

    summary = quantize(args.bundle, args.data, args.per_channel, args.data_dir)
    print(json.dumps(summary, indent=2))
    return 0


def cmd_prune(args) -> int:
    from voicenlu.pipeline import prune

    bundle = prune(
        args.bundle,
        args.output_dir,
        args.data,
        layers=args.layers,
        heads=args.heads,
        epochs=args.epochs,
        seed=args.seed,
        data_dir=args.data_dir,
    )
    _print_bundle_summary(bundle)
    return 0


def cmd_bench(args) -> int:
    from voicenlu.experiments.bench import bench_bundle, render_table

    result = bench_bundle(
        args.bundle, args.pruned, args.out, args.runs, args.requests, args.data, args.data_dir
    )
    print(render_table(result))
    return 0


def cmd_serve(args) -> int:
    from voicenlu.extras import require_extra

    require_extra("serve", "serve")
    from voicenlu.server import serve

    chosen = {f.name: getattr(args, f.name, None) for f in dataclasses.fields(Limits)}
    limits = {name: value for name, value in chosen.items() if value is not None}
    serve(
        args.bundle,
        host=args.host,
        port=args.port,
        workers=args.workers,
        cors_origins=args.cors_origin,
        microbatch_ms=args.microbatch_ms,
        threads=args.threads,
        access_log=args.access_log,
        timezone=args.timezone,
        require_signature=args.require_signature,
        **limits,
    )
    return 0


def cmd_wyoming(args) -> int:
    from voicenlu.extras import require_extra

    require_extra("wyoming", "wyoming")
    from voicenlu.wyoming import serve

    chosen = {f.name: getattr(args, f.name) for f in dataclasses.fields(WyomingLimits)}
    limits = WyomingLimits(**{k: v for k, v in chosen.items() if v is not None})
    serve(args.bundle, uri=args.uri, limits=limits, threads=args.threads)
    return 0


def cmd_bundle_keygen(args) -> int:
    from voicenlu.signing import generate_key

    public = generate_key(args.key)
    print(f"private key: {args.key} (keep it off the bundle storage)\npublic key:  {public}")
    return 0


def cmd_bundle_sign(args) -> int:
    from voicenlu.signing import sign_bundle

    print(f"signed: {sign_bundle(args.bundle, args.key)}")
    return 0


def cmd_bundle_speech(args) -> int:
    from voicenlu.pipeline import speech_settings

    print(json.dumps(speech_settings(args.bundle, args.data_dir)))
    return 0


def cmd_listen(args) -> int:
    from voicenlu.runtime import Parser

    parser = Parser.load(args.bundle, precision=args.precision)
    source = sys.stdin.buffer if args.input == "-" else open(args.input, "rb")  # noqa: SIM115
    with source:
        head = source.read(12)
        if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
            _skip_wav_header(source, args.input)
        results = parser.listen(
            _chunks(source, head if head[:4] != b"RIFF" else b""),
            threshold=args.threshold,
            timezone=args.timezone,
        )
        for result in results:
            print(json.dumps(result, ensure_ascii=False) if args.json else format_result(result))
            sys.stdout.flush()
    return 0


def _chunks(source, first: bytes):
    """The stream's bytes as they come (0.1 s at a time)."""
    if first:
        yield first
    while chunk := source.read1(3200) if hasattr(source, "read1") else source.read(3200):
        yield chunk


def _skip_wav_header(source, name: str) -> None:
    """Read a WAV stream's chunks up to its samples; refuse anything but 16 kHz mono 16-bit."""
    while True:
        head = source.read(8)
        if len(head) < 8:
            raise ConfigError(f"{name}: the WAV stream ends before its data chunk.")
        kind, size = head[:4], int.from_bytes(head[4:], "little")
        if kind == b"data":
            return
        body = source.read(size + (size & 1))
        if kind == b"fmt ":
            channels = int.from_bytes(body[2:4], "little")
            rate = int.from_bytes(body[4:8], "little")
            width = int.from_bytes(body[14:16], "little")
            if (channels, rate, width) != (1, 16000, 16):
                raise ConfigError(
                    f"{name} is {rate} Hz, {channels} channel(s), {width}-bit: voicenlu listen "
                    "reads 16 kHz mono 16-bit PCM (arecord -r 16000 -f S16_LE -c 1)."
                )


def cmd_bundle_verify(args) -> int:
    from voicenlu.signing import verify_bundle

    digest = verify_bundle(args.bundle, args.public_key)
    print(f"{args.bundle}: signature good (manifest digest {digest})")
    return 0


def add_limit_flags(
    p: argparse.ArgumentParser,
    limits=Limits,
    title: str = "limits (per worker; a flag overrides VOICENLU_<NAME> in the environment)",
) -> None:
    """One flag per service limit, named, typed and explained by its dataclass."""
    group = p.add_argument_group(title)
    for f in dataclasses.fields(limits):
        group.add_argument(
            flag(f.name),
            type=field_type(f),
            help=f"{f.metadata['help']} (default: {f.default})",
        )


def add_config_options(p: argparse.ArgumentParser) -> None:
    """One option per TrainConfig field, with its default and help taken from the field."""
    for f in dataclasses.fields(TrainConfig):
        kind = field_type(f)
        if kind is bool and f.default:  # on by default: --no-X turns it off
            p.add_argument(
                flag(f.name),
                action=argparse.BooleanOptionalAction,
                default=True,
                help=f.metadata["help"] + " (default: on)",
            )
        elif kind is bool:
            p.add_argument(flag(f.name), action="store_true", help=f.metadata["help"])
        else:
            p.add_argument(
                flag(f.name),
                type=kind,
                default=f.default,
                help=f.metadata["help"] + " (default: %(default)s)",
            )


def add_data_option(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument(
        "--data",
        metavar="PATH",
        help="the data the bundle was trained on is used by default (recorded in the bundle); "
        + what,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="voicenlu",
        description="Intent detection and slot filling for voice assistants.",
        epilog=(
            "Start here:\n"
            "  voicenlu data validate assistant.yml   # your own assistant: Rasa, Snips NLU, CSV\n"
            "  voicenlu train --data assistant.yml    # writes runs/assistant/bundle\n"
            '  voicenlu predict runs/assistant/bundle "turn on the kitchen lights"\n'
            "  voicenlu train --quick                 # or the SNIPS benchmark, a few minutes"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"voicenlu {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add_data_dir(p):
        p.add_argument(
            "--data-dir",
            help="where the SNIPS files live (default: $VOICENLU_DATA_DIR or ~/.cache/voicenlu); "
            "missing files are fetched first, from $VOICENLU_SNIPS_MIRROR when set",
        )

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
    p.add_argument("--seed", type=int, default=TrainConfig.seed, help="default: %(default)s")
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
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "int8"])
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
    p.add_argument("--seed", type=int, default=TrainConfig.seed, help="default: %(default)s")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("predict", help="parse requests: intent, slots, confidence")
    p.add_argument("bundle", help="model bundle directory")
    # One positional list for both kinds of input: a second, optional one would swallow nothing
    # before an option and leave the texts after it unrecognised.
    p.add_argument(
        "texts", nargs="+", metavar="TEXT", help="requests to parse, - for stdin, or WAV files"
    )
    p.add_argument(
        "--audio",
        action="store_true",
        help="the inputs are 16 kHz mono 16-bit WAV files of spoken requests (voicenlu[speech])",
    )
    p.add_argument("--json", action="store_true", help="print the full JSON result per request")
    p.add_argument(
        "--threshold",
        type=float,
        help="override the out-of-scope threshold: reject below this in-scope score (0 to 1)",
    )
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "int8"])
    p.add_argument(
        "--reference-time",
        metavar="ISO",
        help="resolve relative times from this instant, e.g. 2026-11-28T12:00:00+01:00 "
        "(default: now)",
    )
    p.add_argument(
        "--timezone",
        metavar="NAME",
        help="IANA time zone the resolved times are given in, e.g. Europe/Zurich "
        f"(default: {DEFAULT_TIMEZONE})",
    )
    p.add_argument(
        "--no-split",
        dest="split",
        action="store_false",
        help="parse each text as one request, even when it holds several",
    )
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser(
        "info",
        help="what a bundle holds: intents, slots and their types, entity lists, data, figures",
        description="Shows a bundle from its manifest: intents and slots with their training "
        "counts, each slot's type and the entity values behind it, where the training data "
        "came from and how the checkpoint was chosen, its figures, out-of-scope settings and "
        "files.",
    )
    p.add_argument("bundle", help="model bundle directory")
    p.add_argument("--json", action="store_true", help="print the same as JSON")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser(
        "segment",
        help="learn where a text holding several requests splits, onto a trained bundle",
        description="Fit the segmenter (which splits 'turn off the lights and close the "
        "blinds' into two requests) from joins of the bundle's training utterances, and store "
        "it in the bundle. Training does this already; this is for bundles trained without.",
    )
    p.add_argument("bundle", help="model bundle directory")
    add_data_dir(p)
    add_data_option(p, "learn from the training part of this file instead")
    p.add_argument("--seed", type=int, default=TrainConfig.seed, help="default: %(default)s")
    p.set_defaults(func=cmd_segment)

    p = sub.add_parser(
        "export", help="write model.onnx and check it against PyTorch on the dev set"
    )
    p.add_argument("bundle", help="model bundle directory")
    add_data_dir(p)
    add_data_option(p, "check parity on every text of this file instead")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser(
        "quantize",
        help="write model.int8.onnx (dynamic int8) and score it against fp32 on dev and test",
    )
    p.add_argument("bundle", help="model bundle directory (with model.onnx)")
    add_data_dir(p)
    add_data_option(p, "score on this file instead (its dev hold-out and every utterance)")
    p.add_argument("--per-channel", action="store_true", help="one int8 scale per output channel")
    p.set_defaults(func=cmd_quantize)

    p = sub.add_parser(
        "prune",
        help="drop encoder layers and attention heads, recover by distillation: a faster bundle",
        description="Structured pruning: remove the encoder layers whose removal costs least on "
        "dev and/or the attention heads that matter least on dev (gradient of the loss with "
        "respect to a gate on each head), slicing the weight matrices, then fine-tune the "
        "smaller model on the training set with the original model's logits as soft targets. "
        "Quantize the result like any bundle.",
    )
    p.add_argument("bundle", help="model bundle directory to prune")
    p.add_argument("--layers", type=int, help="encoder layers to keep")
    p.add_argument(
        "--heads",
        type=float,
        default=0.0,
        help="share of attention heads to remove, least important on dev first (0 to 1)",
    )
    p.add_argument("--output-dir", required=True, help="run directory of the pruned model")
    p.add_argument(
        "--epochs", type=float, default=PRUNE_EPOCHS, help="recovery epochs (default: %(default)s)"
    )
    p.add_argument("--seed", type=int, default=TrainConfig.seed, help="default: %(default)s")
    add_data_dir(p)
    add_data_option(p, "choose and recover on this file instead (split as training split it)")
    p.set_defaults(func=cmd_prune)

    p = sub.add_parser(
        "bench",
        help="accuracy/size/latency/throughput/memory table against the usual baselines",
        description="Measures, side by side in one run: a Hugging Face text-classification "
        "pipeline, voicenlu on PyTorch, ONNX Runtime fp32 and int8, pruned bundles (--pruned) "
        "and TF-IDF + logistic regression. Each variant runs in fresh processes.",
    )
    p.add_argument("bundle", help="bundle with model.onnx and model.int8.onnx")
    p.add_argument("--pruned", nargs="*", default=[], help="pruned bundles (quantized)")
    p.add_argument(
        "--out", help="output stem: OUT.json and OUT.md (default: BUNDLE-bench/deploy, beside it)"
    )
    p.add_argument("--runs", type=int, default=5, help="runs per measurement (median reported)")
    p.add_argument("--requests", type=int, default=1000, help="single requests per run")
    add_data_dir(p)
    add_data_option(p, "measure on every utterance of this file instead")
    p.set_defaults(func=cmd_bench)

    bundle = sub.add_parser(
        "bundle",
        help="sign a bundle and check its signature (Ed25519; needs voicenlu[sign])",
        description="Sign the manifest digest of a bundle, which covers the manifest and "
        "every file it lists, so a server started with --require-signature refuses a bundle "
        "changed by anyone without the private key.",
    )
    bundle_sub = bundle.add_subparsers(dest="bundle_command", required=True, metavar="ACTION")
    p = bundle_sub.add_parser("keygen", help="make a key pair: KEY (private) and KEY.pub")
    p.add_argument("key", help="path of the private key to write")
    p.set_defaults(func=cmd_bundle_keygen)
    p = bundle_sub.add_parser("sign", help="write BUNDLE/voicenlu.sig")
    p.add_argument("bundle", help="model bundle directory")
    p.add_argument("--key", required=True, help="the private key (from `bundle keygen`)")
    p.set_defaults(func=cmd_bundle_sign)
    p = bundle_sub.add_parser("verify", help="check BUNDLE/voicenlu.sig with a public key")
    p.add_argument("bundle", help="model bundle directory")
    p.add_argument("--public-key", required=True, help="the public key (KEY.pub)")
    p.set_defaults(func=cmd_bundle_verify)
    p = bundle_sub.add_parser(
        "speech",
        help="write BUNDLE/speech.json again from its training data (the recogniser's "
        "prompt, vocabulary and closed-domain grammar)",
    )
    p.add_argument("bundle", help="model bundle directory")
    p.add_argument("--data-dir", default=None, help="where the SNIPS data lives")
    p.set_defaults(func=cmd_bundle_speech)

    p = sub.add_parser(
        "listen",
        help="parse a live audio stream: one result per spoken command (voicenlu[speech])",
        description="Reads 16 kHz mono 16-bit PCM, raw or as a WAV stream, from a file or "
        "stdin (-), e.g. `arecord -r 16000 -f S16_LE -c 1 -t raw | voicenlu listen BUNDLE -`, "
        "and prints one result per spoken command as soon as its end is heard.",
    )
    p.add_argument("bundle", help="model bundle directory")
    p.add_argument("input", nargs="?", default="-", help="raw PCM or WAV file, - for stdin")
    p.add_argument("--json", action="store_true", help="one JSON result per line")
    p.add_argument("--threshold", type=float, default=None, help="in-scope threshold")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "int8"])
    p.add_argument("--timezone", default=DEFAULT_TIMEZONE, help="IANA time zone for times")
    p.set_defaults(func=cmd_listen)

    p = sub.add_parser(
        "serve",
        help="HTTP service: /parse, /parse/batch, Rasa-compatible /model/parse, demo page at /",
        description="Serves a bundle's ONNX model (int8 when present) with FastAPI/uvicorn. "
        "Set VOICENLU_API_KEY to require `Authorization: Bearer <key>` on every endpoint but "
        "/health. The OpenAPI description is at /openapi.json, Prometheus metrics at /metrics.",
    )
    p.add_argument("bundle", help="model bundle directory")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default: %(default)s)")
    p.add_argument("--port", type=int, default=8000, help="default: %(default)s")
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="processes, each loading the model once; one per core serves the most requests",
    )
    p.add_argument(
        "--cors-origin",
        action="append",
        default=[],
        help="allow this browser origin (repeatable; default: VOICENLU_CORS_ORIGINS, "
        "comma-separated)",
    )
    p.add_argument(
        "--microbatch-ms",
        type=float,
        help="group concurrent /parse requests into one model run: those waiting when the "
        "model frees up plus those arriving within this window (default: "
        "VOICENLU_MICROBATCH_MS, else 0: off)",
    )
    p.add_argument(
        "--threads",
        type=int,
        help="model threads per worker (default: VOICENLU_THREADS, else 1; to use more "
        "cores, add workers)",
    )
    p.add_argument("--access-log", action="store_true", help="log a line per request")
    p.add_argument(
        "--timezone",
        metavar="NAME",
        help="IANA time zone of resolved times when a request names none (default: "
        f"VOICENLU_TIMEZONE, else {DEFAULT_TIMEZONE})",
    )
    p.add_argument(
        "--require-signature",
        metavar="PUBLIC_KEY",
        help="serve only a bundle signed with this key's private half (`voicenlu bundle sign`)",
    )
    add_limit_flags(p)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser(
        "wyoming",
        help="Wyoming service (speech to text and intents) for Home Assistant; needs "
        "voicenlu[wyoming]",
        description="Serves a bundle over the Wyoming protocol: `describe`, `transcript` or "
        "`recognize` -> `intent` / `not-recognized`, and audio streams -> `transcript` and the "
        "intent. Add it in Home Assistant as a Wyoming Protocol integration (host and port of "
        "--uri); see docs/home-assistant.md.",
    )
    p.add_argument("bundle", help="model bundle directory")
    p.add_argument("--uri", default=WYOMING_URI, help="where to listen (default: %(default)s)")
    p.add_argument("--threads", type=int, help="model threads (default: one per core)")
    add_limit_flags(p, WyomingLimits, "limits")
    p.set_defaults(func=cmd_wyoming)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    args = parser.parse_args(argv)
    args.command_line = "voicenlu " + shlex.join(argv)  # recorded with benchmark tables
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return args.func(args)
    except VoiceNLUError as exc:
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except ModuleNotFoundError as exc:  # an extra's package, imported past the first checks
        extra = extra_providing(exc.name or "")
        if extra is None or args.debug:
            raise
        print(f"error: {missing_extra(extra, args.command, exc.name)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130

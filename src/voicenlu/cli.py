"""The ``voicenlu`` command. Thin: it parses arguments and calls the modules that do the work.

Heavy imports (torch, transformers) happen inside the commands that need them, so
``voicenlu predict`` starts fast on a runtime-only install.
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
from pathlib import Path

from voicenlu import __version__
from voicenlu.errors import ConfigError, VoiceNLUError
from voicenlu.learning_curve import MIN_STEPS


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

    data = _snips(args)
    print(format_stats(stats(data)))
    print(f"\nCESU-8 surrogate pairs repaired: {data.repairs}; upstream commit {data.commit}")
    return 0


def _snips_train_data(snips, per_intent: int = 0, seed: int = 0):
    """The standard split as training data; with ``per_intent``, a stratified slice of it."""
    from voicenlu.data import stratified_slice
    from voicenlu.train import TrainData

    train_set, dev_set = snips.train, snips.dev
    if per_intent:  # a slice of both: dev is scored every epoch
        train_set = stratified_slice(train_set, per_intent, seed)
        dev_set = stratified_slice(dev_set, per_intent, seed)
    source = {"name": "snips-2017-06", "split": "goo2018", "commit": snips.commit}
    return TrainData(
        train=train_set, dev=dev_set, test=snips.test, source=source, slot_types=snips.slot_types
    )


def _user_train_data(path: str, seed: int):
    """A user's dataset, validated first (refused with the full report), 10% held out as dev."""
    from voicenlu.data import holdout, load_dataset
    from voicenlu.data.validate import format_problems, validate
    from voicenlu.errors import DataError
    from voicenlu.train import TrainData

    dataset = load_dataset(path)
    problems = validate(dataset)
    if problems:
        raise DataError(f"{path} is not ready for training.\n{format_problems(problems)}")
    train_set, dev_set = holdout(dataset.utterances, 0.1, seed)
    source = {"name": Path(path).name, "format": dataset.format, "has_slots": dataset.has_slots}
    return TrainData(train=train_set, dev=dev_set, source=source, slot_types=dataset.slot_types)


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
    from voicenlu.train import TrainConfig, train

    config = TrainConfig(
        backbone=args.backbone,
        epochs=1.0 if args.quick else args.epochs,
        batch_size=args.batch_size,
        encoder_lr=args.encoder_lr,
        head_lr=args.head_lr,
        label_smoothing=args.label_smoothing,
        max_length=args.max_length,
        seed=args.seed,
        freeze_backbone=args.freeze_backbone,
        patience=args.patience,
    )
    if args.data:
        data = _user_train_data(args.data, args.seed)
    else:
        per_intent = 100 if args.quick and not args.per_intent else args.per_intent
        data = _snips_train_data(_snips(args), per_intent, args.seed)
    bundle = train(data, config, Path(args.output_dir), resume=args.resume)
    _print_bundle_summary(bundle)
    return 0


def _print_bundle_summary(bundle: Path) -> None:
    metrics_file = bundle / "metrics.json"
    if not metrics_file.is_file():  # not the writing process under torchrun
        return
    m = json.loads(metrics_file.read_text())
    print(f"\nbundle: {bundle}")
    print(
        f"test: intent accuracy {100 * m['intent_accuracy']:.2f}%  slot F1 "
        f"{100 * m['slot_f1']:.2f}%  exact match {100 * m['exact_match']:.2f}%  "
        f"(n={m['n']})"
    )
    print(f"report: {bundle / 'report' / 'report.md'}")


def cmd_evaluate(args) -> int:
    from voicenlu.evaluate import evaluate_bundle

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

    metrics = evaluate_bundle(
        Path(args.bundle), _snips(args).test, Path(args.out) if args.out else None, args.precision
    )
    print(json.dumps({k: metrics[k] for k in ("n", "intent_accuracy", "slot_f1", "exact_match")}))
    return 0


def _evaluate_oos(args) -> int:
    from voicenlu.oos import leave_one_intent_out, render_oos
    from voicenlu.train import TrainConfig

    config = TrainConfig(epochs=args.oos_epochs, seed=args.seed)
    out = Path(args.out or "runs/oos")
    result = leave_one_intent_out(_snips(args), config, out, per_intent=args.oos_per_intent)
    table = render_oos(result, args.command_line)
    (out / "oos.md").write_text(table)
    print(table)
    return 0


def _evaluate_learning_curve(args) -> int:
    from voicenlu.learning_curve import learning_curve, parse_sizes, render_learning_curve
    from voicenlu.plots import plot_learning_curve
    from voicenlu.train import TrainConfig

    sizes = parse_sizes(args.sizes)
    if args.draws < 1:
        raise ConfigError(f"--draws must be at least 1, got {args.draws}.")
    if args.min_steps < 1:
        raise ConfigError(f"--min-steps must be at least 1, got {args.min_steps}.")
    out = Path(args.out or "runs/learning-curve")
    out.mkdir(parents=True, exist_ok=True)
    result = learning_curve(
        _snips(args), TrainConfig(seed=args.seed), out, sizes, args.draws, args.min_steps
    )
    table = render_learning_curve(result, args.command_line)
    (out / "learning_curve.md").write_text(table)
    plot_learning_curve(result["rows"], out / "learning_curve")
    print(table)
    print(f"plot: {out / 'learning_curve.png'}")
    return 0


def _read_texts(args) -> list[str]:
    if args.texts == ["-"]:
        texts = [line.rstrip("\n") for line in sys.stdin]
        return [t for t in texts if t.strip()]
    return args.texts


def format_result(result: dict) -> str:
    """One readable line: intent (confidence) then slot="value" pairs.

    A rejected request names the nearest intent: its probability can be high even so, since
    rejection looks at how unlike the training data the request is, not at that probability.
    """
    intent = result["intent"]
    if intent["name"] is None:
        nearest = result["intent_ranking"][0]
        head = f"out of scope (nearest: {nearest['name']} {nearest['confidence']:.2f})"
    else:
        head = f"{intent['name']} ({intent['confidence']:.2f})"
    slots = "  ".join(f'{s["slot"]}="{s["value"]}"' for s in result["slots"])
    line = f"{result['text']}\n  -> {head}  {slots}".rstrip()
    if result.get("truncated"):
        line += "\n  (truncated: longer than the model reads; only its start was parsed)"
    return line


def cmd_predict(args) -> int:
    from voicenlu.runtime import Parser

    parser = Parser.load(args.bundle, precision=args.precision)
    if args.audio:
        if args.texts:
            raise ConfigError("Give texts or --audio files, not both.")
        results = [parser.parse_audio(path, threshold=args.threshold) for path in args.audio]
    elif not args.texts:
        raise ConfigError("Give the requests to parse: TEXT..., - for stdin, or --audio FILE.wav.")
    else:
        results = parser.parse_batch(_read_texts(args), threshold=args.threshold)
    for result in results:
        print(json.dumps(result, ensure_ascii=False) if args.json else format_result(result))
    return 0


def cmd_export(args) -> int:
    from voicenlu.export import export_onnx

    parity = export_onnx(Path(args.bundle), [u.text for u in _snips(args).dev])
    print(json.dumps(parity))
    return 0


def cmd_quantize(args) -> int:
    from voicenlu.optimize import quantize

    snips = _snips(args)
    summary = quantize(Path(args.bundle), snips.dev, snips.test, per_channel=args.per_channel)
    print(json.dumps(summary, indent=2))
    return 0


def cmd_prune(args) -> int:
    from voicenlu.optimize import prune

    data = _snips_train_data(_snips(args))
    bundle = prune(
        Path(args.bundle),
        Path(args.output_dir),
        data,
        layers=args.layers,
        heads=args.heads,
        epochs=args.epochs,
        seed=args.seed,
    )
    _print_bundle_summary(bundle)
    return 0


def cmd_bench(args) -> int:
    from voicenlu.bench import render_table, run_bench

    _snips(args)  # the workers read the test set: make sure it is there
    result = run_bench(
        Path(args.bundle), [Path(p) for p in args.pruned], Path(args.out), args.runs, args.requests
    )
    print(render_table(result))
    return 0


def cmd_serve(args) -> int:
    from voicenlu.server import Limits, serve

    chosen = {f: getattr(args, f, None) for f in Limits.__dataclass_fields__}
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
        **limits,
    )
    return 0


def add_limit_flags(p: argparse.ArgumentParser) -> None:
    """One flag per server limit, named, typed and explained by the Limits dataclass."""
    import dataclasses

    from voicenlu.server.limits import Limits

    group = p.add_argument_group("limits (per worker; also VOICENLU_<NAME> in the environment)")
    for f in dataclasses.fields(Limits):
        group.add_argument(
            "--" + f.name.replace("_", "-"),
            type=int if f.type == "int" else float,
            help=f"{f.metadata['help']} (default: {f.default})",
        )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="voicenlu",
        description="Intent detection and slot filling for voice assistants.",
        epilog=(
            "Start here:\n"
            "  voicenlu data download            # the SNIPS benchmark, checked file by file\n"
            "  voicenlu train --quick            # a few minutes; drop --quick for the full run\n"
            '  voicenlu predict runs/snips/bundle "play some jazz"'
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

    data = sub.add_parser("data", help="get and inspect the SNIPS benchmark data")
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
    p = data_sub.add_parser("stats", help="utterances per intent and per slot, train/dev/test")
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
        help="fine-tune an encoder on SNIPS and write a model bundle",
        description="Fine-tune a transformer encoder with an intent head and a slot head on the "
        "standard SNIPS split; write OUTPUT_DIR/bundle (weights, ONNX graph, report). "
        "Several processes: torchrun --nproc_per_node=2 -m voicenlu train ...",
    )
    add_data_dir(p)
    p.add_argument(
        "--data",
        metavar="PATH",
        help="train on your own data instead of SNIPS: Snips NLU JSON, Rasa YAML, CSV or JSONL "
        "(validated first; 10%% per intent held out as dev)",
    )
    p.add_argument(
        "--output-dir", default="runs/snips", help="run directory (default: %(default)s)"
    )
    p.add_argument(
        "--backbone",
        default="sentence-transformers/all-MiniLM-L6-v2",
        help="Hugging Face encoder name or local path (default: %(default)s, shipped offline)",
    )
    p.add_argument("--epochs", type=float, default=6.0, help="default: %(default)s")
    p.add_argument("--batch-size", type=int, default=32, help="default: %(default)s")
    p.add_argument("--encoder-lr", type=float, default=1e-4, help="default: %(default)s")
    p.add_argument("--head-lr", type=float, default=1e-3, help="default: %(default)s")
    p.add_argument("--label-smoothing", type=float, default=0.0, help="default: %(default)s")
    p.add_argument("--max-length", type=int, default=64, help="sub-tokens (default: %(default)s)")
    p.add_argument("--seed", type=int, default=13, help="default: %(default)s")
    p.add_argument("--patience", type=int, default=3, help="early stopping, in epochs")
    p.add_argument(
        "--per-intent",
        type=int,
        default=0,
        help="train on a stratified slice of N per intent (dev sliced alike; test kept whole)",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="a few minutes: 1 epoch on 100 utterances per intent, to see it work",
    )
    p.add_argument(
        "--freeze-backbone",
        action="store_true",
        help="train the heads only, on frozen pretrained features (the original plan)",
    )
    p.add_argument(
        "--resume", action="store_true", help="continue from the last checkpoint in OUTPUT_DIR"
    )
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "evaluate",
        help="score a bundle on the 700 SNIPS test utterances and write the report",
        description="Intent accuracy, slot F1 (entity level, on character spans), exact match, "
        "per-intent and per-slot figures, confusion matrix and training curves.",
    )
    p.add_argument("bundle", nargs="?", help="model bundle directory")
    add_data_dir(p)
    p.add_argument("--out", help="report directory (default: BUNDLE/report, updating the bundle)")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "int8"])
    p.add_argument(
        "--oos",
        action="store_true",
        help="out-of-scope protocol: 7 models, each trained without one intent, whose test "
        "utterances must be rejected (AUROC, FPR@95%%TPR, in-scope accuracy, ECE)",
    )
    p.add_argument("--oos-per-intent", type=int, default=300, help="training budget per fold")
    p.add_argument("--oos-epochs", type=float, default=3.0, help="epochs per fold")
    p.add_argument(
        "--learning-curve",
        action="store_true",
        help="train on a few examples per intent up to the full set, score each on test beside "
        "the TF-IDF baseline, and plot the curve",
    )
    p.add_argument(
        "--sizes",
        default="10,20,50,70,300,full",
        help="examples per intent for --learning-curve, comma-separated ('full': all)",
    )
    p.add_argument(
        "--draws", type=int, default=3, help="random draws per size below 300 (--learning-curve)"
    )
    p.add_argument(
        "--min-steps",
        type=int,
        default=MIN_STEPS,
        help="small draws train for more epochs, up to this many optimizer steps "
        "(--learning-curve; default: %(default)s)",
    )
    p.add_argument("--seed", type=int, default=13)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("predict", help="parse requests: intent, slots, confidence")
    p.add_argument("bundle", help="model bundle directory")
    p.add_argument("texts", nargs="*", metavar="TEXT", help="requests to parse, or - for stdin")
    p.add_argument(
        "--audio",
        nargs="+",
        metavar="FILE.wav",
        help="spoken requests to parse instead: 16 kHz mono 16-bit WAV (needs voicenlu[speech])",
    )
    p.add_argument("--json", action="store_true", help="print the full JSON result per request")
    p.add_argument(
        "--threshold",
        type=float,
        help="override the out-of-scope threshold: reject below this in-scope score (0 to 1)",
    )
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "int8"])
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser(
        "export", help="write model.onnx and check it against PyTorch on the dev set"
    )
    p.add_argument("bundle", help="model bundle directory")
    add_data_dir(p)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser(
        "quantize",
        help="write model.int8.onnx (dynamic int8) and score it against fp32 on dev and test",
    )
    p.add_argument("bundle", help="model bundle directory (with model.onnx)")
    add_data_dir(p)
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
        "--epochs", type=float, default=2.0, help="recovery epochs (default: %(default)s)"
    )
    p.add_argument("--seed", type=int, default=13)
    add_data_dir(p)
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
    p.add_argument("--out", default="benchmarks/deploy", help="output stem (default: %(default)s)")
    p.add_argument("--runs", type=int, default=5, help="runs per measurement (median reported)")
    p.add_argument("--requests", type=int, default=1000, help="single requests per run")
    add_data_dir(p)
    p.set_defaults(func=cmd_bench)

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
        "--cors-origin", action="append", default=[], help="allow this browser origin (repeatable)"
    )
    p.add_argument(
        "--microbatch-ms",
        type=float,
        default=0.0,
        help="group concurrent /parse requests into one model run: those waiting when the "
        "model frees up plus those arriving within this window (0: off)",
    )
    p.add_argument(
        "--threads",
        type=int,
        help="model threads per worker (default: 1; to use more cores, add workers)",
    )
    p.add_argument("--access-log", action="store_true", help="log a line per request")
    add_limit_flags(p)
    p.set_defaults(func=cmd_serve)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
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
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130

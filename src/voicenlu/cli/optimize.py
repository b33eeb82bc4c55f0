"""Commands that work on a trained bundle: fit its segmenter (``segment``), write its graphs
(``export``, ``quantize``), make a smaller one (``prune``), and measure them side by side
(``bench``)."""

from __future__ import annotations

import json

from voicenlu.cli.common import add_data_dir, add_data_option, add_seed_option, print_bundle_summary
from voicenlu.config import PRUNE_EPOCHS


def add_commands(sub) -> None:
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
    add_seed_option(p)
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
    add_seed_option(p)
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


def cmd_segment(args) -> int:
    from voicenlu.pipeline import fit_segmenter

    record = fit_segmenter(args.bundle, args.data, args.seed, args.data_dir)
    print(json.dumps(record, indent=2))
    return 0


def cmd_export(args) -> int:
    from voicenlu.pipeline import export

    print(json.dumps(export(args.bundle, args.data, args.data_dir)))
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
    print_bundle_summary(bundle)
    return 0


def cmd_bench(args) -> int:
    from voicenlu.experiments.bench import bench_bundle, render_table

    result = bench_bundle(
        args.bundle, args.pruned, args.out, args.runs, args.requests, args.data, args.data_dir
    )
    print(render_table(result))
    return 0

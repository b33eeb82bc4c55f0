"""What several commands share: options built from the config's dataclasses, and the way a
result or a new bundle is printed."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from voicenlu.config import Limits, TrainConfig, field_type, flag


def add_data_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data-dir",
        help="where the SNIPS files live (default: $VOICENLU_DATA_DIR or ~/.cache/voicenlu); "
        "missing files are fetched first, from $VOICENLU_SNIPS_MIRROR when set",
    )


def add_data_option(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument(
        "--data",
        metavar="PATH",
        help="the data the bundle was trained on is used by default (recorded in the bundle); "
        + what,
    )


def add_seed_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seed", type=int, default=TrainConfig.seed, help="default: %(default)s")


def add_precision_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "int8"])


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


def chosen_limits(args: argparse.Namespace, limits=Limits) -> dict:
    """The limits given as flags (those left out keep their defaults)."""
    chosen = {f.name: getattr(args, f.name, None) for f in dataclasses.fields(limits)}
    return {name: value for name, value in chosen.items() if value is not None}


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


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}%"


def print_bundle_summary(bundle: Path) -> None:
    """What ``train`` and ``prune`` made: the bundle, its chosen checkpoint and figures."""
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

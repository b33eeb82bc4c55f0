"""Slot values on SNIPS: how many gold spans resolve, how many checked values are right, and
what resolution adds to a single parse.

    python benchmarks/values.py BUNDLE      # writes benchmarks/values.json and values.md
    python benchmarks/values.py             # the same without the latency overhead

Coverage and the checked sample need no model: they resolve the gold test spans with the types
shipped for SNIPS, the custom entities completed from the training and dev splits, as a bundle
records them. The latency overhead is measured with BUNDLE (int8 when it has one), as
``voicenlu bench`` does (``values_overhead``): each request parsed with and without resolution,
in turns, by two parsers sharing one model session, 1 thread.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from voicenlu.data import ensure_data, load_snips
from voicenlu.experiments.bench import values_overhead
from voicenlu.experiments.provenance import provenance
from voicenlu.experiments.values import checked_values, value_coverage
from voicenlu.values import ValueResolver

ROOT = Path(__file__).resolve().parent
SAMPLE = ROOT.parent / "tests" / "data" / "values_checked.json"
RUNS, REQUESTS = 5, 700


def overhead(bundle: Path, texts: list[str]) -> dict:
    precision = "int8" if (bundle / "model.int8.onnx").is_file() else "fp32"
    found = values_overhead(str(bundle), precision, texts, RUNS, REQUESTS)
    return found | {"precision": precision}


def render(result: dict) -> str:
    cov, checked, lat = result["coverage"], result["checked"], result["latency"]
    lines = [
        "# Slot values on the SNIPS test set",
        "",
        f"Command: `{result['command']}` at commit `{result['commit'][:7]}` "
        f"({result['created']}). Duckling: pyduckling-native-phihos "
        f"{result['duckling']}, in-process.",
        "",
        "## Coverage: gold test spans that resolve to a value",
        "",
        "| slot | type | share |",
        "|---|---|---|",
    ]
    for slot, share in cov["per_slot"].items():
        lines.append(f"| {slot} | {result['types'][slot]} | {100 * share:.1f}% |")
    lines += [
        "",
        f"Pooled: time {100 * cov['time']:.1f}%, number {100 * cov['number']:.1f}%, "
        f"custom entities {100 * cov['custom']:.1f}%.",
        "",
        f"## Hand-checked sample: {checked['n']} values, {100 * checked['right']:.1f}% right",
        "",
        f"Relative to {result['reference_time']} ({result['timezone']}); the values and how they "
        f"were checked are in `{SAMPLE.relative_to(ROOT.parent)}`: SNIPS test spans, and "
        f"{result['joined']} requests written to check that the parts of one time or duration "
        "a model tags apart come back as one value. "
        + ("Wrong:" if checked["wrong"] else "None is wrong."),
        "",
    ]
    for item in checked["wrong"]:
        where = (
            f"test utterance {item['test_index']}" if "test_index" in item else "written request"
        )
        lines.append(
            f"- {item['slot']} {item['text']!r} ({where}): "
            f"resolved {json.dumps(item['found'])}, expected {json.dumps(item['expected'])}"
        )
    if lat is None:
        lines += ["", "## Latency", "", "Not measured in this run (no BUNDLE given)."]
        return "\n".join(lines) + "\n"
    load = ", ".join(f"{x:.1f}" for x in lat["load_average"])
    lines += [
        "",
        "## Latency",
        "",
        f"One request at a time, 1 thread, {lat['precision']} model, each of the 700 test "
        f"utterances parsed with and without resolution in turns by two parsers sharing one "
        f"model session, median of {RUNS} runs of {REQUESTS} requests. Load average at the "
        f"end: {load} on 2 cores (this benchmark keeps one busy). Wall-clock times include "
        "any wait for a core; the process's CPU time counts only the work (compare the parse "
        "without resolution with the int8 row of benchmarks/deploy.md).",
        "",
        "| | p50 ms, CPU time | p50 ms, wall clock |",
        "|---|---|---|",
        f"| without resolution | {lat['cpu_p50_ms_without']:.3f} | {lat['p50_ms_without']:.3f} |",
        f"| with resolution | {lat['cpu_p50_ms_with']:.3f} | {lat['p50_ms_with']:.3f} |",
        f"| **overhead** | **{lat['cpu_overhead_p50_ms']:.3f}** | {lat['overhead_p50_ms']:.3f} |",
        "",
        f"p99 overhead: {lat['cpu_overhead_p99_ms']:.3f} ms CPU time "
        f"({lat['overhead_p99_ms']:.3f} ms wall clock). "
        f"{100 * lat['requests_with_dimension_slots']:.0f}% of the requests have a slot of a "
        "Duckling dimension; on those, resolution takes "
        f"{lat['cpu_overhead_median_ms_on_those']:.3f} ms of CPU time (median of the paired "
        f"differences; {lat['overhead_median_ms_on_those']:.3f} ms wall clock). "
        f"Bundle: {result['bundle_note']}",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "bundle", type=Path, nargs="?", help="bundle for the latency overhead (none: not measured)"
    )
    parser.add_argument(
        "--bundle-note",
        default="",
        help="what the bundle is, for the table (its training does not change the speed)",
    )
    args = parser.parse_args()
    from importlib.metadata import version

    data_dir = ensure_data()
    snips = load_snips(data_dir)
    slots = {s.slot for u in snips.train for s in u.slots}
    section = snips.slot_types.manifest_section(snips.train + snips.dev, slots)
    sample = json.loads(SAMPLE.read_text(encoding="utf-8"))
    resolver = ValueResolver.from_manifest(section)
    ref = resolver.reference(sample["reference_time"], sample["timezone"])
    result = {
        **provenance(bundle=args.bundle, data=[data_dir, SAMPLE]),
        "duckling": version("pyduckling-native-phihos"),
        "reference_time": sample["reference_time"],
        "timezone": sample["timezone"],
        "types": section["slot_types"],
        "coverage": value_coverage(resolver, snips.test, ref),
        "checked": checked_values(resolver, snips.test, sample),
        "joined": len(sample["joined"]["items"]),
        "latency": overhead(args.bundle, [u.text for u in snips.test]) if args.bundle else None,
        "bundle_note": args.bundle_note,
    }
    if result["latency"]:
        result["latency_overhead_ms_p50"] = result["latency"]["cpu_overhead_p50_ms"]
        result["latency_overhead_ms_p50_wall_clock"] = result["latency"]["overhead_p50_ms"]
    (ROOT / "values.json").write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    (ROOT / "values.md").write_text(render(result))
    print(render(result))


if __name__ == "__main__":
    main()

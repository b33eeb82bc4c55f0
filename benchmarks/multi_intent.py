"""Several requests in one text, on SNIPS: joins of two test requests, and single requests
that say "and".

    python benchmarks/multi_intent.py BUNDLE    # writes benchmarks/multi_intent.json and .md

BUNDLE holds a segmenter (``voicenlu segment BUNDLE`` fits one onto a bundle trained
without). Pairs: two test utterances of different intents, drawn with a fixed seed, joined
with each connector in turn (the first one's final . ? ! dropped, the second as written). A
pair counts for ``both_intents`` when the parse returns exactly two requests with both
intents in order, for ``both_exact`` when each request's slots are also exactly the gold
spans (type, start and end in the joined text). ``kept_whole``: the single test utterances
with the word "and" that come back as one request. ``single_regression``: points of intent
accuracy and slot F1 lost on the plain test set against the same bundle parsing every text
as one request (the joint model is the same: only splitting can cost). The rule baseline
splits at every connector the segmenter knows. ``--split dev`` measures on the dev set
instead, for choices.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import statistics
import sys
import time
from pathlib import Path

from voicenlu.bundle import read_manifest
from voicenlu.experiments.provenance import provenance
from voicenlu.metrics import compute_metrics
from voicenlu.pipeline import bundle_data
from voicenlu.runtime import Parser, result_to_utterance
from voicenlu.segment import segments

ROOT = Path(__file__).resolve().parent
CONNECTORS = ("and", "and then", "then", ",", "also", "after that")
PAIRS_PER_CONNECTOR = 200
SEED = 2026
AND = re.compile(r"\band\b", re.IGNORECASE)
TIMING_RUNS = 5


def joined(a, b, connector: str):
    """``a`` and ``b`` joined with ``connector``, and the gold requests [(intent, spans)]."""
    left = a.text.strip().rstrip(" .?!")
    lead = len(a.text) - len(a.text.lstrip())
    glue = ", " if connector == "," else f" {connector} "
    right = b.text.strip()
    shift = len(left) + len(glue)
    right_lead = len(b.text) - len(b.text.lstrip())
    text = left + glue + right
    gold = [
        (a.intent, {(s.slot, s.start - lead, s.end - lead) for s in a.slots}),
        (
            b.intent,
            {(s.slot, s.start - right_lead + shift, s.end - right_lead + shift) for s in b.slots},
        ),
    ]
    for _, spans in gold:  # the gold spans still point at their values
        assert all(0 <= s and e <= len(text) for _, s, e in spans), text
    return text, gold


def draw_pairs(utterances, seed: int) -> list[tuple[str, str, list]]:
    rng = random.Random(seed)
    pairs = []
    for connector in CONNECTORS:
        for _ in range(PAIRS_PER_CONNECTOR):
            a = rng.choice(utterances)
            b = rng.choice([u for u in utterances if u.intent != a.intent])
            pairs.append((connector, *joined(a, b, connector)))
    return pairs


def requests_of(result: dict) -> list[tuple[str | None, set]]:
    found = result.get("requests") or [result]
    return [
        (r["intent"]["name"], {(s["slot"], s["start"], s["end"]) for s in r["slots"]})
        for r in found
    ]


def rule_split(parser: Parser, whole: Parser, texts: list[str]) -> list[dict]:
    """The baseline: a new request at every connector, each part parsed as one request."""
    results = []
    for text in texts:
        spans = segments(text, parser.segmenter.candidates(text))
        parts = whole.parse_batch([text[s:e] for s, e in spans])
        requests = [
            {
                "intent": p["intent"],
                "slots": [s | {"start": s["start"] + a, "end": s["end"] + a} for s in p["slots"]],
            }
            for p, (a, _) in zip(parts, spans, strict=True)
        ]
        results.append({"requests": requests} if len(requests) > 1 else parts[0])
    return results


def score_pairs(pairs, results) -> dict:
    intents = exact = 0
    for (_, _, gold), result in zip(pairs, results, strict=True):
        got = requests_of(result)
        if len(got) == 2 and [g[0] for g in got] == [g[0] for g in gold]:
            intents += 1
            exact += got == gold
    return {"both_intents": intents / len(pairs), "both_exact": exact / len(pairs)}


def kept_whole(results) -> float:
    return sum(len(requests_of(r)) == 1 for r in results) / len(results)


def timing(parser: Parser, texts: list[str]) -> float:
    """Median milliseconds per text, one text at a time."""
    runs = []
    for _ in range(TIMING_RUNS):
        started = time.perf_counter()
        for text in texts:
            parser.parse(text)
        runs.append(1000 * (time.perf_counter() - started) / len(texts))
    return round(statistics.median(runs), 2)


def measure(bundle: Path, split: str, seed: int, data_dir=None) -> dict:
    manifest = read_manifest(bundle)
    if not manifest.get("segmenter"):
        sys.exit(f"{bundle} has no segmenter: run `voicenlu segment {bundle}` first.")
    found = bundle_data(manifest, None, data_dir)
    gold = found.test if split == "test" else found.dev
    parser = Parser.load(bundle, values=False, threads=1)  # the graph served: int8 when present
    whole = Parser.load(bundle, values=False, threads=1, split=False)
    pairs = draw_pairs(gold, seed)
    texts = [text for _, text, _ in pairs]
    learned = parser.parse_batch(texts)
    rule = rule_split(parser, whole, texts)
    with_and = [u for u in gold if AND.search(u.text)]
    plain_split = parser.parse_batch([u.text for u in gold])
    plain_whole = whole.parse_batch([u.text for u in gold])
    with_and_results = parser.parse_batch([u.text for u in with_and])
    split_metrics = compute_metrics(gold, [result_to_utterance(r) for r in plain_split])
    whole_metrics = compute_metrics(gold, [result_to_utterance(r) for r in plain_whole])
    per_connector = {}
    for connector in CONNECTORS:
        idx = [i for i, p in enumerate(pairs) if p[0] == connector]
        per_connector[connector] = {
            "learned": score_pairs([pairs[i] for i in idx], [learned[i] for i in idx]),
            "rule": score_pairs([pairs[i] for i in idx], [rule[i] for i in idx]),
        }
    plain = [u.text for u in gold if not parser.segmenter.candidates(u.text)][:200]
    result = {
        "pairs": len(pairs),
        **score_pairs(pairs, learned),
        "single_with_and": {
            "n": len(with_and),
            "kept_whole": kept_whole(with_and_results),
            "split": [r["text"] for r in with_and_results if r.get("requests")],
        },
        "single_regression": {
            "intent_accuracy": round(
                100 * (whole_metrics["intent_accuracy"] - split_metrics["intent_accuracy"]), 2
            ),
            "slot_f1": round(100 * (whole_metrics["slot_f1"] - split_metrics["slot_f1"]), 2),
        },
        "rule_baseline": {
            **score_pairs(pairs, rule),
            "kept_whole": kept_whole(rule_split(parser, whole, [u.text for u in with_and])),
        },
        "single": {
            "n": len(gold),
            "intent_accuracy": split_metrics["intent_accuracy"],
            "slot_f1": split_metrics["slot_f1"],
            "exact_match": split_metrics["exact_match"],
            "split": sum(bool(r.get("requests")) for r in plain_split),
        },
        "per_connector": per_connector,
        "latency_ms": {
            "without_connector": {
                "split": timing(parser, plain),
                "one_request": timing(whole, plain),
            },
            "single_with_and": {
                "split": timing(parser, [u.text for u in with_and]),
                "one_request": timing(whole, [u.text for u in with_and]),
            },
            "pairs": {"split": timing(parser, texts[:: max(1, len(texts) // 200)])},
        },
        "segmenter": manifest["segmenter"],
        "split": split,
        "precision": parser.precision,
        "seed": seed,
        "examples": [
            {"text": text, "gold": [g[0] for g in gold_], "got": [g[0] for g in requests_of(r)]}
            for (_, text, gold_), r in zip(pairs, learned, strict=True)
            if requests_of(r) != gold_
        ][:15],
    }
    return result


def pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def row(*cells) -> str:
    return "| " + " | ".join(map(str, cells)) + " |"


def render(r: dict) -> str:
    rule, lost = r["rule_baseline"], r["single_regression"]
    whole = r["single_with_and"]["kept_whole"]
    lines = [
        "# Several requests in one text (SNIPS " + r["split"] + ")",
        "",
        f"Command: `{r['command']}` at commit {r['commit'][:10]}, {r['created']}.",
        f"Bundle: `{r['bundle']['path']}` (manifest digest {r['bundle']['digest'][:12]}). Load "
        f"average at the end: {', '.join(f'{x:.1f}' for x in r['load_average'])} on 2 cores "
        "(the benchmark keeps one busy).",
        "",
        f"{r['pairs']} pairs of {r['split']} utterances of different intents (seed {r['seed']}), "
        f"{PAIRS_PER_CONNECTOR} per connector; {r['single_with_and']['n']} single {r['split']} "
        'utterances with the word "and".',
        "",
        "| figure | goal | segmenter | rule baseline |",
        "|---|---|---|---|",
        row("both intents right", "≥ 95%", pct(r["both_intents"]), pct(rule["both_intents"])),
        row(
            "both intents and all slots right",
            "≥ 80%",
            pct(r["both_exact"]),
            pct(rule["both_exact"]),
        ),
        row('single requests with "and" kept whole', "≥ 98%", pct(whole), pct(rule["kept_whole"])),
        row("intent accuracy lost on single requests", "≤ 0.2 points", lost["intent_accuracy"], ""),
        row("slot F1 lost on single requests", "≤ 0.2 points", lost["slot_f1"], ""),
        "",
        "Lost on single requests: the whole test set parsed by the same bundle with and "
        "without its segmenter (the joint model is the same; only a wrong split can cost). "
        f"The segmenter was fitted with `voicenlu segment` ({r['segmenter']['joined']} "
        f"utterances joined, {r['segmenter']['texts']} texts, threshold "
        f"{r['segmenter']['threshold']}), as training fits it.",
        "",
        f"On the {r['single']['n']} single requests the bundle's exact match is "
        f"{pct(r['single']['exact_match'])}: both requests of a pair exactly right can be "
        f"expected about {pct(r['single']['exact_match'] ** 2)} of the time even with perfect "
        f"splitting. {r['single']['split']} single requests were split.",
        "",
        "## Per connector",
        "",
        "| connector | both intents | both exact | rule: both intents | rule: both exact |",
        "|---|---|---|---|---|",
    ]
    for connector, c in r["per_connector"].items():
        figures = [
            pct(c[k][f]) for k in ("learned", "rule") for f in ("both_intents", "both_exact")
        ]
        lines.append(row(f"`{connector}`", *figures))
    lat = r["latency_ms"]
    lines += [
        "",
        f"## Latency (median ms per text, one at a time, {r['precision']}, 1 thread)",
        "",
        "| texts | with the segmenter | one request |",
        "|---|---|---|",
        row("without a connector", *lat["without_connector"].values()),
        row('single requests with "and"', *lat["single_with_and"].values()),
        row("pairs", lat["pairs"]["split"], ""),
        "",
        "Texts without a connector take no extra model run; a text with one reads the text on "
        "each side of every connector too (one batch).",
    ]
    if r["single_with_and"]["split"]:
        lines += ["", "Single requests split:", ""]
        lines += [f"- {t}" for t in r["single_with_and"]["split"]]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("bundle", type=Path)
    ap.add_argument("--split", choices=["test", "dev"], default="test")
    ap.add_argument("--seed", type=int, default=SEED)
    ap.add_argument("--data-dir")
    ap.add_argument("--out", type=Path, help="default: benchmarks/multi_intent (test only)")
    args = ap.parse_args()
    result = {
        **provenance(bundle=args.bundle),
        **measure(args.bundle, args.split, args.seed, args.data_dir),
        "load_average": os.getloadavg(),
    }
    out = args.out or (ROOT / "multi_intent" if args.split == "test" else None)
    text = render(result)
    print(text)
    if out is not None:
        out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
        out.with_suffix(".md").write_text(text)


if __name__ == "__main__":
    main()

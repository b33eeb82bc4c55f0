"""The figure tables of the README and docs/, made from the benchmarks' JSON files.

A figure typed by hand goes stale silently when its benchmark is rerun. Here each table sits
between ``<!-- table: NAME -->`` and ``<!-- /table -->`` and is rewritten from its JSON, with
a line saying which file, commit and date it comes from (or that none was recorded), so a
stale figure is either regenerated or visibly marked.

The table ``figures`` of benchmarks/README.md lists every figure file with its origin.

    python benchmarks/tables.py            # rewrite every marked table in place
    python benchmarks/tables.py --check    # exit 1, naming each table that differs
"""

from __future__ import annotations

import json
import re
import shlex
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MARKED = re.compile(r"(<!-- table: (\S+) -->\n)(.*?)(<!-- /table -->)", re.S)
NO_PROVENANCE = "**No provenance recorded: made by older code, to be rerun.**"

# name -> (JSON file under benchmarks/, function turning its content into a Markdown table)
TABLES: dict[str, tuple[str, Callable[[dict], str]]] = {}
INDEX = "figures"  # the table of every JSON file (``index``)


def table(name: str, source: str):
    """Register the function that makes table ``name`` from ``benchmarks/<source>``."""

    def register(make: Callable[[dict], str]) -> Callable[[dict], str]:
        TABLES[name] = (source, make)
        return make

    return register


def markdown(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in rows]
    return "\n".join(lines)


def pct(x: float, digits: int = 1) -> str:
    return f"{100 * x:.{digits}f}%"


def points(x: float, std: float | None = None) -> str:
    """A share in points, with ± std when there is one."""
    return f"{100 * x:.2f}" + ("" if std is None else f" ± {100 * std:.2f}")


def commit_of(result: dict) -> str:
    """``abc1234`` and whether the code differed from it, of a result with provenance."""
    dirty = " with uncommitted changes" if result.get("uncommitted_changes") else ""
    return f"`{result['commit'][:7]}`{dirty}"


def origin(source: str, result: dict) -> str:
    """The line under a table: its JSON, commit and date, or that none was recorded."""
    if not result.get("commit"):
        return f"From `benchmarks/{source}`. {NO_PROVENANCE}"
    return (
        f"From `benchmarks/{source}`, made at commit {commit_of(result)} "
        f"on {result['created'][:10]}."
    )


def short_command(command: str, longest: int = 40) -> str:
    """The command with each long argument (a note, say) cut: the JSON keeps it whole."""
    return shlex.join(
        a if len(a) <= longest else a[: longest - 1] + "…" for a in shlex.split(command)
    )


def index(root: Path = ROOT) -> str:
    """Every figure file under benchmarks/ with the commit and command that made it: where a
    reader checks whether a figure is current."""
    rows = []
    for path in sorted((root / "benchmarks").rglob("*.json")):
        result = json.loads(path.read_text(encoding="utf-8"))
        name = str(path.relative_to(root / "benchmarks"))
        table = path.with_suffix(".md")
        shown = f"[{name}]({table.relative_to(root / 'benchmarks')})" if table.exists() else name
        if result.get("commit"):
            made = f"{commit_of(result)}, {result['created'][:10]}"
            rows.append([shown, made, f"`{short_command(result['command'])}`"])
        else:
            rows.append([shown, "none recorded", NO_PROVENANCE])
    return markdown(["figures", "made at", "command"], rows) + "\n"


def render(name: str, root: Path = ROOT) -> str:
    """Table ``name`` and its origin line, as they belong between the markers."""
    if name == INDEX:
        return index(root)
    source, make = TABLES[name]
    result = json.loads((root / "benchmarks" / source).read_text(encoding="utf-8"))
    return f"{make(result)}\n\n{origin(source, result)}\n"


@table("snips", "snips.json")
def snips(r: dict) -> str:
    rows = []
    for variant, v in r["variants"].items():
        seeds = ", ".join(map(str, v.get("seeds", r["seeds"])))
        scores = [
            points(v[m]["mean"], v[m]["std"]) if m in v else "n/a"
            for m in ("intent_accuracy", "slot_f1", "exact_match")
        ]
        rows.append([variant, seeds, *scores, f"{v['train_seconds']['mean'] / 60:.1f} min"])
    header = ["variant", "seeds", "intent accuracy", "slot F1", "exact match", "train time"]
    return markdown(header, rows)


# The Whisper-only recogniser this one replaced, measured on the same recordings, and the goals.
SPEECH_BEFORE_AND_GOAL = {
    "clean": ("97.4%", ">= 98%"),
    "noise": ("94.2%", ">= 97.6% (Rhino)"),
    "latency": ("774 ms", "<= 300 ms"),
    "stream": ("none", "p50 <= 150 ms"),
    "rtf": ("0.091", "<= 0.1"),
    "no speech": ('"beep beep..." for 9-18 s', "all, <= 1,000 ms"),
    "rss": ("368 MB", "<= 300 MB"),
}


@table("speech", "speech.json")
def speech(r: dict) -> str:
    by, stream, quiet = r["latency_ms_p50_by_recogniser"], r["stream"], r["non_speech"]
    measured = {
        "clean": ("clean", pct(r["clean"])),
        "noise": ("average over kitchen noise, 24 to 6 dB", pct(r["average_noisy"])),
        "latency": (
            "latency p50, whole recording",
            f"{r['latency_ms_p50']:.0f} ms (grammar {by['grammar']:.0f}, "
            f"Whisper {by['whisper']:.0f})",
        ),
        "stream": (
            "stream latency p50 / p95",
            f"{stream['latency_ms_p50']:.0f} / {stream['latency_ms_p95']:.0f} ms "
            f"({pct(stream['clean'])} of clean accepted)",
        ),
        "rtf": ("real-time factor", f"{r['real_time_factor']:.3f}"),
        "no speech": (
            "no speech answered as no speech",
            f"{round(quiet['rejected'] * quiet['n'])} of {quiet['n']} signals, "
            f"slowest {quiet['max_ms']:.0f} ms",
        ),
        "rss": (
            "peak RSS",
            f"{r['rss_mb_grammar_only']:.0f} MB on the grammar path alone; "
            f"{r['rss_mb']:.0f} MB with Whisper loaded",
        ),
    }
    rows = [[*measured[k], *SPEECH_BEFORE_AND_GOAL[k]] for k in measured]
    return markdown(
        ["measure", "grammar + Whisper fallback", "Whisper alone (before)", "goal"], rows
    )


@table("multi_intent", "multi_intent.json")
def multi_intent(r: dict) -> str:
    rule, lost, single = r["rule_baseline"], r["single_regression"], r["single"]
    rows = [
        ["both intents right", "≥ 95%", pct(r["both_intents"]), pct(rule["both_intents"])],
        [
            "both intents and all slots right",
            "≥ 80%",
            pct(r["both_exact"]),
            pct(rule["both_exact"]),
        ],
        [
            'single requests with "and" kept whole',
            "≥ 98%",
            pct(r["single_with_and"]["kept_whole"]),
            pct(rule["kept_whole"]),
        ],
        ["intent accuracy lost on single requests", "≤ 0.2 points", lost["intent_accuracy"], ""],
        ["slot F1 lost on single requests", "≤ 0.2 points", lost["slot_f1"], ""],
        ["single requests exactly right (the bundle alone)", "", pct(single["exact_match"]), ""],
    ]
    return markdown(["figure", "goal", "segmenter", "rule baseline"], rows)


@table("values", "values.json")
def values(r: dict) -> str:
    coverage, checked = r["coverage"], r["checked"]
    rows = [
        ["gold time spans (`timeRange`, `year`) resolved", pct(coverage["time"])],
        ["gold number spans resolved", pct(coverage["number"])],
        ["gold custom-entity spans resolved", pct(coverage["custom"])],
        [f"hand-checked values right (of {checked['n']})", pct(checked["right"])],
    ]
    return markdown(["SNIPS test values", "share"], rows)


@table("small_assistant", "small_assistant.json")
def small_assistant(r: dict) -> str:
    rejected = {name: pct(1 - r["parts"][name]["accepted"]) for name in ("banking77", "snips")}
    off = f"BANKING77 {rejected['banking77']}, SNIPS {rejected['snips']}"
    # "before the background": the same context trained without it, in an earlier run.
    rows = [
        [
            "in-domain accepted",
            f"{r['in_domain']['n']:,}",
            "100%",
            f"**{pct(r['in_domain_accepted'], 0)}**",
            "≥ 99%",
        ],
        [
            "off-domain rejected",
            f"{r['off_domain']['n']:,}",
            "0%",
            f"**{pct(r['off_domain_rejected'])}** ({off})",
            "≥ 95%",
        ],
    ]
    return markdown(["", "requests", "before the background", "with it", "goal"], rows)


def short_ms(ms: float) -> str:
    """Two significant figures below 10 ms, whole milliseconds above."""
    return f"{ms:.1f}" if ms < 10 else f"{ms:.0f}"


@table("serve", "serve.json")
def serve(r: dict) -> str:
    rows = [
        [
            f"{x['microbatch']:g} ms" if x["microbatch"] else "off",
            f"{x['concurrency']}" + (" + hostile mix" if x["mix"] == "hostile" else ""),
            f"{x['rps']:.0f}",
            f"{x['ceiling_rps']:.0f}",
            pct(x["rps"] / x["ceiling_rps"], 0),
            short_ms(x["p50_ms"]),
            short_ms(x["p99_ms"]),
        ]
        for x in r["rows"]
    ]
    header = ["micro-batch", "concurrency", "req/s", "ceiling req/s", "share", "p50 ms", "p99 ms"]
    return markdown(header, rows)


# The variants the deployment page compares (the full table also has the pruned fp32 ones).
DEPLOY_LABELS = {
    "hf_pipeline_fp32": "Hugging Face `pipeline`, PyTorch fp32 (intent only)",
    "voicenlu_torch_fp32": "voicenlu, PyTorch fp32",
    "voicenlu_ort_fp32": "voicenlu, ONNX Runtime fp32",
    "voicenlu_ort_int8": "voicenlu, ONNX Runtime int8",
    "pruned_4layers_int8": "pruned to 4 layers, int8",
    "pruned_3layers_int8": "pruned to 3 layers, int8",
    "tfidf_logreg": "TF-IDF + logistic regression (intent only)",
}


@table("deploy", "deploy.json")
def deploy(r: dict) -> str:
    rows = []
    for x in r["rows"]:
        if x["name"] not in DEPLOY_LABELS:
            continue
        label = DEPLOY_LABELS[x["name"]]
        rows.append(
            [
                f"**{label} (recommended)**" if x["recommended"] else label,
                points(x["intent_accuracy"]),
                "n/a" if x["slot_f1"] is None else points(x["slot_f1"]),
                f"{x['size_mb']:.1f}",
                f"{x['p50_ms']:.2f}",
                f"{x['p99_ms']:.2f}",
                f"{x['throughput_utt_s']:.0f}",
                f"{x['rss_mb']:.0f}",
            ]
        )
    header = ["variant", "intent acc.", "slot F1", "size MB", "p50 ms (1 thread)", "p99 ms"]
    return markdown([*header, "utt/s (batch 64, 2 threads)", "RSS MB"], rows)


@table("learning_curve", "learning_curve.json")
@table("learning_curve_banking77", "learning_curve_banking77.json")
def learning_curve(r: dict) -> str:
    """Scores by examples per intent; slot F1 only where the data has slots."""

    def score(row: dict, metric: str) -> str:
        return points(row[metric], row[f"{metric}_std"] if row["draws"] > 1 else None)

    utterances = {run["per_intent"]: run["train_utterances"] for run in r["runs"]}
    by_size: dict = {}
    for row in r["rows"]:
        by_size.setdefault(row["per_intent"], {})[row["model"]] = row
    slots = any(row["slot_f1"] is not None for row in r["rows"])
    metrics = ["intent_accuracy", "slot_f1"] if slots else ["intent_accuracy"]
    rows = [
        [
            f"full ({utterances[size]:,})" if size == "full" else size,
            models["voicenlu"]["draws"],
            *(score(models["voicenlu"], m) for m in metrics),
            score(models["tfidf_logreg"], "intent_accuracy"),
            score(models["frozen_embedding"], "intent_accuracy"),
        ]
        for size, models in by_size.items()
    ]
    header = ["examples per intent", "draws", "intent accuracy", *(["slot F1"] if slots else [])]
    return markdown([*header, "TF-IDF intent accuracy", "frozen embedding"], rows)


def pages(root: Path = ROOT) -> list[Path]:
    found = [root / "README.md", *sorted((root / "docs").glob("*.md"))]
    return found + [p for p in [root / "benchmarks" / "README.md"] if p.exists()]


def regenerate(page: Path, root: Path = ROOT) -> tuple[str, list[str]]:
    """The page with every marked table made anew, and the names of those that changed."""
    changed = []

    def fresh(match: re.Match) -> str:
        start, name, old, end = match.groups()
        if name not in TABLES and name != INDEX:
            raise SystemExit(
                f"{page.relative_to(root)}: unknown table {name!r}; "
                f"known: {', '.join([*TABLES, INDEX])}"
            )
        new = render(name, root)
        if new != old:
            changed.append(name)
        return start + new + end

    return MARKED.sub(fresh, page.read_text(encoding="utf-8")), changed


def differences(root: Path = ROOT) -> list[str]:
    """One line per marked table whose text is not what its JSON gives."""
    return [
        f"{page.relative_to(root)}: table {name!r} differs from benchmarks/"
        + (TABLES[name][0] if name in TABLES else "**/*.json")
        for page in pages(root)
        for name in regenerate(page, root)[1]
    ]


def main(argv: list[str]) -> int:
    if argv == ["--check"]:
        stale = differences()
        for line in stale:
            print(line, file=sys.stderr)
        if stale:
            print("Run `python benchmarks/tables.py` to regenerate them.", file=sys.stderr)
        return 1 if stale else 0
    if argv:
        raise SystemExit("usage: python benchmarks/tables.py [--check]")
    for page in pages():
        text, changed = regenerate(page)
        if changed:
            page.write_text(text, encoding="utf-8")
            print(f"{page.relative_to(ROOT)}: {', '.join(changed)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

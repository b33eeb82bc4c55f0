"""Scope of a small assistant: does it accept its own requests and reject everyone else's?

    python benchmarks/small_assistant.py BUNDLE     # writes small_assistant.json and .md

In-domain: the bundle's own dev utterances (found from what the bundle records), the
coffee orders Picovoice wrote for the other engines of its speech-to-intent benchmark (the
432 texts of ``luis/barista.json``, written apart from the Rhino grammar the bundle learnt
from) and, with ``--transcripts``, its recordings as the recogniser wrote them.
Off-domain: requests of other assistants, the BANKING77 test set and the SNIPS test set.
The shipped background (``voicenlu/data/background.txt``) has no request of either.
Data: ``--picovoice`` or $VOICENLU_PICOVOICE_DIR, ``--banking77`` or $VOICENLU_BANKING77,
SNIPS from $VOICENLU_SNIPS_MIRROR; each defaults to ``../shared/data/...`` beside the repo.
The bundle answers with its own threshold, int8 when it has one, as a user's would.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
from pathlib import Path

from voicenlu.bundle import read_manifest
from voicenlu.data import ensure_data, load_snips
from voicenlu.data.training import recorded_data
from voicenlu.experiments.provenance import provenance
from voicenlu.runtime import Parser

ROOT = Path(__file__).resolve().parent
SHARED = ROOT.parent.parent / "shared" / "data"
GOALS = {"in_domain_accepted": 0.99, "off_domain_rejected": 0.95}


def accepted(parser: Parser, texts: list[str]) -> list[bool]:
    return [r["in_scope"] for r in parser.parse_batch(texts)]


def _transcripts(cache: Path | None) -> dict:
    """The Picovoice recordings as Whisper wrote them (clean), when a cache is given."""
    if cache is None:
        return {}
    rows = [json.loads(line) for line in cache.read_text("utf-8").splitlines()]
    texts = [r["text"] for r in rows if r["condition"] == "clean" and r["text"]]
    return {
        "transcripts": (
            True,
            "the clean Picovoice recordings as the bundle's recogniser wrote them",
            texts,
        )
    }


def render(result: dict) -> str:
    lines = [
        "# A small assistant's scope: the coffee maker",
        "",
        f"Command: `{result['command']}` at commit `{result['commit'][:7]}` "
        f"({result['created']}). Bundle: {result['bundle_note']} ({result['intents']} intent, "
        f"{result['precision']}, threshold {result['threshold']}).",
        "",
        "| requests | source | n | accepted | rejected | goal |",
        "|---|---|---|---|---|---|",
    ]
    for name, part in result["parts"].items():
        side = "in_domain" if part["in_domain"] else "off_domain"
        goal = (
            f"accepted >= {GOALS['in_domain_accepted']}"
            if part["in_domain"]
            else f"rejected >= {GOALS['off_domain_rejected']}"
        )
        lines.append(
            f"| {side.replace('_', '-')} | {name}: {part['source']} | {part['n']} | "
            f"{part['accepted']:.4f} | {1 - part['accepted']:.4f} | {goal} |"
        )
    lines += [
        f"| **in-domain** | together | {result['in_domain']['n']} | "
        f"**{result['in_domain_accepted']:.4f}** | | >= {GOALS['in_domain_accepted']} |",
        f"| **off-domain** | together | {result['off_domain']['n']} | | "
        f"**{result['off_domain_rejected']:.4f}** | >= {GOALS['off_domain_rejected']} |",
        "",
        "Requests wrongly answered, the first of each kind:",
        "",
    ]
    for name, part in result["parts"].items():
        for text in part["wrong"][:10]:
            verdict = "rejected" if part["in_domain"] else "accepted"
            lines.append(f"- {name}, {verdict}: {text!r}")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("bundle", type=Path)
    parser.add_argument(
        "--picovoice",
        type=Path,
        default=os.environ.get("VOICENLU_PICOVOICE_DIR", SHARED / "picovoice-speech-to-intent"),
    )
    parser.add_argument(
        "--banking77", type=Path, default=os.environ.get("VOICENLU_BANKING77", SHARED / "banking77")
    )
    parser.add_argument(
        "--transcripts",
        type=Path,
        help="the transcript cache of benchmarks/speech.py: its clean recordings' text is "
        "in-domain too (as the model reads it)",
    )
    parser.add_argument("--bundle-note", default="", help="how the bundle was made, for the table")
    args = parser.parse_args()

    manifest = read_manifest(args.bundle)
    nlu = Parser.load(args.bundle)
    barista = json.loads((args.picovoice / "luis" / "barista.json").read_text("utf-8"))
    with open(args.banking77 / "test.csv", encoding="utf-8", newline="") as f:
        banking = [row["text"] for row in csv.DictReader(f)]
    parts = {
        "dev": (
            True,
            "the bundle's dev utterances",
            [u.text for u in recorded_data(manifest["data"]).dev],
        ),
        "picovoice": (
            True,
            "Picovoice's written coffee orders (luis/barista.json)",
            [u["text"] for u in barista["utterances"]],
        ),
        **_transcripts(args.transcripts),
        "banking77": (False, "BANKING77 test set", banking),
        "snips": (False, "SNIPS test set", [u.text for u in load_snips(ensure_data()).test]),
    }
    record = provenance(bundle=args.bundle, data=[args.banking77 / "test.csv"])
    result = {
        **record,
        # The bundle's path, as the table names it; its digest and training beside it.
        "bundle": str(args.bundle),
        "bundle_record": record["bundle"],
        "intents": len(manifest["intents"]),
        "bundle_note": args.bundle_note,
        "precision": nlu.precision,
        "threshold": nlu.threshold,
        "parts": {},
    }
    for name, (in_domain, source, texts) in parts.items():
        verdicts = accepted(nlu, texts)
        wrong = [t for t, ok in zip(texts, verdicts, strict=True) if ok != in_domain]
        result["parts"][name] = {
            "in_domain": in_domain,
            "source": source,
            "n": len(texts),
            "accepted": sum(verdicts) / len(texts),
            "wrong": wrong,
        }
    for side, in_domain in (("in_domain", True), ("off_domain", False)):
        chosen = {k: p for k, p in result["parts"].items() if p["in_domain"] == in_domain}
        n = sum(p["n"] for p in chosen.values())
        share = sum(p["accepted"] * p["n"] for p in chosen.values()) / n
        result[side] = {"source": " + ".join(p["source"] for p in chosen.values()), "n": n}
        result[f"{side}_{'accepted' if in_domain else 'rejected'}"] = (
            share if in_domain else 1 - share
        )
    (ROOT / "small_assistant.json").write_text(json.dumps(result, indent=2) + "\n")
    (ROOT / "small_assistant.md").write_text(render(result))
    print(render(result))


if __name__ == "__main__":
    main()

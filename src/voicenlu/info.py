"""What a bundle holds, from its manifest alone: ``voicenlu info BUNDLE``.

Intents and slots with their training counts, each slot's type and the entity lists behind
them, where the data came from and how the checkpoint was chosen, the figures, the
out-of-scope settings and the files. Reads nothing but the bundle (no torch, no data).
"""

from __future__ import annotations

from pathlib import Path

from voicenlu.bundle import read_manifest
from voicenlu.data.types import dimension
from voicenlu.evaluation import describe_choice

SHOWN_VALUES = 8  # entity values listed per entity before "and N more"


def bundle_info(path: str | Path) -> dict:
    """The facts ``render_info`` prints, as JSON-ready data."""
    bundle = Path(path)
    manifest = read_manifest(bundle)
    data = manifest.get("data", {})
    values = manifest.get("values") or {}
    types, entities = values.get("slot_types", {}), values.get("entities", {})
    slot_counts = data.get("slots") or {}
    slots = {}
    for name in sorted({t[2:] for t in manifest["slot_tags"] if t != "O"}):
        kind = types.get(name)
        if kind is None:
            described = "untyped (its value is its text)"
        elif dimension(kind):
            described = f"{dimension(kind)} (resolved by Duckling)"
        elif kind in entities:
            entity = entities[kind]
            openness = "extensible" if entity.get("extensible") else "closed"
            described = f"entity {kind} ({len(entity['values'])} values, {openness})"
        else:
            described = kind
        slots[name] = {"type": kind, "described": described, "examples": slot_counts.get(name)}
    files = {
        name: round((bundle / name).stat().st_size / 2**20, 2)
        for name in manifest["files"]
        if (bundle / name).is_file()
    }
    calibration = manifest.get("calibration", {})
    return {
        "bundle": str(bundle),
        "voicenlu_version": manifest.get("voicenlu_version"),
        "backbone": manifest["backbone"],
        "max_length": manifest["max_length"],
        "intents": {i: (data.get("intents") or {}).get(i) for i in manifest["intents"]},
        "slots": slots,
        "entities": {
            name: {"extensible": e.get("extensible", False), "values": e["values"]}
            for name, e in entities.items()
        },
        "data": {
            k: data.get(k)
            for k in ("description", "path", "sha256", "commit", "train", "dev", "test")
            if data.get(k) is not None
        },
        "choice": manifest.get("training", {}).get("choice"),
        "metrics": manifest.get("metrics"),
        "out_of_scope": {
            "score": calibration.get("score"),
            "threshold": calibration.get("threshold"),
        },
        "lexical_weight": (manifest.get("lexical") or {}).get("weight", 0.0),
        "int8": "model.int8.onnx" in manifest["files"],
        "files_mb": files,
    }


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}%"


def render_info(info: dict) -> str:
    """The facts of ``bundle_info`` as a few readable lines."""
    counted = ", ".join(f"{i} ({n})" if n is not None else i for i, n in info["intents"].items())
    lines = [
        f"bundle: {info['bundle']} (voicenlu {info['voicenlu_version']})",
        f"backbone: {info['backbone']}, reads up to {info['max_length']} sub-tokens",
        f"intents ({len(info['intents'])}, training utterances each): {counted}",
        f"slots ({len(info['slots'])}):" + ("" if info["slots"] else " none (intents only)"),
    ]
    for name, slot in info["slots"].items():
        count = f", {slot['examples']} training examples" if slot["examples"] else ""
        lines.append(f"  {name}: {slot['described']}{count}")
    for name, entity in info["entities"].items():
        shown = list(entity["values"])[:SHOWN_VALUES]
        more = len(entity["values"]) - len(shown)
        lines.append(
            f"entity {name}: {', '.join(shown)}" + (f" and {more} more" if more > 0 else "")
        )
    data = info["data"]
    if data:
        counts = f"{data.get('train', '?')} training, {data.get('dev', 0)} dev"
        counts += f", {data['test']} test" if data.get("test") else ""
        lines.append(f"data: {data.get('description', 'not recorded')}; {counts} utterances")
        if data.get("path"):
            lines.append(f"  from {data['path']} (SHA-256 {data['sha256'][:16]}...)")
    if info["choice"]:
        lines.append(f"chosen: {describe_choice(info['choice'])}")
    m = info["metrics"]
    if m:
        lines.append(
            f"figures on {m['split']}"
            + (" (in-sample)" if m["split"] == "train" else "")
            + f" (n={m['n']}): intent accuracy {_pct(m['intent_accuracy'])}, slot F1 "
            f"{_pct(m['slot_f1'])}, exact match {_pct(m['exact_match'])}"
        )
    scope = info["out_of_scope"]
    lines.append(
        f"out of scope: {scope['score']} score, threshold {scope['threshold']}; lexical "
        f"weight {info['lexical_weight']:g}; served model: "
        + ("model.int8.onnx (int8)" if info["int8"] else "model.onnx (fp32)")
    )
    lines.append(
        "files: " + ", ".join(f"{name} {size:g} MB" for name, size in info["files_mb"].items())
    )
    return "\n".join(lines)

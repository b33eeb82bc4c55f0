"""Learning curve: test scores against the number of training examples per intent.

People bring 10 to 70 examples per intent, not 2,000. Each point trains on a stratified
draw of a training split (for SNIPS the standard one, never the 300-per-intent
``train_<Intent>.json`` files, which share utterances with the standard test set) and is
scored on the test set, side by side with two baselines on the same draw: TF-IDF + logistic
regression, and the frozen backbone's sentence embedding + logistic regression.

A draw is trained as ``voicenlu train`` trains a file of it: when a tenth of it would be
under 5 per intent, it has no dev set and trains on every utterance for the fixed schedule
(``as_a_user_would``); larger draws choose their checkpoint on a fixed 20-per-intent dev
slice.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
import sys
from collections import Counter
from pathlib import Path

from voicenlu.bundle import is_complete
from voicenlu.config import TrainConfig
from voicenlu.data import ensure_data, load_snips
from voicenlu.data.snips import holdout, stratified_slice
from voicenlu.data.training import TrainData, dev_fraction, snips_split
from voicenlu.errors import ConfigError
from voicenlu.experiments.provenance import provenance
from voicenlu.lexical import DEFAULT_C, LexicalModel

MODELS = ("voicenlu", "tfidf_logreg", "frozen_embedding")
SMALL = 300  # sizes below this get several draws: one draw of 10 says little
DEV_PER_INTENT = 20
TEST_SHARE = 0.2  # of each intent of a user's data: the test set its curve is scored on


def parse_sizes(text: str) -> list[int | None]:
    """``"10,20,full"`` -> ``[10, 20, None]`` (None is the whole training split)."""
    sizes: list[int | None] = []
    for item in text.split(","):
        item = item.strip()
        if item == "full":
            sizes.append(None)
        elif item.isdigit() and int(item) > 0:
            sizes.append(int(item))
        else:
            raise ConfigError(
                f"--sizes: {item!r} is not a positive number of examples per intent or 'full'."
            )
    return sizes


def snips_draws(snips, dev_seed: int):
    """Draws from the SNIPS standard split: ``(per_intent or None, seed) -> TrainData``."""

    def draw(per_intent: int | None, seed: int):
        return snips_split(
            snips,
            per_intent=per_intent or 0,
            seed=seed,
            dev_per_intent=DEV_PER_INTENT,
            dev_seed=dev_seed,
        )

    return draw


def as_a_user_would(data: TrainData) -> TrainData:
    """The draw as ``voicenlu train`` would train a file of it: without a dev set when a
    tenth of it is too few to choose with (``dev_fraction``), else with the curve's dev."""
    if dev_fraction(data.train):
        return data
    return dataclasses.replace(data, dev=[], source=data.source | {"final_fit": True})


def file_draws(utterances, seed: int, name: str, sizes):
    """(draw, test, sizes) on a user's data: ``TEST_SHARE`` of each intent is the test set,
    and each draw of the rest is split as ``train`` splits a file. Sizes beyond what the
    data holds per intent are dropped (``full`` stays)."""
    pool, test = holdout(utterances, TEST_SHARE, seed)
    source = {"kind": "experiment", "description": f"{name}, learning curve"}

    def draw(per_intent: int | None, draw_seed: int) -> TrainData:
        chosen = stratified_slice(pool, per_intent, draw_seed) if per_intent else pool
        train, dev = holdout(chosen, dev_fraction(chosen), draw_seed)
        return TrainData(train=train, dev=dev, source=source)

    most = max(Counter(u.intent for u in pool).values())
    return draw, test, [s for s in sizes if s is None or s < most]


def learning_curve(
    draw, test, base, output_dir: Path, sizes, draws: int = 3, user_rule: bool = True
) -> dict:
    """Train and score every (size, draw); write the rows, means over draws, as they come.

    ``draw(per_intent, seed)`` gives the training data of one run (``snips_draws``; with
    ``user_rule``, trained ``as_a_user_would``; ``file_draws`` split their own); every
    run is scored on ``test``. A run whose bundle is complete in ``output_dir`` is scored
    without training again, so an interrupted curve picks up where it stopped; a run stopped
    halfway is trained again.
    """
    from voicenlu.pipeline import train_bundle

    record = provenance()
    texts = [u.text for u in test]
    has_slots = any(u.slots for u in test)
    reference = FrozenEmbedding(base.backbone)
    runs: list[dict] = []
    for size in sizes:
        for index in range(draws if size is not None and size < SMALL else 1):
            seed = base.seed + index
            drawn = draw(size, seed)
            data = dataclasses.replace(as_a_user_would(drawn) if user_rule else drawn, test=test)
            label = "full" if size is None else size
            run_dir = output_dir / f"{label}-draw{index}"
            bundle = run_dir / "bundle"
            if not is_complete(bundle):  # else an interrupted run made it
                print(
                    f"learning curve: {label} per intent, draw {index + 1}",
                    file=sys.stderr,
                    flush=True,
                )
                # The curve scores the trained (fp32) model: an int8 copy would go unused.
                config = dataclasses.replace(base, seed=seed, quantize=False)
                train_bundle(data, config, run_dir)
            metrics = json.loads((bundle / "metrics.json").read_text())
            manifest = json.loads((bundle / "voicenlu.json").read_text())
            runs.append(
                {
                    "per_intent": label,
                    "draw": index,
                    "train_utterances": len(data.train),
                    "dev_utterances": len(data.dev),
                    "mean_per_intent": len(data.train) / len({u.intent for u in data.train}),
                    "epochs": manifest["training"]["epochs_run"],
                    "choice": manifest["training"].get("choice", {}).get("method", "dev"),
                    "train_seconds": manifest["training"]["train_seconds"],
                    "voicenlu": {
                        k: metrics[k]
                        for k in ("intent_accuracy", "slot_f1")
                        if has_slots or k != "slot_f1"
                    },
                    "tfidf_logreg": {
                        "intent_accuracy": _accuracy(
                            LexicalModel.fit(data.train).predict(texts), test
                        )
                    },
                    "frozen_embedding": {
                        "intent_accuracy": _accuracy(reference.fit(data.train).predict(texts), test)
                    },
                }
            )
            result = record | summarise(runs)  # written after every run: a partial curve survives
            (output_dir / "learning_curve.json").write_text(json.dumps(result, indent=2) + "\n")
    return record | summarise(runs)


def _accuracy(predicted: list[str], gold) -> float:
    return statistics.mean(p == u.intent for p, u in zip(predicted, gold, strict=True))


class FrozenEmbedding:
    """Reference row: the backbone's own mean-pooled sentence embedding, frozen, with a
    logistic regression on top (what the pretrained geometry alone gives)."""

    def __init__(self, backbone: str):
        self.backbone = backbone
        self._encoder = None
        self._cache: dict[str, object] = {}

    def embed(self, texts: list[str]):
        import numpy as np
        import torch

        from voicenlu.model import load_backbone, mean_pool

        if self._encoder is None:
            self._encoder, self._tokenizer = load_backbone(self.backbone)
            self._encoder.eval()
        missing = [t for t in dict.fromkeys(texts) if t not in self._cache]
        for i in range(0, len(missing), 128):
            chunk = missing[i : i + 128]
            batch = self._tokenizer(chunk, padding=True, truncation=True, return_tensors="pt")
            with torch.no_grad():
                hidden = self._encoder(**batch).last_hidden_state
            pooled = mean_pool(hidden, batch["attention_mask"])
            vectors = torch.nn.functional.normalize(pooled, dim=-1)
            self._cache.update(zip(chunk, vectors.numpy(), strict=True))
        return np.stack([self._cache[t] for t in texts])

    def fit(self, utterances) -> FrozenEmbedding:
        from sklearn.linear_model import LogisticRegression

        x = self.embed([u.text for u in utterances])
        self._classifier = LogisticRegression(C=DEFAULT_C, max_iter=2000).fit(
            x, [u.intent for u in utterances]
        )
        return self

    def predict(self, texts: list[str]) -> list[str]:
        return [str(p) for p in self._classifier.predict(self.embed(texts))]


def summarise(runs: list[dict]) -> dict:
    """Rows of means over draws, one per (size, model); the baseline has no slots."""
    rows = []
    for label in dict.fromkeys(r["per_intent"] for r in runs):
        same = [r for r in runs if r["per_intent"] == label]
        for model in MODELS:
            row = {
                "per_intent": label,
                "model": model,
                "draws": len(same),
                "mean_per_intent": statistics.mean(r["mean_per_intent"] for r in same),
            }
            for key in ("intent_accuracy", "slot_f1"):
                values = [r[model][key] for r in same if key in r.get(model, {})]
                row[key] = statistics.mean(values) if values else None
                row[f"{key}_std"] = statistics.pstdev(values) if values else None
            rows.append(row)
    return {"rows": rows, "runs": runs}


def _pct(value: float | None, std: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{100 * value:.2f}" + (f" ± {100 * std:.2f}" if std else "")


def render_learning_curve(result: dict, command: str, name: str = "SNIPS") -> str:
    rows = result["rows"]
    slots = any(r["slot_f1"] is not None for r in rows)
    lines = [
        f"# Learning curve on {name}",
        "",
        "Test scores against training examples per intent: mean ± standard deviation over "
        f"draws. Checkpoints are chosen on {DEV_PER_INTENT} dev utterances per intent, "
        "except for draws whose tenth is under 5 per intent: like `voicenlu train` on such "
        "data, they have no dev set and train on every utterance for the fixed schedule. "
        "Baselines on the same draws (intents only): TF-IDF + logistic regression, and the "
        "frozen backbone's mean-pooled embedding + logistic regression. "
        f"Made by `{command}`.",
        "",
        "| per intent | draws | voicenlu intent acc. | "
        + ("voicenlu slot F1 | " if slots else "")
        + "TF-IDF intent acc. | frozen embedding intent acc. |",
        "|---|---|---|" + ("---|" if slots else "") + "---|---|",
    ]
    by = {(r["per_intent"], r["model"]): r for r in rows}
    for label in dict.fromkeys(r["per_intent"] for r in rows):
        ours = by[label, "voicenlu"]
        cells = [
            str(label),
            str(ours["draws"]),
            _pct(ours["intent_accuracy"], ours["intent_accuracy_std"]),
        ]
        if slots:
            cells.append(_pct(ours["slot_f1"], ours["slot_f1_std"]))
        for model in MODELS[1:]:
            row = by[label, model]
            cells.append(_pct(row["intent_accuracy"], row["intent_accuracy_std"]))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def run_learning_curve(
    out: Path,
    name: str,
    utterances,
    sizes: list[int | None],
    *,
    draws: int,
    seed: int,
    command: str,
    data_dir=None,
) -> str:
    """The curve on ``utterances`` of ``name`` or, when they are None, on SNIPS (from
    ``data_dir``): trains its points into ``out``, writes learning_curve.json, .md and the
    plot there, and returns the table (``command`` made it)."""
    from voicenlu.plots import plot_learning_curve

    out.mkdir(parents=True, exist_ok=True)
    base = TrainConfig(seed=seed)
    if utterances is None:
        snips = load_snips(ensure_data(data_dir))
        draw, test = snips_draws(snips, dev_seed=seed), snips.test
        result = learning_curve(draw, test, base, out, sizes, draws)
    else:
        draw, test, sizes = file_draws(utterances, seed, name, sizes)
        result = learning_curve(draw, test, base, out, sizes, draws, user_rule=False)
    table = render_learning_curve(result, command, name)
    (out / "learning_curve.md").write_text(table)
    plot_learning_curve(result["rows"], out / "learning_curve", name=name)
    return table

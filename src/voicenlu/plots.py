"""Figures for the evaluation report, written as PNG (to look at) and SVG (to publish).

Only matplotlib's object-oriented API is used (``Figure`` + the Agg canvas), never pyplot:
no global backend is switched and no figure is left registered in a caller's session.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

FORMATS = ("png", "svg")

# (history key, legend label, line style) for each curve; train solid, dev dashed.
_ACCURACY_CURVES = (
    ("train_intent_accuracy", "intent accuracy (train)", "C0", "-"),
    ("eval_intent_accuracy", "intent accuracy (dev)", "C0", "--"),
    ("train_slot_f1", "slot F1 (train)", "C1", "-"),
    ("eval_slot_f1", "slot F1 (dev)", "C1", "--"),
)
_LOSS_CURVES = (
    ("train_loss", "train", "C0", "-"),
    ("eval_loss", "dev", "C1", "--"),
)


def _save(fig: Figure, path_stem: Path) -> list[Path]:
    path_stem.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    paths = []
    for fmt in FORMATS:
        path = path_stem.with_name(f"{path_stem.name}.{fmt}")
        fig.savefig(path, format=fmt, dpi=150, bbox_inches="tight")
        paths.append(path)
    fig.clear()
    return paths


def plot_confusion(
    labels: Sequence[str], matrix: Sequence[Sequence[int]], path_stem: Path
) -> list[Path]:
    """Draw the intent confusion matrix (rows gold, columns predicted) with counts in the cells."""
    n = len(labels)
    if any(len(row) != n for row in matrix) or len(matrix) != n:
        raise ValueError(f"confusion matrix must be {n}x{n} to match its {n} labels")
    side = max(4.0, 0.6 * n + 2.0)
    fig = Figure(figsize=(side + 1.0, side))
    ax = fig.add_subplot()
    image = ax.imshow(matrix, cmap="Blues", vmin=0)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    top = max((max(row) for row in matrix), default=0)
    for i, row in enumerate(matrix):
        for j, count in enumerate(row):
            # White text on dark cells, faint text for zeros so the errors stand out.
            color = "white" if top and count > top / 2 else ("0.6" if count == 0 else "black")
            ax.text(j, i, str(count), ha="center", va="center", color=color, fontsize=9)
    ax.set_xticks(range(n), labels, rotation=45, ha="right", rotation_mode="anchor")
    ax.set_yticks(range(n), labels)
    ax.set_xlabel("predicted intent")
    ax.set_ylabel("gold intent")
    ax.set_title("Intent confusion matrix")
    return _save(fig, Path(path_stem))


def _plot_curves(
    history: Sequence[dict], curves: tuple, ylabel: str, title: str, path_stem: Path
) -> list[Path]:
    fig = Figure(figsize=(7.0, 4.5))
    ax = fig.add_subplot()
    drawn = 0
    for key, label, color, style in curves:
        # Keys may be missing in some entries (train and eval are often logged separately).
        points = [
            (h.get("epoch", i + 1), h[key]) for i, h in enumerate(history) if h.get(key) is not None
        ]
        if not points:
            continue
        xs, ys = zip(*points, strict=True)
        ax.plot(xs, ys, color=color, linestyle=style, marker="o", markersize=3, label=label)
        drawn += 1
    if not drawn:
        fig.clear()
        return []
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # no "epoch 1.5" ticks
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend()
    return _save(fig, path_stem)


def plot_history(history: Sequence[dict], path_stem_prefix: Path) -> list[Path]:
    """Draw accuracy/F1 and loss by epoch, train and dev, from per-epoch history dicts.

    Writes ``accuracy_by_epoch`` and ``loss_by_epoch`` (.png and .svg). If ``path_stem_prefix``
    is a directory they go inside it; otherwise its name is prefixed onto the file names
    (``out/run1_`` gives ``out/run1_loss_by_epoch.png``). A figure with no data is skipped.
    """
    prefix = Path(path_stem_prefix)

    def stem(name: str) -> Path:
        return prefix / name if prefix.is_dir() else prefix.with_name(prefix.name + name)

    paths = _plot_curves(
        history,
        _ACCURACY_CURVES,
        "score",
        "Intent accuracy and slot F1 by epoch",
        stem("accuracy_by_epoch"),
    )
    paths += _plot_curves(history, _LOSS_CURVES, "loss", "Loss by epoch", stem("loss_by_epoch"))
    return paths


def plot_learning_curve(rows: Sequence[dict], path_stem: Path, name: str = "SNIPS") -> list[Path]:
    """Intent accuracy and slot F1 against examples per intent (log scale), with ±1 std bars.

    ``rows`` are learning-curve rows: ``model``, ``per_intent`` (a label), ``mean_per_intent``
    (where to draw it), and ``intent_accuracy``/``slot_f1`` with their ``_std``; a metric that
    is None (the baseline's slots) is not drawn.
    """
    fig = Figure(figsize=(7.0, 4.5))
    ax = fig.add_subplot()
    curves = (
        ("voicenlu", "intent_accuracy", "voicenlu intent accuracy", "C0", "-"),
        ("voicenlu", "slot_f1", "voicenlu slot F1", "C1", "-"),
        ("tfidf_logreg", "intent_accuracy", "TF-IDF + logreg intent accuracy", "C2", "--"),
        ("frozen_embedding", "intent_accuracy", "frozen embedding + logreg intent acc.", "C3", ":"),
    )
    for model, key, label, color, style in curves:
        points = [r for r in rows if r["model"] == model and r[key] is not None]
        if points:
            ax.errorbar(
                [r["mean_per_intent"] for r in points],
                [r[key] for r in points],
                yerr=[r[f"{key}_std"] or 0.0 for r in points],
                color=color,
                linestyle=style,
                marker="o",
                markersize=4,
                capsize=3,
                label=label,
            )
    ticks = {r["mean_per_intent"]: str(r["per_intent"]) for r in rows}
    ax.set_xscale("log")
    ax.set_xticks(list(ticks), list(ticks.values()))
    ax.minorticks_off()
    ax.set_xlabel("training examples per intent")
    ax.set_ylabel("test score")
    ax.set_title(f"Learning curve ({name} test)")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right")
    return _save(fig, Path(path_stem))

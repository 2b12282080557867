"""Human-readable views of one run's evaluation: a text table and an accuracy-vs-length plot."""

from __future__ import annotations

from typing import Any

import matplotlib
import numpy as np

matplotlib.use("Agg")  # files only; never open a window
import matplotlib.pyplot as plt  # noqa: E402

from posenc_jax import metrics  # noqa: E402


def _fmt(value: float | None) -> str:
    return "  n/a" if value is None else f"{value:5.3f}"


def format_table(evaluation: dict[str, Any], title: str = "", columns: int = 4) -> str:
    """Every `metrics.PER_LENGTH` metric per length in a compact grid, then their
    in-/out-of-distribution means under their results.json names."""
    train_max = evaluation["train_max_len"]
    per_length = [evaluation[metric.name] for metric in metrics.PER_LENGTH]
    cells = [
        f"{n:4d}{'*' if n > train_max else ' '} " + " ".join(_fmt(v[i]) for v in per_length)
        for i, n in enumerate(evaluation["lengths"])
    ]
    header = "  len " + " ".join(f"{metric.column:>5}" for metric in metrics.PER_LENGTH)
    lines = [title] if title else []
    lines.append("   |".join([header] * min(columns, len(cells))))
    rows = (len(cells) + columns - 1) // columns
    for r in range(rows):
        lines.append("   |".join(cells[r::rows]))
    means = metrics.summary_keys()
    lines.append(
        f"(* = longer than training, {train_max})  "
        + "  ".join(f"{key} {_fmt(evaluation[key])}" for key in means)
    )
    if evaluation["not_representable"]:
        missing = evaluation["not_representable"]
        representable = [metric.ood_representable for metric in metrics.PER_LENGTH]
        lines.append(
            f"not representable by the encoding: lengths {missing[0]}..{missing[-1]}; over the "
            "representable longer lengths: "
            + "  ".join(f"{key} {_fmt(evaluation[key])}" for key in representable)
        )
    return "\n".join(lines)


def accuracy_figure(evaluation: dict[str, Any], title: str = ""):
    """Every `metrics.PER_LENGTH` metric against input length, the training range shaded; for a
    mean over seeds (`seeds.aggregate`), a band of ± one standard deviation around each."""
    figure, axes = plt.subplots(figsize=(6, 3.5), dpi=100)
    lengths = evaluation["lengths"]
    for metric in metrics.PER_LENGTH:
        values = np.array([np.nan if v is None else v for v in evaluation[metric.name]])
        (line,) = axes.plot(lengths, values, marker=".", label=metric.label)
        std = evaluation.get(f"{metric.name}_std")
        if std is not None and any(v is not None for v in std):
            spread = np.array([np.nan if v is None else v for v in std])
            axes.fill_between(
                lengths, values - spread, values + spread, color=line.get_color(), alpha=0.2
            )
    axes.axvspan(lengths[0], evaluation["train_max_len"], color="0.9", label="training lengths")
    axes.set(xlabel="input length", ylabel="accuracy", ylim=(-0.02, 1.02), title=title)
    axes.legend(loc="lower left", fontsize="small")
    figure.tight_layout()
    return figure


def attention_figure(weights, title: str = ""):
    """One layer's attention weights [heads, T, T], the heads side by side (rows: queries)."""
    num_heads = weights.shape[0]
    figure, axes = plt.subplots(
        1, num_heads, figsize=(2.6 * num_heads, 2.9), dpi=100, squeeze=False
    )
    for head, axis in enumerate(axes[0]):
        axis.imshow(weights[head], cmap="viridis", vmin=0.0, interpolation="nearest")
        axis.set(title=f"head {head}", xlabel="key", ylabel="query" if head == 0 else None)
    figure.suptitle(title, fontsize="small")
    figure.tight_layout()
    return figure

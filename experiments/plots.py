"""Plots of one run: forgetting-matrix heatmaps and per-experience curves.

Colour scales are fixed to [-1, 1], so heatmaps of different runs compare at
a glance.
"""

from __future__ import annotations

from pathlib import Path
from typing import IO

import numpy as np
import pandas as pd

Target = Path | IO[bytes]  # a file, or a buffer (the HTML report inlines its PNGs)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Target, dpi: int = 110, **kwargs) -> Target:
    """Write the figure (a file or a buffer) and free it."""
    fig.savefig(path, dpi=dpi, **kwargs)
    _pyplot().close(fig)
    return path


def _stage_labels(results: dict) -> list[str]:
    if results["protocol"] == "joint":
        return ["after joint"]
    return [f"after {n}" for n in results["experiences"]]


def heatmap(results: dict, metric: str, path: Target) -> Target:
    """The T x T matrix (plus the initial row), values annotated, scale [-1, 1]."""
    plt = _pyplot()
    names = results["experiences"]
    rows = [results["initial"][metric], *results["matrices"][metric]]
    values = np.array([[np.nan if v is None else v for v in row] for row in rows], dtype=float)
    labels = ["initial", *_stage_labels(results)]
    size = max(4.0, 1.1 * len(names) + 2.5)
    fig, ax = plt.subplots(figsize=(size, 0.8 * size))
    im = ax.imshow(values, cmap="RdYlGn", vmin=-1.0, vmax=1.0)
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("evaluated on")
    ax.set_ylabel("trained through")
    ax.axhline(0.5, color="black", linewidth=1)
    for i in range(values.shape[0]):
        for j in range(values.shape[1]):
            text = "—" if np.isnan(values[i, j]) else f"{values[i, j]:.2f}"
            ax.text(j, i, text, ha="center", va="center", fontsize=9)
    title = f"{metric.upper()}: {results['strategy']}"
    if results.get("uses_task_labels"):
        title += " (task labels at test)"
    ax.set_title(title)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    return _save(fig, path, dpi=110)


def curves(results: dict, metric: str, path: Target) -> Target:
    """Each experience's score across the stream (initial, after each step)."""
    plt = _pyplot()
    names = results["experiences"]
    stages = ["initial", *_stage_labels(results)]
    rows = [results["initial"][metric], *results["matrices"][metric]]
    fig, ax = plt.subplots(figsize=(max(5.0, 1.2 * len(stages) + 2), 4))
    for j, name in enumerate(names):
        ys = [np.nan if row[j] is None else row[j] for row in rows]
        ax.plot(range(len(stages)), ys, marker="o", label=name)
    ax.set_xticks(range(len(stages)), stages, rotation=20, ha="right")
    ax.set_ylim(-1.0, 1.0)
    ax.axhline(0.0, color="grey", linewidth=0.8)
    ax.set_ylabel(f"{metric.upper()} on the test set")
    ax.set_title(f"{metric.upper()} of each experience across the stream: {results['strategy']}")
    ax.legend()
    fig.tight_layout()
    return _save(fig, path, dpi=110)


def routing_heatmap(results: dict, path: Target) -> Target:
    """The last stage's routing matrix: row s, the mean weight dataset s gives each head."""
    plt = _pyplot()
    names = results["experiences"]
    routing = results["routing"]
    last = list(routing["matrices"])[-1]
    values = np.array([[np.nan if v is None else v for v in row]
                       for row in routing["matrices"][last]], dtype=float)
    size = max(4.0, 1.1 * len(names) + 2.5)
    fig, ax = plt.subplots(figsize=(size, 0.8 * size))
    im = ax.imshow(values, cmap="Blues", vmin=0.0, vmax=1.0)
    ax.set_xticks(range(len(names)), [f"head {n}" for n in names], rotation=30, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("head")
    ax.set_ylabel("test images of")
    for i in range(values.shape[0]):
        for j in range(values.shape[1]):
            text = "—" if np.isnan(values[i, j]) else f"{values[i, j]:.2f}"
            ax.text(j, i, text, ha="center", va="center", fontsize=9)
    accuracy = routing["mean_accuracy"].get(last)
    shown = "—" if accuracy is None else f"{accuracy:.2f}"
    ax.set_title(f"routing after {last.removeprefix('after_')} ({results['strategy']}): "
                 f"accuracy {shown}")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    return _save(fig, path, dpi=110)


def scatters(results: dict, run_dir: Path, path: Target) -> Target:
    """Per dataset, test predictions against the targets after its own experience and after
    the last, each with its SRCC in the legend: forgetting as the cloud loosens."""
    from .files import file_name

    plt = _pyplot()
    names = results["experiences"]
    last = len(results["matrices"]["srcc"]) - 1
    cols = min(3, len(names))
    rows = -(-len(names) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.6 * rows), squeeze=False)
    for j, name in enumerate(names):
        ax = axes[j // cols][j % cols]
        own = min(j, last)
        shown_stages = [(own, "tab:blue", f"after {names[own]}")]
        if own != last:  # the last dataset's own experience is the last one
            shown_stages.append((last, "tab:red", f"after {names[last]} (last)"))
        for stage, colour, label in shown_stages:
            csv = run_dir / "predictions" / f"after_{stage}" / f"{file_name(name)}.csv"
            frame = pd.read_csv(csv)
            srcc = results["matrices"]["srcc"][stage][j]
            shown = "—" if srcc is None else f"{srcc:.3f}"
            ax.scatter(frame["target"], frame["prediction"], s=9, alpha=0.6, color=colour,
                       label=f"{label}: SRCC {shown}")
        ax.set_title(name)
        ax.set_xlabel("human score (target)")
        ax.set_ylabel("prediction")
        ax.legend(fontsize=8, loc="upper left")
    for k in range(len(names), rows * cols):
        axes[k // cols][k % cols].axis("off")
    fig.suptitle(f"test predictions against human scores: {results['strategy']}")
    fig.tight_layout()
    return _save(fig, path, dpi=90)


def grid_matrices(groups: list, metric: str, path: Target) -> Target:
    """Each row's mean matrix side by side, one colour scale ([-1, 1]) and one colour bar."""
    plt = _pyplot()
    n = len(groups)
    names = groups[0].first["experiences"]
    fig, axes = plt.subplots(1, n, figsize=(0.55 * len(names) * n + 2, 0.55 * len(names) + 2),
                             squeeze=False)
    from .table import mean_over_runs

    im = None
    for ax, g in zip(axes[0], groups, strict=True):
        mean = mean_over_runs(g.runs, lambda r: r["matrices"][metric])
        im = ax.imshow(mean, cmap="RdYlGn", vmin=-1.0, vmax=1.0)
        ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=7)
        stages = ["joint"] if len(mean) == 1 else names
        ax.set_yticks(range(len(stages)), stages, fontsize=7)
        ax.set_title(g.label if len(g.label) < 40 else g.label[:38] + "…", fontsize=8)
    fig.colorbar(im, ax=list(axes[0]), fraction=0.02, pad=0.02, label=metric.upper())
    return _save(fig, path, dpi=90, bbox_inches="tight")


def grid_bars(labels: list[str], values: list, column: str, aware: list[bool],
              path: Target) -> Target:
    """One bar per row: the column's mean, the std over seeds as its error bar; task-aware
    rows hatched (not comparable with the others)."""
    plt = _pyplot()
    means = [np.nan if v is None else v[0] for v in values]
    spread = [0.0 if v is None or v[1] is None else v[1] for v in values]
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(labels) + 1.2))
    ys = np.arange(len(labels))
    bars = ax.barh(ys, means, xerr=spread, color=["tab:orange" if a else "tab:blue"
                                                  for a in aware], capsize=3)
    for bar, a in zip(bars, aware, strict=True):
        if a:
            bar.set_hatch("//")
    ax.set_yticks(ys, [t if len(t) < 60 else t[:58] + "…" for t in labels], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel(f"{column} (mean ± std over seeds; hatched: task labels at test)")
    ax.axvline(0.0, color="grey", linewidth=0.8)
    return _save(fig, path, dpi=90, bbox_inches="tight")


def plot_run(results: dict, out: Path) -> list[Path]:
    """Write srcc_matrix.png, plcc_matrix.png and srcc_curves.png into RUN_DIR (and
    routing_matrix.png for a routed multi-head run)."""
    out = Path(out)
    paths = [heatmap(results, "srcc", out / "srcc_matrix.png"),
             heatmap(results, "plcc", out / "plcc_matrix.png"),
             curves(results, "srcc", out / "srcc_curves.png")]
    if (results.get("routing") or {}).get("matrices"):
        paths.append(routing_heatmap(results, out / "routing_matrix.png"))
    return paths


def mean_heatmap(runs: list[dict], metric: str, path: Path, label: str) -> Path:
    """Heatmap of the mean matrix (and initial row) over several seeds' runs."""
    from .table import mean_over_runs

    def mean(rows_of):
        return mean_over_runs(runs, rows_of).tolist()

    first = runs[0]
    results = {**first, "strategy": f"{label}, mean of {len(runs)} seeds",
               "initial": {metric: mean(lambda r: [r["initial"][metric]])[0]},
               "matrices": {metric: mean(lambda r: r["matrices"][metric])}}
    return heatmap(results, metric, Path(path))

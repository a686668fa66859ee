"""Plots of one run: forgetting-matrix heatmaps and per-experience curves.

Colour scales are fixed to [-1, 1], so heatmaps of different runs compare at
a glance.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _stage_labels(results: dict) -> list[str]:
    if results["protocol"] == "joint":
        return ["after joint"]
    return [f"after {n}" for n in results["experiences"]]


def heatmap(results: dict, metric: str, path: Path) -> Path:
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
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def curves(results: dict, metric: str, path: Path) -> Path:
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
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def routing_heatmap(results: dict, path: Path) -> Path:
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
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


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
    def mean(rows_of):
        arr = np.array([[[np.nan if v is None else v for v in row] for row in rows_of(r)]
                        for r in runs], dtype=float)
        return np.nanmean(arr, axis=0).tolist()

    first = runs[0]
    results = {**first, "strategy": f"{label}, mean of {len(runs)} seeds",
               "initial": {metric: mean(lambda r: [r["initial"][metric]])[0]},
               "matrices": {metric: mean(lambda r: r["matrices"][metric])}}
    return heatmap(results, metric, Path(path))

"""RUN_DIR: results.json, splits/, predictions/ — and the matrices, from predictions."""

from __future__ import annotations

import json
import logging
import math
import platform
import subprocess
from collections.abc import Sequence
from datetime import datetime, timezone
from functools import partial
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.datasets.files import DROP_COLUMNS, DROP_KINDS
from benchmarks.metrics import CORRELATIONS, SUMMARY_KEYS, plcc, summary
from benchmarks.stream import ExperienceData, Stream

from .files import atomic_file, atomic_write, file_name  # noqa: F401 (their old home)

log = logging.getLogger(__name__)
# Predictions whose spread is within this share of their size (about 100 float32 ulps) are
# constant as far as ranks go.
CONSTANT = 1e-5
PACKAGES = ("torch", "torchvision", "avalanche-lib", "numpy", "scipy", "pandas", "pillow",
            "wandb", "iqacl")


class StagePredictions:
    """Predictions of every stage (`initial`, `after_0`, ...) on every experience.

    Each cell is (rows, targets, predictions), plus the routing weights over the seen
    heads (N, heads) where the run scored with eval.heads=weighted."""

    def __init__(self, experiences: Sequence[ExperienceData],
                 evaluated: Sequence[int] | None = None):
        self.experiences = list(experiences)
        # The experiences evaluated at every stage (validation: those with a val split);
        # the others' cells are NaN (null in results.json).
        self.evaluated = list(range(len(self.experiences)) if evaluated is None else evaluated)
        self.stages: dict[str, dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]]] = {}

    def add(self, stage: str, per_experience: dict[int, tuple]) -> None:
        missing = set(self.evaluated) - set(per_experience)
        if missing:
            raise RuntimeError(f"stage {stage}: no predictions for experiences {sorted(missing)}")
        self.stages[stage] = dict(per_experience)

    def row(self, stage: str, metric: str, plcc_fit: str = "none") -> list[float]:
        fn = partial(plcc, fit=plcc_fit) if metric == "plcc" else CORRELATIONS[metric]
        preds = self.stages[stage]
        return [fn(preds[j][1], preds[j][2]) if j in preds else float("nan")
                for j in range(len(self.experiences))]

    def trained_stages(self) -> list[str]:
        return [s for s in self.stages if s != "initial"]

    def matrix(self, metric: str, plcc_fit: str = "none") -> list[list[float]]:
        return [self.row(s, metric, plcc_fit) for s in self.trained_stages()]

    def stage_predictions(self) -> list[list[np.ndarray]]:
        """[t][s]: predictions after stage t on experience s (for mSI)."""
        return [[self.stages[st][s][2] for s in range(len(self.experiences))]
                for st in self.trained_stages()]

    def constant(self) -> list[str]:
        """`stage on experience` where predictions are equal up to float32 rounding: their
        ranks, and so SRCC / PLCC / KRCC, are numerical noise (e.g. an untrained MobileNet
        in eval mode, whose activations vanish without pretrained BatchNorm statistics)."""
        return [f"{stage} on {self.experiences[j].name}"
                for stage, per_exp in self.stages.items() for j, (_, _, pred, *_) in per_exp.items()
                if len(pred) > 1 and np.ptp(pred) <= CONSTANT * max(1.0, np.abs(pred).max())]

    def frame(self, stage: str, j: int) -> pd.DataFrame:
        exp = self.experiences[j]
        rows, _, pred, *route = self.stages[stage][j]
        test = exp.part("test")
        frame = pd.DataFrame({
            "image_id": test["image_id"].to_numpy()[rows],
            "target": test["score"].to_numpy()[rows],
            "prediction": exp.denormalise(pred),
        })
        if route:  # one column per seen head, in training order: what routing.json re-derives
            for i, w in enumerate(route[0].T):
                frame[f"weight_{self.experiences[i].name}"] = w
        return frame

    def routing(self) -> dict | None:
        """Per trained stage, the routing matrix (row s: the mean weight dataset s's images
        give each head; null for heads not trained yet) and routing accuracy (the share of
        images whose largest weight is their own dataset's head), from the saved weights."""
        stages = [s for s in self.trained_stages()
                  if any(len(cell) > 3 for cell in self.stages[s].values())]
        if not stages:
            return None
        return {"matrices": {s: routing_matrix(self.stages[s], len(self.experiences))
                             for s in stages},
                "accuracy": {s: routing_accuracy(self.stages[s], len(self.experiences))
                             for s in stages}}


def routing_matrix(cells: dict[int, tuple], n: int) -> list[list[float]]:
    """Row s: the mean routing weight of experience s's images on each head (NaN: none)."""
    out = []
    for s in range(n):
        route = cells[s][3] if s in cells and len(cells[s]) > 3 else None
        mean = route.mean(0) if route is not None and len(route) else []
        out.append([float(mean[i]) if i < len(mean) else float("nan") for i in range(n)])
    return out


def routing_accuracy(cells: dict[int, tuple], n: int) -> list[float]:
    """Per experience whose head is trained: the share of its images routed to it."""
    out = []
    for s in range(n):
        route = cells[s][3] if s in cells and len(cells[s]) > 3 else None
        ok = route is not None and len(route) and s < route.shape[1]
        out.append(float(np.mean(route.argmax(1) == s)) if ok else float("nan"))
    return out


def _clean(value):
    """JSON without NaN: undefined values (constant predictions, T = 1) become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, np.generic):
        return _clean(value.item())
    return value


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def routing_record(router, test: StagePredictions) -> dict | None:
    """results.json's routing: how heads scored (the HeadRouting plugin's record), and the
    routing matrices and accuracy from the saved weights (predictions/*.csv weight_<name>)."""
    if router is None:
        return None
    derived = test.routing() or {}
    accuracy = derived.get("accuracy", {})
    return {**router.record(), **derived,
            "mean_accuracy": {s: float(np.nanmean(a)) if not all(np.isnan(a)) else None
                              for s, a in accuracy.items()}}


def source_commit() -> str | None:
    """The suite's git commit ("+dirty" with uncommitted changes to tracked files), or None
    where it is not a git checkout (an installed wheel)."""
    root = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                              text=True, timeout=10)
        if head.returncode:
            return None
        dirty = subprocess.run(["git", "-C", str(root), "diff", "--quiet", "HEAD"],
                               capture_output=True, timeout=10).returncode
    except (OSError, subprocess.TimeoutExpired):
        return None
    return head.stdout.strip() + ("+dirty" if dirty else "")


def compute_results(test: StagePredictions, plcc_fit: str, protocol: str = "stream") -> dict:
    """Matrices, initial rows and summaries; a joint run has one row and only ACC; a single
    run (each experience alone) has ACC = mPI = the mean of its diagonal."""
    matrices = {m: test.matrix(m, plcc_fit) for m in CORRELATIONS}
    initial = {m: test.row("initial", m, plcc_fit) for m in CORRELATIONS}
    stage_preds = test.stage_predictions()
    summaries = {}
    for m, fn in CORRELATIONS.items():
        if protocol == "joint":
            summaries[m] = {**dict.fromkeys(SUMMARY_KEYS), "acc": float(np.mean(matrices[m][0]))}
        elif protocol == "single":  # each dataset by its own model: the diagonal's mean
            diagonal = float(np.mean(np.diag(np.asarray(matrices[m], dtype=float))))
            summaries[m] = {**dict.fromkeys(SUMMARY_KEYS), "acc": diagonal, "mpi": diagonal}
        else:
            summaries[m] = summary(matrices[m], initial[m], stage_preds, corr=fn)
    return {"matrices": matrices, "initial": initial, "summary": summaries,
            "constant_predictions": test.constant()}


def write_run(out: Path, *, config: dict, stream: Stream, test: StagePredictions,
              val: StagePredictions | None, protocol: str, uses_task_labels: bool,
              train_loss: list[list[float]], wall_time_s: float, device: str,
              memory: dict | None = None, threads: int | None = None,
              model: dict | None = None, training: dict | None = None,
              routing: dict | None = None) -> dict:
    """Write splits/, predictions/ and (last, atomically) results.json."""
    out.mkdir(parents=True, exist_ok=True)
    names = stream.names
    for exp in stream.experiences:  # what was trained and evaluated: no unreadable image
        for part in ("train", "val", "test"):
            atomic_write(out / "splits" / file_name(exp.name) / f"{part}.txt",
                         "".join(f"{i}\n" for i in exp.used(part)))
    for stage in test.stages:
        for j, exp in enumerate(stream.experiences):
            path = out / "predictions" / stage / f"{file_name(exp.name)}.csv"
            atomic_write(path, test.frame(stage, j).to_csv(index=False))
    dropped = pd.concat([e.dropped.assign(experience=e.name) for e in stream.experiences])
    if len(dropped):
        atomic_write(out / "dropped.csv",
                     dropped[["experience", *DROP_COLUMNS]].to_csv(index=False))

    plcc_fit = config["eval"]["plcc_fit"]
    results = {
        "config": config,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "commit": source_commit(),
        "versions": versions(),
        "device": device,
        # train.amp takes effect on CUDA only: what the run computed in.
        "precision": "bf16" if config["train"]["amp"] and device.startswith("cuda") else "fp32",
        # PyTorch's intra-op threads: reductions split by thread, so numbers depend on it.
        "threads": threads,
        "protocol": protocol,
        "strategy": config["strategy"]["name"],
        "uses_task_labels": uses_task_labels,
        # eval.heads=newest|weighted: how the heads scored; weighted: routing matrices and
        # accuracy per stage
        "routing": routing,
        "plcc": "pearson after 4-parameter logistic fit" if plcc_fit == "logistic"
                else "pearson (no fit)",
        "experiences": names,
        "task_labels": [e.task_label for e in stream.experiences],
        "scales": {e.name: list(e.scale) for e in stream.experiences},
        # Per experience: where its scores came from and how its images were seen.
        "labels": {e.name: e.label_info for e in stream.experiences},
        "transforms": {e.name: transform_info(e, config["data"]) for e in stream.experiences},
        **compute_results(test, plcc_fit, protocol),
        "validation": ({"matrices": {m: val.matrix(m, plcc_fit) for m in CORRELATIONS}}
                       if val is not None and val.stages else None),
        # Experiences without a validation split, and why (their validation cells are null).
        "without_validation": {e.name: e.split.sources.get("val", "")
                               for e in stream.experiences if not e.split.val},
        "counts": {e.name: e.counts() for e in stream.experiences},
        "dropped": int(sum(len(e.dropped) for e in stream.experiences)),
        "dropped_by_reason": {k: sum(e.dropped_by_kind()[k] for e in stream.experiences)
                              for k in DROP_KINDS},
        "unreadable": int(sum(e.counts()["unreadable"] for e in stream.experiences)),
        # Left out by design (reference copies, training images, in no split list).
        "excluded": {e.name: e.excluded_by_reason() for e in stream.experiences},
        # Ids in an official test list that the label file lacks (AVA): a few of each.
        "official_test_unlabelled": {e.name: e.official_unlabelled[:10]
                                     for e in stream.experiences if e.official_unlabelled},
        "removed_for_leakage": int(sum(e.split.removed_for_leakage
                                       for e in stream.experiences)),
        "train_loss": train_loss,
        # The recipe (loss, optimiser, schedule, warm-up, selection) and per experience
        # each epoch's lr and the selected epoch.
        "training": training,
        "wall_time_s": round(wall_time_s, 2),
        "memory": memory,
        "model": model,
    }
    results = _clean(results)
    if results["constant_predictions"]:
        shown = results["constant_predictions"]
        log.warning("predictions constant to float precision (%s%s): their SRCC/PLCC/KRCC are "
                    "noise, e.g. an untrained backbone; results.json constant_predictions",
                    ", ".join(shown[:3]), f" and {len(shown) - 3} more" if len(shown) > 3 else "")
    atomic_write(out / "results.json", json.dumps(results, indent=2))
    if config["log"]["plots"]:
        write_plots(results, out)
    if config["log"]["report"]:
        from .report import try_run_report

        try_run_report(out)
    return results


def transform_info(exp: ExperienceData, data: dict) -> dict:
    """How an experience's images were trained and evaluated (results.json)."""
    size = data["image_size"]
    if exp.transform == "crop":
        adaptive = data["adaptive_resize"]
        prep = f"adaptive resize {adaptive}, " if adaptive else ""
        evaluation = ("whole image" if data["crop_eval"] == "whole" else
                      f"mean over five {size} px crops (corners, centre)")
        return {"transform": "crop", "adaptive_resize": adaptive,
                "train": f"{prep}random {size} px crop at native resolution, flip",
                "eval": f"{prep}{evaluation}"}
    return {"transform": "resize", "train": f"random resized crop to {size} px, flip",
            "eval": f"resize to {round(size * 8 / 7)}, centre crop {size}"}


def write_plots(results: dict, out: Path) -> None:
    """The run's heatmaps and curves; a plot that fails is logged, never fatal."""
    try:
        from .plots import plot_run

        plot_run(results, out)
    except Exception as exc:  # a plot must never cost the results
        log.warning("plots not written (%s: %s); results.json is complete",
                    type(exc).__name__, exc)


def format_matrix(results: dict, metric: str = "srcc") -> str:
    """The forgetting matrix as a plain-text table (rows: after training; cols: evaluated on)."""
    names = results["experiences"]
    width = max(10, *(len(n) + 2 for n in names))
    label = max(14, *(len(n) + 7 for n in names))
    head = f"{metric.upper():<{label}}" + "".join(f"{n:>{width}}" for n in names)
    lines = [head]

    def cells(values):
        return "".join(f"{'—' if v is None else f'{v:.3f}':>{width}}" for v in values)

    lines.append(f"{'initial':<{label}}" + cells(results["initial"][metric]))
    for i, row in enumerate(results["matrices"][metric]):
        stage = "after joint" if results["protocol"] == "joint" else "after " + names[i]
        lines.append(f"{stage:<{label}}" + cells(row))
    s = results["summary"][metric]
    lines.append("  ".join(f"{k.upper()} {'—' if v is None else f'{v:+.3f}'}"
                           for k, v in s.items()))
    return "\n".join(lines)

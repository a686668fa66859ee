"""Many runs from one file: a base config x lists of values x seeds, one after another.

A grid file (YAML):

    base: experiments/configs/demo.yaml     # the config every run starts from
    overrides: [train.epochs=4]             # applied to every run (optional)
    seeds: [0, 1, 2]
    grid:                                   # every combination of these values
      strategy.name: [naive, ewc, replay]
      model.backbone: [mobilenet_v2]
    variants:                               # and/or an explicit list of settings
      - {label: naive (per-task heads), overrides: [model.heads=per_task]}
    select: strategy.name                   # optional: mark the best variant per value
                                            # of this key, by validation ACC (SRCC)
    columns: [mSRCC, mPI, mSI, mPSI, mPSR]  # optional: the table's summary columns
    note: "text printed under the table"    # optional
    ray: {num_cpus: 1, num_gpus: 0, max_retries: 1}   # per run, with --executor ray

Runs whose `results.json` exists are skipped, so a grid re-launched after a
crash redoes only the unfinished runs.
"""

from __future__ import annotations

import itertools
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from benchmarks.errors import UserError

from .config import load_config
from .jobs import Failure, Job, run_job
from .table import format_mean_std

log = logging.getLogger(__name__)


@dataclass
class Variant:
    label: str
    overrides: list[str]


def read_grid(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"grid file {path} not found")
    spec = yaml.safe_load(path.read_text()) or {}
    valid = {"base", "overrides", "seeds", "grid", "variants", "select", "ray", "columns",
             "note"}
    unknown = sorted(set(spec) - valid)
    if unknown:
        raise UserError(f"{path}: unknown key '{unknown[0]}'; valid: {sorted(valid)}")
    if not spec.get("base") or not (spec.get("variants") or spec.get("grid")):
        raise UserError(f"{path}: a grid needs `base` and `grid` and/or `variants`")
    variants = [Variant(v["label"], list(v.get("overrides", [])))
                for v in spec.get("variants") or [{"label": "", "overrides": []}]]
    grid = spec.get("grid") or {}
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise UserError(f"{path}: grid key '{key}' needs a non-empty list of values")
    expanded = []
    for v in variants:
        for combo in itertools.product(*grid.values()):
            settings = [f"{k}={x}" for k, x in zip(grid, combo, strict=True)]
            expanded.append(Variant(" ".join(filter(None, [v.label, *settings])),
                                    [*v.overrides, *settings]))
    spec["variants"] = expanded
    spec.setdefault("seeds", [0])
    spec.setdefault("overrides", [])
    return spec


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", text).strip("_")


def grid_jobs(path: str | Path, out: str | Path, extra: list[str] = (),
              base: str | None = None) -> tuple[dict, list[Job]]:
    """The grid's runs, every config validated before the first (long) run starts.

    `base`: another base config than the grid file's (the same table on other data)."""
    from strategies.registry import check_hyperparameters

    spec = read_grid(path)
    if base:
        spec["base"] = base
    jobs = []
    for variant in spec["variants"]:
        for seed in spec["seeds"]:
            overrides = [*spec["overrides"], *variant.overrides, f"seed={seed}", *extra]
            config = load_config(spec["base"], overrides)
            strategy = dict(config["strategy"])
            check_hyperparameters(strategy.pop("name"), strategy)
            wandb = config["log"]["wandb"]
            if wandb["enabled"] and not wandb["group"]:
                wandb["group"] = Path(path).stem  # one W&B group per grid, whoever runs it
            jobs.append(Job(variant.label, seed, config,
                            Path(out) / f"{slug(variant.label)}-s{seed}"))
    return spec, jobs


def run_grid(path: str | Path, out: str | Path, extra: list[str] = (), executor: str = "local",
             address: str | None = None, base: str | None = None
             ) -> tuple[list[dict], list[Failure]]:
    """Run every variant x seed (skipping finished ones); return results and failures.

    `executor="ray"` hands each run to Ray as a task (experiments/ray_executor.py).
    """
    spec, jobs = grid_jobs(path, out, extra, base)
    if executor == "ray":
        from .ray_executor import run_on_ray

        return run_on_ray(jobs, Path(out), spec.get("ray") or {}, address)
    if executor != "local":
        raise UserError(f"--executor {executor}: choose 'local' or 'ray'")
    return [run_job(job, i, len(jobs)) for i, job in enumerate(jobs)], []


def val_acc(result: dict) -> float | None:
    """Mean final validation SRCC over the experiences that have a validation split."""
    val = result.get("validation")
    if not val:
        return None
    row = [v for v in val["matrices"]["srcc"][-1] if v is not None]
    return float(np.mean(row)) if row else None


def report(results: list[dict], select: str | None = None) -> str:
    """Mean ± std over seeds per variant: ACC, forgetting, BWT, mPI (SRCC), final SRCC."""
    labels = list(dict.fromkeys(r["label"] for r in results))
    names = results[0]["experiences"]
    head = ["variant", "task labels at test", "ACC", "forgetting", "BWT", "mPI",
            *[f"final {n}" for n in names], "val ACC", "seeds"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    by_label = {label: [r for r in results if r["label"] == label] for label in labels}
    best = _best(by_label, select) if select else set()
    for label, runs in by_label.items():
        s = [r["summary"]["srcc"] for r in runs]
        final = [[r["matrices"]["srcc"][-1][j] for r in runs] for j in range(len(names))]
        name = f"**{label}**" if label in best else label
        cells = [[x[k] for x in s] for k in ("acc", "forgetting", "bwt", "mpi")]
        cells += [*final, [val_acc(r) for r in runs]]
        row = [name, "yes" if runs[0]["uses_task_labels"] else "no",
               *[format_mean_std(c) for c in cells], str(len(runs))]
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    without = sorted({n for r in results for n in r.get("without_validation") or {}})
    lines.append("SRCC on each experience's test set, mean ± std over seeds; ACC, forgetting "
                 "(Chaudhry), BWT and mPI as in docs/METRICS.md; val ACC: the same as ACC on "
                 "the validation splits" + (f" (over the experiences that have one; no "
                                            f"validation split in {', '.join(without)})"
                                            if without else "")
                 + (f"; **bold**: best val ACC per `{select}`" if select else "") + ".")
    return "\n".join(lines)


def _best(by_label: dict[str, list[dict]], key: str) -> set[str]:
    groups: dict[str, list[tuple[float, str]]] = {}
    for label, runs in by_label.items():
        value = runs[0]["config"]
        for part in key.split("."):
            value = value[part]
        score = np.mean([v for v in (val_acc(r) for r in runs) if v is not None] or [np.nan])
        groups.setdefault(str(value), []).append((score, label))
    return {max(g, key=lambda x: -np.inf if np.isnan(x[0]) else x[0])[1]
            for g in groups.values()}


def write_report(text: str, target: str | Path, marker: str) -> None:
    """Replace the block between `<!-- marker:start -->` and `<!-- marker:end -->`."""
    target = Path(target)
    start, end = f"<!-- {marker}:start -->", f"<!-- {marker}:end -->"
    doc = target.read_text() if target.exists() else f"{start}\n{end}\n"
    if start not in doc or end not in doc:
        raise UserError(f"{target}: no '{start}' ... '{end}' block to write the report into")
    before, rest = doc.split(start, 1)
    _, after = rest.split(end, 1)
    target.write_text(f"{before}{start}\n{text}\n{end}{after}")

"""One page per grid (or any folder of runs): GRID_DIR/report.html.

The table (mean ± std over seeds or splits, task-aware flag, bests in bold,
as experiments/table.py computes it), a bar chart of one column with its
spread, the mean matrices side by side on one colour scale, and a link to
each run's own page. Folders without results.json are listed as unfinished,
never averaged.
"""

from __future__ import annotations

import os
from pathlib import Path

from benchmarks.errors import UserError

from . import plots
from .files import atomic_write
from .report import REPORT, environment, png, try_run_report
from .table import _best, _digits, format_mean_std, group_runs, load_runs, rows

GRID_COLUMNS = ("ACC", "BWT", "FWT", "forgetting", "mPI", "mSI", "mPSI", "mPSR")


def unfinished(grid_dir: Path) -> list[dict]:
    """Run folders without results.json: what they hold (a checkpoint, or nothing yet)."""
    out = []
    for d in sorted(p for p in grid_dir.iterdir() if p.is_dir()):
        if (d / "results.json").exists() or d.name.startswith("."):
            continue
        checkpoints = sorted((d / "checkpoints").glob("*")) if (d / "checkpoints").is_dir() \
            else []
        state = f"last checkpoint {checkpoints[-1].name}" if checkpoints else "no checkpoint"
        out.append({"name": d.name, "state": state})
    return out


def grid_context(grid_dir: Path, metric: str, column: str,
                 columns: tuple[str, ...] | list[str]) -> dict:
    runs = load_runs([grid_dir])
    groups = group_runs(runs)
    cols, body = rows(groups, metric, columns)
    if column not in cols:
        raise UserError(f"--column {column}: not a column of this table; choose from "
                        f"{[c for c in cols if c not in ('strategy', 'task labels', 'seeds')]}")
    best = {c: _best(body, c) for c in cols}
    by_label = {g.label: g for g in groups}
    table = []
    for i, r in enumerate(body):
        g = by_label[r["strategy"]]
        links = []
        for run in g.runs:
            run_dir = Path(run["_dir"])
            if not (run_dir / REPORT).exists():
                try_run_report(run_dir)
            links.append({"href": Path(os.path.relpath(run_dir / REPORT, grid_dir)).as_posix(),
                          "text": f"seed {run['config']['seed']}"})
        cells = [{"text": r[c] if c in ("strategy", "task labels", "seeds")
                  else format_mean_std(r[c], _digits(c)), "best": i in best[c]} for c in cols]
        table.append({"cells": cells, "links": links, "aware": r["_task_aware"]})
    ordered = [by_label[r["strategy"]] for r in body]
    return {
        "title": f"{grid_dir.name}: {len(groups)} rows, {len(runs)} runs",
        "cols": cols, "table": table, "metric": metric, "column": column,
        "bars": png(lambda b: plots.grid_bars([r["strategy"] for r in body],
                                              [r[column] for r in body], column,
                                              [r["_task_aware"] for r in body], b)),
        "matrices": png(lambda b: plots.grid_matrices(ordered, metric, b)),
        "unfinished": unfinished(grid_dir),
    }


def write_grid_report(grid_dir: str | Path, metric: str = "srcc", column: str = "ACC",
                      columns: tuple[str, ...] | list[str] = GRID_COLUMNS) -> Path:
    """GRID_DIR/report.html over every finished run below it (and each run's own page)."""
    grid_dir = Path(grid_dir)
    if not grid_dir.is_dir():
        raise UserError(f"{grid_dir}: not a folder of runs")
    context = grid_context(grid_dir, metric, column, columns)
    html = environment().get_template("grid.html.j2").render(**context)
    atomic_write(grid_dir / REPORT, html)
    return grid_dir / REPORT


def write_report(path: str | Path, metric: str = "srcc", column: str = "ACC") -> Path:
    """`iqacl report PATH`: a run's page where PATH holds results.json, else a grid's."""
    from .report import write_run_report

    path = Path(path)
    if (path / "results.json").exists():
        return write_run_report(path)
    if path.is_dir() and any(path.glob("*/results.json")):
        return write_grid_report(path, metric, column)
    raise UserError(f"{path}: no results.json here or in its sub-folders; pass a run folder "
                    "(iqacl run --out) or a grid folder (iqacl grid --out)")

"""`iqacl verify RUN_DIR...`: results.json re-derived from the files beside it.

The SRCC / PLCC matrices (and initial rows) from `predictions/<stage>/<dataset>.csv`,
and a routed run's routing matrices and accuracy from the `weight_<dataset>` columns
of the same files. A reviewer can trust a table row without re-running it.
"""

from __future__ import annotations

import json
import math
from functools import partial
from pathlib import Path

import pandas as pd

from benchmarks.errors import UserError
from benchmarks.metrics import plcc, srcc

from .results import file_name, routing_accuracy, routing_matrix


def _close(a, b, atol: float) -> bool:
    if isinstance(a, list) or isinstance(b, list):
        return (isinstance(a, list) and isinstance(b, list) and len(a) == len(b)
                and all(_close(x, y, atol) for x, y in zip(a, b, strict=True)))
    a = None if a is None or (isinstance(a, float) and math.isnan(a)) else a
    b = None if b is None or (isinstance(b, float) and math.isnan(b)) else b
    return (a is None and b is None) or (a is not None and b is not None
                                         and abs(a - b) <= atol)


def verify_run(run_dir: str | Path, atol: float = 1e-6) -> list[str]:
    """What in results.json the files do not give back (empty: everything re-derives)."""
    run_dir = Path(run_dir)
    path = run_dir / "results.json"
    if not path.is_file():
        raise UserError(f"{run_dir}: no results.json (not a finished run)")
    results = json.loads(path.read_text())
    names = results["experiences"]
    stages = ["joint"] if results["protocol"] == "joint" else [f"after_{i}" for i in
                                                               range(len(names))]
    fit = results["config"]["eval"]["plcc_fit"]
    metrics = {"srcc": srcc, "plcc": partial(plcc, fit=fit)}
    frames = {}
    for stage in ["initial", *stages]:
        for j, name in enumerate(names):
            csv = run_dir / "predictions" / stage / f"{file_name(name)}.csv"
            if not csv.is_file():
                return [f"{csv} is missing"]
            frames[stage, j] = pd.read_csv(csv)
    problems = []
    for m, fn in metrics.items():
        def row(stage, fn=fn):
            return [fn(frames[stage, j]["target"].to_numpy(float),
                       frames[stage, j]["prediction"].to_numpy(float)) for j in range(len(names))]
        if not _close(row("initial"), results["initial"][m], atol):
            problems.append(f"initial {m} row differs from predictions/initial")
        for i, stage in enumerate(stages):
            if not _close(row(stage), results["matrices"][m][i], atol):
                problems.append(f"{m} row {stage} differs from predictions/{stage}")
    routing = results.get("routing") or {}
    for stage, matrix in (routing.get("matrices") or {}).items():
        cells = {}
        for j in range(len(names)):
            frame = frames[stage, j]
            cols = [f"weight_{n}" for n in names if f"weight_{n}" in frame]
            cells[j] = (None, None, None, frame[cols].to_numpy(float))
        if not _close(routing_matrix(cells, len(names)), matrix, atol):
            problems.append(f"routing matrix {stage} differs from the weight_* columns")
        if not _close(routing_accuracy(cells, len(names)), routing["accuracy"][stage], atol):
            problems.append(f"routing accuracy {stage} differs from the weight_* columns")
    return problems


def verify(run_dirs: list[str | Path]) -> tuple[str, bool]:
    """One line per run: `ok` or what differs."""
    lines, ok = [], True
    for d in run_dirs:
        problems = verify_run(d)
        ok &= not problems
        routed = "with routing" if (json.loads((Path(d) / "results.json").read_text())
                                    .get("routing") or {}).get("matrices") else ""
        lines.append(f"{d}: " + ("ok, matrices re-derived from predictions/ " + routed
                                 if not problems else "; ".join(problems)))
    return "\n".join(line.rstrip() for line in lines), ok


def run_dirs_under(root: str | Path) -> list[Path]:
    root = Path(root)
    found = sorted(p.parent for p in root.rglob("results.json"))
    if not found:
        raise UserError(f"{root}: no finished run (results.json) under it")
    return found


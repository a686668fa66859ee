"""One page per run: RUN_DIR/report.html, a single file that opens offline.

Everything a co-author needs without the run folder: provenance, the SRCC /
PLCC / KRCC matrices (heatmaps and the numbers as tables), summary metrics,
curves, predictions against human scores, counts and routing. The numbers
are HTML text (no script needed to read them); the plots are inline PNGs.
The page is rendered by Jinja2 from experiments/templates/.
"""

from __future__ import annotations

import base64
import io
import json
import logging
from collections.abc import Callable
from pathlib import Path

import yaml
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from benchmarks.errors import UserError

from . import plots
from .files import atomic_write

log = logging.getLogger(__name__)

METRICS = ("srcc", "plcc", "krcc")
SUMMARY = (("acc", "ACC"), ("bwt", "BWT"), ("fwt", "FWT"), ("forgetting", "forgetting"),
           ("mpi", "mPI"), ("msi", "mSI"), ("mpsi", "mPSI"), ("mpsr", "mPSR"))
REPORT = "report.html"


def environment() -> Environment:
    env = Environment(loader=PackageLoader("experiments", "templates"),
                      autoescape=select_autoescape(["html", "j2"]), undefined=StrictUndefined,
                      trim_blocks=True, lstrip_blocks=True)
    env.filters["num"] = number
    return env


def number(value, digits: int = 3) -> str:
    """A table cell: the value at `digits` decimals, or a dash where there is none."""
    return "—" if value is None else f"{value:.{digits}f}"


def png(draw: Callable[[io.BytesIO], object]) -> str:
    """A matplotlib drawing as an inline `data:` URI (the page needs no other file)."""
    buf = io.BytesIO()
    draw(buf)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def stage_names(results: dict) -> list[tuple[str, str]]:
    """(key in predictions/ and constant_predictions, row label) per trained stage."""
    if results["protocol"] == "joint":
        return [("after_0", "after joint")]
    return [(f"after_{i}", f"after {n}") for i, n in enumerate(results["experiences"])]


def matrix_rows(results: dict, metric: str) -> list[dict]:
    """The initial row and one row per stage, each cell with its noise flag."""
    constant = set(results.get("constant_predictions") or [])
    names = results["experiences"]
    stages = [("initial", "initial"), *stage_names(results)]
    values = [results["initial"][metric], *results["matrices"][metric]]
    return [{"label": label, "cells": [{"value": v, "noise": f"{key} on {n}" in constant}
                                       for v, n in zip(row, names, strict=True)]}
            for (key, label), row in zip(stages, values, strict=True)]


def provenance(results: dict) -> list[tuple[str, str]]:
    """What produced the numbers, one (field, value) per line."""
    model, training = results.get("model") or {}, results.get("training") or {}
    loss = training.get("loss") or {}
    opt = training.get("optimizer") or {}
    warmup = training.get("warmup") or {}
    fields = [
        ("date", results.get("date") or "not recorded (a run from before v0.1 reports)"),
        ("commit", results.get("commit") or "not recorded (not a git checkout)"),
        ("strategy", results["strategy"]), ("protocol", results["protocol"]),
        ("task labels at test", "yes" if results["uses_task_labels"] else "no"),
        ("stream", " → ".join(results["experiences"])),
        ("backbone", f"{model.get('name', '?')} ({model.get('source', '?')})"),
        ("weights", model.get("weights_file") or "none (untrained)"),
        ("weights sha256", model.get("sha256") or "—"),
        ("device", results.get("device", "?")), ("precision", results.get("precision", "?")),
        ("torch threads", str(results.get("threads"))),
        ("loss", ", ".join(f"{k} {v}" for k, v in loss.items()) or "—"),
        ("optimiser", ", ".join(f"{k} {v}" for k, v in opt.items()) or "—"),
        ("schedule", json.dumps(training.get("schedule"))),
        ("warm-up", ", ".join(f"{k} {v}" for k, v in warmup.items()) or "none"),
        ("epochs, batch", f"{training.get('epochs')}, {training.get('batch_size')}"),
        ("selection", str(training.get("select"))),
        ("PLCC", results["plcc"]), ("wall time", f"{results.get('wall_time_s')} s"),
    ]
    return [(k, str(v)) for k, v in fields]


def counts(results: dict) -> list[dict]:
    """Per dataset: what was labelled, used, left out and why, and the split."""
    out = []
    for name, c in results["counts"].items():
        reasons = {**(c.get("excluded_by_reason") or {}),
                   **{f"dropped: {k}": v for k, v in (c.get("dropped_by_reason") or {}).items()
                      if v}}
        out.append({"name": name, "labelled": c.get("labelled"), "usable": c.get("usable"),
                    "excluded": c.get("excluded"), "dropped": c.get("dropped"),
                    "reasons": "; ".join(f"{k}: {v}" for k, v in reasons.items()) or "—",
                    "train": c.get("train"), "val": c.get("val"), "test": c.get("test"),
                    "leakage": c.get("removed_for_leakage"), "split_by": c.get("split_by")})
    return out


def routing(results: dict) -> dict | None:
    record = results.get("routing") or {}
    if not record.get("matrices"):
        return None
    last = list(record["matrices"])[-1]
    return {"stage": last, "rows": record["matrices"][last],
            "accuracy": record["mean_accuracy"], "record": record,
            "image": png(lambda b: plots.routing_heatmap(results, b))}


def run_context(results: dict, run_dir: Path) -> dict:
    names = results["experiences"]
    has_predictions = (run_dir / "predictions").is_dir()
    return {
        "title": f"{results['strategy']}: {' → '.join(names)}",
        "names": names, "results": results, "provenance": provenance(results),
        "versions": results.get("versions") or {},
        "config": yaml.safe_dump(results["config"], sort_keys=False, allow_unicode=True),
        "summary_keys": SUMMARY, "metrics": METRICS,
        "matrices": {m: {"rows": matrix_rows(results, m),
                         "image": png(lambda b, m=m: plots.heatmap(results, m, b))}
                     for m in METRICS},
        "noise": results.get("constant_predictions") or [],
        "curves": png(lambda b: plots.curves(results, "srcc", b)),
        "scatter": png(lambda b: plots.scatters(results, run_dir, b)) if has_predictions
        else None,
        "counts": counts(results), "removed_for_leakage": results.get("removed_for_leakage"),
        "routing": routing(results),
    }


def write_run_report(run_dir: str | Path) -> Path:
    """RUN_DIR/report.html from RUN_DIR/results.json (and predictions/ for the scatter)."""
    run_dir = Path(run_dir)
    path = run_dir / "results.json"
    if not path.is_file():
        raise UserError(f"{run_dir}: no results.json (an unfinished run?); finish it with "
                        "`iqacl run ... --resume` first")
    results = json.loads(path.read_text())
    html = environment().get_template("run.html.j2").render(**run_context(results, run_dir))
    atomic_write(run_dir / REPORT, html)
    return run_dir / REPORT


def try_run_report(run_dir: Path) -> Path | None:
    """The report at the end of a run: a failure is logged, never fatal (results stay)."""
    try:
        return write_run_report(run_dir)
    except Exception as exc:  # the page must never cost the results
        log.warning("report.html not written (%s: %s); results.json is complete",
                    type(exc).__name__, exc)
        return None

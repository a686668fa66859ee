"""Benchmark tables from finished runs: mean ± std over seeds, never over settings.

Runs are grouped by their config *without* the seed (and without `log.*`,
which does not change results), so a λ or lr sweep is never averaged as if it
were seeds. Each group becomes one row; its label names what differs between
groups.
"""

from __future__ import annotations

import copy
import csv
import io
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks.errors import UserError

DASH = "—"
IGNORED = ("seed", "log")


@dataclass
class Group:
    label: str
    runs: list[dict]

    @property
    def first(self) -> dict:
        return self.runs[0]


def load_runs(paths: list[str | Path]) -> list[dict]:
    """results.json of each RUN_DIR (or of every run under a folder of runs)."""
    runs = []
    for p in map(Path, paths):
        files = [p] if p.name == "results.json" else \
            [p / "results.json"] if (p / "results.json").exists() else \
            sorted(p.glob("*/results.json"))
        if not files:
            raise UserError(f"{p}: no results.json here or in its sub-folders")
        for f in files:
            result = json.loads(f.read_text())
            result["_dir"] = str(f.parent)
            runs.append(result)
    return runs


def _setting(result: dict) -> dict:
    """What makes runs comparable as seeds: the config without seed and logging, and the
    thread count (a run's numbers depend on it)."""
    config = copy.deepcopy(result["config"])
    for key in IGNORED:
        config.pop(key, None)
    config["threads"] = result.get("threads")
    return config


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flat(v, key + "."))
        else:
            out[key] = json.dumps(v, sort_keys=True)
    return out


NOISE = "†"  # marks rows with predictions constant to float precision
_TIE = object()  # no value of a setting is the most common one


def noisy(runs: list[dict]) -> bool:
    """Any run whose predictions were constant to float precision somewhere."""
    return any(r.get("constant_predictions") for r in runs)


def group_runs(runs: list[dict]) -> list[Group]:
    """Group runs whose configs are equal except for the seed; label by what differs."""
    keyed: dict[str, list[dict]] = {}
    for r in runs:
        group = keyed.setdefault(json.dumps(_setting(r), sort_keys=True), [])
        twin = next((o for o in group if o["config"]["seed"] == r["config"]["seed"]), None)
        if twin is not None:  # the same run twice is not two seeds: its spread would shrink
            raise UserError(f"{twin.get('_dir', 'a run')} and {r.get('_dir', 'another')} are "
                            f"the same setting at the same seed ({r['config']['seed']}); "
                            "pass only one of them")
        group.append(r)
    flats = [_flat(_setting(rs[0])) for rs in keyed.values()]
    keys = sorted(set().union(*flats))
    differing = [k for k in keys if len({f.get(k) for f in flats}) > 1]
    # A row names what sets it apart: values off the most common one (every value where
    # none is, as in a grid over backbones), and its own strategy hyperparameters.
    common = {k: _most_common(f.get(k) for f in flats) for k in differing}
    groups = []
    for rs, flat in zip(keyed.values(), flats, strict=True):
        parts = [_describe(k, flat.get(k)) for k in differing if k != "strategy.name" and (
            flat.get(k) != common[k] or (k.startswith("strategy.") and k in flat))]
        label = rs[0]["strategy"] + (f" ({', '.join(parts)})" if parts else "")
        if noisy(rs):
            label += f" {NOISE}"
        groups.append(Group(label, sorted(rs, key=lambda r: r["config"]["seed"])))
    return groups


def _most_common(values) -> object:
    """The one most frequent value, or a marker no value equals when there is a tie."""
    ranked = Counter(values).most_common(2)
    return ranked[0][0] if len(ranked) == 1 or ranked[0][1] > ranked[1][1] else _TIE


def _describe(key: str, value: str | None) -> str:
    short = key.split(".", 1)[1] if key.startswith(("strategy.", "model.", "train.")) else key
    return f"{short}={DASH if value is None else json.loads(value)}"


def mean_std(values: list) -> tuple[float, float | None] | None:
    """Mean and sample std of the values that exist; std None for one value (unknown, not 0)."""
    vals = [v for v in values if v is not None]
    if not vals:
        return None
    return float(np.mean(vals)), (float(np.std(vals, ddof=1)) if len(vals) > 1 else None)


def format_mean_std(value, digits: int = 3) -> str:
    """`0.547 ± 0.012`; one run: `0.547` (its spread is unknown); nothing: a dash.

    `value` is a (mean, std) pair from `mean_std`, a list of values, a string or None.
    """
    if isinstance(value, list):
        value = mean_std(value)
    if value is None:
        return DASH
    if isinstance(value, str):
        return value
    mean, std = value
    return f"{mean:.{digits}f}" if std is None else f"{mean:.{digits}f} ± {std:.{digits}f}"


def _joint_for(group: Group, groups: list[Group]) -> Group | None:
    """The joint group whose setting equals this one's but for the strategy."""
    def key(g: Group) -> str:
        s = _setting(g.first)
        s["strategy"] = {}
        return json.dumps(s, sort_keys=True)

    return next((g for g in groups if g.first["protocol"] == "joint" and key(g) == key(group)),
                None)


def final(result: dict, metric: str) -> list[float | None]:
    """Each experience's score at the end: the last row, or for `single` (each dataset
    trained alone) the diagonal, each dataset by its own model."""
    matrix = result["matrices"][metric]
    if result["protocol"] == "single":
        return [matrix[j][j] for j in range(len(matrix))]
    return matrix[-1]


def routing_accuracy(result: dict) -> float | None:
    """eval.heads=weighted: the share of test images routed to their own dataset's head
    after the last experience."""
    accuracy = (result.get("routing") or {}).get("mean_accuracy") or {}
    return list(accuracy.values())[-1] if accuracy else None


def memory_of(result: dict) -> float | None:
    mem = result.get("memory")
    return None if mem is None else mem.get("extra_bytes", 0) / 2**20


# Summary columns a table can show, by name -> results.json summary key. mSRCC is
# BIQA_CL's name for the ACC of the SRCC matrix (mean final SRCC).
SUMMARY_COLUMNS = {"ACC": "acc", "mSRCC": "acc", "BWT": "bwt", "FWT": "fwt",
                   "forgetting": "forgetting", "mPI": "mpi", "mSI": "msi", "mPSI": "mpsi",
                   "mPSR": "mpsr"}
DEFAULT_SUMMARY = ("ACC", "BWT", "FWT", "forgetting", "mPSI")


def rows(groups: list[Group], metric: str,
         summary: tuple[str, ...] | list[str] = DEFAULT_SUMMARY) -> tuple[list[str], list[dict]]:
    """Column names and, per group, a dict column -> (mean, std) | None | str."""
    unknown = [c for c in summary if c not in SUMMARY_COLUMNS]
    if unknown:
        raise UserError(f"unknown table column {unknown[0]}; choose from "
                        f"{list(SUMMARY_COLUMNS)}")
    names = groups[0].first["experiences"]
    cols = ["strategy", "task labels", *[f"final {n}" for n in names], *summary,
            "intransigence", "wall time (s)", "extra memory (MiB)", "seeds"]
    out = []
    for g in groups:
        s = [r["summary"][metric] for r in g.runs]
        row = {"strategy": g.label, "task labels": "yes" if g.first["uses_task_labels"] else "no",
               "_task_aware": g.first["uses_task_labels"], "_noise": noisy(g.runs)}
        for j, n in enumerate(names):
            row[f"final {n}"] = mean_std([final(r, metric)[j] for r in g.runs])
        for col in summary:
            row[col] = mean_std([x.get(SUMMARY_COLUMNS[col]) for x in s])
        joint = _joint_for(g, groups) if g.first["protocol"] == "stream" else None
        if joint is not None:
            joint_row = np.mean([r["matrices"][metric][0] for r in joint.runs], axis=0)
            row["intransigence"] = mean_std([
                float(np.mean(joint_row - np.diag(np.array(r["matrices"][metric], float))))
                for r in g.runs])
        else:
            row["intransigence"] = None
        row["routing acc"] = mean_std([routing_accuracy(r) for r in g.runs]) \
            if any(routing_accuracy(r) is not None for r in g.runs) else None
        row["wall time (s)"] = mean_std([r.get("wall_time_s") for r in g.runs])
        row["extra memory (MiB)"] = mean_std([memory_of(r) for r in g.runs])
        row["seeds"] = str(len(g.runs))
        out.append(row)
    # Task-agnostic rows first, task-aware ones set apart below.
    out.sort(key=lambda r: r["_task_aware"])
    if all(r["intransigence"] is None for r in out):  # no joint run: nothing to show
        cols.remove("intransigence")
    if any(r["routing acc"] is not None for r in out):  # routed multi-head rows
        cols.insert(cols.index("wall time (s)"), "routing acc")
    return cols, out


HIGHER_IS_BETTER = {**dict.fromkeys(SUMMARY_COLUMNS, True), "forgetting": False,
                    "intransigence": False, "routing acc": True}


def _best(rows_: list[dict], col: str) -> set[int]:
    """Rows holding the best value of a column, among comparable rows (task-agnostic ones
    and task-aware ones separately); rows marked as noise are never best."""
    if col not in HIGHER_IS_BETTER and not col.startswith("final "):
        return set()
    sign = 1 if HIGHER_IS_BETTER.get(col, True) else -1
    out = set()
    for aware in (False, True):
        vals = [(i, r[col][0]) for i, r in enumerate(rows_)
                if isinstance(r[col], tuple) and r["_task_aware"] == aware and not r["_noise"]]
        if vals:
            best = max(v * sign for _, v in vals)
            out |= {i for i, v in vals if np.isclose(v * sign, best)}
    return out


def _digits(col: str) -> int:
    return {"wall time (s)": 0, "extra memory (MiB)": 2}.get(col, 3)


def render(groups: list[Group], metric: str = "srcc", fmt: str = "md",
           summary: tuple[str, ...] | list[str] = DEFAULT_SUMMARY) -> str:
    cols, body = rows(groups, metric, summary)
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow([c for c in cols for c in ([c] if c in ("strategy", "task labels", "seeds")
                                            else [c, f"{c} std"])])
        for r in body:
            line = []
            for c in cols:
                v = r[c]
                if c in ("strategy", "task labels", "seeds"):
                    line.append(v)
                else:
                    line += ["", ""] if v is None else [
                        f"{v[0]:.6g}", "" if v[1] is None else f"{v[1]:.6g}"]
            w.writerow(line)
        return buf.getvalue()
    best = {c: _best(body, c) for c in cols}
    if fmt == "md":
        lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        for i, r in enumerate(body):
            cells = [format_mean_std(r[c], _digits(c)) for c in cols]
            cells = [f"**{t}**" if i in best[c] else t for t, c in zip(cells, cols, strict=True)]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
        lines.append(f"{metric.upper()} on each experience's test set, mean ± std over seeds "
                     "(one seed: its value alone). "
                     "**Bold**: best per column among task-agnostic rows, and among "
                     "task-aware rows (task labels at test time), which are not comparable "
                     "with the others.")
        if any(r["_noise"] for r in body):
            lines.append(f"\n{NOISE} Some of the row's predictions are constant to float "
                         "precision (results.json `constant_predictions`, e.g. an untrained "
                         "backbone): correlations there, and what is computed from them, are "
                         "noise.")
        return "\n".join(lines)
    if fmt == "latex":
        return _latex(cols, body, best, metric)
    raise UserError(f"unknown table format '{fmt}'; use md, latex or csv")


def _tex(text: str) -> str:
    return (text.replace("_", r"\_").replace("%", r"\%").replace("&", r"\&")
            .replace("±", r"$\pm$").replace(DASH, "---").replace(NOISE, r"\dag{}"))


def _latex(cols: list[str], body: list[dict], best: dict, metric: str) -> str:
    spec = "ll" + "r" * (len(cols) - 2)
    lines = [r"\begin{table}[t]", r"\centering", r"\small",
             rf"\begin{{tabular}}{{{spec}}}", r"\toprule",
             " & ".join(_tex(c) for c in cols) + r" \\", r"\midrule"]
    aware_started = False
    for i, r in enumerate(body):
        if r["_task_aware"] and not aware_started:
            aware_started = True
            lines.append(r"\midrule")
            lines.append(rf"\multicolumn{{{len(cols)}}}{{l}}{{\emph{{task-aware (task label at "
                         r"test time)}} \\")
        cells = []
        for c in cols:
            text = _tex(format_mean_std(r[c], _digits(c)))
            cells.append(rf"\textbf{{{text}}}" if i in best[c] else text)
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}",
              rf"\caption{{{metric.upper()}, mean $\pm$ std over seeds.}}", r"\end{table}"]
    return "\n".join(lines)


def mean_over_runs(runs: list[dict], rows_of) -> np.ndarray:
    """The element-wise mean of `rows_of(run)` (rows of values, nulls allowed) over runs,
    nulls ignored (NaN where every run has one)."""
    arr = np.array([[[np.nan if v is None else v for v in row] for row in rows_of(r)]
                    for r in runs], dtype=float)
    return np.nanmean(arr, axis=0)


def mean_matrices(groups: list[Group], metric: str = "srcc") -> str:
    """The mean forgetting matrix of each group, as Markdown."""
    out = []
    for g in groups:
        names = g.first["experiences"]
        mean = mean_over_runs(g.runs, lambda r: r["matrices"][metric])
        stages = ["joint"] if g.first["protocol"] == "joint" else names
        seeds = f"{len(g.runs)} seed{'s' if len(g.runs) > 1 else ''}"
        out.append(f"**{g.label}** ({metric.upper()}, mean of {seeds})\n")
        out.append("| after \\ on | " + " | ".join(names) + " |")
        out.append("|" + "---|" * (len(names) + 1))
        for s, row in zip(stages, mean, strict=False):
            out.append(f"| {s} | " + " | ".join(f"{v:.3f}" for v in row) + " |")
        out.append("")
    return "\n".join(out)

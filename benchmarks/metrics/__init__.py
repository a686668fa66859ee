"""Correlation metrics and continual-learning summaries, as pure functions.

Everything here is computed from predictions over a *whole* experience (never
averaged over minibatches), so it can be re-derived from `predictions/`.
Definitions: docs/METRICS.md (REFERENCE §3).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence

import numpy as np
from scipy import optimize, stats

Array = Sequence[float] | np.ndarray


def _valid(target: Array, pred: Array) -> tuple[np.ndarray, np.ndarray] | None:
    t, p = np.asarray(target, dtype=np.float64), np.asarray(pred, dtype=np.float64)
    if t.shape != p.shape:
        raise ValueError(f"target and prediction shapes differ: {t.shape} vs {p.shape}")
    # A correlation with fewer than 2 points or a constant side is undefined.
    if len(t) < 2 or np.ptp(t) == 0 or np.ptp(p) == 0:
        return None
    return t, p


def srcc(target: Array, pred: Array) -> float:
    v = _valid(target, pred)
    return math.nan if v is None else float(stats.spearmanr(*v).statistic)


def krcc(target: Array, pred: Array) -> float:
    v = _valid(target, pred)
    return math.nan if v is None else float(stats.kendalltau(*v).statistic)


def logistic4(x: np.ndarray, b1: float, b2: float, b3: float, b4: float) -> np.ndarray:
    """The 4-parameter logistic of IQA papers (VQEG): maps predictions to the target scale."""
    return (b1 - b2) / (1.0 + np.exp(-(x - b3) / (abs(b4) + 1e-12))) + b2


def plcc(target: Array, pred: Array, fit: str = "none") -> float:
    """Pearson; with `fit="logistic"`, after a 4-parameter logistic fit of pred to target."""
    v = _valid(target, pred)
    if v is None:
        return math.nan
    t, p = v
    if fit == "logistic":
        p = fit_logistic(t, p)
    elif fit != "none":
        raise ValueError(f"unknown PLCC fit '{fit}'; use 'none' or 'logistic'")
    if np.ptp(p) == 0:
        return math.nan
    return float(stats.pearsonr(t, p).statistic)


def fit_logistic(target: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Predictions mapped through the fitted logistic; unchanged if the fit fails."""
    p0 = [target.max(), target.min(), float(np.median(pred)), float(np.std(pred)) or 1.0]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            params, _ = optimize.curve_fit(logistic4, pred, target, p0=p0, maxfev=10000)
    except (RuntimeError, optimize.OptimizeWarning, ValueError):
        return pred
    return logistic4(pred, *params)


CORRELATIONS: dict[str, Callable[[Array, Array], float]] = {
    "srcc": srcc, "plcc": plcc, "krcc": krcc,
}


SUMMARY_KEYS = ("acc", "bwt", "fwt", "forgetting", "mpi", "msi", "mpsi", "mpsr")


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def summary(matrix: Array, initial: Array,
            stage_predictions: Sequence[Sequence[np.ndarray | None]] | None = None,
            corr: Callable[[Array, Array], float] = srcc) -> dict[str, float | None]:
    """ACC, BWT, FWT, forgetting, mPI, mSI, mPSI, mPSR of a T x T matrix R.

    R[i][j]: score on experience j's test set after training experience i;
    `initial[j]`: before any training. `stage_predictions[t][s]`: predictions
    after stage t on experience s's test set (needed for mSI). Values that
    need a stream (T = 1) are None.
    """
    R = np.asarray(matrix, dtype=np.float64)
    b = np.asarray(initial, dtype=np.float64)
    T = R.shape[0]
    if R.shape != (T, T) or b.shape != (T,):
        raise ValueError(f"matrix must be T x T and initial length T, got {R.shape}, {b.shape}")
    last = T - 1
    out: dict[str, float | None] = {
        "acc": float(R[last].mean()),
        "bwt": _mean([R[last, j] - R[j, j] for j in range(last)]),
        "fwt": _mean([R[j - 1, j] - b[j] for j in range(1, T)]),
        "forgetting": _mean([max(R[k, j] - R[last, j] for k in range(j, last))
                             for j in range(last)]),
        "mpi": float(np.mean(np.diag(R))),
        "msi": None,
        "mpsi": None,
        "mpsr": mpsr(R),
    }
    if stage_predictions is not None:
        out["msi"] = float(np.mean(stability(stage_predictions, corr)))
        out["mpsi"] = (out["mpi"] + out["msi"]) / 2.0
    return out


def mpsr(matrix: Array) -> float | None:
    """Mean plasticity-stability ratio (BIQA_CL's `MPSR.py`): PSR_0 = R[0][0],
    PSR_t = R[t][t] * mean_{s<t} R[t][s] / R[s][s]; None when a ratio's denominator
    R[s][s] (s < T - 1) is not positive (the ratio then means nothing)."""
    R = np.asarray(matrix, dtype=np.float64)
    T = R.shape[0]
    if not np.isfinite(R).all() or any(R[s, s] <= 0 for s in range(T - 1)):
        return None
    psr = [R[0, 0]] + [R[t, t] * np.mean([R[t, s] / R[s, s] for s in range(t)])
                       for t in range(1, T)]
    return float(np.mean(psr))


def stability(stage_predictions: Sequence[Sequence[np.ndarray | None]],
              corr: Callable[[Array, Array], float] = srcc) -> list[float]:
    """Stability per stage t (Zhang et al. 2023): 1 at t = 0, else the mean over s < t
    of corr(predictions at stage t on task s, predictions at stage s on task s)."""
    T = len(stage_predictions)
    out = [1.0]
    for t in range(1, T):
        out.append(float(np.mean([corr(stage_predictions[s][s], stage_predictions[t][s])
                                  for s in range(t)])))
    return out


def intransigence(joint_row: Array, matrix: Array) -> list[float]:
    """Per experience: the jointly trained model's score minus R[j][j]."""
    R = np.asarray(matrix, dtype=np.float64)
    return (np.asarray(joint_row, dtype=np.float64) - np.diag(R)).tolist()

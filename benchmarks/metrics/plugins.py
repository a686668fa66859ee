"""SRCC / PLCC / KRCC as Avalanche plugin metrics, and a recorder of predictions.

Each metric gathers every minibatch of an evaluated experience and computes
its value once, in `after_eval_exp`, over the whole experience. Names follow
Avalanche: `SRCC_Exp/eval_phase/test_stream/Task001/Exp001`.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import numpy as np
import torch
from avalanche.core import SupervisedPlugin
from avalanche.evaluation import PluginMetric
from avalanche.evaluation.metric_results import MetricValue
from avalanche.evaluation.metric_utils import get_metric_name, stream_type

from . import krcc, plcc, srcc


class _Batches:
    """Outputs, targets and row indices of the minibatches of one experience."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.pred: list[torch.Tensor] = []
        self.target: list[torch.Tensor] = []
        self.index: list[torch.Tensor] = []
        self.route: list[torch.Tensor] = []  # weights over heads (eval.heads=weighted)

    def add(self, strategy) -> None:
        # Kept on the device: one copy per experience, not a GPU sync per minibatch.
        self.pred.append(strategy.mb_output.detach().float().reshape(-1))
        self.target.append(strategy.mb_y.detach().float().reshape(-1))
        # Row index inside the experience's dataset (ScoreImages puts it third).
        mb = strategy.mbatch
        idx = mb[2] if len(mb) > 3 else torch.arange(len(mb[1]))
        self.index.append(idx.detach().reshape(-1))
        route = getattr(strategy, "mb_route", None)
        if route is not None:
            self.route.append(route.detach().float())

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Rows, targets, predictions; unreadable images (NaN target) left out."""
        if not self.pred:
            return np.empty(0, int), np.empty(0), np.empty(0)
        index = torch.cat(self.index).cpu().numpy()
        target = torch.cat(self.target).cpu().numpy().astype(np.float64)
        pred = torch.cat(self.pred).cpu().numpy().astype(np.float64)
        ok = ~np.isnan(target)
        return index[ok], target[ok], pred[ok]

    def routes(self) -> np.ndarray | None:
        """(N, heads) routing weights of the readable images, in `arrays()`'s order."""
        if not self.route or len(self.route) != len(self.pred):
            return None
        target = torch.cat(self.target).cpu().numpy()
        return torch.cat(self.route).cpu().numpy().astype(np.float64)[~np.isnan(target)]


class CorrelationMetric(PluginMetric[float]):
    """A correlation between targets and outputs over one whole evaluated experience."""

    def __init__(self, name: str, fn: Callable[[np.ndarray, np.ndarray], float]):
        super().__init__()
        self.name = name
        self.fn = fn
        self._batches = _Batches()

    def reset(self) -> None:
        self._batches.reset()

    def result(self) -> float | None:
        _, target, pred = self._batches.arrays()
        return None if len(target) == 0 else self.fn(target, pred)

    def before_eval_exp(self, strategy) -> None:
        self.reset()

    def after_eval_iteration(self, strategy) -> None:
        self._batches.add(strategy)

    def after_eval_exp(self, strategy) -> list[MetricValue]:
        name = get_metric_name(self, strategy, add_experience=True, add_task=True)
        return [MetricValue(self, name, self.result(), strategy.clock.train_iterations)]

    def __str__(self) -> str:
        return f"{self.name}_Exp"


def correlation_metrics(plcc_fit: str = "none") -> list[CorrelationMetric]:
    """SRCC, PLCC (plain Pearson, or after a logistic fit) and KRCC plugin metrics."""
    return [
        CorrelationMetric("SRCC", srcc),
        CorrelationMetric("PLCC", partial(plcc, fit=plcc_fit)),
        CorrelationMetric("KRCC", krcc),
    ]


class PredictionRecorder(SupervisedPlugin):
    """Keeps (row index, target, prediction) of the last evaluation of each experience.

    `results[(stream_name, experience_id)]` holds the arrays; the runner turns
    them into the forgetting matrices and `predictions/*.csv`.
    """

    def __init__(self) -> None:
        super().__init__()
        self._batches = _Batches()
        self.results: dict[tuple[str, int], tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    def before_eval_exp(self, strategy, **kwargs) -> None:
        self._batches.reset()

    def after_eval_iteration(self, strategy, **kwargs) -> None:
        self._batches.add(strategy)

    def after_eval_exp(self, strategy, **kwargs) -> None:
        key = (stream_type(strategy.experience), strategy.experience.current_experience)
        index, target, pred = self._batches.arrays()
        order = np.argsort(index, kind="stable")
        arrays = (index[order], target[order], pred[order])
        route = self._batches.routes()
        self.results[key] = arrays if route is None else (*arrays, route[order])


class UnreadableRecorder(SupervisedPlugin):
    """Which samples came out unreadable (NaN target), by (task label, part, row).

    The task label names the experience (each has its own); training batches
    (replay and cumulative included) come from training sets.
    """

    PARTS = {"test": "test", "valid": "val"}

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[tuple[int, str, int]] = set()

    def _add(self, strategy, part: str | None) -> None:
        # Found on the CPU by the template, before the copy to the device, where it can.
        found = strategy.mb_unreadable if hasattr(strategy, "mb_unreadable") else \
            unreadable_rows(strategy.mbatch)
        for t, r in found:
            self.seen.add((t, part or "train", r))

    def after_training_iteration(self, strategy, **kwargs) -> None:
        self._add(strategy, "train")

    def after_eval_iteration(self, strategy, **kwargs) -> None:
        self._add(strategy, self.PARTS.get(stream_type(strategy.experience)))


def unreadable_rows(mbatch) -> list[tuple[int, int]]:
    """(task label, row) of each sample with a NaN target: an image that could not be read."""
    bad = torch.isnan(mbatch[1].reshape(-1))
    if not bad.any():
        return []
    rows = mbatch[2].reshape(-1)[bad].tolist()
    tasks = mbatch[-1].reshape(-1)[bad].tolist()
    return [(int(t), int(r)) for t, r in zip(tasks, rows, strict=True)]


class EpochLoss(PluginMetric[float]):
    """Mean training loss per epoch, logged as `Loss_Epoch/...` and kept per experience.

    Summed on the device and read once per epoch (Avalanche's loss metric reads
    it every minibatch, a GPU sync each time).
    """

    def __init__(self) -> None:
        super().__init__()
        self.per_experience: list[list[float]] = []
        self._sum: torch.Tensor | float = 0.0
        self._n = 0

    def reset(self) -> None:
        self._sum, self._n = 0.0, 0

    def result(self) -> float:
        return float(self._sum) / max(self._n, 1)

    def before_training_exp(self, strategy) -> None:
        self.per_experience.append([])

    def after_training_iteration(self, strategy) -> None:
        n = len(strategy.mb_y)
        self._sum = self._sum + strategy.loss.detach() * n
        self._n += n

    def after_training_epoch(self, strategy) -> list[MetricValue]:
        value = self.result()
        self.per_experience[-1].append(value)
        self.reset()
        name = get_metric_name("Loss_Epoch", strategy, add_experience=False, add_task=True)
        return [MetricValue(self, name, value, strategy.clock.train_iterations)]

    def __str__(self) -> str:
        return "Loss_Epoch"

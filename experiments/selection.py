"""Best-validation model selection (`train.select: best_val`).

After every epoch (of both stages) the current experience's validation SRCC
is computed; at the end of the experience the best epoch's weights are put
back, before any strategy's after-experience bookkeeping, so EWC's importance,
LwF's teacher, replay's selection and PackNet's masks all see the selected
model, the matrix row evaluates it and the next experience starts from it.
Test sets are never looked at.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Sequence

import numpy as np
import torch
from avalanche.evaluation import PluginMetric
from avalanche.evaluation.metric_results import MetricValue

from benchmarks.metrics import CORRELATIONS

log = logging.getLogger(__name__)


class BestValidation:
    """Keeps a copy of the weights of the epoch with the best validation SRCC.

    `evaluate(experiences)` scores validation experiences ({id: (rows, targets,
    preds)}); `targets` (set by the runner before each experience) are the
    validation experiences of what is being trained, several for joint training
    (their mean SRCC). `records[k]`: experience k's selection; epochs are numbered from
    1 (`curve[e - 1]` is epoch e's SRCC).
    """

    def __init__(self, evaluate: Callable[[list], dict], names: Sequence[str]):
        self.evaluate = evaluate
        self.names = list(names)
        self.targets: list = []
        self.records: dict[int, dict] = {}
        self.last: float | None = None  # the latest epoch's SRCC (the curve metric reads it)
        self._key = 0
        self._best_state: dict[str, torch.Tensor] | None = None

    def start(self, key: int) -> None:
        self._key, self._best_state, self.last = key, None, None
        self.records[key] = {"mode": "best_val", "curve": [], "stages": [],
                             "selected_epoch": None, "val_srcc": None,
                             "eligible_from": 1,
                             "validated_on": [self.names[e.current_experience]
                                              for e in self.targets]}

    def after_epoch(self, strategy, stage: str) -> None:
        record = self.records[self._key]
        if not self.targets:
            record["curve"].append(None)
            record["stages"].append(stage)
            return
        scores = []
        for _, target, pred in self.evaluate(self.targets).values():
            value = CORRELATIONS["srcc"](target, pred) if len(target) else None
            scores.append(value)
        numbers = [s for s in scores if s is not None and np.isfinite(s)]
        # A dataset scored as constant (NaN) makes the epoch's mean unknown, never best.
        value = float(np.mean(numbers)) if numbers and len(numbers) == len(scores) else None
        record["curve"].append(value)
        epoch = len(record["curve"])
        record["stages"].append(stage)
        self.last = value
        best = record["val_srcc"]
        if value is not None and (best is None or value > best):
            record["val_srcc"], record["selected_epoch"] = value, epoch
            # A copy (PackNet's extra state is a dict of tensors, not a tensor).
            self._best_state = copy.deepcopy(strategy.model.state_dict())

    def restart(self, why: str) -> None:
        """Earlier epochs are no longer candidates (PackNet pruned the network)."""
        record = self.records[self._key]
        record.update(selected_epoch=None, val_srcc=None, eligible_from=len(record["curve"]) + 1,
                      restarted=why)
        self._best_state = None

    def finish(self, strategy) -> None:
        """Put the best epoch's weights back; without a number, keep the last epoch's."""
        record = self.records[self._key]
        name = ", ".join(record["validated_on"]) or "this experience"
        if self._best_state is None:
            record["mode"] = "last"
            why = ("no validation split" if not self.targets else
                   "no epoch had a validation SRCC (constant predictions)")
            record["fallback"] = why
            log.warning("train.select=best_val: %s has %s; the last epoch's model is kept",
                        name, why)
            return
        strategy.model.load_state_dict(self._best_state)
        self._best_state = None
        log.info("train.select=best_val: epoch %d of %d selected on %s (validation SRCC "
                 "%.4f)", record["selected_epoch"], len(record["curve"]), name,
                 record["val_srcc"])

    def state_dict(self) -> dict:
        return {"records": self.records}

    def load_state_dict(self, state: dict) -> None:
        self.records = {int(k): v for k, v in state["records"].items()}


class ValidationCurve(PluginMetric[float]):
    """`Val_SRCC_Epoch/<experience>`: each epoch's validation SRCC under selection, for
    metrics.csv, W&B and TensorBoard."""

    def __init__(self, selection: BestValidation):
        super().__init__()
        self.selection = selection

    def reset(self) -> None:
        pass

    def result(self) -> float | None:
        return self.selection.last

    def after_training_epoch(self, strategy) -> list[MetricValue]:
        record = self.selection.records.get(self.selection._key)
        if record is None or self.selection.last is None:
            return []
        name = "+".join(record["validated_on"])
        return [MetricValue(self, f"Val_SRCC_Epoch/{name}", self.selection.last,
                            strategy.clock.train_iterations)]

    def __str__(self) -> str:
        return "Val_SRCC_Epoch"

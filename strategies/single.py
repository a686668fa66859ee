"""Single-dataset references (the field's "SL"): each experience trained alone.

Not a stream either: before each experience the model and the optimiser go
back to the initial ones, so row t of the matrix is dataset t's model on every
test set. Its diagonal is the per-dataset reference the stream methods are
compared with; its off-diagonal cells are a cross-dataset generalisation
matrix. The runner sees `protocol="single"`: ACC is the diagonal's mean.
"""

from __future__ import annotations

import copy

import torch
from avalanche.core import SupervisedPlugin

from .registry import StrategyParts, register_strategy


class FromInitialModel(SupervisedPlugin):
    """Puts the initial weights (and a fresh optimiser state) back before each experience.

    The initial weights come from the runner before any training or `--resume`, so a
    resumed run starts its next experience from the same point."""

    def __init__(self) -> None:
        super().__init__()
        self.initial: dict[str, torch.Tensor] | None = None

    def see_initial_model(self, model: torch.nn.Module) -> None:
        self.initial = copy.deepcopy(model.state_dict())

    def before_training_exp(self, strategy, **kwargs) -> None:
        strategy.model.load_state_dict(self.initial)
        strategy.optimizer.state.clear()


@register_strategy("single", protocol="single", uses_task_labels=True)
def single() -> StrategyParts:
    """Each experience trained alone from the initial model: per-dataset references."""
    return StrategyParts([FromInitialModel()])

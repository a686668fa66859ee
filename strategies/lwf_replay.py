"""LwF-Replay (the continual-BIQA code's "iCaRL-v2"): replay through the newest head,
distillation of each old head on its own replayed items.

- the newest head trains on the current and the replayed items, against their labels
  (pairs still only within one dataset: the loss sees each item's own task label);
- each old head i is distilled (lambda, summed over heads) on task i's replayed items
  towards the model of before the experience; no distillation on the new data;
- meant to be scored task-agnostically, `eval.heads: weighted`.
"""

from __future__ import annotations

import torch

from models.iqa import multi_head

from .lwf_heads import HeadDistillation
from .registry import StrategyParts, register_strategy
from .replay import IndexedBalancedBuffer, Replay


class ReplayDistillation(HeadDistillation):
    def __init__(self, lam: float = 10.0):
        super().__init__(lam, name="lwf_replay")
        self._tasks: torch.Tensor | None = None

    def before_forward(self, strategy, **kwargs) -> None:
        # Every item through the newest head; the loss gets the true labels back.
        self._tasks = strategy.mbatch[-1]
        strategy.mbatch[-1] = torch.full_like(self._tasks, strategy.experience.task_label)

    def after_forward(self, strategy, **kwargs) -> None:
        strategy.mbatch[-1] = self._tasks

    def items_of(self, task: int, device) -> torch.Tensor:
        """Task `task`'s replayed items only: no distillation on the new data."""
        return self._tasks.to(device) == task


# mem_size = 1000 and lam = 10: the continual-BIQA code's values.
@register_strategy("lwf_replay", multi_head=True)
def lwf_replay(mem_size: int = 1000, lam: float = 10.0) -> StrategyParts:
    """LwF-Replay: newest head on current + replayed; old heads distilled on replayed."""
    return StrategyParts([Replay(mem_size, storage_policy=IndexedBalancedBuffer(mem_size)),
                          ReplayDistillation(lam)], wrap_model=multi_head)

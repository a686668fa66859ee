"""Learning without Forgetting for scores.

Avalanche's LwFPlugin distils softmax over class units, meaningless for one
scalar score. Here the previous model's *scores* on the new data are the
teacher: MSE to them, plus optionally a ranking term that keeps their order.
With per-task heads, every earlier task's head is distilled on the new data.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from avalanche.core import SupervisedPlugin
from avalanche.models import MultiTaskModule

from models.loss import pairwise_ranking_loss

from .passes import bookkeeping
from .registry import StrategyParts, register_strategy
from .teacher import FrozenTeacher


class ScoreLwFPlugin(FrozenTeacher, SupervisedPlugin):
    def __init__(self, alpha: float = 1.0, ranking_weight: float = 0.0, margin: float = 0.1):
        super().__init__()
        self.alpha = alpha
        self.ranking_weight = ranking_weight
        self.margin = margin

    def distillation(self, new: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
        loss = self.alpha * F.mse_loss(new, old)
        if self.ranking_weight:
            loss = loss + self.ranking_weight * pairwise_ranking_loss(new, old, self.margin)
        return loss

    def before_backward(self, strategy, **kwargs) -> None:
        # Not in a heads-only warm-up: the field distils in the whole-network stage only.
        if self.prev_model is None or getattr(strategy, "heads_only", False):
            return
        x = strategy.mb_x
        if isinstance(strategy.model, MultiTaskModule):
            loss = strategy.loss.new_zeros(())
            for t in sorted(self.prev_model.known_train_tasks_labels):
                with bookkeeping(self.prev_model) as teacher:
                    old = teacher.forward_single_task(x, t)
                loss = loss + self.distillation(strategy.model.forward_single_task(x, t), old)
        else:
            with bookkeeping(self.prev_model) as teacher:
                old = teacher(x)
            loss = self.distillation(strategy.mb_output, old)
        strategy.loss += loss

    def before_training_exp(self, strategy, **kwargs) -> None:
        self.restore_teacher(strategy.model)

    def after_training_exp(self, strategy, **kwargs) -> None:
        self.keep_teacher(strategy.model)


# alpha = 1 chosen by `make search` on the demo stream's validation splits.
@register_strategy("lwf")
def lwf(alpha: float = 1.0, ranking_weight: float = 0.0, margin: float = 0.1) -> StrategyParts:
    """Learning without Forgetting on scores: MSE (+ ranking) to the previous model's scores."""
    return StrategyParts([ScoreLwFPlugin(alpha, ranking_weight, margin)])

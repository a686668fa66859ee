"""LwF over all old heads (the continual-BIQA paper's MH-CL + LwF).

With one head per task, the current head learns the current data and each
old head i is distilled on the same minibatch towards the frozen model of
before the experience: lambda * sum_i D(head_i, old head_i), summed over old
heads, not averaged (lambda = 10 in the field). D is the fidelity of pair
probabilities Phi(y(x1) - y(x2)) to the old model's (with `loss.name:
fidelity`, the field's) or the MSE to the old scores (with today's loss).
Like the field, only the whole-network stage distils (not a heads-only
warm-up, where old heads cannot move). The model gets one head per task
whatever `model.heads` says. The shared-head LwF is `lwf`.
"""

from __future__ import annotations

import torch
from avalanche.core import SupervisedPlugin

from benchmarks.errors import UserError
from models.iqa import MultiHeadIQAModel, multi_head
from models.loss import fidelity_to_teacher, mse_to_teacher

from .passes import bookkeeping
from .registry import StrategyParts, register_strategy
from .teacher import FrozenTeacher


class HeadDistillation(FrozenTeacher, SupervisedPlugin):
    """The old model, the student's backbone features of the minibatch, and D per head.

    The student's features are taken from its own training forward (a hook on the
    backbone), so old heads are scored without a second pass: a second training-mode
    pass would move BatchNorm's statistics."""

    def __init__(self, lam: float = 10.0, name: str = "lwf_heads"):
        super().__init__()
        self.lam, self.name = lam, name
        self._features: torch.Tensor | None = None
        self._hook = None

    # -- what the minibatch gives ---------------------------------------------------------
    def student_heads(self, strategy, tasks: list[int]) -> torch.Tensor:
        """(B, T) the student's old heads on the minibatch's features (with gradients)."""
        x = strategy.mb_x
        features = x if x.dim() == 2 else self._features  # cached features: x itself
        return torch.stack([strategy.model.heads[str(t)](features) for t in tasks], dim=1)

    def teacher_heads(self, strategy, tasks: list[int]) -> torch.Tensor:
        with bookkeeping(self.prev_model) as teacher:
            return teacher.head_scores(strategy.mb_x, tasks)

    def distance(self, strategy, new: torch.Tensor, old: torch.Tensor,
                 keep: torch.Tensor | None = None) -> torch.Tensor:
        if getattr(strategy._criterion, "takes_pairs", False):
            return fidelity_to_teacher(new, old, keep=keep)
        return mse_to_teacher(new, old, keep)

    def old_tasks(self, strategy) -> list[int]:
        current = strategy.experience.task_label
        return sorted(t for t in self.prev_model.known_train_tasks_labels if t != current)

    # -- hooks ------------------------------------------------------------------------------
    def before_backward(self, strategy, **kwargs) -> None:
        if self.prev_model is None or getattr(strategy, "heads_only", False):
            return
        tasks = self.old_tasks(strategy)
        if not tasks:
            return
        new, old = self.student_heads(strategy, tasks), self.teacher_heads(strategy, tasks)
        loss = sum(self.distance(strategy, new[:, i], old[:, i], self.items_of(t, new.device))
                   for i, t in enumerate(tasks))
        self.add(strategy, loss)

    def items_of(self, task: int, device) -> torch.Tensor | None:
        """The minibatch items old head `task` is distilled on: all of them (None)."""
        return None

    def add(self, strategy, loss: torch.Tensor) -> None:
        # lam = 0 adds nothing (not 0 x loss, whose zero gradients would still let Adam's
        # momentum move the old heads): the plain multi-head model, bit for bit.
        if self.lam:
            strategy.loss = strategy.loss + self.lam * loss

    def before_training_exp(self, strategy, **kwargs) -> None:
        if not isinstance(strategy.model, MultiHeadIQAModel) or strategy.model.task_features:
            raise UserError(f"{self.name}: needs a multi-head model with one backbone "
                            "(model.heads=per_task)")
        # The student already has this experience's new head; the old model had not.
        self.restore_teacher(strategy.model, grown="heads.")
        self._hook = strategy.model.backbone.register_forward_hook(self._keep_features)

    def _keep_features(self, module, inputs, output) -> None:
        self._features = output

    def after_training_exp(self, strategy, **kwargs) -> None:
        if self._hook is not None:
            self._hook.remove()
            self._hook, self._features = None, None
        self.keep_teacher(strategy.model)


# lam = 10 per old head, summed: the continual-BIQA code's value.
@register_strategy("lwf_heads", multi_head=True)
def lwf_heads(lam: float = 10.0) -> StrategyParts:
    """LwF over heads: each old head distilled on new data towards the old model (summed)."""
    return StrategyParts([HeadDistillation(lam)], wrap_model=multi_head)

"""Score losses: MSE + ranking (the suite's default) and the fidelity loss on pairs.

MSE to the target in [-1, 1] plus a pairwise margin ranking term:

MSE pins the scale; the ranking term cares only about order, which is what
SRCC measures (seed prototype: weight 0.1, margin 0.1). The fidelity loss
(`loss.name: fidelity`) is the continual-BIQA field's: see docs/TRAINING.md.

Both are written as masked sums, with no branch on a tensor's value and no
boolean indexing: either would make the CPU wait for the GPU at every
minibatch (training and evaluation alike, as Avalanche computes the loss in
both), so the loop could no longer queue the next minibatch ahead.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from benchmarks.errors import UserError


def pairwise_ranking_loss(pred: torch.Tensor, target: torch.Tensor, margin: float = 0.1,
                          known: torch.Tensor | None = None) -> torch.Tensor:
    """Mean hinge max(0, margin - (p_i - p_j)) over pairs with target_i > target_j
    (both known, where `known` is given); 0 when there is no such pair."""
    ordered = (target.unsqueeze(1) - target.unsqueeze(0)) > 0
    if known is not None:
        ordered = ordered & known.unsqueeze(1) & known.unsqueeze(0)
    hinge = torch.relu(margin - (pred.unsqueeze(1) - pred.unsqueeze(0)))
    ordered = ordered.to(pred.dtype)
    return (hinge * ordered).sum() / ordered.sum().clamp(min=1)


class IQALoss(nn.Module):
    def __init__(self, ranking_weight: float = 0.1, margin: float = 0.1):
        super().__init__()
        self.ranking_weight = ranking_weight
        self.margin = margin

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        target = target.to(pred.dtype).reshape(pred.shape)
        known = ~torch.isnan(target)  # NaN: an image that could not be read
        target = torch.where(known, target, 0.0)  # finite, so 0 x its error stays 0
        weight = known.to(pred.dtype)
        loss = (weight * (pred - target) ** 2).sum() / weight.sum().clamp(min=1)
        if self.ranking_weight:
            loss = loss + self.ranking_weight * pairwise_ranking_loss(pred, target, self.margin,
                                                                      known)
        return loss


SQRT2 = math.sqrt(2.0)


def normal_cdf(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * (1.0 + torch.erf(x / SQRT2))


def thurstone_target(diff: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
    """P(image 1 better) from mu1 - mu2 and sd1^2 + sd2^2 (both stds zero: 1, 0 or 0.5)."""
    safe = torch.where(var > 0, var, 1.0)
    return torch.where(var > 0, normal_cdf(diff / safe.sqrt()), 0.5 * (1 + torch.sign(diff)))


def fidelity_loss(pred: torch.Tensor, target: torch.Tensor, tasks: torch.Tensor | None = None,
                  std: torch.Tensor | None = None, target_kind: str = "binary",
                  eps: float = 1e-8) -> torch.Tensor:
    """Thurstone fidelity loss over every pair (i < j) of the batch with the same task label.

    p = Phi(pred_i - pred_j); g = [mu_i > mu_j] (binary; equal scores left out) or
    Phi((mu_i - mu_j) / sqrt(sd_i^2 + sd_j^2)) (continuous, needs `std`);
    loss 1 - sqrt(p g + eps) - sqrt((1 - p)(1 - g) + eps), mean over pairs; 0 without any.
    Unreadable images (NaN target) and, for continuous, NaN stds pair with nothing.
    """
    pred = pred.reshape(-1)
    target = target.to(pred.dtype).reshape(-1)
    known = ~torch.isnan(target)
    if target_kind == "continuous":
        if std is None:
            raise ValueError("fidelity_loss: target_kind='continuous' needs std")
        std = std.to(pred.dtype).reshape(-1)
        known = known & ~torch.isnan(std)
    n = pred.shape[0]
    pair = torch.ones(n, n, dtype=torch.bool, device=pred.device).triu_(1)
    pair = pair & known.unsqueeze(1) & known.unsqueeze(0)
    if tasks is not None:
        tasks = tasks.reshape(-1).to(pred.device)
        pair = pair & (tasks.unsqueeze(1) == tasks.unsqueeze(0))
    mu = torch.where(known, target, 0.0)  # finite everywhere: no NaN reaches a product
    diff = mu.unsqueeze(1) - mu.unsqueeze(0)
    if target_kind == "binary":
        g = (diff > 0).to(pred.dtype)
        pair = pair & (diff != 0)
    else:
        sd = torch.where(known, std, 0.0)
        g = thurstone_target(diff, sd.unsqueeze(1) ** 2 + sd.unsqueeze(0) ** 2)
    p = normal_cdf(pred.unsqueeze(1) - pred.unsqueeze(0))
    f = 1 - torch.sqrt(p * g + eps) - torch.sqrt((1 - p) * (1 - g) + eps)
    w = pair.to(pred.dtype)
    return (f * w).sum() / w.sum().clamp(min=1)


def fidelity_to_teacher(pred: torch.Tensor, teacher: torch.Tensor,
                        tasks: torch.Tensor | None = None, keep: torch.Tensor | None = None,
                        eps: float = 1e-8) -> torch.Tensor:
    """Distillation on pairs (LwF over heads): the fidelity of Phi(pred_i - pred_j) to the
    teacher's Phi(teacher_i - teacher_j), over pairs i < j of one task label, both in
    `keep` where it is given; mean over pairs, 0 without any."""
    pred, teacher = pred.reshape(-1), teacher.to(pred.dtype).reshape(-1)
    n = pred.shape[0]
    pair = torch.ones(n, n, dtype=torch.bool, device=pred.device).triu_(1)
    if keep is not None:
        keep = keep.reshape(-1).to(pred.device)
        pair = pair & keep.unsqueeze(1) & keep.unsqueeze(0)
    if tasks is not None:
        tasks = tasks.reshape(-1).to(pred.device)
        pair = pair & (tasks.unsqueeze(1) == tasks.unsqueeze(0))
    g = normal_cdf(teacher.unsqueeze(1) - teacher.unsqueeze(0))
    p = normal_cdf(pred.unsqueeze(1) - pred.unsqueeze(0))
    f = 1 - torch.sqrt(p * g + eps) - torch.sqrt((1 - p) * (1 - g) + eps)
    w = pair.to(pred.dtype)
    return (f * w).sum() / w.sum().clamp(min=1)


def mse_to_teacher(pred: torch.Tensor, teacher: torch.Tensor,
                   keep: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared distance to the teacher's scores (over `keep` where it is given)."""
    err = (pred.reshape(-1) - teacher.to(pred.dtype).reshape(-1)) ** 2
    if keep is None:
        return err.mean()
    w = keep.reshape(-1).to(pred.dtype)
    return (err * w).sum() / w.sum().clamp(min=1)


class FidelityLoss(nn.Module):
    """The field's pairwise loss (BIQA_CL), on in-batch pairs of one dataset.

    Pairs never cross task labels, so a joint, cumulative or replay batch pairs each
    image only with images of its own dataset. The continuous target looks each
    image's std up by (task label, training row) in tables the runner sets
    (`set_std`), on the [-1, 1] scale of the targets; called without rows (EWC's
    importance pass calls `criterion(out, y)`) it uses the binary target.
    """

    takes_pairs = True

    def __init__(self, target: str = "binary", eps: float = 1e-8):
        super().__init__()
        if target not in TARGETS:
            raise UserError(f"loss.target = {target!r}: choose one of {list(TARGETS)}")
        self.target, self.eps = target, eps
        self.register_buffer("std_table", torch.empty(0, 0), persistent=False)

    def set_std(self, per_task: dict[int, torch.Tensor]) -> None:
        """Each task's training rows' stds, as a padded (tasks, rows) table."""
        tasks = max(per_task, default=-1) + 1
        rows = max((len(v) for v in per_task.values()), default=0)
        table = torch.full((tasks, rows), float("nan"))
        for t, values in per_task.items():
            table[t, : len(values)] = torch.as_tensor(values, dtype=torch.float32)
        self.std_table = table.to(self.std_table.device)

    def forward(self, pred: torch.Tensor, target: torch.Tensor,
                tasks: torch.Tensor | None = None, rows: torch.Tensor | None = None
                ) -> torch.Tensor:
        if self.target == "continuous" and rows is not None and tasks is not None:
            table = self.std_table.to(pred.device)
            std = table[tasks.reshape(-1).to(pred.device), rows.reshape(-1).to(pred.device)]
            return fidelity_loss(pred, target, tasks, std, "continuous", self.eps)
        # Called with scores alone (Avalanche's EWC importance pass): the order of the
        # targets is all there is, so the binary target.
        return fidelity_loss(pred, target, tasks, None, "binary", self.eps)


TARGETS = ("binary", "continuous")
LOSSES = ("mse_ranking", "fidelity")


def make_loss(options: dict) -> nn.Module:
    """The training loss a config's `loss:` block names."""
    name = options.get("name", "mse_ranking")
    if name == "mse_ranking":
        return IQALoss(options.get("ranking_weight", 0.1), options.get("margin", 0.1))
    if name == "fidelity":
        return FidelityLoss(options.get("target", "binary"), options.get("eps", 1e-8))
    raise UserError(f"loss.name = {name!r}: choose one of {list(LOSSES)}")

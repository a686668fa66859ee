"""Score loss: MSE to the target in [-1, 1] plus a pairwise margin ranking term.

MSE pins the scale; the ranking term cares only about order, which is what
SRCC measures (seed prototype: weight 0.1, margin 0.1).

Both are written as masked sums, with no branch on a tensor's value and no
boolean indexing: either would make the CPU wait for the GPU at every
minibatch (training and evaluation alike, as Avalanche computes the loss in
both), so the loop could no longer queue the next minibatch ahead.
"""

from __future__ import annotations

import torch
from torch import nn


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

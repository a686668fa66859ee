"""Score loss: MSE to the target in [-1, 1] plus a pairwise margin ranking term.

MSE pins the scale; the ranking term cares only about order, which is what
SRCC measures (seed prototype: weight 0.1, margin 0.1).
"""

from __future__ import annotations

import torch
from torch import nn


def pairwise_ranking_loss(pred: torch.Tensor, target: torch.Tensor,
                          margin: float = 0.1) -> torch.Tensor:
    """Mean hinge max(0, margin - (p_i - p_j)) over pairs with target_i > target_j."""
    diff_t = target.unsqueeze(1) - target.unsqueeze(0)
    diff_p = pred.unsqueeze(1) - pred.unsqueeze(0)
    ordered = diff_t > 0
    if not ordered.any():
        return pred.sum() * 0.0
    return torch.relu(margin - diff_p[ordered]).mean()


class IQALoss(nn.Module):
    def __init__(self, ranking_weight: float = 0.1, margin: float = 0.1):
        super().__init__()
        self.ranking_weight = ranking_weight
        self.margin = margin

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        target = target.to(pred.dtype).reshape(pred.shape)
        known = ~torch.isnan(target)  # NaN: an image that could not be read
        if not known.all():
            if not known.any():
                return pred.sum() * 0.0
            pred, target = pred[known], target[known]
        loss = nn.functional.mse_loss(pred, target)
        if self.ranking_weight:
            loss = loss + self.ranking_weight * pairwise_ranking_loss(pred, target, self.margin)
        return loss

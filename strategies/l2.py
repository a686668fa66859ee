"""L2 to the previous weights: (lambda / 2) * sum (theta - theta*)^2.

theta* are the weights after the previous experience. Avalanche has no such
plugin; this is EWC with every importance set to one.
"""

from __future__ import annotations

import torch
from avalanche.core import SupervisedPlugin

from .state import StateMixin


class L2Plugin(StateMixin, SupervisedPlugin):
    state_attrs = ("anchors",)

    def __init__(self, l2_lambda: float):
        super().__init__()
        self.l2_lambda = l2_lambda
        self.anchors: dict[str, torch.Tensor] = {}

    def penalty(self, model: torch.nn.Module) -> torch.Tensor:
        total = torch.zeros(())
        for name, param in model.named_parameters():
            anchor = self.anchors.get(name)
            if anchor is not None and anchor.shape == param.shape:
                total = total.to(param.device) + ((param - anchor) ** 2).sum()
        return 0.5 * self.l2_lambda * total

    def before_backward(self, strategy, **kwargs) -> None:
        if self.anchors:
            strategy.loss += self.penalty(strategy.model)

    def after_training_exp(self, strategy, **kwargs) -> None:
        self.anchors = {n: p.detach().clone() for n, p in strategy.model.named_parameters()
                        if p.requires_grad}

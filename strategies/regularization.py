"""Regularisation strategies: EWC, L2, SI, MAS (Avalanche's plugins, plus L2 of our own).

Every default λ was chosen by `make search` on the demo stream's validation
splits (docs/STRATEGIES.md). The importances of EWC, SI and MAS are small
for a score in [-1, 1] and an MSE loss, hence the large λ.
"""

from __future__ import annotations

import torch
from avalanche.models.utils import avalanche_forward
from avalanche.training.plugins import EWCPlugin, MASPlugin, SynapticIntelligencePlugin
from avalanche.training.utils import zerolike_params_dict
from torch.utils.data import DataLoader

from benchmarks.errors import UserError

from .fisher import per_sample_fisher
from .l2 import L2Plugin
from .passes import bookkeeping
from .registry import StrategyParts, register_strategy
from .state import StateMixin


class EWC(StateMixin, EWCPlugin):
    """Avalanche's EWC with the state contract and a choice of importance.

    `importance="minibatch"`: Avalanche's estimate (squared minibatch gradients);
    `"per_sample"`: the empirical Fisher from per-sample gradients (strategies.fisher).
    """

    state_attrs = ("saved_params", "importances")
    defaultdict_attrs = state_attrs
    reads_dataset = True  # its importance pass loads the experience's images itself

    def __init__(self, *args, importance: str = "minibatch", **kwargs):
        super().__init__(*args, **kwargs)
        self.importance = importance

    def compute_importances(self, model, criterion, optimizer, dataset, device, batch_size,
                            num_workers=0):
        # Avalanche's pass ends with `model.train()`, whatever the modules' flags were.
        with bookkeeping(model, grad=True):
            if self.importance == "per_sample":
                return per_sample_fisher(model, dataset, device, batch_size, num_workers)
            return super().compute_importances(model, criterion, optimizer, dataset, device,
                                               batch_size, num_workers)


@torch.no_grad()
def _extract_weights(model, target, excluded_parameters) -> None:
    # Avalanche 0.6 stores `param.detach().cpu().flatten()`: on the CPU that is a *view*
    # of the live weights, so "old" and "new" weights stay equal, every path integral
    # is zero and SI does nothing. A copy fixes it (on a GPU, .cpu() copied already).
    for name, param in SynapticIntelligencePlugin.allowed_parameters(model,
                                                                     excluded_parameters):
        target[name].data = param.detach().cpu().flatten().clone()


SynapticIntelligencePlugin.extract_weights = staticmethod(_extract_weights)


class SI(StateMixin, SynapticIntelligencePlugin):
    """Avalanche's Synaptic Intelligence with the state contract."""

    state_attrs = ("ewc_data", "syn_data")


class MAS(StateMixin, MASPlugin):
    """Avalanche's Memory Aware Synapses with the state contract, for scalar scores.

    Avalanche's importance pass expects 2- or 3-element minibatches and a
    (B, classes) output; here samples carry a row index and the output is (B,).
    The importance is the same: mean |d ||f(x)||^2 / d theta| over the data,
    but taken in eval mode (`bookkeeping`): Avalanche runs it in training mode,
    which moves BatchNorm's running statistics after training has finished,
    so the model evaluated after the experience is not the model trained.
    """

    state_attrs = ("params", "importance")
    reads_dataset = True

    def _get_importance(self, strategy):
        importance = dict(zerolike_params_dict(strategy.model))
        data = strategy.experience.dataset
        loader = DataLoader(data, batch_size=strategy.train_mb_size,
                            collate_fn=getattr(data, "collate_fn", None))
        with bookkeeping(strategy.model, grad=True) as model:
            for batch in loader:
                x, t = batch[0].to(strategy.device), batch[-1].to(strategy.device)
                model.zero_grad()
                out = avalanche_forward(model, x, t).reshape(len(x), -1)
                out.pow(2).sum(dim=1).mean().backward()
                for name, param in model.named_parameters():
                    if param.requires_grad and param.grad is not None:
                        importance[name].data += param.grad.abs()
        for value in importance.values():
            value.data /= float(len(loader))
        return importance

    def before_backward(self, strategy, **kwargs) -> None:
        # Avalanche's penalty, without its `if not strategy.loss` check: that reads the loss
        # back from the GPU at every minibatch, and stops the run with "Loss is not
        # available" when a minibatch's loss is exactly 0 (all its images unreadable).
        if strategy.clock.train_exp_counter == 0:
            return
        if not self.importance or not self.params:
            raise ValueError("MAS: no importance or parameters saved after the last experience")
        penalty = strategy.loss.new_zeros(())
        for name, param in strategy.model.named_parameters():
            if name in self.importance:
                old = self.params[name].expand(param.shape)
                penalty = penalty + torch.sum(self.importance[name].expand(param.shape)
                                              * (param - old).pow(2))
        strategy.loss += self._lambda * penalty


@register_strategy("ewc")
def ewc(ewc_lambda: float = 1.0e6, mode: str = "separate", decay_factor: float = 0.9,
        importance: str = "minibatch") -> StrategyParts:
    """Elastic Weight Consolidation (Avalanche's EWCPlugin), `separate` or `online`.

    `importance`: "minibatch" (Avalanche's estimate) or "per_sample" (empirical Fisher).
    """
    if mode not in ("separate", "online"):
        raise UserError(f"strategy.mode = {mode!r}: ewc expects 'separate' or 'online'")
    if importance not in ("minibatch", "per_sample"):
        raise UserError(f"strategy.importance = {importance!r}: ewc expects 'minibatch' or "
                        "'per_sample'")
    decay = decay_factor if mode == "online" else None
    return StrategyParts([EWC(ewc_lambda, mode=mode, decay_factor=decay,
                              importance=importance)])


@register_strategy("l2")
def l2(l2_lambda: float = 1.0) -> StrategyParts:
    """(lambda/2) * ||theta - theta_prev||^2 to the weights after the previous experience."""
    return StrategyParts([L2Plugin(l2_lambda)])


@register_strategy("si")
def si(si_lambda: float = 1000.0, eps: float = 1e-7) -> StrategyParts:
    """Synaptic Intelligence (Avalanche's plugin)."""
    return StrategyParts([SI(si_lambda, eps=eps)])


@register_strategy("mas")
def mas(lambda_reg: float = 100.0, alpha: float = 0.5) -> StrategyParts:
    """Memory Aware Synapses (Avalanche's plugin)."""
    return StrategyParts([MAS(lambda_reg=lambda_reg, alpha=alpha)])

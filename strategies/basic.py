"""The baseline strategies: naive fine-tuning, EWC and L2."""

from __future__ import annotations

from avalanche.training.plugins import EWCPlugin

from .l2 import L2Plugin
from .registry import StrategyParts, register_strategy


@register_strategy("naive")
def naive() -> StrategyParts:
    """Fine-tuning on each experience in turn: the lower bound."""
    return StrategyParts()


@register_strategy("ewc")
def ewc(ewc_lambda: float = 100.0, mode: str = "separate",
        decay_factor: float = 0.9) -> StrategyParts:
    """Elastic Weight Consolidation (Avalanche's EWCPlugin), `separate` or `online`."""
    if mode not in ("separate", "online"):
        from benchmarks.errors import UserError

        raise UserError(f"strategy.mode = {mode!r}: ewc expects 'separate' or 'online'")
    decay = decay_factor if mode == "online" else None
    return StrategyParts([EWCPlugin(ewc_lambda, mode=mode, decay_factor=decay)])


@register_strategy("l2")
def l2(l2_lambda: float = 1.0) -> StrategyParts:
    """(lambda/2) * ||theta - theta_prev||^2 to the weights after the previous experience."""
    return StrategyParts([L2Plugin(l2_lambda)])

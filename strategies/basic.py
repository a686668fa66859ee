"""The lower bound: fine-tuning on each experience in turn."""

from __future__ import annotations

from .registry import StrategyParts, register_strategy


@register_strategy("naive")
def naive() -> StrategyParts:
    """Fine-tuning on each experience in turn: the lower bound."""
    return StrategyParts()

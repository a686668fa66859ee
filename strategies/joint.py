"""Joint training: one model on the union of all training sets, the upper bound.

Not a stream: the runner sees `protocol="joint"`, trains once on everything
and evaluates every experience once (a one-row matrix, stage `joint`).
"""

from __future__ import annotations

from .registry import StrategyParts, register_strategy


@register_strategy("joint", protocol="joint")
def joint() -> StrategyParts:
    """One model trained on all experiences' training data at once (upper bound)."""
    return StrategyParts()

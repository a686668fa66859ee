"""Learning rules: each strategy is a factory of Avalanche plugins, found by name."""

from . import basic  # noqa: F401  (registers the built-in strategies)
from .registry import (
                       STRATEGIES,
                       StrategyParts,
                       StrategySpec,
                       get_strategy,
                       make_strategy,
                       register_strategy,
)

__all__ = ["STRATEGIES", "StrategyParts", "StrategySpec", "get_strategy", "make_strategy",
           "register_strategy"]

"""Multi-head replay (the continual-BIQA paper's MH-CL-Replay).

The memory is `replay`'s (equal room per task, chosen uniformly at random,
refreshed after each experience). Replayed items keep their task label, so
with one head per task each old head trains on its own dataset's replayed
items against their labels, and the fidelity loss pairs them only within
their dataset. The field adds one batch of pairs per old task to the loss;
here replayed items join the minibatch and the loss is the mean over all its
same-dataset pairs (docs/STRATEGIES.md). The model gets one head per task
whatever `model.heads` says.
"""

from __future__ import annotations

from models.iqa import multi_head

from .registry import StrategyParts, register_strategy
from .replay import IndexedBalancedBuffer, Replay


# mem_size = 1000: the continual-BIQA code's memory (all tasks together).
@register_strategy("replay_heads", multi_head=True)
def replay_heads(mem_size: int = 1000) -> StrategyParts:
    """Replay with one head per task: each old head trains on its own replayed items."""
    return StrategyParts([Replay(mem_size, storage_policy=IndexedBalancedBuffer(mem_size))],
                         wrap_model=multi_head)

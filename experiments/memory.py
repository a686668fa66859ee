"""What a strategy keeps beyond the model: the `memory` of results.json and of tables."""

from __future__ import annotations

import torch


def _tensor_bytes(state) -> int:
    if isinstance(state, torch.Tensor):
        return state.numel() * state.element_size()
    if isinstance(state, dict):
        return sum(_tensor_bytes(v) for v in state.values())
    if isinstance(state, (list, tuple)):
        return sum(_tensor_bytes(v) for v in state)
    return 0


def strategy_memory(bench) -> dict:
    """What a strategy keeps beyond the model: its state's tensors, and stored images.

    A stored image counts as one decoded uint8 RGB image at data.image_size.
    """
    state = sum(_tensor_bytes(p.state_dict()) for p in bench.parts.plugins
                if hasattr(p, "state_dict"))
    model = bench.trainer.strategy.model
    if type(model).get_extra_state is not torch.nn.Module.get_extra_state:
        state += _tensor_bytes(model.get_extra_state())
    images = sum(p.stored_images() for p in bench.parts.plugins if hasattr(p, "stored_images"))
    size = bench.config["data"]["image_size"]
    return {"state_bytes": state, "stored_images": images,
            "extra_bytes": state + images * 3 * size * size}

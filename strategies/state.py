"""The state contract: a plugin's state as tensors and plain values.

`state_dict()` returns nested dicts/lists of tensors, numbers and strings
only, so a checkpoint loads with `torch.load(weights_only=True)`.
Avalanche keeps some state in `ParamData` objects; they become
`{"name": ..., "data": tensor}` here and are rebuilt on load.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import torch
from avalanche.training.utils import ParamData

_PARAM = "__param_data__"


def to_state(value: Any) -> Any:
    if isinstance(value, ParamData):
        return {_PARAM: value.name, "data": value.data.detach().clone()}
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, dict):
        return {k: to_state(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(to_state(v) for v in value)
    return value


def from_state(value: Any) -> Any:
    if isinstance(value, dict) and _PARAM in value:
        return ParamData(value[_PARAM], init_tensor=value["data"], device=value["data"].device)
    if isinstance(value, dict):
        return {k: from_state(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(from_state(v) for v in value)
    return value


class StateMixin:
    """`state_dict` / `load_state_dict` over the attributes named in `state_attrs`."""

    state_attrs: tuple[str, ...] = ()
    defaultdict_attrs: tuple[str, ...] = ()

    def state_dict(self) -> dict[str, Any]:
        return {name: to_state(getattr(self, name)) for name in self.state_attrs}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name in self.state_attrs:
            value = from_state(state[name])
            if name in self.defaultdict_attrs:
                value = defaultdict(dict, value)
            setattr(self, name, value)

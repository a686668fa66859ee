"""Strategies by name: `@register_strategy("name")` on a factory of plugins.

A factory's typed, defaulted parameters *are* the strategy's hyperparameters
(`strategy.<param>` in a config). It returns a `StrategyParts`: the Avalanche
plugins to add to the training template and, if the strategy needs one, a
function that wraps the model. The registry also records the protocol
(`stream`; `joint` for a model trained on everything at once; `single`
for each experience trained alone from the initial model) and whether
the strategy uses the experience's task label at test time; the runner
branches on those, never on a strategy's name.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, get_args, get_type_hints

from benchmarks.errors import UserError


@dataclass
class StrategyParts:
    plugins: list = field(default_factory=list)
    wrap_model: Callable | None = None


@dataclass(frozen=True)
class StrategySpec:
    name: str
    factory: Callable[..., StrategyParts]
    protocol: str
    uses_task_labels: bool
    multi_head: bool  # one head per task: scored by eval.heads (oracle, newest, weighted)
    params: dict[str, tuple[type, Any]]  # name -> (type, default)
    doc: str


STRATEGIES: dict[str, StrategySpec] = {}
# stream: experiences in turn; joint: one model on all at once; single: each alone
PROTOCOLS = ("stream", "joint", "single")


def register_strategy(name: str, *, protocol: str = "stream",
                      uses_task_labels: bool = False, multi_head: bool = False) -> Callable:
    """Register a factory; every parameter must have a type hint and a default."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")

    def wrap(fn: Callable[..., StrategyParts]) -> Callable[..., StrategyParts]:
        hints = get_type_hints(fn)
        params = {}
        for p in inspect.signature(fn).parameters.values():
            if p.default is inspect.Parameter.empty or p.name not in hints:
                raise TypeError(f"strategy '{name}': parameter '{p.name}' needs a type and a "
                                "default")
            params[p.name] = (hints[p.name], p.default)
        doc = inspect.getdoc(fn) or ""
        STRATEGIES[name] = StrategySpec(name, fn, protocol, uses_task_labels, multi_head, params,
                                        doc.splitlines()[0] if doc else "")
        return fn

    return wrap


_CHECKS = {
    float: lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    int: lambda v: isinstance(v, int) and not isinstance(v, bool),
    bool: lambda v: isinstance(v, bool),
    str: lambda v: isinstance(v, str),
    list: lambda v: isinstance(v, list),
}


def _yaml_float(text: str) -> float | str:
    try:
        return float(text)
    except ValueError:
        return text


def type_name(typ: Any) -> str:
    return " | ".join(t.__name__ for t in get_args(typ)) if get_args(typ) else typ.__name__


def _coerce(strategy: str, key: str, value: Any, typ: Any) -> Any:
    """Check a hyperparameter against its type hint (a type or a union of types)."""
    options = get_args(typ) or (typ,)
    if float in options and isinstance(value, str):
        value = _yaml_float(value)  # YAML reads 1e4 (no dot, no sign) as a string
    for option in options:
        check = _CHECKS.get(option)
        if check is None or check(value):
            return float(value) if option is float else value
    raise UserError(f"strategy.{key} = {value!r}: '{strategy}' expects {type_name(typ)}")


def get_strategy(name: str) -> StrategySpec:
    if name not in STRATEGIES:
        raise UserError(f"unknown strategy '{name}'; choose one of {sorted(STRATEGIES)}")
    return STRATEGIES[name]


def check_hyperparameters(name: str, hparams: dict[str, Any]) -> dict[str, Any]:
    """Hyperparameters checked against the factory's signature (names and types)."""
    spec = get_strategy(name)
    unknown = sorted(set(hparams) - set(spec.params))
    if unknown:
        raise UserError(
            f"strategy '{name}' has no hyperparameter {unknown}; valid: {sorted(spec.params)}"
        )
    return {k: _coerce(name, k, v, spec.params[k][0]) for k, v in hparams.items()}


def make_strategy(name: str, **hparams: Any) -> StrategyParts:
    """Build a strategy; an unknown hyperparameter is an error listing the valid ones."""
    return get_strategy(name).factory(**check_hyperparameters(name, hparams))

"""Learning rules: each strategy is a factory of Avalanche plugins, found by name.

Every module in this folder is imported, so a new strategy is one new file
with a `@register_strategy` function in it; `load_strategy_file` does the
same for a file of the user's own (`iqacl run --plugins my_strategy.py`).
"""

import importlib
import importlib.util
import pkgutil
import sys
from pathlib import Path

from benchmarks.errors import UserError

from .passes import bookkeeping
from .registry import (
    STRATEGIES,
    StrategyParts,
    StrategySpec,
    get_strategy,
    make_strategy,
    register_strategy,
)

for _module in pkgutil.iter_modules(__path__):
    if not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")


def load_strategy_file(path: str | Path) -> None:
    """Import a Python file so the strategies it registers can be used by name."""
    path = Path(path).resolve()
    if not path.is_file():
        raise UserError(f"--plugins: {path} not found")
    name = f"iqacl_user_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)


__all__ = ["STRATEGIES", "StrategyParts", "StrategySpec", "bookkeeping", "get_strategy",
           "load_strategy_file", "make_strategy", "register_strategy"]

"""Label formats by name: every module here registers its readers when imported.

A new dataset is one new file with a `@register_format("name")` function
(see `base.py` for the table it returns); `format: name` in a stream entry
then finds it.
"""

import importlib
import pkgutil

from .base import FORMATS, FormatSpec, LabelTable, register_format

for _module in pkgutil.iter_modules(__path__):
    if not _module.name.startswith("_") and _module.name != "base":
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["FORMATS", "FormatSpec", "LabelTable", "register_format"]

"""Reading a stream entry's labels: the format's reader, found by name (`formats/`)."""

from __future__ import annotations

from pathlib import Path

from ..errors import UserError
from ..formats import FORMATS, LabelTable
from ..formats.eva import EVA_CATEGORIES

__all__ = ["EVA_CATEGORIES", "FORMATS", "LabelTable", "read_labels"]


def read_labels(entry: dict) -> LabelTable:
    """Read the label file of one stream entry (`name`, `format`, `root`, ...)."""
    fmt = entry["format"]
    if fmt not in FORMATS:
        raise UserError(
            f"stream entry '{entry['name']}': unknown format '{fmt}'; "
            f"use one of {sorted(FORMATS)}"
        )
    root = Path(entry["root"]).expanduser()
    if not root.is_dir():
        raise UserError(
            f"stream entry '{entry['name']}': dataset root {root} does not exist or is not "
            "a folder; set `root` to the folder that holds the dataset"
        )
    table = FORMATS[fmt].reader(entry, root)
    if table.frame.empty:
        raise UserError(f"{table.source}: no labelled image found; check the file's contents")
    return table

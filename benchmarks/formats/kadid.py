"""KADID-10k: `dmos.csv` (dist_img, ref_img, dmos, var), images and references in images/."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ._files import dataset_file
from .base import LabelTable, check_values, frame_of, quality_table, register_format
from .koniq import numbers, read_csv_columns

SCALE = (1.0, 5.0)  # "dmos" here is already higher-is-better: not flipped


@register_format("kadid", default_labels="dmos.csv", scale=SCALE, transform="crop")
def read_kadid(entry: dict, root: Path) -> LabelTable:
    source = dataset_file(root, entry.get("labels") or "dmos.csv", "KADID-10k")
    raw = read_csv_columns(source, ["dist_img", "ref_img", "dmos", "var"])
    scale = tuple(entry.get("scale") or SCALE)
    dmos = check_values(numbers(raw, "dmos", source), scale, source, "dmos",
                        lambda i: f"line {raw['line'].iloc[i]}")
    std = np.sqrt(np.clip(numbers(raw, "var", source).to_numpy(), 0, None))
    frame = frame_of([f"images/{n.strip()}" for n in raw["dist_img"]], dmos,
                     [r.strip() for r in raw["ref_img"]], std)
    return quality_table(entry, frame, scale, source, "dmos", "higher_better",
                         [f"line {n}" for n in raw["line"]])

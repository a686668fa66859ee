"""SPAQ (smartphone photos): `Annotations/MOS and Image attribute scores.xlsx`, `TestImage/`."""

from __future__ import annotations

from pathlib import Path

from ._files import cell_number, cell_text, dataset_file, header_table, sheet_rows
from .base import LabelTable, check_values, frame_of, quality_table, register_format

SCALE = (0.0, 100.0)
LABELS = "Annotations/MOS and Image attribute scores.xlsx"


@register_format("spaq", default_labels=LABELS, scale=SCALE, transform="crop")
def read_spaq(entry: dict, root: Path) -> LabelTable:
    source = dataset_file(root, entry.get("labels") or LABELS, "SPAQ")
    rows = sheet_rows(source)
    head, col = header_table(source, rows, ["Image name", "MOS"])
    ids, mos, lines = [], [], []
    for r in range(head + 1, len(rows)):
        name = cell_text(rows[r][col["Image name"]]) if len(rows[r]) > col["MOS"] else ""
        if not name:
            continue
        ids.append(f"TestImage/{name}")
        mos.append(cell_number(source, rows[r][col["MOS"]], r + 1, "MOS"))
        lines.append(r + 1)
    scale = tuple(entry.get("scale") or SCALE)
    values = check_values(mos, scale, source, "MOS", lambda i: f"row {lines[i]}")
    return quality_table(entry, frame_of(ids, values), scale, source, "MOS", "higher_better",
                         [f"row {n}" for n in lines])

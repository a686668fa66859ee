"""BID (blur image database): `DatabaseGrades.xls`, `ImageDatabase/DatabaseImage%04d.JPG`."""

from __future__ import annotations

from pathlib import Path

from ._files import cell_number, dataset_file, header_table, sheet_rows
from .base import LabelTable, check_values, frame_of, quality_table, register_format

SCALE = (0.0, 5.0)
NUMBER, GRADE = "Image Number", "Average Subjective Grade"


@register_format("bid", default_labels="DatabaseGrades.xls", scale=SCALE, transform="crop")
def read_bid(entry: dict, root: Path) -> LabelTable:
    source = dataset_file(root, entry.get("labels") or "DatabaseGrades.xls", "BID")
    rows = sheet_rows(source)
    head, col = header_table(source, rows, [NUMBER, GRADE])
    ids, mos, lines = [], [], []
    for r in range(head + 1, len(rows)):
        row = rows[r]
        if len(row) <= col[GRADE] or row[col[NUMBER]] in ("", None):
            continue
        number = int(cell_number(source, row[col[NUMBER]], r + 1, NUMBER))
        ids.append(f"ImageDatabase/DatabaseImage{number:04d}.JPG")
        mos.append(cell_number(source, row[col[GRADE]], r + 1, GRADE))
        lines.append(r + 1)
    scale = tuple(entry.get("scale") or SCALE)
    values = check_values(mos, scale, source, GRADE, lambda i: f"row {lines[i]}")
    return quality_table(entry, frame_of(ids, values), scale, source, GRADE, "higher_better",
                         [f"row {n}" for n in lines])

"""CSIQ: `csiq.DMOS.xlsx` (sheet `all_by_image`), images under `dst_imgs/<type>/`."""

from __future__ import annotations

from pathlib import Path

from ..errors import UserError
from ._files import cell_number, cell_text, dataset_file, header_table, sheet_rows
from .base import LabelTable, check_values, flip, frame_of, quality_table, register_format

SHEET = "all_by_image"
# dst_type -> (folder, the token in the file name `<ref>.<TOKEN>.<level>.png`)
TYPES = {
    "noise": ("awgn", "AWGN"), "jpeg": ("jpeg", "JPEG"), "jpeg 2000": ("jpeg2000", "jpeg2000"),
    "fnoise": ("fnoise", "fnoise"), "blur": ("blur", "BLUR"), "contrast": ("contrast", "contrast"),
}
SCALE = (0.0, 1.0)


@register_format("csiq", default_labels="csiq.DMOS.xlsx", scale=SCALE, transform="crop")
def read_csiq(entry: dict, root: Path) -> LabelTable:
    source = dataset_file(root, entry.get("labels") or "csiq.DMOS.xlsx", "CSIQ")
    rows = sheet_rows(source, SHEET)
    wanted = ["image", "dst_type", "dst_lev", "dmos_std", "dmos"]
    head, col = header_table(source, rows, wanted, SHEET)
    ids, dmos, refs, stds, lines = [], [], [], [], []
    for r in range(head + 1, len(rows)):
        row = rows[r]
        ref = cell_text(row[col["image"]]) if len(row) > col["image"] else ""
        if not ref:
            continue  # blank rows below the table
        line = r + 1  # Excel's row number
        kind = cell_text(row[col["dst_type"]]).lower()
        if kind not in TYPES:
            raise UserError(f"{source}, row {line}: dst_type '{kind}' is none of "
                            f"{list(TYPES)}; fix that row")
        folder, token = TYPES[kind]
        level = int(cell_number(source, row[col["dst_lev"]], line, "dst_lev"))
        ids.append(f"dst_imgs/{folder}/{ref}.{token}.{level}.png")
        dmos.append(cell_number(source, row[col["dmos"]], line, "dmos"))
        stds.append(cell_number(source, row[col["dmos_std"]], line, "dmos_std"))
        refs.append(ref)
        lines.append(line)
    scale = tuple(entry.get("scale") or SCALE)
    values = check_values(dmos, scale, source, "dmos", lambda i: f"row {lines[i]}")
    frame = frame_of(ids, flip(values, scale), refs, stds)
    return quality_table(entry, frame, scale, source, "dmos", "lower_better",
                         [f"row {n}" for n in lines])

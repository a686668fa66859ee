"""LIVE Release 2 (`databaserelease2/`): DMOS from MATLAB files, 29 references."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ..errors import UserError
from ._files import dataset_file, mat_numbers, mat_strings, same_length
from .base import LabelTable, check_values, flip, frame_of, quality_table, register_format

# The entries of dmos.mat, in MATLAB's order: these folders, img<i>.bmp from 1 in each.
FOLDERS = ("jp2k", "jpeg", "wn", "gblur", "fastfading")
COUNTS = (227, 233, 174, 174, 174)  # 982 entries in the real release
# Realigned DMOS is not bounded by [0, 100]; a value outside this range means a wrong file.
SCALE = (-10.0, 120.0)


@register_format("live", scale=SCALE, transform="crop")
def read_live(entry: dict, root: Path) -> LabelTable:
    """`dmos_realigned.mat` (`dmos_new`) when present, else `dmos.mat` (`dmos`); entries
    with `orgs` = 1 are copies of their reference and are excluded."""
    if entry.get("labels"):
        source = dataset_file(root, entry["labels"], "LIVE Release 2")
    else:
        realigned = root / "dmos_realigned.mat"
        source = realigned if realigned.is_file() else dataset_file(root, "dmos.mat",
                                                                     "LIVE Release 2")
    column = "dmos_new" if source.name == "dmos_realigned.mat" else "dmos"
    dmos = mat_numbers(source, column)
    orgs = mat_numbers(source, "orgs")
    refs_file = dataset_file(root, "refnames_all.mat", "LIVE Release 2")
    refs = mat_strings(refs_file, "refnames_all")
    std = mat_numbers(source, "dmos_std") if column == "dmos_new" else None
    arrays = {column: dmos, "orgs": orgs, **({"dmos_std": std} if std is not None else {})}
    same_length(source, arrays)
    same_length(refs_file, {f"{source.name}:{column}": dmos, "refnames_all": refs})
    ids = entry_paths(root, len(dmos), source)
    ref = orgs == 1
    scale = tuple(entry.get("scale") or SCALE)
    kept = np.flatnonzero(~ref)
    check_values(dmos[kept], scale, source, column, lambda i: f"{column}[{kept[i] + 1}]")
    frame = frame_of([ids[i] for i in kept], flip(dmos[kept], scale),
                     [refs[i] for i in kept], None if std is None else std[kept])
    excluded = [(ids[i], "reference copy (orgs = 1)") for i in np.flatnonzero(ref)]
    return quality_table(entry, frame, scale, source, column, "lower_better",
                         [f"{column}[{i + 1}]" for i in kept], excluded=excluded)


def entry_paths(root: Path, n: int, source: Path) -> list[str]:
    """`jp2k/img1.bmp` ... in the order of the label arrays."""
    counts = COUNTS if n == sum(COUNTS) else tuple(_largest_index(root / f) for f in FOLDERS)
    if sum(counts) != n:
        found = dict(zip(FOLDERS, counts, strict=True))
        raise UserError(f"{source}: {n} entries, but the folders hold img1..imgN with N = "
                        f"{found} ({sum(counts)} in all); the label file and the image "
                        "folders are from different copies of LIVE")
    return [f"{folder}/img{i}.bmp" for folder, k in zip(FOLDERS, counts, strict=True)
            for i in range(1, k + 1)]


def _largest_index(folder: Path) -> int:
    numbers = [int(m.group(1)) for p in folder.glob("img*.bmp")
               if (m := re.fullmatch(r"img(\d+)\.bmp", p.name))] if folder.is_dir() else []
    return max(numbers, default=0)

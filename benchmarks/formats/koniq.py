"""KonIQ-10k: `koniq10k_scores_and_distributions.csv` (MOS 1..5), official sets file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import UserError
from ._files import check_download, dataset_file
from .base import LabelTable, check_values, frame_of, quality_table, register_format

SCALE = (1.0, 5.0)
IMAGES = "1024x768"
SETS_FILE = "koniq10k_distributions_sets.csv"
SETS = {"training": "train", "validation": "val", "test": "test"}


def read_csv_columns(source: Path, columns: list[str]) -> pd.DataFrame:
    check_download(source, text=True)
    try:
        frame = pd.read_csv(source, dtype=str, keep_default_na=False, encoding="utf-8-sig",
                            skip_blank_lines=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise UserError(f"{source}: cannot parse as CSV ({exc}); re-download it") from None
    frame.columns = [c.strip() for c in frame.columns]
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise UserError(f"{source}, line 1: column(s) {missing} not in the header "
                        f"{list(frame.columns)[:12]}; this is not the dataset's own file")
    # Blank lines are kept by the parser so that each row knows its line in the file.
    frame["line"] = np.arange(2, len(frame) + 2)
    blank = (frame[columns] == "").all(axis=1)
    return frame[~blank].reset_index(drop=True)


def numbers(frame: pd.DataFrame, column: str, source: Path) -> pd.Series:
    values = pd.to_numeric(frame[column], errors="coerce")
    if values.isna().any():
        i = int(values.isna().to_numpy().nonzero()[0][0])
        raise UserError(f"{source}, line {frame['line'].iloc[i]}: {column} "
                        f"'{frame[column].iloc[i]}' is not a number; fix or remove that line")
    return values


@register_format("koniq", default_labels="koniq10k_scores_and_distributions.csv",
                 scale=SCALE, transform="crop")
def read_koniq(entry: dict, root: Path) -> LabelTable:
    source = dataset_file(root, entry.get("labels") or
                          "koniq10k_scores_and_distributions.csv", "KonIQ-10k")
    raw = read_csv_columns(source, ["image_name", "MOS", "SD"])
    scale = tuple(entry.get("scale") or SCALE)
    mos = check_values(numbers(raw, "MOS", source), scale, source, "MOS",
                       lambda i: f"line {raw['line'].iloc[i]}")
    ids = [f"{IMAGES}/{n.strip()}" for n in raw["image_name"]]
    frame = frame_of(ids, mos, stds=numbers(raw, "SD", source))
    parts = None
    sets = root / SETS_FILE
    if entry.get("official_split") is not False and sets.is_file():
        split = read_csv_columns(sets, ["image_name", "set"])
        unknown = ~split["set"].isin(list(SETS))
        if unknown.any():
            i = int(unknown.to_numpy().nonzero()[0][0])
            raise UserError(f"{sets}, line {split['line'].iloc[i]}: set "
                            f"'{split['set'].iloc[i]}' is none of {list(SETS)}")
        parts = {f"{IMAGES}/{n.strip()}": SETS[s] for n, s in
                 zip(split["image_name"], split["set"], strict=True)}
    return quality_table(entry, frame, scale, source, "MOS", "higher_better",
                         [f"line {n}" for n in raw["line"]], official_parts=parts,
                         official_source=str(sets) if parts is not None else "")

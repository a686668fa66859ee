"""Generic label files: a JSON list, or any CSV with an id and a score column."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import UserError
from .base import (
    LabelTable,
    check_range,
    entry_scale,
    image_id_of,
    labels_path,
    numeric,
    register_format,
    table,
)


@register_format("json")
def read_json(entry: dict, root: Path, scale: tuple[float, float] | None = None) -> LabelTable:
    """`[{"image_id", "score"}]` or Q-Align style `[{"image", "gt_score"}]` lists."""
    source = labels_path(entry, root)
    scale = scale or entry_scale(entry, source)
    try:
        items = json.loads(source.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{source}: not valid JSON ({exc}); check the file") from None
    if not isinstance(items, list):
        raise UserError(f"{source}: expected a JSON list of objects, found {type(items).__name__}")
    rows = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise UserError(f"{source}, item {i}: expected an object, found {item!r:.60}")
        if "image" in item:
            path = str(item["image"])
            rows.append((image_id_of(path), item.get("gt_score", item.get("score")), path))
        elif "image_id" in item:
            rows.append((str(item["image_id"]), item.get("score", item.get("gt_score")), ""))
        else:
            raise UserError(
                f"{source}, item {i}: needs 'image_id' and 'score' or 'image' and 'gt_score'"
            )
    frame = pd.DataFrame(rows, columns=["image_id", "score", "path"], dtype=object)
    frame["score"] = numeric(frame, "score", source, -1, unit="item")
    check_range(frame, scale, source, -1, unit="item")
    dup = frame["image_id"].duplicated()
    if dup.any():
        i = int(np.flatnonzero(dup.to_numpy())[0])
        raise UserError(f"{source}, item {i}: image {frame['image_id'].iloc[i]} is listed "
                        "twice; remove the duplicated item")
    return table(entry, frame, scale, source)


@register_format("csv")
def read_generic_csv(entry: dict, root: Path) -> LabelTable:
    """Any CSV with an id (or file name) column and a score column, names configurable."""
    source = labels_path(entry, root)
    cols = {"id": "image_id", "score": "score", "path": None, **(entry.get("columns") or {})}
    frame = read_simple_csv(source, cols["id"], cols["score"], cols["path"],
                             entry.get("delimiter") or ",")
    scale = entry_scale(entry, source)
    check_range(frame, scale, source, 1)
    return table(entry, frame, scale, source)


def read_simple_csv(source: Path, id_col: str, score_col: str, path_col: str | None,
                     sep: str) -> pd.DataFrame:
    try:
        raw = pd.read_csv(source, sep=sep, dtype=str, keep_default_na=False,
                          encoding="utf-8-sig", skipinitialspace=True)
    except pd.errors.ParserError as exc:
        raise UserError(f"{source}: cannot parse as '{sep}'-delimited CSV ({exc})") from None
    except pd.errors.EmptyDataError:
        raise UserError(f"{source}: the file is empty; give a label file with a header") from None
    raw.columns = [c.strip() for c in raw.columns]
    wanted = [c for c in (id_col, score_col, path_col) if c]
    missing = [c for c in wanted if c not in raw.columns]
    if missing:
        raise UserError(
            f"{source}, line 1: column(s) {missing} not in the header {list(raw.columns)[:12]}; "
            "check the delimiter or set `columns:` in the stream entry"
        )
    frame = pd.DataFrame({"image_id": raw[id_col].map(image_id_of)})
    frame["score"] = numeric(raw, score_col, source, 1)
    frame["path"] = raw[path_col].str.strip() if path_col else ""
    dup = frame["image_id"].duplicated()
    if dup.any():
        row = int(np.flatnonzero(dup.to_numpy())[0])
        raise UserError(
            f"{source}, line {row + 2}: image {frame['image_id'].iloc[row]} is listed twice; "
            "remove the duplicated line"
        )
    return frame

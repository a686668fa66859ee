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
    given = entry.get("columns") or {}
    unknown = sorted(set(given) - {"id", "score", "path"})
    if unknown:
        raise UserError(f"stream entry '{entry['name']}': columns: {unknown} unknown; give "
                        "`id`, `score` and optionally `path`")
    if any(isinstance(v, int) for v in given.values()):
        cols = _positions(entry, given)
    else:
        cols = {"id": "image_id", "score": "score", "path": None, **given}
    frame = read_simple_csv(source, cols["id"], cols["score"], cols["path"],
                             entry.get("delimiter") or ",")
    scale = entry_scale(entry, source)
    check_range(frame, scale, source, 0 if isinstance(cols["score"], int) else 1)
    return table(entry, frame, scale, source)


def _positions(entry: dict, given: dict) -> dict:
    """`columns: {path: 0, score: 1}`: 0-based positions in a file without a header."""
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0
               for v in given.values()):
        raise UserError(f"stream entry '{entry['name']}': columns {given} mixes names and "
                        "positions; give every column by its header name, or every one by its "
                        "0-based position (a file without a header)")
    if "score" not in given or not ({"id", "path"} & set(given)):
        raise UserError(f"stream entry '{entry['name']}': columns {given}: by position, "
                        "give `score` and `id` or `path`")
    return {"id": given.get("id", given.get("path")), "score": given["score"],
            "path": given.get("path")}


def read_simple_csv(source: Path, id_col: str | int, score_col: str | int,
                    path_col: str | int | None, sep: str) -> pd.DataFrame:
    """Id, score (and path) columns by header name, or by 0-based position (ints: the file
    has no header, so row r is line r + 1)."""
    by_position = isinstance(score_col, int)
    try:
        raw = pd.read_csv(source, sep=sep, dtype=str, keep_default_na=False,
                          encoding="utf-8-sig", skipinitialspace=True,
                          header=None if by_position else "infer")
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise UserError(f"{source}: cannot parse as '{sep}'-delimited CSV "
                        f"({str(exc).splitlines()[0]}); check the delimiter, or re-download "
                        "it") from None
    except pd.errors.EmptyDataError:
        raise UserError(f"{source}: the file is empty; give a label file with a header") from None
    header = 0 if by_position else 1
    if not by_position:
        raw.columns = [c.strip() for c in raw.columns]
    wanted = [c for c in (id_col, score_col, path_col) if c is not None]
    missing = [c for c in wanted if c not in raw.columns]
    if missing and by_position:
        raise UserError(f"{source}, line 1: column position(s) {missing} beyond its "
                        f"{raw.shape[1]} '{sep}'-delimited columns (positions count from 0); "
                        "check `delimiter` and `columns:` (a BIQA_CL list, path<TAB>score, "
                        "is `format: list`)")
    if missing:
        hint = (" (a file without a header? give `columns:` by 0-based position, e.g. "
                "{path: 0, score: 1}, or use `format: list` for a BIQA_CL list)"
                if any(_is_number(c) for c in raw.columns) else "")
        raise UserError(
            f"{source}, line 1: column(s) {missing} not in the header {list(raw.columns)[:12]}; "
            f"check the delimiter or set `columns:` in the stream entry{hint}"
        )
    frame = pd.DataFrame({"image_id": raw[id_col].map(image_id_of)})
    frame["score"] = numeric(raw, score_col, source, header)
    frame["path"] = raw[path_col].str.strip() if path_col is not None else ""
    dup = frame["image_id"].duplicated()
    if dup.any():
        row = int(np.flatnonzero(dup.to_numpy())[0])
        raise UserError(
            f"{source}, line {row + 1 + header}: image {frame['image_id'].iloc[row]} is "
            "listed twice; remove the duplicated line"
            + (" (format csv names an image by its file stem; images of one name in several "
               "folders, as in a BIQA_CL list, are `format: list`)" if path_col is not None
               else "")
        )
    return frame


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True

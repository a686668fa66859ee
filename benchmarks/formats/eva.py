"""EVA: `data/votes_filtered.csv` ('='-delimited votes), content categories."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import UserError
from ._files import check_download
from .base import LabelTable, check_range, first_line, labels_path, numeric, register_format, table
from .generic import read_simple_csv

EVA_VOTE_COLUMNS = [
    "image_id", "user_id", "score", "difficulty", "visual", "composition",
    "quality", "semantic", "vote_time", "1", "2", "3", "4",
]
EVA_CATEGORIES = {
    1: "animals", 2: "architecture", 3: "human", 4: "natural", 5: "still_life", 6: "other",
}


@register_format("eva", default_labels="data/votes_filtered.csv", scale=(0.0, 10.0))
def read_eva(entry: dict, root: Path) -> LabelTable:
    """EVA: `=`-delimited votes (mean score per image), or a simple `image_id,score` CSV."""
    source = labels_path(entry, root)
    header = first_line(source)
    if header.split("=") == EVA_VOTE_COLUMNS:
        try:  # the C parser is fast; the Python one names the bad line
            frame = pd.read_csv(source, sep="=", dtype=str, engine="c",
                                keep_default_na=False, on_bad_lines="error")
        except pd.errors.ParserError:
            frame = pd.read_csv(source, sep="=", dtype=str, engine="python",
                                keep_default_na=False, on_bad_lines=_bad_line(source, 13))
        frame["score"] = numeric(frame, "score", source, 1)
        frame["image_id"] = frame["image_id"].str.strip()
        check_range(frame, (0.0, 10.0), source, 1)
        # Many votes per image are normal: the image's score is their mean.
        frame = frame.groupby("image_id", sort=True, as_index=False)["score"].mean()
    elif [c.strip() for c in header.split(",")][:2] == ["image_id", "score"]:
        frame = read_simple_csv(source, "image_id", "score", None, ",")
        check_range(frame, (0.0, 10.0), source, 1)
    else:
        raise UserError(
            f"{source}, line 1: header '{header[:80]}' is neither EVA's '='-delimited "
            f"'{'='.join(EVA_VOTE_COLUMNS)}' nor 'image_id,score'; "
            "check the delimiter and the file"
        )
    categories = _eva_categories(root, entry)
    if entry.get("split_by") == "category" and not categories:
        raise UserError(
            f"stream entry '{entry['name']}': split_by: category needs "
            f"{root / 'data/image_content_category.csv'}, which is missing"
        )
    return table(entry, frame, (0.0, 10.0), source, categories=categories)


def _eva_categories(root: Path, entry: dict) -> dict[str, str]:
    path = root / "data" / "image_content_category.csv"
    if not path.is_file():
        return {}
    # The real file starts with a UTF-8 BOM and quotes every field.
    check_download(path, text=True)
    try:
        frame = pd.read_csv(path, encoding="utf-8-sig", dtype=str)
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot parse as CSV ({str(exc).splitlines()[0]}); "
                        "re-download it") from None
    if list(frame.columns) != ["image_id", "sort"]:
        raise UserError(
            f"{path}, line 1: expected the header \"image_id\",\"sort\", found "
            f"{list(frame.columns)}"
        )
    sort = numeric(frame, "sort", path, 1).astype(int)
    unknown = ~sort.isin(list(EVA_CATEGORIES))
    if unknown.any():
        row = int(np.flatnonzero(unknown.to_numpy())[0])
        raise UserError(f"{path}, line {row + 2}: category {sort.iloc[row]} is not 1..6")
    ids = frame["image_id"].str.strip()
    return {i: EVA_CATEGORIES[int(s)] for i, s in zip(ids, sort, strict=True)}


def _bad_line(source: Path, expected: int) -> Callable:
    def handler(fields: list[str]) -> None:
        raise UserError(
            f"{source}: a line has {len(fields)} fields where {expected} are expected "
            f"(first field '{fields[0] if fields else ''}'); check the delimiter and that line"
        )

    return handler



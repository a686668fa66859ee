"""AVA: `AVA.txt` (15 space-separated columns) and the official `generic_test.jpgl`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import UserError
from ._files import check_download
from .base import LabelTable, image_id_of, labels_path, register_format, table
from .generic import read_json

AVA_COLUMNS = 15


@register_format("ava", default_labels="AVA.txt", scale=(1.0, 10.0))
def read_ava(entry: dict, root: Path) -> LabelTable:
    """AVA: `AVA.txt` (15 space-separated columns), or a JSON label list."""
    source = labels_path(entry, root)
    if source.suffix.lower() == ".json":
        labels = read_json(entry, root, scale=(1.0, 10.0))
        return LabelTable(labels.name, labels.frame, labels.scale, labels.source,
                          **_ava_official_test(root, entry))
    frame = _read_ava_fast(source)
    if frame is None:  # something is off: the line-by-line reader says where
        frame = _read_ava_lines(source)
    return table(entry, frame, (1.0, 10.0), source, **_ava_official_test(root, entry))


def _read_ava_fast(source: Path) -> pd.DataFrame | None:
    """A well-formed AVA.txt, parsed vectorised (255k lines in well under a second)."""
    # Only the id as text (a string per field would cost ~200 MB at AVA's size); the last
    # column is read so that a short line shows up as missing values.
    columns = [1, *range(2, 12), AVA_COLUMNS - 1]
    try:
        raw = pd.read_csv(source, sep=r"\s+", header=None, engine="c", usecols=columns,
                          dtype={c: (str if c == 1 else np.int64) for c in columns},
                          encoding="utf-8", encoding_errors="replace")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError, TypeError):
        return None
    counts = raw[list(range(2, 12))].to_numpy()
    total = counts.sum(axis=1)
    if raw[1].isna().any() or (total <= 0).any() or (counts < 0).any() \
            or raw[1].duplicated().any():
        return None
    # Integer sums, one division: the same floats as the line-by-line reader.
    score = (counts * np.arange(1, 11)).sum(axis=1) / total
    return pd.DataFrame({"image_id": raw[1].to_numpy(), "score": score})


def _read_ava_lines(source: Path) -> pd.DataFrame:
    rows = []
    with open(source, encoding="utf-8", errors="replace") as fh:
        for lineno, line in enumerate(fh, 1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) != AVA_COLUMNS:
                raise UserError(
                    f"{source}, line {lineno}: {len(fields)} fields where AVA.txt has "
                    f"{AVA_COLUMNS} space-separated ones (index, image_id, 10 vote counts, "
                    "2 tags, challenge); check the delimiter and that line"
                )
            try:
                counts = [int(v) for v in fields[2:12]]
            except ValueError:
                raise UserError(
                    f"{source}, line {lineno}: vote counts {fields[2:12]} are not all "
                    "integers; fix or remove that line"
                ) from None
            total = sum(counts)
            if total <= 0 or min(counts) < 0:
                raise UserError(
                    f"{source}, line {lineno}: image {fields[1]} has no valid votes "
                    f"({counts}); fix or remove that line"
                )
            score = sum(k * c for k, c in zip(range(1, 11), counts, strict=False)) / total
            rows.append((fields[1], score, lineno))
    frame = pd.DataFrame(rows, columns=["image_id", "score", "line"])
    dup = frame["image_id"].duplicated()
    if dup.any():
        first = frame[dup].iloc[0]
        raise UserError(
            f"{source}, line {first['line']}: image {first['image_id']} is listed twice; "
            "remove the duplicated line"
        )
    return frame[["image_id", "score"]]


def _ava_official_test(root: Path, entry: dict) -> dict:
    """The official test ids and their file, as LabelTable fields (none if not used)."""
    path = root / "aesthetics_image_lists" / "generic_test.jpgl"
    if entry.get("official_split") is False or not path.is_file():
        return {}
    check_download(path, text=True)
    with open(path, encoding="utf-8", errors="replace") as fh:
        ids = {image_id_of(line) for line in fh if line.strip()}
    return {"official_test": ids, "official_source": str(path)}



"""The field's list files (BIQA_CL / UNIQUE): `path<TAB>score[<TAB>std]`, no header.

Lines end in LF, CRLF or a bare CR (BIQA_CL's own files use bare CR). As
split lists they decide the splits (`benchmarks.split_lists`); as `format:
list` the same files are the label source (with `scale:` and `direction:`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from ..errors import UserError
from ._files import check_download
from .base import LabelTable, entry_scale, flip, frame_of, quality_table, register_format

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
DIRECTIONS = ("higher_better", "lower_better")


@dataclass(frozen=True)
class ListLine:
    file: Path
    line: int
    path: str
    score: float | None
    std: float | None


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if np.isfinite(value) else None


def read_list(file: Path, root: Path, what: str = "split list") -> list[ListLine]:
    """Every non-blank line of a list file; paths checked to stay inside `root`."""
    if not file.is_file():
        key = "`splits` (paths are relative to the dataset root, `{k}` is data.split)" \
            if what == "split list" else "`labels` (relative to the dataset root)"
        raise UserError(f"{what} {file} not found; check the entry's {key}")
    if file.stat().st_size:  # an empty list is an empty split (said by the caller)
        check_download(file, text=True)
    text = file.read_bytes().decode("utf-8-sig", errors="replace")
    root = root.resolve()
    out = []
    for n, line in enumerate(re.split(r"\r\n|\r|\n", text), 1):
        fields = line.split("\t") if "\t" in line else line.split()
        fields = [f.strip() for f in fields if f.strip()]
        if not fields:
            continue
        if len(fields) >= 2 and _number(fields[1]) is None:
            if fields[1].lower().endswith(IMAGE_SUFFIXES):
                stem = file.name.removesuffix(".txt")
                raise UserError(
                    f"{file}, line {n}: two image paths on one line: this is a BIQA_CL pair "
                    f"file (image pairs for its fidelity loss); name the matching list of "
                    f"single images, {stem}_score.txt, instead")
            raise UserError(f"{file}, line {n}: score '{fields[1]}' is not a number; each "
                            "line is `path<TAB>score[<TAB>std]` or a path alone")
        path = fields[0].replace("\\", "/")
        if PurePosixPath(path).is_absolute() or not (root / path).resolve().is_relative_to(root):
            raise UserError(f"{file}, line {n}: path {path} leaves the dataset root {root}; "
                            "list paths relative to the root")
        score = _number(fields[1]) if len(fields) > 1 else None
        std = _number(fields[2]) if len(fields) > 2 else None
        out.append(ListLine(file, n, path, score, std))
    return out


@register_format("list", transform="crop")
def read_list_labels(entry: dict, root: Path) -> LabelTable:
    """Labels from list files: `labels:`, else the union of the entry's `splits` lists."""
    if entry.get("labels"):
        files = [root / entry["labels"]]
    elif entry.get("splits"):
        files = [root / f for f in entry["splits"].values()]
    else:
        raise UserError(f"stream entry '{entry['name']}': format 'list' needs `labels` (a "
                        "list file) or `splits`")
    direction = entry.get("direction")
    if direction not in DIRECTIONS:
        raise UserError(f"stream entry '{entry['name']}': format 'list' needs `direction: "
                        f"higher_better` or `lower_better` (got {direction!r})")
    source = files[0]
    scale = entry_scale(entry, source)
    seen: dict[str, ListLine] = {}
    for file in files:
        for item in read_list(file, root, "label list" if entry.get("labels") else "split list"):
            if item.score is None:
                raise UserError(f"{file}, line {item.line}: no score after the path; a "
                                "label list needs `path<TAB>score`")
            if not scale[0] <= item.score <= scale[1]:
                raise UserError(f"{file}, line {item.line}: score {item.score:g} is outside "
                                f"the entry's scale [{scale[0]:g}, {scale[1]:g}]; fix the "
                                "score or the `scale`")
            if item.path in seen:
                first = seen[item.path]
                raise UserError(f"{file}, line {item.line}: {item.path} is listed again "
                                f"({first.file.name}, line {first.line}); an image has one "
                                "score: remove the duplicate")
            seen[item.path] = item
    items = list(seen.values())
    scores = np.array([i.score for i in items])
    if direction == "lower_better":
        scores = flip(scores, scale)
    frame = frame_of([i.path for i in items], scores,
                     stds=[np.nan if i.std is None else i.std for i in items])
    return quality_table(entry, frame, scale, source, "score (column 2)", direction)

"""What every label reader shares: the table it returns, the registry, the checks.

A reader takes a stream entry (the dict from the config) and the dataset root
and returns a `LabelTable`: one row per image with `image_id` (str), `score`
(float, oriented so that higher is better, on the format's scale), `path`
(relative to the root, or empty when the image is found by id) and, where the
dataset has them, `ref` (the reference image it was made from: its content
group) and `std`. A new format is one module in this package with a function
decorated by `@register_format`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd

from ..errors import UserError
from ._files import check_download

COLUMNS = ["image_id", "score", "path", "ref", "std"]


@dataclass
class LabelTable:
    """One dataset's labels: `frame` has COLUMNS (id-based formats: the first three)."""

    name: str
    frame: pd.DataFrame
    scale: tuple[float, float]
    source: Path
    official_test: set[str] | None = None
    categories: dict[str, str] = field(default_factory=dict)  # image_id -> category name
    official_unlabelled: list[str] = field(default_factory=list)  # official test ids not here
    # Official train / val / test per id (KonIQ's sets file), where a dataset ships one.
    official_parts: dict[str, str] | None = None
    official_source: str = ""  # the file of the official split (test list, sets file)
    # Rows left out by design (LIVE's reference copies, CLIVE's training images): id, reason.
    excluded: list[tuple[str, str]] = field(default_factory=list)
    # Where the score came from: file, column, direction, scale (recorded in results.json).
    label_info: dict = field(default_factory=dict)
    # Ids are paths relative to the root (new formats), not ids shared across datasets.
    path_ids: bool = False

    def __post_init__(self) -> None:
        if not self.label_info:
            self.label_info = {"file": str(self.source), "column": "score",
                               "direction": "higher_better", "scale": list(self.scale)}
        if self.official_test is not None and not self.official_unlabelled:
            ids = set(self.frame["image_id"])
            self.official_unlabelled = sorted((i for i in self.official_test if i not in ids),
                                              key=lambda i: (len(i), i))

    @property
    def has_refs(self) -> bool:
        return "ref" in self.frame and bool((self.frame["ref"] != "").any())


@dataclass(frozen=True)
class FormatSpec:
    reader: Callable[[dict, Path], LabelTable]
    default_labels: str | None
    scale: tuple[float, float] | None  # None: the entry must give `scale`
    transform: str = "resize"  # the default `transform:` of the format's entries


FORMATS: dict[str, FormatSpec] = {}


def register_format(name: str, default_labels: str | None = None,
                    scale: tuple[float, float] | None = None,
                    transform: str = "resize") -> Callable:
    """Register a label reader under `name` (the `format:` of a stream entry).

    `transform`: `resize` (aesthetics: the whole photo matters) or `crop` (quality:
    crops at the image's own resolution keep the distortion)."""

    def wrap(fn: Callable[[dict, Path], LabelTable]) -> Callable:
        FORMATS[name] = FormatSpec(fn, default_labels, scale, transform)
        return fn

    return wrap


def labels_path(entry: dict, root: Path) -> Path:
    spec = FORMATS[entry["format"]]
    rel = entry.get("labels") or spec.default_labels
    if rel is None:
        raise UserError(
            f"stream entry '{entry['name']}': format '{entry['format']}' needs `labels` "
            "(the label file, relative to the root or absolute)"
        )
    path = Path(rel).expanduser()
    path = path if path.is_absolute() else root / path
    if not path.is_file():
        raise UserError(
            f"stream entry '{entry['name']}': label file {path} not found; "
            "set `labels` to the label file's path"
        )
    return check_download(path, text=True)  # eva, ava, json, csv: text files


def entry_scale(entry: dict, source: Path) -> tuple[float, float]:
    spec = FORMATS[entry["format"]]
    scale = entry.get("scale") or spec.scale
    if scale is None:
        raise UserError(
            f"{source}: stream entry '{entry['name']}' needs `scale: [low, high]`, "
            "the range of its scores"
        )
    lo, hi = (float(v) for v in scale)
    if not hi > lo:
        raise UserError(f"stream entry '{entry['name']}': scale {scale} must be [low, high]")
    return lo, hi


def image_id_of(value: str) -> str:
    """The id of an image named by a path or a file name: its stem."""
    return PurePosixPath(str(value).strip().replace("\\", "/")).stem


def rel_path(value) -> str:
    """A path as the label files write it, relative to the root, with '/' separators."""
    return str(value).strip().replace("\\", "/")


def flip(values: np.ndarray, scale: tuple[float, float]) -> np.ndarray:
    """Lower-is-better scores as higher-is-better on the same range: lo + hi - x."""
    return scale[0] + scale[1] - np.asarray(values, dtype=np.float64)


def frame_of(ids, scores, refs=None, stds=None) -> pd.DataFrame:
    """A label frame whose ids are paths relative to the root (the new formats)."""
    ids = [rel_path(i) for i in ids]
    n = len(ids)
    return pd.DataFrame({
        "image_id": ids, "score": np.asarray(scores, dtype=np.float64), "path": ids,
        "ref": [str(r) for r in refs] if refs is not None else [""] * n,
        "std": np.asarray(stds, dtype=np.float64) if stds is not None else np.full(n, np.nan),
    })


def quality_table(entry: dict, frame: pd.DataFrame, scale: tuple[float, float],
                  source: Path, column: str, direction: str, where: list[str] | None = None,
                  **extra) -> LabelTable:
    """The table of a quality dataset: path ids, duplicates refused, provenance recorded.

    `where[i]`: how the file names frame row i (`row 12`, `line 40`, `dmos[7]`)."""
    dup = frame["image_id"].duplicated()
    if dup.any():
        row = int(np.flatnonzero(dup.to_numpy())[0])
        at = where[row] if where else f"entry {row + 1}"
        raise UserError(f"{source}, {at}: image {frame['image_id'].iloc[row]} is listed "
                        "twice; remove the duplicated entry")
    info = {"file": str(source), "column": column, "direction": direction,
            "scale": list(scale)}
    if direction == "lower_better":
        info["target"] = f"{scale[0]:g} + {scale[1]:g} - {column} (flipped: higher is better)"
    return LabelTable(entry["name"], frame.reset_index(drop=True), scale, source,
                      label_info=info, path_ids=True, **extra)


def first_line(path: Path) -> str:
    with open(path, encoding="utf-8-sig", errors="replace") as fh:
        return fh.readline().rstrip("\r\n")


def numeric(frame: pd.DataFrame, column: str, source: Path, header_lines: int,
             unit: str = "line") -> pd.Series:
    """Column as floats; a non-numeric or non-finite value is an error naming its line.

    Row r of `frame` is `unit` r + 1 + header_lines of the file (JSON: item r, offset -1).
    """
    values = pd.to_numeric(frame[column], errors="coerce")
    bad = ~np.isfinite(values.to_numpy(dtype=float))
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise UserError(
            f"{source}, {unit} {row + 1 + header_lines}: {column} "
            f"'{frame[column].iloc[row]}' is not a finite number; fix or remove that line"
        )
    return values.astype(float)


def check_range(frame: pd.DataFrame, scale: tuple[float, float], source: Path,
                 header_lines: int, unit: str = "line") -> None:
    lo, hi = scale
    out = (frame["score"] < lo) | (frame["score"] > hi)
    if out.any():
        row = int(np.flatnonzero(out.to_numpy())[0])
        raise UserError(
            f"{source}, {unit} {row + 1 + header_lines}: score {frame['score'].iloc[row]} of "
            f"image {frame['image_id'].iloc[row]} is outside the scale [{lo:g}, {hi:g}]; "
            "fix the score or the entry's `scale`"
        )


def table(entry: dict, frame: pd.DataFrame, scale, source: Path, **extra) -> LabelTable:
    """The table of an id-based format (EVA, AVA, csv, json): no `ref` or `std` columns
    (AVA's 255k rows need none of them)."""
    if "path" not in frame:
        frame["path"] = ""
    return LabelTable(entry["name"], frame[["image_id", "score", "path"]].reset_index(drop=True),
                      scale, source, **extra)




def check_values(values, scale: tuple[float, float], source: Path, column: str,
                 where: Callable[[int], str]) -> np.ndarray:
    """Finite and within the format's range, or an error naming the row (`where(i)`)."""
    v = np.asarray(values, dtype=np.float64)
    lo, hi = scale
    bad = ~np.isfinite(v) | (v < lo) | (v > hi)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise UserError(
            f"{source}, {where(i)}: {column} {v[i]:g} is outside [{lo:g}, {hi:g}], the range "
            "of this format's scores; check that this is the dataset's own label file, or "
            "set the entry's `scale`"
        )
    return v

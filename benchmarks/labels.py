"""Label-file readers: every format becomes the same small table.

A reader takes a stream entry (the dict from the config) and the dataset root
and returns a `LabelTable`: one row per image with `image_id` (str), `score`
(float, on the dataset's own scale) and `path` (relative to the root, or
empty when the image is found by id), plus the score range and, where the
dataset has one, its official test split. New formats are one function
decorated with `@register_format`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd

from .errors import UserError

EVA_VOTE_COLUMNS = [
    "image_id", "user_id", "score", "difficulty", "visual", "composition",
    "quality", "semantic", "vote_time", "1", "2", "3", "4",
]
EVA_CATEGORIES = {
    1: "animals", 2: "architecture", 3: "human", 4: "natural", 5: "still_life", 6: "other",
}
AVA_COLUMNS = 15


@dataclass
class LabelTable:
    """One dataset's labels: `frame` has columns image_id, score, path."""

    name: str
    frame: pd.DataFrame
    scale: tuple[float, float]
    source: Path
    official_test: set[str] | None = None
    categories: dict[str, str] = field(default_factory=dict)  # image_id -> category name
    official_unlabelled: list[str] = field(default_factory=list)  # official test ids not here

    def __post_init__(self) -> None:
        if self.official_test is not None and not self.official_unlabelled:
            ids = set(self.frame["image_id"])
            self.official_unlabelled = sorted((i for i in self.official_test if i not in ids),
                                              key=lambda i: (len(i), i))


@dataclass(frozen=True)
class FormatSpec:
    reader: Callable[[dict, Path], LabelTable]
    default_labels: str | None
    scale: tuple[float, float] | None  # None: the entry must give `scale`


FORMATS: dict[str, FormatSpec] = {}


def register_format(name: str, default_labels: str | None = None,
                    scale: tuple[float, float] | None = None) -> Callable:
    """Register a label reader under `name` (the `format:` of a stream entry)."""

    def wrap(fn: Callable[[dict, Path], LabelTable]) -> Callable:
        FORMATS[name] = FormatSpec(fn, default_labels, scale)
        return fn

    return wrap


def read_labels(entry: dict) -> LabelTable:
    """Read the label file of one stream entry (`name`, `format`, `root`, ...)."""
    fmt = entry["format"]
    if fmt not in FORMATS:
        raise UserError(
            f"stream entry '{entry['name']}': unknown format '{fmt}'; "
            f"use one of {sorted(FORMATS)}"
        )
    root = Path(entry["root"]).expanduser()
    if not root.is_dir():
        raise UserError(
            f"stream entry '{entry['name']}': dataset root {root} does not exist or is not "
            "a folder; set `root` to the folder that holds the dataset"
        )
    table = FORMATS[fmt].reader(entry, root)
    if table.frame.empty:
        raise UserError(f"{table.source}: no labelled image found; check the file's contents")
    return table


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
    return path


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


def _first_line(path: Path) -> str:
    with open(path, encoding="utf-8-sig", errors="replace") as fh:
        return fh.readline().rstrip("\r\n")


def _numeric(frame: pd.DataFrame, column: str, source: Path, header_lines: int,
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


def _check_range(frame: pd.DataFrame, scale: tuple[float, float], source: Path,
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


def _table(entry: dict, frame: pd.DataFrame, scale, source: Path, **extra) -> LabelTable:
    if "path" not in frame:
        frame["path"] = ""
    frame = frame[["image_id", "score", "path"]].reset_index(drop=True)
    return LabelTable(entry["name"], frame, scale, source, **extra)


# -- EVA ----------------------------------------------------------------------------------

@register_format("eva", default_labels="data/votes_filtered.csv", scale=(0.0, 10.0))
def read_eva(entry: dict, root: Path) -> LabelTable:
    """EVA: `=`-delimited votes (mean score per image), or a simple `image_id,score` CSV."""
    source = labels_path(entry, root)
    header = _first_line(source)
    if header.split("=") == EVA_VOTE_COLUMNS:
        try:  # the C parser is fast; the Python one names the bad line
            frame = pd.read_csv(source, sep="=", dtype=str, engine="c",
                                keep_default_na=False, on_bad_lines="error")
        except pd.errors.ParserError:
            frame = pd.read_csv(source, sep="=", dtype=str, engine="python",
                                keep_default_na=False, on_bad_lines=_bad_line(source, 13))
        frame["score"] = _numeric(frame, "score", source, 1)
        frame["image_id"] = frame["image_id"].str.strip()
        _check_range(frame, (0.0, 10.0), source, 1)
        # Many votes per image are normal: the image's score is their mean.
        frame = frame.groupby("image_id", sort=True, as_index=False)["score"].mean()
    elif [c.strip() for c in header.split(",")][:2] == ["image_id", "score"]:
        frame = _read_simple_csv(source, "image_id", "score", None, ",")
        _check_range(frame, (0.0, 10.0), source, 1)
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
    return _table(entry, frame, (0.0, 10.0), source, categories=categories)


def _eva_categories(root: Path, entry: dict) -> dict[str, str]:
    path = root / "data" / "image_content_category.csv"
    if not path.is_file():
        return {}
    # The real file starts with a UTF-8 BOM and quotes every field.
    frame = pd.read_csv(path, encoding="utf-8-sig", dtype=str)
    if list(frame.columns) != ["image_id", "sort"]:
        raise UserError(
            f"{path}, line 1: expected the header \"image_id\",\"sort\", found "
            f"{list(frame.columns)}"
        )
    sort = _numeric(frame, "sort", path, 1).astype(int)
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


# -- AVA ----------------------------------------------------------------------------------

@register_format("ava", default_labels="AVA.txt", scale=(1.0, 10.0))
def read_ava(entry: dict, root: Path) -> LabelTable:
    """AVA: `AVA.txt` (15 space-separated columns), or a JSON label list."""
    source = labels_path(entry, root)
    if source.suffix.lower() == ".json":
        table = read_json(entry, root, scale=(1.0, 10.0))
        return LabelTable(table.name, table.frame, table.scale, table.source,
                          official_test=_ava_official_test(root, entry))
    frame = _read_ava_fast(source)
    if frame is None:  # something is off: the line-by-line reader says where
        frame = _read_ava_lines(source)
    return _table(entry, frame, (1.0, 10.0), source,
                  official_test=_ava_official_test(root, entry))


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


def _ava_official_test(root: Path, entry: dict) -> set[str] | None:
    if entry.get("official_split") is False:
        return None
    path = root / "aesthetics_image_lists" / "generic_test.jpgl"
    if not path.is_file():
        return None
    with open(path, encoding="utf-8") as fh:
        return {image_id_of(line) for line in fh if line.strip()}


# -- JSON and generic CSV -----------------------------------------------------------------

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
    frame["score"] = _numeric(frame, "score", source, -1, unit="item")
    _check_range(frame, scale, source, -1, unit="item")
    dup = frame["image_id"].duplicated()
    if dup.any():
        i = int(np.flatnonzero(dup.to_numpy())[0])
        raise UserError(f"{source}, item {i}: image {frame['image_id'].iloc[i]} is listed "
                        "twice; remove the duplicated item")
    return _table(entry, frame, scale, source)


@register_format("csv")
def read_generic_csv(entry: dict, root: Path) -> LabelTable:
    """Any CSV with an id (or file name) column and a score column, names configurable."""
    source = labels_path(entry, root)
    cols = {"id": "image_id", "score": "score", "path": None, **(entry.get("columns") or {})}
    frame = _read_simple_csv(source, cols["id"], cols["score"], cols["path"],
                             entry.get("delimiter") or ",")
    scale = entry_scale(entry, source)
    _check_range(frame, scale, source, 1)
    return _table(entry, frame, scale, source)


def _read_simple_csv(source: Path, id_col: str, score_col: str, path_col: str | None,
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
    frame["score"] = _numeric(raw, score_col, source, 1)
    frame["path"] = raw[path_col].str.strip() if path_col else ""
    dup = frame["image_id"].duplicated()
    if dup.any():
        row = int(np.flatnonzero(dup.to_numpy())[0])
        raise UserError(
            f"{source}, line {row + 2}: image {frame['image_id'].iloc[row]} is listed twice; "
            "remove the duplicated line"
        )
    return frame

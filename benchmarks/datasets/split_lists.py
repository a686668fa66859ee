"""A stream entry's `splits: {train: F, val: F, test: F}`: the field's split lists.

The lists decide the splits exactly; labels still come from the dataset's label
file. A listed image the label file does not know is an error naming the file
and line; labelled images in no list are excluded (counted, never dropped).
"""

from __future__ import annotations

from pathlib import Path

from ..errors import UserError
from ..formats.base import LabelTable, image_id_of
from ..formats.listfile import read_list
from .splits import PARTS


def fill_k(entry: dict, k: int) -> dict:
    """`{k}` in a list path is `data.split` (the field reports over splits 1..10)."""
    if not entry.get("splits"):
        return entry
    splits = entry["splits"]
    if not isinstance(splits, dict) or not set(splits) <= set(PARTS) or \
            not {"train", "test"} <= set(splits):
        raise UserError(f"stream entry '{entry['name']}': splits must be a mapping with "
                        f"train and test (and optionally val) list files, got {splits!r}")
    return {**entry, "splits": {p: str(f).replace("{k}", str(k)) for p, f in splits.items()}}


def split_files(entry: dict, root: Path) -> dict[str, Path]:
    return {p: (root / f) for p, f in entry["splits"].items()}


def assign_parts(entry: dict, root: Path, table: LabelTable
                 ) -> tuple[dict[str, str], list[tuple[str, str]]]:
    """id -> part from the lists, and the labelled ids no list names (excluded)."""
    labelled = set(table.frame["image_id"])
    by_design = dict(table.excluded)
    parts: dict[str, str] = {}
    where: dict[str, str] = {}
    for part, file in split_files(entry, root).items():
        for item in read_list(file, root):
            image_id = item.path if table.path_ids else image_id_of(item.path)
            if image_id in by_design:
                raise UserError(f"{file}, line {item.line}: {item.path} is left out by design "
                                f"({by_design[image_id]}); remove it from the list")
            if image_id not in labelled:
                raise UserError(f"{file}, line {item.line}: {item.path} is not in the label "
                                f"file {table.source}; the list and the labels are from "
                                "different copies of the dataset, or the path is misspelt")
            if image_id in parts and parts[image_id] != part:
                raise UserError(f"{file}, line {item.line}: {item.path} is also in the "
                                f"{parts[image_id]} list ({where[image_id]}); an image "
                                "belongs to one split")
            parts[image_id] = part
            where[image_id] = f"{file.name}, line {item.line}"
    excluded = [(i, "in no split list") for i in table.frame["image_id"] if i not in parts]
    return parts, excluded

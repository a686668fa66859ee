"""The one place that decides train / validation / test ids, with the leakage guards.

Two guards. Within an experience made by distorting reference images (LIVE,
CSIQ, KADID), the splits are drawn by reference, so no content is in two
splits (`groups`); a random split by image of such a dataset would put the
same picture, distorted differently, in training and test. Across
experiences: EVA's images are AVA photos, so an id in the test set of *any*
experience is removed from the training and validation sets of *all*
experiences (ids compared within a `namespace`: datasets whose ids are paths
relative to their own root never share an image by id).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import numpy as np

from .errors import UserError

PARTS = ("train", "val", "test")


@dataclass
class Split:
    train: list[str]
    val: list[str]
    test: list[str]
    official_test: bool = False
    removed_for_leakage: int = 0
    removed_ids: list[str] = field(default_factory=list, repr=False)
    by: str = "image"  # image | reference | list | official | category
    refs: dict[str, int] | None = None  # references per part, where there are references
    shared_refs: int = 0  # references in more than one part (content shared)


@dataclass
class SplitRequest:
    """What one experience's split is made from."""

    ids: list[str]
    test_fraction: float = 0.2
    official_test: set[str] | None = None  # AVA's test list: the rest is train + val
    fixed: dict[str, str] | None = None  # id -> part (split lists, KonIQ's sets)
    groups: dict[str, str] | None = None  # id -> reference; drawn by reference if given
    by_reference: bool = True  # False: drawn by image though there are references
    namespace: str = ""


def _rng(seed: int, name: str) -> np.random.Generator:
    # Keyed by the experience's name, so reordering the stream keeps each split.
    return np.random.default_rng([seed, zlib.crc32(name.encode())])


def _sample(ids: list[str], fraction: float, rng: np.random.Generator) -> set[str]:
    if not ids or fraction <= 0:
        return set()
    k = int(round(fraction * len(ids)))
    k = min(max(k, 1), len(ids) - 1) if len(ids) > 1 else 0
    return set(rng.choice(np.array(ids, dtype=object), size=k, replace=False).tolist())


def _sample_n(units: list[str], k: int, rng: np.random.Generator) -> set[str]:
    k = min(max(k, 0), len(units))
    if k == 0:
        return set()
    return set(rng.choice(np.array(units, dtype=object), size=k, replace=False).tolist())


def _draw(name: str, req: SplitRequest, seed: int, val_fraction: float,
          val_of: str) -> tuple[dict[str, set[str]], str]:
    """Part -> ids for one experience, before the cross-experience guard."""
    ids = sorted(req.ids)
    if req.fixed is not None:
        parts = {p: {i for i in ids if req.fixed.get(i) == p} for p in PARTS}
        return parts, "list"
    grouped = req.groups is not None and req.by_reference
    # The units drawn: references (content groups) or images.
    units = sorted({req.groups[i] for i in ids}) if grouped else ids
    if req.official_test is not None:
        test_units = set(ids) & req.official_test
    else:
        test_units = _sample(units, req.test_fraction, _rng(seed, name + "/test"))
    rest = [u for u in units if u not in test_units]
    if val_of == "all":  # val_fraction of the whole experience (70 / 10 / 20)
        k = int(round(val_fraction * len(units))) if val_fraction > 0 else 0
        k = min(max(k, 1), len(rest) - 1) if val_fraction > 0 and len(rest) > 1 else k
        val_units = _sample_n(rest, k, _rng(seed, name + "/val"))
    else:  # val_fraction of what the test split leaves (the default)
        val_units = _sample(rest, val_fraction, _rng(seed, name + "/val"))
    unit = (lambda i: req.groups[i]) if grouped else (lambda i: i)
    parts = {"test": {i for i in ids if unit(i) in test_units},
             "val": {i for i in ids if unit(i) in val_units}}
    parts["train"] = set(ids) - parts["test"] - parts["val"]
    by = "official" if req.official_test is not None else ("reference" if grouped else "image")
    return parts, by


def make_splits(requests: dict[str, SplitRequest], seed: int, val_fraction: float,
                val_of: str = "rest") -> dict[str, Split]:
    """Split every experience, then apply the leakage guard across all of them.

    `val_of`: `rest` (val_fraction of what the test split leaves) or `all` (of the
    whole experience, so 0.7 / 0.1 / 0.2 are exact). Id lists are sorted, so they are
    deterministic given the seed.
    """
    drawn = {name: _draw(name, req, seed, val_fraction, val_of)
             for name, req in requests.items()}
    all_test = {(requests[n].namespace, i) for n, (parts, _) in drawn.items()
                for i in parts["test"]}
    splits = {}
    for name, (parts, by) in drawn.items():
        req = requests[name]
        removed = sorted(i for p in ("train", "val") for i in parts[p]
                         if (req.namespace, i) in all_test)
        train = sorted(parts["train"] - set(removed))
        val = sorted(parts["val"] - set(removed))
        test = sorted(parts["test"])
        if not test:
            raise UserError(
                f"experience '{name}': its test split is empty ({len(req.ids)} usable images); "
                "add images, raise the test fraction, or list test images"
            )
        if not train:
            raise UserError(
                f"experience '{name}': no training image left after the test split and the "
                f"leakage guard ({len(removed)} removed as test images of other experiences)"
            )
        refs, shared = None, 0
        if req.groups is not None:
            by_part = {p: {req.groups[i] for i in ids}
                       for p, ids in (("train", train), ("val", val), ("test", test))}
            refs = {p: len(r) for p, r in by_part.items()}
            shared = len((by_part["train"] & by_part["test"]) | (by_part["train"] & by_part["val"])
                         | (by_part["val"] & by_part["test"]))
        splits[name] = Split(train, val, test, req.official_test is not None, len(removed),
                             removed, by, refs, shared)
    return splits

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
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ..errors import UserError

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
    # Where each part's ids came from, in words (`no val list in splits:` for an empty val).
    sources: dict[str, str] = field(default_factory=dict)


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
    fixed_by: str = "list"  # what `fixed` came from: list | official
    lists: dict[str, str] | None = None  # part -> its split list file (split lists)
    official_source: str = ""  # the official split's file (AVA's test list, KonIQ's sets)


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


def _units(req: SplitRequest) -> tuple[list[str], Callable[[str], str]]:
    """What is drawn (references, or images) and each image's unit."""
    ids = sorted(req.ids)
    if req.groups is not None and req.by_reference:
        return sorted({req.groups[i] for i in ids}), req.groups.__getitem__
    return ids, lambda i: i


def _draw_test(name: str, req: SplitRequest, seed: int) -> set[str]:
    units, unit = _units(req)
    if req.official_test is not None:
        return set(req.ids) & req.official_test
    chosen = _sample(units, req.test_fraction, _rng(seed, name + "/test"))
    return {i for i in req.ids if unit(i) in chosen}


def _draw_val(name: str, req: SplitRequest, test: set[str], elsewhere: set[str], seed: int,
              val_fraction: float, val_of: str) -> set[str]:
    """Validation ids, drawn from what neither this test split nor the leakage guard takes."""
    units, unit = _units(req)
    grouped = req.groups is not None and req.by_reference
    taken = {unit(i) for i in test} if grouped else test
    # Images that are another experience's test images are never validation.
    rest = [u for u in units if u not in taken and u not in elsewhere]
    if val_of == "all":  # val_fraction of the whole experience (70 / 10 / 20)
        k = int(round(val_fraction * len(units))) if val_fraction > 0 else 0
        k = min(max(k, 1), len(rest) - 1) if val_fraction > 0 and len(rest) > 1 else k
        chosen = _sample_n(rest, k, _rng(seed, name + "/val"))
    else:  # val_fraction of what the test split leaves (the default)
        chosen = _sample(rest, val_fraction, _rng(seed, name + "/val"))
    if not grouped:
        return chosen
    return {i for i in req.ids if unit(i) in chosen and i not in elsewhere}


def make_splits(requests: dict[str, SplitRequest], seed: int, val_fraction: float,
                val_of: str = "rest") -> dict[str, Split]:
    """Split every experience, then apply the leakage guard across all of them.

    `val_of`: `rest` (val_fraction of what the test split leaves) or `all` (of the
    whole experience, so 0.7 / 0.1 / 0.2 are exact). Id lists are sorted, so they are
    deterministic given the seed.
    """
    tests, by = {}, {}
    for name, req in requests.items():
        if req.fixed is not None:
            tests[name] = {i for i in req.ids if req.fixed.get(i) == "test"}
            by[name] = req.fixed_by
        else:
            tests[name] = _draw_test(name, req, seed)
            grouped = req.groups is not None and req.by_reference
            by[name] = ("official" if req.official_test is not None else
                        "reference" if grouped else "image")
    # The guard, per namespace: every experience's test ids.
    guard: dict[str, set[str]] = {}
    for n, t in tests.items():
        guard.setdefault(requests[n].namespace, set()).update(t)
    splits = {}
    for name, req in requests.items():
        test, ns_test = tests[name], guard[req.namespace]
        ids = sorted(req.ids)
        # Another experience's test images: out of this one's train and val.
        elsewhere = {i for i in ids if i in ns_test and i not in test}
        if req.fixed is not None:
            val = {i for i in ids if req.fixed.get(i) == "val"}
        else:
            val = _draw_val(name, req, test, elsewhere, seed, val_fraction, val_of)
        removed = sorted(elsewhere)
        # Lists, not sets, for the big parts: AVA's 255k ids are held once.
        train = [i for i in ids if i not in test and i not in val and i not in elsewhere]
        val = sorted(val - elsewhere)
        test = sorted(test)
        sources = _sources(name, req, val_fraction, val_of)
        _check_parts(name, req, sources, train, test, removed)
        if not val:  # allowed: the experience has no validation set (said by the caller)
            sources["val"] = _no_val(req, sources["val"], test)
        refs, shared = None, 0
        if req.groups is not None:
            by_part = {p: {req.groups[i] for i in ids}
                       for p, ids in (("train", train), ("val", val), ("test", test))}
            refs = {p: len(r) for p, r in by_part.items()}
            shared = len((by_part["train"] & by_part["test"]) | (by_part["train"] & by_part["val"])
                         | (by_part["val"] & by_part["test"]))
        splits[name] = Split(train, val, test, req.official_test is not None, len(removed),
                             removed, by[name], refs, shared, sources)
    return splits


def _sources(name: str, req: SplitRequest, val_fraction: float, val_of: str) -> dict[str, str]:
    """Where each part's ids come from, in words (for results.json and the messages)."""
    units, _ = _units(req)
    grouped = req.groups is not None and req.by_reference
    what = f"{len(units)} {'reference' if grouped else 'image'}(s)"
    if req.fixed is not None and req.fixed_by == "list":
        lists = req.lists or {}
        return {p: (f"split list {lists[p]}" if p in lists else
                    f"no `{p}` list in the entry's `splits:`") for p in PARTS}
    if req.fixed is not None:
        return dict.fromkeys(PARTS, f"the official split ({req.official_source})")
    rest = "the whole experience" if val_of == "all" else "what the test split leaves"
    val = f"data.val_fraction = {val_fraction:g} of {rest} (data.val_fraction_of: {val_of})"
    if req.official_test is not None:
        test = f"the official test list ({req.official_source})"
        return {"train": "the rest of the label file, less validation", "val": val,
                "test": test}
    return {"train": "what test and validation leave", "val": val,
            "test": f"test_fraction = {req.test_fraction:g} of {what}"}


def _no_val(req: SplitRequest, source: str, test: list[str]) -> str:
    """Why an experience has no validation split, in words."""
    if req.fixed is not None and req.fixed_by == "list" and source.startswith("split list"):
        return f"{source} names no usable image"
    if req.fixed is not None:
        return source if req.fixed_by == "list" else f"{source} has no validation set"
    units, unit = _units(req)
    kind = "reference" if req.groups is not None and req.by_reference else "image"
    return (f"{source} leaves none: {len(units)} {kind}(s) in all, "
            f"{len({unit(i) for i in test})} of them in the test split")


def _check_parts(name: str, req: SplitRequest, sources: dict[str, str], train: list[str],
                 test: list[str], removed: list[str]) -> None:
    """An empty test or training split stops here, saying where its ids came from."""
    units, _ = _units(req)
    grouped = req.groups is not None and req.by_reference
    what = f"{len(units)} usable {'reference' if grouped else 'image'}(s)"
    for part, ids in (("test", test), ("train", train)):
        if ids:
            continue
        src = sources[part]
        if req.fixed is not None and req.fixed_by == "list":
            listed = sum(1 for p in req.fixed.values() if p == part)
            named = "the file is empty" if not listed else \
                f"it names {listed} image(s), none of them usable"
            do = (f"{named}; list {part} images there" if part in (req.lists or {}) else
                  f"add a `{part}` list to the entry's `splits:`")
        elif req.fixed is not None or (part == "test" and req.official_test is not None):
            do = ("none of its images is usable; check the images, or set official_split: "
                  "false in the entry for a seeded split")
        elif len(units) < 2:
            kind = "references" if grouped else "images"
            do = (f"the experience has {what}, and a seeded split needs at least 2 {kind} "
                  "(one to train on, one to test); add images"
                  + (", split by image (split_by: image)" if grouped else "")
                  + " or give split lists (`splits:`)")
        elif part == "test":
            do = (f"the experience has {what}; add images, raise data.test_fraction (or the "
                  "entry's test_fraction), or give split lists (`splits:`)")
        else:
            do = (f"nothing is left after test and validation ({len(removed)} removed as test "
                  "images of other experiences); lower data.test_fraction or "
                  "data.val_fraction, or give split lists")
        raise UserError(f"experience '{name}': its {part} split is empty ({src}): {do}")

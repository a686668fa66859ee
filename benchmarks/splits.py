"""The one place that decides train / validation / test ids, with the leakage guard.

EVA's images are AVA photos, so the same picture can sit in two experiences.
An id in the test set of *any* experience is removed from the training and
validation sets of *all* experiences; otherwise a test image seen in training
elsewhere makes forgetting look smaller than it is.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import numpy as np

from .errors import UserError


@dataclass
class Split:
    train: list[str]
    val: list[str]
    test: list[str]
    official_test: bool = False
    removed_for_leakage: int = 0
    removed_ids: list[str] = field(default_factory=list, repr=False)


def _rng(seed: int, name: str) -> np.random.Generator:
    # Keyed by the experience's name, so reordering the stream keeps each split.
    return np.random.default_rng([seed, zlib.crc32(name.encode())])


def _sample(ids: list[str], fraction: float, rng: np.random.Generator) -> set[str]:
    if not ids or fraction <= 0:
        return set()
    k = int(round(fraction * len(ids)))
    k = min(max(k, 1), len(ids) - 1) if len(ids) > 1 else 0
    return set(rng.choice(np.array(ids, dtype=object), size=k, replace=False).tolist())


def make_splits(experiences: dict[str, tuple[list[str], set[str] | None, float]],
                seed: int, val_fraction: float) -> dict[str, Split]:
    """Split every experience, then apply the leakage guard across all of them.

    `experiences` maps name -> (usable ids, official test ids or None, test fraction).
    Returned id lists are sorted, so they are deterministic given the seed.
    """
    tests: dict[str, set[str]] = {}
    for name, (ids, official, fraction) in experiences.items():
        ids = sorted(ids)
        if official is not None:
            tests[name] = set(ids) & official
        else:
            tests[name] = _sample(ids, fraction, _rng(seed, name + "/test"))
    all_test = set().union(*tests.values()) if tests else set()

    splits = {}
    for name, (ids, official, _) in experiences.items():
        test = tests[name]
        pool = sorted(set(ids) - test)
        removed = sorted(set(pool) & all_test)
        pool = sorted(set(pool) - all_test)
        val = _sample(pool, val_fraction, _rng(seed, name + "/val"))
        train = sorted(set(pool) - val)
        if not test:
            raise UserError(
                f"experience '{name}': its test split is empty ({len(ids)} usable images); "
                "add images or raise the test fraction"
            )
        if not train:
            raise UserError(
                f"experience '{name}': no training image left after the test split and the "
                f"leakage guard ({len(removed)} removed as test images of other experiences)"
            )
        splits[name] = Split(train, sorted(val), sorted(test), official is not None,
                             len(removed), removed)
    return splits

"""Stream entries -> experiences: labels read, images found, splits drawn, drops counted.

`load_experiences` does everything a run needs before any image is decoded:
`iqacl check-data` stops here, `benchmarks.stream.build_stream` goes on to
datasets and the Avalanche benchmark.
"""

from __future__ import annotations

import ctypes
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import UserError
from ..formats import FORMATS
from .files import DROP_COLUMNS, DROP_KINDS, index_images, resolve_images, unreadable_reason
from .labels import EVA_CATEGORIES, LabelTable, read_labels
from .split_lists import assign_parts, fill_k, split_files
from .splits import Split, SplitRequest, make_splits

log = logging.getLogger(__name__)


@dataclass
class ExperienceData:
    """One experience: its labelled, existing images, their planned split, and what was
    dropped (`dropped`: DROP_COLUMNS; images found unreadable while running stay in
    `table`, so the datasets' row indices keep meaning the planned split's rows)."""

    name: str
    task_label: int
    scale: tuple[float, float]
    table: pd.DataFrame  # image_id, score, path, file; indexed by image_id
    split: Split
    dropped: pd.DataFrame
    source: str
    # Ids of the official test list that the label file does not have (AVA): never used.
    official_unlabelled: list[str] = field(default_factory=list)
    # Rows left out by design (reference copies, training images, in no split list).
    excluded: list[tuple[str, str]] = field(default_factory=list)
    label_info: dict = field(default_factory=dict)  # file, column, direction, scale
    transform: str = "resize"  # resize | crop

    def part(self, which: str) -> pd.DataFrame:
        """Rows of `train`, `val` or `test`, in the split's (sorted) id order."""
        return self.table.loc[getattr(self.split, which)]

    def used(self, which: str) -> list[str]:
        """The ids of a part that were trained or evaluated: the planned split minus the
        images found unreadable (what `splits/` lists and `counts()` counts)."""
        bad = set(self.unreadable()["image_id"])
        return [i for i in getattr(self.split, which) if i not in bad]

    def no_val(self) -> str:
        """Why the experience has no validation split ("" when it has one): one line."""
        if self.split.val:
            return ""
        return (f"{self.name}: no validation split ({self.split.sources.get('val', '')}); it "
                "has no validation column, and validation figures (val ACC, model selection) "
                "use the experiences that have one")

    def normalise(self, scores: np.ndarray) -> np.ndarray:
        """Dataset scale -> [-1, 1], the range the model's cosine score lives in."""
        lo, hi = self.scale
        return 2.0 * (np.asarray(scores, dtype=np.float64) - lo) / (hi - lo) - 1.0

    def denormalise(self, values: np.ndarray) -> np.ndarray:
        lo, hi = self.scale
        return lo + (np.asarray(values, dtype=np.float64) + 1.0) * (hi - lo) / 2.0

    def mark_unreadable(self, part: str, rows: Sequence[int], stage: str) -> int:
        """Record images of `part` found unreadable during `stage`; returns how many are new."""
        known, ids, new = set(self.dropped["image_id"]), getattr(self.split, part), []
        for row in rows:
            image_id = ids[row]
            if image_id in known:
                continue
            known.add(image_id)
            # Ask the file again for the reason: DataLoader workers cannot report it.
            reason = unreadable_reason(self.table.loc[image_id, "file"])
            new.append((image_id, "unreadable", reason or "unreadable while running", part,
                        stage))
        self.add_dropped(new)
        return len(new)

    def add_dropped(self, rows: Sequence[tuple]) -> None:
        if rows:
            self.dropped = pd.concat([self.dropped, pd.DataFrame(rows, columns=DROP_COLUMNS)],
                                     ignore_index=True)

    def unreadable(self) -> pd.DataFrame:
        """Images dropped while running (they stay in `table`); the rest were dropped up front."""
        return self.dropped[self.dropped["kind"] == "unreadable"]

    def unreadable_count(self) -> int:
        return len(self.unreadable())

    def unusable_fraction(self) -> float:
        return len(self.dropped) / max(self.counts()["labelled"], 1)

    def dropped_by_kind(self) -> dict[str, int]:
        counts = self.dropped["kind"].value_counts()
        return {kind: int(counts.get(kind, 0)) for kind in DROP_KINDS}

    def excluded_by_reason(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for _, reason in self.excluded:
            out[reason] = out.get(reason, 0) + 1
        return out

    def counts(self) -> dict:
        unreadable = self.unreadable_count()
        return {
            "excluded": len(self.excluded),
            "excluded_by_reason": self.excluded_by_reason(),
            "labelled": int(len(self.table) + len(self.dropped) - unreadable),
            "usable": int(len(self.table) - unreadable),
            "dropped": int(len(self.dropped)),
            "dropped_by_reason": self.dropped_by_kind(),
            "unreadable": unreadable,
            "train": len(self.used("train")),
            "val": len(self.used("val")),
            "test": len(self.used("test")),
            "removed_for_leakage": self.split.removed_for_leakage,
            "official_test_unlabelled": len(self.official_unlabelled),
            "split_by": self.split.by,
            "references": self.split.refs,
            "references_shared": self.split.shared_refs,
            "split_sources": dict(self.split.sources),
        }


def _expand(table: LabelTable, entry: dict) -> list[tuple[str, pd.DataFrame]]:
    """One table, or one per EVA content category with `split_by: category`."""
    if entry.get("split_by") != "category":
        return [(table.name, table.frame)]
    cat = table.frame["image_id"].map(table.categories)
    parts = []
    for category in dict.fromkeys(sorted(table.categories.values(), key=_category_order)):
        frame = table.frame[cat == category]
        if len(frame):
            parts.append((f"{table.name}/{category}", frame))
    return parts


def _category_order(name: str) -> int:
    return next(k for k, v in EVA_CATEGORIES.items() if v == name)


def check_dropped(exp: ExperienceData, max_fraction: float) -> None:
    """Too many unusable images means a broken download or layout: stop, say where."""
    fraction = exp.unusable_fraction()
    if fraction > max_fraction:
        reasons = {k: n for k, n in exp.dropped_by_kind().items() if n}
        raise UserError(
            f"experience '{exp.name}' ({exp.source}): {len(exp.dropped)} images "
            f"({fraction:.1%}) are unusable {reasons}, more than data.max_dropped_fraction "
            f"= {max_fraction:.1%}; fix the images or raise that limit"
        )


def entry_transform(entry: dict, override: str = "") -> str:
    """`data.transform` if set, else the entry's `transform:`, else its format's default."""
    return override or entry.get("transform") or FORMATS[entry["format"]].transform


def _request(entry: dict, table: LabelTable, frame: pd.DataFrame, ids: list[str],
             fixed: dict[str, str] | None, test_fraction: float) -> SplitRequest:
    fixed_by = "list" if entry.get("splits") else "official"
    split_by = entry.get("split_by")
    if split_by == "reference" and not table.has_refs:
        raise UserError(f"stream entry '{entry['name']}': split_by: reference, but "
                        f"{table.source} gives no reference image per image; use "
                        "split_by: image")
    groups = None
    if table.has_refs:
        refs = frame.set_index("image_id")["ref"]
        groups = {i: refs[i] for i in ids}
    namespace = str(Path(entry["root"]).expanduser().resolve()) if table.path_ids else ""
    lists = ({p: str(f) for p, f in split_files(entry, Path(entry["root"]).expanduser()).items()}
             if entry.get("splits") else None)
    return SplitRequest(ids, entry.get("test_fraction") or test_fraction,
                        table.official_test, fixed, groups, split_by != "image", namespace,
                        fixed_by, lists, table.official_source)


def release_freed_memory() -> None:
    """Hand memory freed by a large parse back to the OS (glibc keeps it otherwise, and
    whether it does depends on allocation order); a no-op where there is no glibc."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def load_experiences(entries: Sequence[dict], *, seed: int = 0, test_fraction: float = 0.2,
                     val_fraction: float = 0.1, max_dropped_fraction: float = 1.0,
                     val_of: str = "rest", split: int = 1,
                     transform: str = "") -> list[ExperienceData]:
    """Read labels, find images (existence and size only), split, guard leakage.

    `split`: fills `{k}` in split-list paths; `transform` overrides every entry's."""
    pending = []
    indexes: dict[str, dict] = {}
    for entry in entries:
        entry = fill_k(entry, split)
        table = read_labels(entry)
        release_freed_memory()  # the parse's buffers (AVA: ~40 MB of the stream's peak)
        root = str(entry["root"])
        if root not in indexes:
            indexes[root] = index_images(root)
        fixed, excluded = None, list(table.excluded)
        if entry.get("splits"):  # the lists decide, over any official split
            fixed, unlisted = assign_parts(entry, Path(root).expanduser(), table)
            excluded += unlisted
        elif table.official_parts is not None:
            fixed = table.official_parts
            excluded += [(i, "in no official set") for i in table.frame["image_id"]
                         if i not in fixed]
        for name, frame in _expand(table, entry):
            if fixed is not None:
                frame = frame[frame["image_id"].isin(fixed)]
            resolved = resolve_images(frame, root, indexes[root])
            if resolved.usable.empty:
                raise UserError(
                    f"experience '{name}' ({table.source}): none of its {len(frame)} labelled "
                    f"images was found under {root}; check `root` and the image folders"
                )
            ids = list(resolved.usable["image_id"])
            request = _request(entry, table, frame, ids, fixed, test_fraction)
            pending.append((name, table, resolved, request, excluded,
                            entry_transform(entry, transform)))
    names = [p[0] for p in pending]
    if len(set(names)) != len(names):
        raise UserError(f"stream: experience names must be unique, got {names}")
    splits = make_splits({p[0]: p[3] for p in pending}, seed=seed, val_fraction=val_fraction,
                         val_of=val_of)
    experiences = []
    for t, (name, table, resolved, _, excluded, tf) in enumerate(pending):
        split = splits[name]
        if split.removed_for_leakage:
            log.info("%s: %d ids removed from train/val: they are test images of another "
                     "experience", name, split.removed_for_leakage)
        experiences.append(ExperienceData(
            name=name, task_label=t, scale=table.scale,
            table=resolved.usable.set_index("image_id", drop=False),
            split=split, dropped=resolved.dropped, source=str(table.source),
            official_unlabelled=table.official_unlabelled, excluded=excluded,
            label_info=table.label_info, transform=tf,
        ))
        check_dropped(experiences[-1], max_dropped_fraction)
    return experiences

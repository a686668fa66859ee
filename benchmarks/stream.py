"""Stream entries -> experiences (labels, images, splits) -> an Avalanche benchmark."""

from __future__ import annotations

import ctypes
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from avalanche.benchmarks.scenarios.dataset_scenario import benchmark_from_datasets
from avalanche.benchmarks.scenarios.generic_scenario import CLScenario
from avalanche.benchmarks.scenarios.task_aware import with_task_labels
from avalanche.benchmarks.utils import AvalancheDataset
from avalanche.benchmarks.utils.data_attribute import DataAttribute, TaskLabels
from avalanche.benchmarks.utils.flat_data import ConstantSequence
from avalanche.benchmarks.utils.transform_groups import TransformGroups
from PIL import Image
from torchvision import transforms as T

from .cache import CachedImages, ImageCache, Shard, collate_images, eval_resize
from .crops import collate_whole, crop_transforms
from .errors import UserError
from .formats import FORMATS
from .images import (
    DROP_COLUMNS,
    DROP_KINDS,
    index_images,
    load_rgb,
    resolve_images,
    unreadable_reason,
)
from .labels import EVA_CATEGORIES, LabelTable, read_labels
from .split_lists import assign_parts, fill_k
from .splits import Split, SplitRequest, make_splits

log = logging.getLogger(__name__)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


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
        }


@dataclass
class Stream:
    experiences: list[ExperienceData]
    benchmark: CLScenario

    @property
    def names(self) -> list[str]:
        return [e.name for e in self.experiences]


class ScoreImages(torch.utils.data.Dataset):
    """Images decoded when first read; item = (image, target in [-1, 1], row index).

    An image that cannot be decoded never stops a run: it comes out as a blank
    image with a NaN target, which the loss and the metrics skip; the runner
    records it (`ExperienceData.mark_unreadable`).
    """

    def __init__(self, files: Sequence[str], targets: np.ndarray, short_side: int | None = None):
        self.files = list(files)
        self.targets = torch.as_tensor(np.asarray(targets), dtype=torch.float32)
        self.short_side = short_side  # reduced-size JPEG decoding down to this

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        # The row index travels with the sample so predictions map back to image ids.
        try:
            return load_rgb(self.files[i], self.short_side), self.targets[i], i
        except Exception:  # truncated, not an image, decompression bomb, ...
            return BLANK, torch.tensor(float("nan")), i


BLANK = Image.new("RGB", (8, 8))


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
    return SplitRequest(ids, entry.get("test_fraction") or test_fraction,
                        table.official_test, fixed, groups, split_by != "image", namespace,
                        fixed_by)


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


def eval_transform(image_size: int) -> T.Compose:
    """Resize to 8/7 of the size, centre crop, normalise (also used by `iqacl predict`)."""
    return T.Compose([
        T.Resize(eval_resize(image_size), antialias=True),
        T.CenterCrop(image_size),
        T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])


class RandomResizedCropUint8(T.RandomResizedCrop):
    """RandomResizedCrop and a horizontal flip for uint8 (3, H, W) tensors.

    The same crop and flip distributions as torchvision's `RandomResizedCrop`
    followed by `RandomHorizontalFlip` (a bilinear resize commutes with the
    flip). The crop is flipped or made contiguous height x width x channel in
    one copy, then resized as a channels-last uint8 batch of one, which takes
    PyTorch's vectorised antialiased path (~8x faster than torchvision's tensor
    resize).
    """

    def __init__(self, size: int, scale: tuple[float, float] = (0.08, 1.0),
                 flip: float = 0.5, **kwargs) -> None:
        super().__init__(size, scale=scale, **kwargs)
        self.flip = flip

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        u = torch.rand(5).tolist()  # one draw: crop (4 numbers) and flip
        i, j, h, w = self.sample(img.shape[-2], img.shape[-1], u[:4])
        crop = img.permute(1, 2, 0)[i:i + h, j:j + w]  # height x width x channel
        crop = crop.flip(1) if u[4] < self.flip else crop.contiguous()
        # (1, 3, h, w) with proper channels-last strides: the fast path, and its output
        # is channels-last too (so the collate's stack is a plain copy).
        out = torch.nn.functional.interpolate(crop.unsqueeze(0).permute(0, 3, 1, 2),
                                              size=self.size, mode="bilinear",
                                              antialias=True, align_corners=False)
        return out[0]

    def sample(self, height: int, width: int,
               u: list[float] | None = None) -> tuple[int, int, int, int]:
        """torchvision's crop distribution with one random draw per attempt (4x faster)."""
        lo, hi = math.log(self.ratio[0]), math.log(self.ratio[1])
        for _ in range(10):
            u = u or torch.rand(4).tolist()
            area = height * width * (self.scale[0] + u[0] * (self.scale[1] - self.scale[0]))
            aspect = math.exp(lo + u[1] * (hi - lo))
            w, h = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
            if 0 < w <= width and 0 < h <= height:
                return int(u[2] * (height - h + 1)), int(u[3] * (width - w + 1)), h, w
            u = None
        return self.get_params(torch.empty(1, height, width), self.scale, self.ratio)


def image_transforms(image_size: int, crop_scale: Sequence[float] = (0.5, 1.0),
                     cached: bool = False) -> dict[str, Callable]:
    """Train (random resized crop, flip) and eval (centre crop) transforms.

    `cached=True`: for uint8 tensors from the image cache, already resized to
    the eval short side, so eval is only the centre crop (the same pixels as the
    uncached path) and training crops from the resized image. They stay uint8:
    the model normalises them on its device (`models.iqa.normalise_uint8`).
    """
    if cached:
        return {"train": RandomResizedCropUint8(image_size, scale=tuple(crop_scale),
                                                antialias=True),
                "eval": T.CenterCrop(image_size)}
    train = T.Compose([
        T.RandomResizedCrop(image_size, scale=tuple(crop_scale), antialias=True),
        T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])
    return {"train": train, "eval": eval_transform(image_size)}


def make_dataset(exp: ExperienceData, part: str, tfs: TransformGroups, short_side: int | None,
                 shard: Shard | None = None, gpu_decode: bool = False) -> AvalancheDataset:
    rows = exp.part(part)
    targets = exp.normalise(rows["score"].to_numpy())
    if gpu_decode:  # decoded and transformed on the device (benchmarks.gpu_decode)
        from .gpu_decode import JpegBytes, collate_bytes

        return score_dataset(JpegBytes(rows["file"].tolist(), targets), exp.task_label,
                             collate_fn=collate_bytes)
    crop = exp.transform == "crop"
    if shard is None:  # crops: the full-resolution decode, no reduced-size JPEG decoding
        data = ScoreImages(rows["file"].tolist(), targets, None if crop else short_side)
    else:
        data = CachedImages(shard, exp.table.index.get_indexer(rows.index), targets)
    collate = collate_whole if crop else (collate_images if shard is not None else None)
    return score_dataset(data, exp.task_label, tfs, collate_fn=collate)


def score_dataset(data: torch.utils.data.Dataset, task_label: int,
                  tfs: TransformGroups | None = None, collate_fn=None) -> AvalancheDataset:
    """An experience's dataset for Avalanche: float targets and a task label per item."""
    return AvalancheDataset(
        [data],
        data_attributes=[
            DataAttribute(data.targets.tolist(), "targets"),
            TaskLabels(ConstantSequence(task_label, len(data))),
        ],
        transform_groups=tfs, collate_fn=collate_fn,
    )


def joint_experience(stream: Stream):
    """One experience holding every experience's training data (the joint protocol)."""
    data = [exp.dataset for exp in stream.benchmark.train_stream]
    union = data[0].concat(data[1]) if len(data) > 1 else data[0]
    for more in data[2:]:
        union = union.concat(more)
    return with_task_labels(benchmark_from_datasets(train=[union])).train_stream[0]


def check_jpeg(experiences: Sequence[ExperienceData]) -> None:
    for exp in experiences:
        files = exp.table["file"]
        other = files[~files.str.lower().str.endswith((".jpg", ".jpeg"))]
        if len(other):
            raise UserError(f"experience '{exp.name}': data.decode = 'gpu' decodes JPEG files "
                            f"only, but {other.iloc[0]} is not one ({len(other)} such files); "
                            "use data.decode=cpu")


def check_crop_decode(entries: Sequence[dict], transform: str) -> None:
    crops = [e["name"] for e in entries if entry_transform(e, transform) == "crop"]
    if crops:
        raise UserError(f"data.decode = 'gpu' decodes and resizes JPEGs to a fixed size on the "
                        f"device, but {crops} use the crop transform (native resolution); use "
                        "data.decode=cpu (data.cache=true is the fast path)")


def experience_transforms(exp: ExperienceData, image_size: int, crop_scale: Sequence[float],
                          cached: bool, augment: bool, adaptive_resize: int,
                          crop_eval: str) -> TransformGroups:
    if exp.transform == "crop":
        tfs = crop_transforms(image_size, adaptive_resize, crop_eval, cached)
    else:
        tfs = image_transforms(image_size, crop_scale, cached)
    if not augment:
        tfs = {"train": tfs["eval"], "eval": tfs["eval"]}
    return TransformGroups(tfs)


def build_stream(entries: Sequence[dict], *, seed: int = 0, image_size: int = 224,
                 test_fraction: float = 0.2, val_fraction: float = 0.1,
                 crop_scale: Sequence[float] = (0.5, 1.0),
                 max_dropped_fraction: float = 1.0, cache: ImageCache | None = None,
                 augment: bool = True, gpu_decode: bool = False, val_of: str = "rest",
                 split: int = 1, transform: str = "", adaptive_resize: int = 0,
                 crop_eval: str = "whole") -> Stream:
    """The Avalanche benchmark: train/valid/test streams, one experience per dataset.

    With `cache`, images come decoded from the image cache (filled here if needed).
    `augment=False` trains on eval-transformed images (the linear-probe protocol).
    `gpu_decode=True` yields JPEG bytes for `benchmarks.gpu_decode.JpegDecoder`.
    Each experience takes its transform (`resize` or `crop`, `benchmarks.crops`).
    """
    if gpu_decode:
        check_crop_decode(entries, transform)
    experiences = load_experiences(entries, seed=seed, test_fraction=test_fraction,
                                   val_fraction=val_fraction,
                                   max_dropped_fraction=max_dropped_fraction, val_of=val_of,
                                   split=split, transform=transform)
    if gpu_decode:
        check_jpeg(experiences)
    short_side = eval_resize(image_size)
    if cache is not None and cache.short_side != short_side:
        raise ValueError(f"cache holds short side {cache.short_side}, need {short_side}")
    shards = [cache.shard(e.table["file"].tolist(), e.name,
                          adaptive_resize if e.transform == "crop" else None)
              if cache else None for e in experiences]
    tfs = [experience_transforms(e, image_size, crop_scale, cache is not None, augment,
                                 adaptive_resize, crop_eval) for e in experiences]
    streams = {
        part_name: [make_dataset(e, part, tf, short_side, shard, gpu_decode)
                    for e, tf, shard in zip(experiences, tfs, shards, strict=True)]
        for part_name, part in (("train", "train"), ("valid", "val"), ("test", "test"))
    }
    benchmark = with_task_labels(benchmark_from_datasets(**streams))
    return Stream(experiences, benchmark)

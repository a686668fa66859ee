"""Experiences -> datasets with their transforms -> an Avalanche benchmark."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
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

from .datasets.experiences import (  # noqa: F401  (re-exported: the stream's public names)
    ExperienceData,
    check_dropped,
    entry_transform,
    load_experiences,
)
from .errors import UserError
from .images.cache import CachedImages, ImageCache, Shard, collate_images, eval_resize
from .images.crops import collate_whole, crop_transforms
from .images.decode import load_rgb


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


def eval_transform(image_size: int) -> T.Compose:
    """Resize to 8/7 of the size, centre crop, [0, 1] floats (also `iqacl predict`'s)."""
    return T.Compose([
        T.Resize(eval_resize(image_size), antialias=True),
        T.CenterCrop(image_size),
        T.ToTensor(),  # [0, 1]: the model normalises with its backbone's mean / std
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
        T.RandomHorizontalFlip(), T.ToTensor(),
    ])
    return {"train": train, "eval": eval_transform(image_size)}


def make_dataset(exp: ExperienceData, part: str, tfs: TransformGroups, short_side: int | None,
                 shard: Shard | None = None, gpu_decode: bool = False) -> AvalancheDataset:
    rows = exp.part(part)
    targets = exp.normalise(rows["score"].to_numpy())
    if gpu_decode:  # decoded and transformed on the device (benchmarks.images.gpu_decode)
        from .images.gpu_decode import JpegBytes, collate_bytes

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
            # An empty part (an experience without validation) has no label to show:
            # Avalanche's ConstantSequence of length 0 fails when asked for its values.
            TaskLabels(ConstantSequence(task_label, len(data)) if len(data) else []),
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
    `gpu_decode=True` yields JPEG bytes for `benchmarks.images.gpu_decode.JpegDecoder`.
    Each experience takes its transform (`resize` or `crop`, `benchmarks.images.crops`).
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

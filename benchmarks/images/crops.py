"""Quality transforms: crops at the image's own resolution, whole-image evaluation.

Resizing a photo changes its quality (blur, noise and compression artefacts
are scaled away), so the `crop` transform never resizes an image to fit:
training takes random crops of `image_size` at native resolution (after
BIQA_CL's adaptive resize, which shrinks only images whose sides both exceed
N, and an upscale just big enough for an image smaller than the crop) with
flips; evaluation sees the whole image (`whole`) or the mean over five fixed
crops (`five_crop`: the corners and the centre).

Whole images differ in size (LIVE and BID mix them), so a batch of them is an
`ImageList`; the model runs each group of equal-sized images as one batch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torchvision import transforms as T
from torchvision.transforms import functional as F

from .cache import collate_rest
from .decode import NativeResize, at_least

EVAL_MODES = ("whole", "five_crop")


def crop_transforms(image_size: int, adaptive: int = 0, eval_mode: str = "whole",
                    cached: bool = False) -> dict[str, Callable]:
    """Train: random crop + flip at native resolution; eval: whole image or five crops.

    `cached=True`: for uint8 (3, H, W) tensors from the image cache, already
    adaptively resized; they stay uint8 (the model normalises them)."""
    if cached:
        train = RandomCropUint8(image_size)
        evaluate = FiveCropUint8(image_size) if eval_mode == "five_crop" else _identity
        return {"train": train, "eval": evaluate}
    norm = [T.ToTensor()]  # [0, 1]; the model normalises with its own mean / std
    train = T.Compose([NativeResize(adaptive, image_size), T.RandomCrop(image_size),
                       T.RandomHorizontalFlip(), *norm])
    if eval_mode == "five_crop":
        evaluate = T.Compose([NativeResize(adaptive, image_size), *norm,
                              T.FiveCrop(image_size), torch.stack])
    else:
        evaluate = T.Compose([NativeResize(adaptive), *norm])
    return {"train": train, "eval": evaluate}


def _identity(x):
    return x


def _fit_uint8(img: torch.Tensor, size: int) -> torch.Tensor:
    h, w = img.shape[-2:]
    nw, nh = at_least(w, h, size)
    if (nw, nh) == (w, h):
        return img
    return F.resize(img, [nh, nw], antialias=True)


class RandomCropUint8(torch.nn.Module):
    """Random crop of `size` and a horizontal flip of a uint8 (3, H, W) tensor."""

    def __init__(self, size: int, flip: float = 0.5):
        super().__init__()
        self.size, self.flip = size, flip

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        img = _fit_uint8(img, self.size)
        h, w = img.shape[-2:]
        u = torch.rand(3).tolist()
        i, j = int(u[0] * (h - self.size + 1)), int(u[1] * (w - self.size + 1))
        crop = img[:, i:i + self.size, j:j + self.size]
        return crop.flip(-1) if u[2] < self.flip else crop.contiguous()


class FiveCropUint8(torch.nn.Module):
    def __init__(self, size: int):
        super().__init__()
        self.size = size

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        return torch.stack(F.five_crop(_fit_uint8(img, self.size), [self.size] * 2))


class ImageList:
    """A batch of images of different sizes; moves like a tensor (`.to`, `.pin_memory`)."""

    def __init__(self, images: Sequence[torch.Tensor]):
        self.images = list(images)

    def __len__(self) -> int:
        return len(self.images)

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.images), *self.images[0].shape[:-2], -1, -1)

    @property
    def device(self) -> torch.device:
        return self.images[0].device

    @property
    def dtype(self) -> torch.dtype:
        return self.images[0].dtype

    def dim(self) -> int:
        return self.images[0].dim() + 1

    def to(self, *args, **kwargs) -> ImageList:
        return ImageList([x.to(*args, **kwargs) for x in self.images])

    def pin_memory(self) -> ImageList:
        return ImageList([x.pin_memory() for x in self.images])

    def contiguous(self, **kwargs) -> ImageList:
        return ImageList([x.unsqueeze(0).contiguous(**kwargs)[0] for x in self.images])

    def __getitem__(self, index) -> ImageList:
        if isinstance(index, torch.Tensor):
            index = index.nonzero().flatten().tolist() if index.dtype == torch.bool \
                else index.tolist()
        return ImageList([self.images[i] for i in index])

    def groups(self) -> list[tuple[list[int], torch.Tensor]]:
        """(positions, stacked batch) per image size, so equal sizes run together."""
        by_size: dict[tuple, list[int]] = {}
        for i, x in enumerate(self.images):
            by_size.setdefault(tuple(x.shape), []).append(i)
        return [(pos, torch.stack([self.images[i] for i in pos])) for pos in by_size.values()]


def map_images(fn: Callable[[torch.Tensor], torch.Tensor], x) -> torch.Tensor:
    """`fn` over a batch; an `ImageList` runs per size group, outputs back in order."""
    if not isinstance(x, ImageList):
        return fn(x)
    out = None
    for pos, batch in x.groups():
        y = fn(batch)
        if out is None:
            out = y.new_empty((len(x), *y.shape[1:]))
        out[pos] = y
    return out


def collate_whole(batch: list) -> list:
    """Whole images: one tensor when they share a size, else an `ImageList`."""
    images = [item[0] for item in batch]
    same = all(x.shape == images[0].shape for x in images)
    first = torch.stack(images) if same else ImageList(images)
    return [first, *collate_rest(batch)]

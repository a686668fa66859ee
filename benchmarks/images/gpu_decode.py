"""`data.decode: gpu`: JPEG bytes read by the loader, decoded by nvJPEG on the device.

The DataLoader only reads files; decoding, resizing and cropping run on the
training device in `JpegDecoder`, the same steps as the CPU path (resize the
short side to 8/7 of the crop, then centre crop for eval or random resized
crop + flip for training). nvJPEG does not apply EXIF rotation; AVA and EVA
photos carry none that matters, but a folder of phone pictures may.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import torch
from torchvision import io
from torchvision import transforms as T
from torchvision.transforms import functional as F

from .cache import collate_rest, eval_resize


class JpegBytes(torch.utils.data.Dataset):
    """item = (encoded file as a uint8 tensor, target, row)."""

    def __init__(self, files: Sequence[str], targets: np.ndarray):
        self.files = list(files)
        self.targets = torch.as_tensor(np.asarray(targets), dtype=torch.float32)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        return io.read_file(self.files[i]), self.targets[i], i


def collate_bytes(batch: list) -> list:
    """Encoded files differ in length: one flat byte tensor and the lengths; stack the rest.

    One tensor per batch (not one per file) crosses from a worker process.
    """
    files = [item[0] for item in batch]
    lengths = torch.tensor([len(f) for f in files], dtype=torch.int64)
    return [(torch.cat(files), lengths), *collate_rest(batch)]


def split_bytes(packed: tuple[torch.Tensor, torch.Tensor]) -> list[torch.Tensor]:
    flat, lengths = packed
    return list(torch.split(flat, lengths.tolist()))


class JpegDecoder:
    """Decode a list of JPEG byte tensors on `device` into a uint8 batch (the model normalises)."""

    def __init__(self, image_size: int, crop_scale: Sequence[float], device: torch.device):
        self.size, self.short_side = image_size, eval_resize(image_size)
        self.device = device
        self.random_crop = T.RandomResizedCrop(image_size, scale=tuple(crop_scale),
                                               antialias=True)

    def decode(self, data: list[torch.Tensor]) -> list[torch.Tensor | None]:
        """uint8 (3, H, W) per file on the device; None where a file is not a valid JPEG."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                return list(io.decode_jpeg(data, mode=io.ImageReadMode.RGB,
                                           device=self.device))
            except RuntimeError:  # one bad file fails the batch: find it
                out = []
                for d in data:
                    try:
                        out.append(io.decode_jpeg(d, mode=io.ImageReadMode.RGB,
                                                  device=self.device))
                    except RuntimeError:
                        out.append(None)
                return out

    def __call__(self, data: list[torch.Tensor] | tuple, train: bool) -> tuple[torch.Tensor,
                                                                               list[int]]:
        """(B, 3, size, size) uint8 batch, and the positions that failed to decode."""
        if isinstance(data, tuple):  # as collated: (flat bytes, lengths)
            data = split_bytes(data)
        crops, failed = [], []
        for i, img in enumerate(self.decode(data)):
            if img is None:
                failed.append(i)
                img = torch.zeros(3, self.size, self.size, dtype=torch.uint8,
                                  device=self.device)
            img = F.resize(img, self.short_side, antialias=True)
            if train:
                img = F.hflip(self.random_crop(img)) if torch.rand(1) < 0.5 else \
                    self.random_crop(img)
            else:
                img = F.center_crop(img, self.size)
            crops.append(img)
        return torch.stack(crops), failed

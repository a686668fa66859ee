"""Decoded-image cache: every image decoded and resized once, then read from disk.

An experience's images are decoded (reduced-size JPEG decoding where it
applies), resized so the short side is the eval resize, and written as raw
uint8 RGB into one shard: `pixels.u8` (all images back to back) and
`index.npy` (offset, height, width per image; height 0 = unreadable). Images
are read with one `pread` each, so DataLoader workers share the page cache
instead of holding copies.

A shard's name is a hash of the cache version, the short side, and each
file's path, size and modification time: a changed file or a changed
`image_size` gives a new shard, and an unchanged one is reused by every
epoch, experience, strategy, seed and run. Shards are built in a private
temporary folder and renamed into place (atomic), under a file lock so that
several runs (or Ray tasks) filling the same shard decode it once; the folder
can be deleted at any time.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import torch
from torchvision.transforms import functional as F

from ..errors import UserError
from .decode import NativeResize, adaptive_size, load_rgb

log = logging.getLogger(__name__)
CACHE_VERSION = 1


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "iqacl" / "images"


def eval_resize(image_size: int) -> int:
    """The short side images are resized to before the centre crop (8/7 of the crop)."""
    return round(image_size * 8 / 7)


def decode_resized(path: str, short_side: int) -> np.ndarray:
    """(H, W, 3) uint8, short side = `short_side`: exactly the eval path's decode + resize."""
    img = load_rgb(path, short_side)
    return np.asarray(F.resize(img, short_side, antialias=True))


def decode_native(path: str, adaptive: int) -> np.ndarray:
    """(H, W, 3) uint8 at the file's own resolution (after the adaptive resize, if any):
    what the crop transform needs. No reduced-size JPEG decoding here."""
    return np.asarray(NativeResize(adaptive)(load_rgb(path)))


def native_bytes(path: str, adaptive: int) -> int:
    """The bytes an image takes in a native shard, from its header (no decoding)."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            w, h = adaptive_size(*img.size, adaptive)
    except Exception:  # unreadable: takes nothing
        return 0
    return 3 * w * h


def _decode_or_none(job: tuple[str, int, bool]) -> np.ndarray | None:
    path, size, native = job
    try:
        return decode_native(path, size) if native else decode_resized(path, size)
    except Exception:  # unreadable: recorded as height 0; the run reports it
        return None


class Shard:
    """One experience's decoded images; the file is opened lazily, so it pickles into workers."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.index = np.load(self.folder / "index.npy")
        self._fd: int | None = None
        self._pid = 0

    def __len__(self) -> int:
        return len(self.index)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_fd": None}

    def image(self, pos: int) -> torch.Tensor | None:
        """(3, H, W) uint8, or None for an image that could not be decoded."""
        if self._fd is None or self._pid != os.getpid():  # a forked worker opens its own
            self._fd, self._pid = os.open(self.folder / "pixels.u8", os.O_RDONLY), os.getpid()
        offset, h, w = (int(v) for v in self.index[pos])
        if h == 0:
            return None
        # One pread into fresh (not zero-filled) memory: cheaper than faulting in a memory
        # map page by page.
        img = torch.empty(h, w, 3, dtype=torch.uint8)
        os.preadv(self._fd, [img.numpy()], offset)
        return img.permute(2, 0, 1)


class ImageCache:
    """Where shards live, the short side they hold, and how many processes decode."""

    def __init__(self, folder: str | Path | None, short_side: int, workers: int = 0,
                 progress: bool = False):
        self.folder = Path(folder) if folder else default_cache_dir()
        self.short_side = short_side
        self.workers = workers
        self.progress = progress

    def key(self, files: Sequence[str], native: int | None = None) -> str:
        recipe = f"short_side={self.short_side}" if native is None else f"native={native}"
        h = hashlib.sha256(f"v{CACHE_VERSION} {recipe}\n".encode())
        for f in files:
            st = os.stat(f)
            h.update(f"{os.path.abspath(f)}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
        return h.hexdigest()[:32]

    def shard(self, files: Sequence[str], name: str = "", native: int | None = None) -> Shard:
        """The shard holding `files` in this order; decoded now if no run has done it yet.

        `native`: at the images' own resolution after an adaptive resize to this short
        side (0: none), for the crop transform; else resized to `short_side`."""
        folder = self.folder / self.key(files, native)
        if (folder / "index.npy").is_file():
            return Shard(folder)
        self._make_root()
        with _locked(self.folder / f"{folder.name}.lock"):
            if not (folder / "index.npy").is_file():  # another process may have built it
                self._build(files, folder, name, native)
        return Shard(folder)

    def _make_root(self) -> None:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"cannot create the image cache folder {self.folder} ({exc}); "
                            "set data.cache_dir to a writable folder") from None

    def size_needed(self, files: Sequence[str], native: int | None = None) -> int:
        """Bytes the shard will take: exact for native shards (image headers), else rough
        (4:3 images at the short side)."""
        if native is not None:
            return sum(native_bytes(str(f), native) for f in files)
        return int(len(files) * 3 * self.short_side ** 2 * 4 / 3)

    def _build(self, files: Sequence[str], folder: Path, name: str,
               native: int | None = None) -> None:
        # Its size is said, and checked against the disk, before any decoding.
        need = self.size_needed(files, native)
        free = shutil.disk_usage(self.folder).free
        if need > free:
            raise UserError(f"image cache for '{name}': about {need / 1e9:.1f} GB needed, "
                            f"{free / 1e9:.1f} GB free in {self.folder}; free space, set "
                            "data.cache_dir elsewhere, or set data.cache=false")
        what = (f"at short side {self.short_side}" if native is None else
                "at native resolution" + (f" (adaptive resize {native})" if native else ""))
        log.info("caching %d images of %s %s: %.1f MB in %s (once)", len(files), name, what,
                 need / 1e6, folder)
        tmp = Path(tempfile.mkdtemp(prefix=f"{folder.name}.tmp-", dir=self.folder))
        try:
            index = np.zeros((len(files), 3), dtype=np.int64)
            offset = 0
            with open(tmp / "pixels.u8", "wb") as out:
                for i, arr in enumerate(self._decode_all(files, name, native)):
                    if arr is not None:
                        out.write(np.ascontiguousarray(arr).tobytes())
                        index[i] = (offset, arr.shape[0], arr.shape[1])
                        offset += arr.size
            np.save(tmp / "index.npy", index)
            os.rename(tmp, folder)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def _decode_all(self, files: Sequence[str], name: str, native: int | None = None):
        jobs = [(str(f), self.short_side if native is None else native, native is not None)
                for f in files]
        bar = None
        if self.progress:
            from tqdm import tqdm

            bar = tqdm(total=len(jobs), desc=f"caching {name}", unit="img")
        if self.workers > 0:
            # spawn: forking a process that holds torch's thread pools can deadlock. An
            # executor (not a Pool) fails loudly if a worker dies instead of respawning it.
            with ProcessPoolExecutor(self.workers, mp_context=get_context("spawn")) as pool:
                for arr in pool.map(_decode_or_none, jobs, chunksize=16):
                    yield arr
                    bar is not None and bar.update()
        else:
            for job in jobs:
                yield _decode_or_none(job)
                bar is not None and bar.update()
        if bar is not None:
            bar.close()


@contextmanager
def _locked(path: Path):
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


class CachedImages(torch.utils.data.Dataset):
    """Like `ScoreImages`, from a shard: item = (uint8 (3, H, W) image, target, row)."""

    def __init__(self, shard: Shard, positions: Sequence[int], targets: np.ndarray):
        self.shard = shard
        self.positions = np.asarray(positions, dtype=np.int64)
        self.targets = torch.as_tensor(np.asarray(targets), dtype=torch.float32)

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, i: int):
        img = self.shard.image(int(self.positions[i]))
        if img is None:
            return BLANK, torch.tensor(float("nan")), i
        return img, self.targets[i], i


BLANK = torch.zeros(3, 8, 8, dtype=torch.uint8)


def collate_images(batch: list, out: torch.Tensor | None = None) -> list:
    """Stack uint8 (3, H, W) images as an (N, 3, H, W) channels-last batch.

    The cached images and their crops are laid out height x width x channel, so
    stacking them channels-last is a plain copy (a channels-first stack costs a
    transpose per image); convolutions take channels-last directly. In a
    DataLoader worker the batch goes straight into shared memory, as
    `default_collate` does; or into `out` (N, H, W, 3), a slot of a
    `benchmarks.images.loaders.PinnedRing`.
    """
    images = [item[0].permute(1, 2, 0) for item in batch]
    if out is None and torch.utils.data.get_worker_info() is not None:
        numel = sum(x.numel() for x in images)
        storage = images[0]._typed_storage()._new_shared(numel, device=images[0].device)
        out = images[0].new(storage).resize_(len(images), *images[0].shape)
    x = torch.stack(images, out=out).permute(0, 3, 1, 2)
    return [x, *collate_rest(batch)]


def collate_rest(batch: list) -> list:
    """Every column but the first (the image), as `default_collate` makes them."""
    columns = list(zip(*batch, strict=True))[1:]
    return [torch.utils.data.default_collate(list(c)) for c in columns]

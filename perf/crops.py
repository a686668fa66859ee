"""The crop transform's data path (quality datasets): native-resolution cache vs decoding.

Quality images are BMP and PNG (no reduced-size JPEG decode to lean on) and are
cropped at their own resolution, so every epoch decodes each full-size file
again unless the image cache holds it decoded (`data.cache` with `transform:
crop`: the pixels after the adaptive resize, read back with one `pread`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .loops import Transformed
from .timing import Row, side_by_side

# The six protocol datasets at full size: images and their usual native size (width,
# height), from the datasets' documentation (BID's photos run from 1280×960 to
# 2272×1704: its largest is taken).
FULL_SIZE = [("LIVE", 779, (768, 512)), ("CSIQ", 866, (512, 512)),
             ("BID", 586, (2272, 1704)), ("CLIVE", 1162, (500, 500)),
             ("KonIQ-10k", 10073, (1024, 768)), ("KADID-10k", 10125, (512, 384))]


def write_quality_images(folder: Path, n: int, size: tuple[int, int]) -> list[str]:
    """LIVE/KonIQ-like files: BMP and PNG at native size, made from the bundled photos."""

    from benchmarks.demo.eva_ava import SOURCES, _source_image

    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for i in range(n):
        img = _source_image(SOURCES[i % len(SOURCES)][0]).convert("RGB").resize(size)
        path = folder / f"img{i + 1}.{'bmp' if i % 2 else 'png'}"
        img.save(path)
        files.append(str(path))
    return files


def crop_rows(work: Path, n: int = 48, size: tuple[int, int] = (768, 512), crop: int = 384,
              rounds: int = 5) -> list[Row]:
    from torch.utils.data import DataLoader

    from benchmarks.images.cache import CachedImages, ImageCache, eval_resize
    from benchmarks.images.crops import collate_whole, crop_transforms
    from benchmarks.stream import ScoreImages

    files = write_quality_images(work / "quality", n, size)
    targets = np.zeros(n)
    cache = ImageCache(work / "crop-cache", eval_resize(crop))
    started = time.perf_counter()
    shard = cache.shard(files, "quality", native=768)
    build_s = time.perf_counter() - started
    plain = Transformed(ScoreImages(files, targets), crop_transforms(crop, 768)["train"])
    cached = Transformed(CachedImages(shard, range(n), targets),
                          crop_transforms(crop, 768, cached=True)["train"])

    def one_pass(ds) -> Callable[[], None]:
        loader = DataLoader(ds, batch_size=16, collate_fn=collate_whole)

        def go() -> None:
            for _ in loader:
                pass
        go()
        return go

    turns = side_by_side(one_pass(cached), one_pass(plain), rounds=rounds, fast_repeats=3)
    row = turns.row(
        "crop transform (native resolution): image cache vs decoding each epoch", n,
        "images/s", 5.0,
        note=f"{n} {size[0]}×{size[1]} BMP/PNG files (LIVE-sized), random {crop} px crops + "
             f"flips after adaptive resize 768, in the loading process, {rounds} rounds in "
             f"turns; filling the cache took {build_s:.1f} s")
    return [row, cache_size_row()]


def cache_size_row() -> Row:
    """The native cache's size for the six protocol datasets at full size (not timed)."""
    from benchmarks.images.decode import adaptive_size

    parts = []
    total = 0
    for name, count, (w, h) in FULL_SIZE:
        cw, ch = adaptive_size(w, h, 768)
        nbytes = count * cw * ch * 3
        total += nbytes
        parts.append(f"{name} {count}×{cw}×{ch}: {nbytes / 2**30:.2f} GiB")
    return Row("image cache, crop transform: size for the six protocol datasets", total / 2**30,
               0.0, "GiB", None, absolute=True,
               note="adaptive resize 768, uint8 RGB; " + "; ".join(parts))

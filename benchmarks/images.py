"""Finding images on disk (one directory walk) and opening them safely."""

from __future__ import annotations

import math
import os
import stat
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from PIL import Image, ImageOps

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


@dataclass(frozen=True)
class Resolved:
    """Rows of a label table whose images exist (with absolute `file`), and the rest."""

    usable: pd.DataFrame
    dropped: pd.DataFrame  # image_id, reason


def index_images(root: Path) -> dict[str, tuple[str, int]]:
    """Map file stem -> (absolute path, size in bytes) for every image under `root`.

    One walk, sorted (a folder's files before its subfolders, as `os.walk`), so
    when two layouts hold the same id (EVA_together and EVA_category) the choice
    is deterministic. One `lstat` per entry gives its type and size; only names
    are listed, so AVA's 255k files cost ~1 s and little memory.
    """
    found: dict[str, tuple[str, int]] = {}
    real_root = os.path.realpath(root)

    def walk(folder: str) -> None:
        try:
            names = sorted(os.listdir(folder))
        except OSError:
            return
        subfolders = []
        for name in names:
            path = os.path.join(folder, name)
            try:
                st = os.lstat(path)
            except OSError:
                continue
            if stat.S_ISDIR(st.st_mode):
                subfolders.append(path)
                continue
            stem, dot, suffix = name.rpartition(".")
            if not stem or not dot or f".{suffix.lower()}" not in IMAGE_SUFFIXES \
                    or stem in found:
                continue
            if stat.S_ISLNK(st.st_mode):
                # A link that points out of the dataset root is not part of the dataset.
                target = os.path.realpath(path)
                if os.path.commonpath([real_root, target]) != real_root:
                    continue
                try:
                    st = os.stat(path)
                except OSError:
                    continue
            found[stem] = (path, st.st_size)
        for sub in subfolders:
            walk(sub)

    walk(str(root))
    return found


def resolve_images(frame: pd.DataFrame, root: Path,
                   index: dict[str, tuple[str, int]] | None = None) -> Resolved:
    """Attach the image file of each row; rows with a missing or empty file are dropped.

    A row with a `path` is looked up there (it must stay inside `root`); others by id.
    """
    root = Path(root).resolve()
    index = index_images(root) if index is None else index
    files, reasons = [], []
    for image_id, rel in zip(frame["image_id"], frame["path"], strict=False):
        file, size, reason = None, 0, ""
        if rel:
            candidate = (root / rel).resolve()
            if not candidate.is_relative_to(root):
                reason = f"path {rel} resolves outside the dataset root"
            elif candidate.is_file():
                file, size = str(candidate), candidate.stat().st_size
            else:
                reason = "missing"
        elif image_id in index:
            file, size = index[image_id]
        else:
            reason = "missing"
        if file is not None and size == 0:
            file, reason = None, "empty file (0 bytes)"
        files.append(file)
        reasons.append(reason)
    out = frame.assign(file=files, reason=reasons)
    ok = out["file"].notna()
    usable = out[ok].drop(columns=["reason"]).reset_index(drop=True)
    dropped = out[~ok][["image_id", "reason"]].reset_index(drop=True)
    return Resolved(usable, dropped)


def unreadable_reason(path: str) -> str | None:
    """Why an image cannot be decoded (the `dropped.csv` reason), or None if it can."""
    try:
        load_rgb(path)
        return None
    except Exception as exc:  # truncated, not an image, decompression bomb, ...
        return f"unreadable: {type(exc).__name__}: {exc}"


def load_rgb(path: str, short_side: int | None = None) -> Image.Image:
    """Open an image as RGB: EXIF rotation applied, greyscale/CMYK/RGBA converted.

    With `short_side`, a JPEG whose short side is at least twice that is decoded
    at 1/2, 1/4 or 1/8 scale (libjpeg's DCT scaling), never below `short_side`:
    several times faster, and the resize that follows barely differs.
    """
    with Image.open(path) as img:
        if short_side and img.format == "JPEG":
            w, h = img.size
            k = short_side / min(w, h)
            if k <= 0.5:
                img.draft("RGB", (math.ceil(w * k), math.ceil(h * k)))
        img = ImageOps.exif_transpose(img)
        return img.convert("RGB")

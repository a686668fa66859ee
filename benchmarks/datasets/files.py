"""Finding a dataset's images on disk (one directory walk), and why one is not used."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ..images.decode import load_rgb

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
# Why a labelled image is not used; each is counted on its own (check-data, results.json).
DROP_KINDS = ("missing", "empty", "outside_root", "unreadable")
# dropped.csv (with the experience first): `part` is the split the image was planned for
# (empty when dropped before splitting); `stage` is when it was found: `indexing` (before
# the run), or the run's stage (`initial`, `after_0`, ..., `joint`) whose work read it.
DROP_COLUMNS = ["image_id", "kind", "reason", "part", "stage"]


@dataclass(frozen=True)
class Resolved:
    """Rows of a label table whose images exist (with absolute `file`), and the rest."""

    usable: pd.DataFrame
    dropped: pd.DataFrame  # DROP_COLUMNS


class ImageIndex(dict):
    """file stem -> (absolute path, size in bytes); `outside`: stem -> (link, target) of
    image files that are links pointing out of the root (not part of the dataset)."""

    def __init__(self) -> None:
        super().__init__()
        self.outside: dict[str, tuple[str, str]] = {}


def index_images(root: Path) -> ImageIndex:
    """Map file stem -> (absolute path, size in bytes) for every image under `root`.

    One walk, sorted (a folder's files before its subfolders, as `os.walk`), so
    when two layouts hold the same id (EVA_together and EVA_category) the choice
    is deterministic. One `lstat` per entry gives its type and size; only names
    are listed, so AVA's 255k files cost ~1 s and little memory. A link that
    points out of the root is not indexed but remembered, so that its id is
    dropped as "outside the dataset root" rather than "missing".
    """
    found = ImageIndex()
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
                    found.outside.setdefault(stem, (path, target))
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
    """Attach the image file of each row; rows with a missing or empty file, or one outside
    the root, are dropped (kind and reason in `Resolved.dropped`).

    A row with a `path` is looked up there (it must stay inside `root`); others by id.
    """
    root = Path(root).resolve()
    index = index_images(root) if index is None else index
    outside = getattr(index, "outside", {})
    files, kinds, reasons = [], [], []
    for image_id, rel in zip(frame["image_id"], frame["path"], strict=False):
        file, size, kind, reason = None, 0, "", ""
        if rel:
            candidate = (root / rel).resolve()
            if not candidate.is_relative_to(root):
                kind, reason = "outside_root", f"path {rel} resolves outside the dataset root"
            elif candidate.is_file():
                file, size = str(candidate), candidate.stat().st_size
            else:
                kind, reason = "missing", f"missing: no file {rel} under the dataset root"
        elif image_id in index:
            file, size = index[image_id]
        elif image_id in outside:
            link, target = outside[image_id]
            kind, reason = "outside_root", (f"{os.path.relpath(link, root)} is a link pointing "
                                            f"outside the dataset root (to {target})")
        else:
            kind, reason = "missing", "missing: no image file with this id under the dataset root"
        if file is not None and size == 0:
            file, kind, reason = None, "empty", "empty file (0 bytes)"
        files.append(file)
        kinds.append(kind)
        reasons.append(reason)
    out = frame.assign(file=files, kind=kinds, reason=reasons, part="", stage="indexing")
    ok = out["file"].notna()
    usable = out[ok].drop(columns=["kind", "reason", "part", "stage"]).reset_index(drop=True)
    dropped = out[~ok][DROP_COLUMNS].reset_index(drop=True)
    return Resolved(usable, dropped)


def unreadable_reason(path: str) -> str | None:
    """Why an image cannot be decoded (the `dropped.csv` reason), or None if it can."""
    try:
        load_rgb(path)
        return None
    except Exception as exc:  # truncated, not an image, decompression bomb, ...
        return f"unreadable: {type(exc).__name__}: {exc}"

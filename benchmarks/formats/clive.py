"""LIVE In the Wild Challenge (`ChallengeDB_release/`): names and MOS in MATLAB files."""

from __future__ import annotations

from pathlib import Path

from ._files import dataset_file, mat_numbers, mat_strings, same_length
from .base import LabelTable, check_values, frame_of, quality_table, register_format

SCALE = (0.0, 100.0)
TRAINING = 7  # the first entries are the 7 training images (Images/trainingImages/)


@register_format("clive", default_labels="Data/AllMOS_release.mat", scale=SCALE,
                 transform="crop")
def read_clive(entry: dict, root: Path) -> LabelTable:
    names_file = dataset_file(root, "Data/AllImages_release.mat", "LIVE Challenge")
    source = dataset_file(root, entry.get("labels") or "Data/AllMOS_release.mat",
                          "LIVE Challenge")
    names = mat_strings(names_file, "AllImages_release")
    mos = mat_numbers(source, "AllMOS_release")
    std_file = root / "Data" / "AllStdDev_release.mat"
    std = mat_numbers(std_file, "AllStdDev_release") if std_file.is_file() else None
    same_length(source, {"AllImages_release": names, "AllMOS_release": mos,
                         **({"AllStdDev_release": std} if std is not None else {})})
    scale = tuple(entry.get("scale") or SCALE)
    check_values(mos[TRAINING:], scale, source, "AllMOS_release",
                 lambda i: f"AllMOS_release[{i + TRAINING + 1}] ({names[i + TRAINING]})")
    frame = frame_of([f"Images/{n}" for n in names[TRAINING:]], mos[TRAINING:],
                     stds=None if std is None else std[TRAINING:])
    excluded = [(f"Images/trainingImages/{n}", "training image (Images/trainingImages)")
                for n in names[:TRAINING]]
    where = [f"AllImages_release[{i + 1}]" for i in range(TRAINING, len(names))]
    return quality_table(entry, frame, scale, source, "AllMOS_release", "higher_better",
                         where, excluded=excluded)

"""Every file a reader opens, broken the ways downloads break: one line, never a traceback.

A truncated download, an HTML error page or random bytes saved under the label file's
name must give one line that names the file and says to re-download it. A file cut in
half may still parse (a CSV that lost its last lines): then the reader either reads it or
refuses it in one line naming the file; it never raises anything but a UserError.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import one_line_error, write

from benchmarks.datasets.labels import read_labels
from benchmarks.demo.biqa import make_biqa_demo
from benchmarks.errors import UserError
from benchmarks.stream import load_experiences
from experiments.config import merge_entry

HTML = (b"<!DOCTYPE html>\n<html><head><title>404 Not Found</title></head>\n"
        b"<body>gone</body></html>\n")
NOISE = np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes()

# (dataset folder, format, the file broken, files removed first so that it is the one read)
CASES = [
    ("databaserelease2", "live", "dmos_realigned.mat", []),
    ("databaserelease2", "live", "dmos.mat", ["dmos_realigned.mat"]),
    ("databaserelease2", "live", "refnames_all.mat", []),
    ("CSIQ", "csiq", "csiq.DMOS.xlsx", []),
    ("BID", "bid", "DatabaseGrades.xls", []),
    ("ChallengeDB_release", "clive", "Data/AllMOS_release.mat", []),
    ("ChallengeDB_release", "clive", "Data/AllImages_release.mat", []),
    ("ChallengeDB_release", "clive", "Data/AllStdDev_release.mat", []),
    ("koniq-10k", "koniq", "koniq10k_scores_and_distributions.csv", []),
    ("koniq-10k", "koniq", "koniq10k_distributions_sets.csv", []),
    ("kadid10k", "kadid", "dmos.csv", []),
    ("EVA", "eva", "data/votes_filtered.csv", []),
    ("AVA", "ava", "AVA.txt", []),
    ("AVA", "ava", "aesthetics_image_lists/generic_test.jpgl", []),
]
BROKEN = {"html page": lambda data: HTML, "random bytes": lambda data: NOISE,
          "empty": lambda data: b""}


@pytest.fixture(scope="module")
def datasets(tmp_path_factory, tiny_demo) -> Path:
    root = tmp_path_factory.mktemp("broken_files")
    make_biqa_demo(root, scale=0.3, seed=0)
    for name in ("EVA", "AVA"):
        shutil.copytree(tiny_demo / name, root / name)
    return root


def _broken(datasets: Path, tmp_path: Path, folder: str, file: str, removed: list[str],
            how) -> tuple[dict, Path]:
    root = tmp_path / folder
    shutil.copytree(datasets / folder, root)
    for name in removed:
        (root / name).unlink()
    target = root / file
    target.write_bytes(how(target.read_bytes()))
    return {"name": folder, "format": CASES_FORMAT[folder], "root": str(root)}, target


CASES_FORMAT = {folder: fmt for folder, fmt, _, _ in CASES}


@pytest.mark.parametrize("kind", list(BROKEN))
@pytest.mark.parametrize("folder, fmt, file, removed", CASES,
                         ids=[f"{fmt}:{file}" for _, fmt, file, _ in CASES])
def test_a_broken_label_file_is_one_line_naming_it(datasets, tmp_path, folder, fmt, file,
                                                   removed, kind):
    entry, target = _broken(datasets, tmp_path, folder, file, removed, BROKEN[kind])
    message = one_line_error(read_labels, entry)
    assert str(target) in message, message
    assert "re-download" in message, message


@pytest.mark.parametrize("folder, fmt, file, removed", CASES,
                         ids=[f"{fmt}:{file}" for _, fmt, file, _ in CASES])
def test_a_label_file_cut_in_half_is_read_or_refused_in_one_line(datasets, tmp_path, folder,
                                                                 fmt, file, removed):
    entry, target = _broken(datasets, tmp_path, folder, file, removed,
                            lambda data: data[: len(data) // 2])
    try:
        table = read_labels(entry)
    except UserError as exc:
        assert "\n" not in str(exc) and str(target) in str(exc), str(exc)
    else:  # a text file that lost its last lines: fewer rows, never garbage
        assert 0 < len(table.frame) and np.isfinite(table.frame["score"]).all()


@pytest.mark.parametrize("fmt, name, text", [
    ("json", "labels.json", HTML.decode()),
    ("csv", "labels.csv", HTML.decode()),
    ("csv", "labels.csv", NOISE.decode("latin-1")),
])
def test_generic_label_files_that_are_not_what_they_say(tmp_path, fmt, name, text):
    source = tmp_path / name
    source.write_text(text, encoding="latin-1")
    message = one_line_error(read_labels, {"name": "X", "format": fmt, "root": str(tmp_path),
                                           "labels": name, "scale": [0, 1]})
    assert str(source) in message, message


def test_a_split_list_of_random_bytes_is_one_line(datasets, tmp_path):
    root = tmp_path / "BID"
    shutil.copytree(datasets / "BID", root)
    (root / "train.txt").write_bytes(NOISE)
    write(root / "test.txt", "ImageDatabase/DatabaseImage0001.JPG\t3.0\n")
    entry = {"name": "BID", "format": "bid", "root": str(root),
             "splits": {"train": "train.txt", "test": "test.txt"}}
    message = one_line_error(load_experiences, [merge_entry(entry, 0)])
    assert str(root / "train.txt") in message, message

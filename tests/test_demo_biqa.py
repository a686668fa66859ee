"""The six-dataset BIQA demo: real layouts, real label formats, learnable and deterministic."""

from __future__ import annotations

import csv
import hashlib
import re

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy.io import loadmat

from benchmarks.demo.biqa import FOLDERS, make_biqa_demo

LIVE_FOLDERS = ["jp2k", "jpeg", "wn", "gblur", "fastfading"]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("biqa")
    counts = make_biqa_demo(root, scale=0.3, seed=0)
    return root, counts


def digest(root):
    h = hashlib.sha256()
    for f in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(f.relative_to(root).as_posix().encode() + f.read_bytes())
    return h.hexdigest()


def cell_strings(cell) -> list[str]:
    """A MATLAB cell of char, as loadmat returns it: an object array of 1-element arrays."""
    assert cell.dtype == object
    out = []
    for item in cell.ravel():
        assert item.dtype.kind == "U" and item.shape == (1,)
        out.append(str(item[0]))
    return out


def test_deterministic_given_seed(tmp_path):
    roots = [tmp_path / n for n in ("a", "b", "c")]
    for root, seed in zip(roots, (1, 1, 2), strict=True):
        make_biqa_demo(root, scale=0.05, seed=seed)
    assert digest(roots[0]) == digest(roots[1]) != digest(roots[2])


def test_folders_counts_and_marker(demo):
    root, counts = demo
    assert list(counts) == list(FOLDERS)
    assert all((root / f).is_dir() for f in FOLDERS)
    assert (root / ".complete").is_file()
    assert min(counts.values()) >= 30
    sides = {max(Image.open(p).size) for p in root.rglob("*")
             if p.suffix.lower() in {".bmp", ".png", ".jpg"}}
    assert max(sides) <= 130


def test_live_release2(demo):
    root = demo[0] / "databaserelease2"
    files = []
    for folder in LIVE_FOLDERS:
        imgs = sorted((root / folder).glob("img*.bmp"), key=lambda p: int(p.stem[3:]))
        assert [p.name for p in imgs] == [f"img{k}.bmp" for k in range(1, len(imgs) + 1)]
        files += imgs
    n = len(files)
    dmos = loadmat(root / "dmos.mat")
    realigned = loadmat(root / "dmos_realigned.mat")
    refnames = cell_strings(loadmat(root / "refnames_all.mat")["refnames_all"])
    assert loadmat(root / "refnames_all.mat")["refnames_all"].shape == (1, n)
    for arr in (dmos["dmos"], dmos["orgs"], realigned["dmos_new"], realigned["orgs"],
                realigned["dmos_std"]):
        assert arr.shape == (1, n) and arr.dtype == np.float64
    orgs = dmos["orgs"][0].astype(bool)
    assert (realigned["orgs"][0] == dmos["orgs"][0]).all()
    assert 0.1 <= orgs.mean() <= 0.35
    refs = {p.name for p in (root / "refimgs").glob("*.bmp")}
    assert len(refs) >= 10 and set(refnames) == refs
    for path, ref, is_copy in zip(files, refnames, orgs, strict=True):
        same = path.read_bytes() == (root / "refimgs" / ref).read_bytes()
        assert same == is_copy, path
        assert Image.open(path).format == "BMP"
        assert Image.open(path).size == Image.open(root / "refimgs" / ref).size
    assert (dmos["dmos"][0][orgs] == 0).all() and (realigned["dmos_new"][0][orgs] == 0).all()
    distorted = dmos["dmos"][0][~orgs]
    assert (distorted > 0).all() and distorted.max() <= 100
    assert realigned["dmos_new"][0][~orgs].max() > 95
    assert len({Image.open(root / "refimgs" / r).size for r in refs}) >= 3  # mixed sizes


def test_csiq(demo):
    from openpyxl import load_workbook

    root = demo[0] / "CSIQ"
    wb = load_workbook(root / "csiq.DMOS.xlsx")
    assert "all_by_image" in wb.sheetnames and len(wb.sheetnames) >= 2
    ws = wb["all_by_image"]
    assert [c.value for c in ws[4]] == ["image", "dst_idx", "dst_type", "dst_lev", "dmos_std",
                                        "dmos"]
    rows = [[c.value for c in r] for r in ws.iter_rows(min_row=5)]
    numeric = [r for r in ws.iter_rows(min_row=5) if r[0].value == 1600]
    assert numeric and all(r[0].data_type == "n" for r in numeric)
    tokens = {"noise": ("awgn", "AWGN"), "jpeg": ("jpeg", "JPEG"),
              "jpeg 2000": ("jpeg2000", "jpeg2000"), "fnoise": ("fnoise", "fnoise"),
              "blur": ("blur", "BLUR"), "contrast": ("contrast", "contrast")}
    assert {r[2] for r in rows} == set(tokens)
    refs = {p.stem for p in (root / "src_imgs").glob("*.png")}
    assert len(refs) >= 10 and "1600" in refs
    for image, idx, dst_type, lev, std, dmos in rows:
        folder, token = tokens[dst_type]
        assert idx == list(tokens).index(dst_type) + 1 and str(image) in refs
        assert (root / "dst_imgs" / folder / f"{image}.{token}.{lev}.png").is_file()
        assert 0 <= dmos <= 1 and std > 0 and 1 <= lev <= 5
    assert {Image.open(p).size for p in root.rglob("*.png")} == {(96, 96)}
    frame = pd.read_excel(root / "csiq.DMOS.xlsx", sheet_name="all_by_image", header=3)
    assert len(frame) == len(rows) == demo[1]["CSIQ"]
    # Learnable: within a type, more distortion is worse (DMOS: lower is better).
    for _, group in frame.groupby("dst_type"):
        assert group["dst_lev"].corr(group["dmos"], method="spearman") > 0.8


def test_bid(demo):
    import xlrd

    root = demo[0] / "BID"
    sheet = xlrd.open_workbook(root / "DatabaseGrades.xls").sheet_by_index(0)
    header = sheet.row_values(0)
    assert header[:3] == ["Image Number", "Average Subjective Grade", "Number of Grades"]
    assert header[3:] == [f"Grade #{g}" for g in range(1, len(header) - 2)]
    numbers = []
    for r in range(1, sheet.nrows):
        number, mean, n_grades, *grades = sheet.row_values(r)
        assert number == int(number) and n_grades == len(grades)
        assert 0 <= mean <= 5 and mean == pytest.approx(np.mean(grades), abs=1e-6)
        numbers.append(int(number))
        assert (root / "ImageDatabase" / f"DatabaseImage{int(number):04d}.JPG").is_file()
    assert numbers[0] == 1 and numbers == sorted(numbers) and numbers[-1] > len(numbers)  # gaps
    assert len(list((root / "ImageDatabase").iterdir())) == len(numbers) == demo[1]["BID"]
    sizes = {Image.open(p).size for p in (root / "ImageDatabase").iterdir()}
    assert (128, 96) in sizes and (96, 128) in sizes


def test_live_challenge(demo):
    root = demo[0] / "ChallengeDB_release"
    cell = loadmat(root / "Data" / "AllImages_release.mat")["AllImages_release"]
    names = cell_strings(cell)
    n = len(names)
    assert cell.shape == (n, 1) and n == demo[1]["ChallengeDB_release"]
    mos = loadmat(root / "Data" / "AllMOS_release.mat")["AllMOS_release"]
    std = loadmat(root / "Data" / "AllStdDev_release.mat")["AllStdDev_release"]
    assert mos.shape == std.shape == (1, n)
    assert 0 <= mos.min() and mos.max() <= 100 and mos.std() > 5
    assert names[:7] == [f"t{k}.bmp" for k in range(1, 8)]
    for i, name in enumerate(names):
        where = root / "Images" / ("trainingImages" if i < 7 else "")
        assert (where / name).is_file(), name
        assert not (i < 7 and (root / "Images" / name).exists())
    assert {name.rsplit(".", 1)[1] for name in names[7:]} == {"bmp", "JPG"}


def test_koniq(demo):
    root = demo[0] / "koniq-10k"
    scores_file = root / "koniq10k_scores_and_distributions.csv"
    assert scores_file.read_text().splitlines()[0] == (
        '"image_name","c1","c2","c3","c4","c5","c_total","MOS","SD","MOS_zscore"')
    sets_file = root / "koniq10k_distributions_sets.csv"
    with open(sets_file, newline="") as fh:
        assert next(csv.reader(fh)) == ["image_name", "c1", "c2", "c3", "c4", "c5", "c_total",
                                        "MOS", "SD", "set"]
    scores, sets = pd.read_csv(scores_file), pd.read_csv(sets_file)
    assert len(scores) == len(sets) == demo[1]["koniq-10k"]
    assert (scores["image_name"] == sets["image_name"]).all()
    counts = scores[["c1", "c2", "c3", "c4", "c5"]].to_numpy()
    assert (counts.sum(axis=1) == scores["c_total"]).all()
    assert np.allclose(counts @ np.arange(1, 6) / scores["c_total"], scores["MOS"], atol=1e-5)
    assert scores["MOS"].between(1, 5).all() and sets["MOS"].between(0, 100).all()
    shares = sets["set"].value_counts(normalize=True)
    assert set(shares.index) == {"training", "validation", "test"}
    assert shares["training"] == pytest.approx(0.7, abs=0.05)
    for name in scores["image_name"]:
        assert re.fullmatch(r"\d{9,11}\.jpg", name)
        assert Image.open(root / "1024x768" / name).size == (128, 96)


def test_kadid(demo):
    root = demo[0] / "kadid10k"
    with open(root / "dmos.csv", newline="") as fh:
        assert next(csv.reader(fh)) == ["dist_img", "ref_img", "dmos", "var"]
    frame = pd.read_csv(root / "dmos.csv")
    assert len(frame) == demo[1]["kadid10k"]
    assert frame["dmos"].between(1, 5).all() and (frame["var"] > 0).all()
    assert frame["ref_img"].nunique() >= 10
    for dist, ref in zip(frame["dist_img"], frame["ref_img"], strict=True):
        m = re.fullmatch(r"(I\d\d)_(\d\d)_(\d\d)\.png", dist)
        assert m and f"{m[1]}.png" == ref
        assert 1 <= int(m[2]) <= 25 and 1 <= int(m[3]) <= 5
        assert (root / "images" / dist).is_file() and (root / "images" / ref).is_file()
    parts = frame["dist_img"].str.extract(r"_(\d\d)_(\d\d)").astype(int)
    # Learnable: higher level, lower (worse) DMOS; KADID's DMOS is higher-is-better.
    assert parts[1].corr(frame["dmos"], method="spearman") < -0.5


def test_rebuilds_its_own_demo_but_not_other_data(tmp_path):
    make_biqa_demo(tmp_path / "a", scale=0.05)
    make_biqa_demo(tmp_path / "a", scale=0.05, seed=3)  # over a finished demo: fine
    (tmp_path / "b" / "CSIQ").mkdir(parents=True)
    (tmp_path / "b" / "CSIQ" / "real.png").write_bytes(b"x")
    with pytest.raises(FileExistsError):
        make_biqa_demo(tmp_path / "b", scale=0.05)
    assert (tmp_path / "b" / "CSIQ" / "real.png").read_bytes() == b"x"

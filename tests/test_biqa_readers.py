"""The six continual-BIQA readers (and SPAQ) on their real layouts: ids, targets, errors.

The happy paths read the demo (`make_biqa_demo`, every dataset in its real download's
layout); expected values are taken from the label files themselves with scipy.io,
openpyxl, xlrd and csv, never from the code under test.
"""

from __future__ import annotations

import csv
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import jpeg, one_line_error, write
from scipy.io import loadmat, savemat

from benchmarks.datasets.labels import read_labels
from benchmarks.demo.biqa import make_biqa_demo
from benchmarks.stream import load_experiences
from experiments.config import merge_entry

LIVE_FOLDERS = ["jp2k", "jpeg", "wn", "gblur", "fastfading"]
FORMAT_OF = {"databaserelease2": "live", "CSIQ": "csiq", "BID": "bid",
             "ChallengeDB_release": "clive", "koniq-10k": "koniq", "kadid10k": "kadid"}


@pytest.fixture(scope="session")
def biqa(tmp_path_factory) -> tuple[Path, dict[str, int]]:
    """The six datasets, small (10 references / 30 images each), written once."""
    root = tmp_path_factory.mktemp("biqa_readers")
    counts = make_biqa_demo(root, scale=0.3, seed=0)
    return root, counts


def entry(root: Path, folder: str, **kw) -> dict:
    return {"name": folder, "format": FORMAT_OF[folder], "root": str(root / folder), **kw}


def read(root: Path, folder: str, **kw):
    return read_labels(entry(root, folder, **kw))


def cells(cell) -> list[str]:
    """A MATLAB cell array of strings as loadmat returns it."""
    return [str(np.asarray(c).reshape(-1)[0]) for c in cell.reshape(-1)]


def live_ids(root: Path) -> list[str]:
    """`jp2k/img1.bmp` ... in MATLAB's order: the folders in turn, img1..imgN in each."""
    out = []
    for folder in LIVE_FOLDERS:
        n = len(list((root / folder).glob("img*.bmp")))
        out += [f"{folder}/img{i}.bmp" for i in range(1, n + 1)]
    return out


def copy_dataset(biqa, folder: str, tmp_path: Path) -> Path:
    dst = tmp_path / folder
    shutil.copytree(biqa[0] / folder, dst)
    return dst


# --------------------------------------------------------------------------- every reader


@pytest.mark.parametrize("folder", list(FORMAT_OF))
def test_ids_are_relative_paths_that_exist_and_counts_add_up(biqa, folder):
    root, counts = biqa
    table = read(root, folder)
    frame = table.frame
    assert table.path_ids
    assert frame["image_id"].tolist() == frame["path"].tolist()
    for image_id in frame["image_id"]:
        assert not image_id.startswith(("/", "..")) and "\\" not in image_id
        assert Path(image_id).suffix, image_id  # with its extension
        assert (root / folder / image_id).is_file(), image_id
    assert frame["image_id"].is_unique
    # Every row of the label file is either in the frame or excluded by design.
    assert len(frame) + len(table.excluded) == counts[folder]
    assert not set(frame["image_id"]) & {i for i, _ in table.excluded}
    assert frame["score"].between(*table.scale).all()


@pytest.mark.parametrize("folder, pattern", [
    ("databaserelease2", r"(jp2k|jpeg|wn|gblur|fastfading)/img\d+\.bmp"),
    ("CSIQ", r"dst_imgs/(awgn|jpeg|jpeg2000|fnoise|blur|contrast)/[^/]+\."
             r"(AWGN|JPEG|jpeg2000|fnoise|BLUR|contrast)\.[1-5]\.png"),
    ("BID", r"ImageDatabase/DatabaseImage\d{4}\.JPG"),
    ("ChallengeDB_release", r"Images/\d+\.(bmp|JPG)"),
    ("koniq-10k", r"1024x768/\d+\.jpg"),
    ("kadid10k", r"images/I\d\d_\d\d_\d\d\.png"),
])
def test_ids_follow_the_split_files_layout(biqa, folder, pattern):
    """The ids are the paths BIQA_CL's split files write (BIQA.md)."""
    frame = read(biqa[0], folder).frame
    bad = frame.loc[~frame["image_id"].str.fullmatch(pattern), "image_id"]
    assert bad.empty, bad.tolist()[:3]


def test_live_reference_copies_excluded_and_realigned_dmos_flipped(biqa):
    root = biqa[0] / "databaserelease2"
    table = read(biqa[0], "databaserelease2")
    mat = loadmat(root / "dmos_realigned.mat")
    dmos_new, orgs = mat["dmos_new"].reshape(-1), mat["orgs"].reshape(-1)
    std = mat["dmos_std"].reshape(-1)
    refnames = cells(loadmat(root / "refnames_all.mat")["refnames_all"])
    ids = live_ids(root)
    assert len(ids) == len(dmos_new) == len(refnames)

    copies = [ids[i] for i in np.flatnonzero(orgs == 1)]
    assert copies, "the demo has reference copies"
    assert sorted(i for i, _ in table.excluded) == sorted(copies)
    assert {reason for _, reason in table.excluded} == {"reference copy (orgs = 1)"}
    assert not set(copies) & set(table.frame["image_id"])
    assert len(table.frame) == int((orgs == 0).sum())

    lo, hi = table.scale
    assert (lo, hi) == (-10.0, 120.0)
    frame = table.frame.set_index("image_id")
    i = int(np.flatnonzero(orgs == 0)[3])
    assert frame.loc[ids[i], "score"] == pytest.approx(lo + hi - dmos_new[i])  # 110 - dmos_new
    assert frame.loc[ids[i], "std"] == pytest.approx(std[i])
    for k in np.flatnonzero(orgs == 0):  # the content group of every image
        assert frame.loc[ids[k], "ref"] == refnames[k]
    assert (root / "refimgs" / frame.loc[ids[i], "ref"]).is_file()
    assert table.has_refs
    assert table.label_info["file"] == str(root / "dmos_realigned.mat")
    assert table.label_info["column"] == "dmos_new"
    assert table.label_info["direction"] == "lower_better"


def test_live_falls_back_to_dmos_mat(biqa, tmp_path):
    root = copy_dataset(biqa, "databaserelease2", tmp_path)
    (root / "dmos_realigned.mat").unlink()
    table = read_labels({"name": "LIVE", "format": "live", "root": str(root)})
    mat = loadmat(root / "dmos.mat")
    dmos, orgs = mat["dmos"].reshape(-1), mat["orgs"].reshape(-1)
    ids = live_ids(root)
    frame = table.frame.set_index("image_id")
    kept = np.flatnonzero(orgs == 0)
    assert sorted(frame.index) == sorted(ids[k] for k in kept)
    for k in kept[:5]:
        assert frame.loc[ids[k], "score"] == pytest.approx(-10 + 120 - dmos[k])
    assert frame["std"].isna().all()  # dmos.mat has no dmos_std
    assert table.label_info["file"] == str(root / "dmos.mat")
    assert table.label_info["column"] == "dmos"
    assert table.label_info["direction"] == "lower_better"


def test_csiq_one_minus_dmos_from_the_all_by_image_sheet(biqa):
    import openpyxl

    root = biqa[0] / "CSIQ"
    table = read(biqa[0], "CSIQ")
    book = openpyxl.load_workbook(root / "csiq.DMOS.xlsx", read_only=True)
    assert book.sheetnames[0] != "all_by_image"  # the reader must pick the sheet by name
    rows = [list(r) for r in book["all_by_image"].iter_rows(values_only=True)]
    book.close()
    head = rows.index(["image", "dst_idx", "dst_type", "dst_lev", "dmos_std", "dmos"])
    data = [r for r in rows[head + 1:] if r[0] is not None]
    assert len(table.frame) == len(data)
    folders = {"noise": ("awgn", "AWGN"), "jpeg": ("jpeg", "JPEG"),
               "jpeg 2000": ("jpeg2000", "jpeg2000"), "fnoise": ("fnoise", "fnoise"),
               "blur": ("blur", "BLUR"), "contrast": ("contrast", "contrast")}
    frame = table.frame.set_index("image_id")

    image, _, kind, level, std, dmos = data[0]
    # '1600' is stored as a number in the sheet; it still names its files.
    assert isinstance(image, int | float) and not isinstance(image, bool)
    folder, token = folders[kind]
    image_id = f"dst_imgs/{folder}/{int(image)}.{token}.{int(level)}.png"
    assert (root / image_id).is_file()
    assert frame.loc[image_id, "score"] == pytest.approx(1 - dmos)
    assert frame.loc[image_id, "std"] == pytest.approx(std)
    assert frame.loc[image_id, "ref"] == str(int(image))
    assert (root / "src_imgs" / f"{frame.loc[image_id, 'ref']}.png").is_file()

    for image, _, kind, level, _, dmos in data:  # every row, not just the first
        folder, token = folders[kind]
        name = str(int(image)) if isinstance(image, int | float) else image
        assert frame.loc[f"dst_imgs/{folder}/{name}.{token}.{int(level)}.png",
                         "score"] == pytest.approx(1 - dmos)
    assert set(frame["ref"]) == {p.stem for p in (root / "src_imgs").glob("*.png")}
    assert table.scale == (0.0, 1.0)
    assert table.label_info["column"] == "dmos"
    assert table.label_info["direction"] == "lower_better"
    assert table.label_info["file"] == str(root / "csiq.DMOS.xlsx")


def test_bid_mos_unchanged_no_references(biqa):
    import xlrd

    root = biqa[0] / "BID"
    table = read(biqa[0], "BID")
    sheet = xlrd.open_workbook(root / "DatabaseGrades.xls").sheet_by_index(0)
    assert sheet.row_values(0)[:2] == ["Image Number", "Average Subjective Grade"]
    expected = {f"ImageDatabase/DatabaseImage{int(r[0]):04d}.JPG": r[1]
                for r in (sheet.row_values(k) for k in range(1, sheet.nrows))}
    frame = table.frame.set_index("image_id")
    assert sorted(frame.index) == sorted(expected)
    for image_id, mos in expected.items():
        assert frame.loc[image_id, "score"] == pytest.approx(mos)
    assert not table.has_refs and (table.frame["ref"] == "").all()
    assert table.excluded == []
    assert table.scale == (0.0, 5.0)
    assert table.label_info["column"] == "Average Subjective Grade"
    assert table.label_info["direction"] == "higher_better"


def test_clive_training_images_excluded(biqa):
    root = biqa[0] / "ChallengeDB_release"
    table = read(biqa[0], "ChallengeDB_release")
    names = cells(loadmat(root / "Data/AllImages_release.mat")["AllImages_release"])
    mos = loadmat(root / "Data/AllMOS_release.mat")["AllMOS_release"].reshape(-1)
    std = loadmat(root / "Data/AllStdDev_release.mat")["AllStdDev_release"].reshape(-1)
    assert [i for i, _ in table.excluded] == [f"Images/trainingImages/{n}" for n in names[:7]]
    assert all((root / i).is_file() for i, _ in table.excluded)
    assert table.frame["image_id"].tolist() == [f"Images/{n}" for n in names[7:]]
    assert table.frame["score"].to_numpy() == pytest.approx(mos[7:])
    assert table.frame["std"].to_numpy() == pytest.approx(std[7:])
    assert not table.has_refs
    assert table.label_info["column"] == "AllMOS_release"
    assert table.label_info["direction"] == "higher_better"


def test_koniq_mos_and_official_sets(biqa):
    root = biqa[0] / "koniq-10k"
    table = read(biqa[0], "koniq-10k")
    with open(root / "koniq10k_scores_and_distributions.csv", newline="") as fh:
        scores = list(csv.DictReader(fh))
    with open(root / "koniq10k_distributions_sets.csv", newline="") as fh:
        sets = list(csv.DictReader(fh))
    frame = table.frame.set_index("image_id")
    assert sorted(frame.index) == sorted(f"1024x768/{r['image_name']}" for r in scores)
    for r in scores:
        assert frame.loc[f"1024x768/{r['image_name']}", "score"] == pytest.approx(
            float(r["MOS"]))  # 1..5, not the sets file's 0..100
        assert frame.loc[f"1024x768/{r['image_name']}", "std"] == pytest.approx(float(r["SD"]))
    assert table.scale == (1.0, 5.0)
    names = {"training": "train", "validation": "val", "test": "test"}
    assert table.official_parts == {f"1024x768/{r['image_name']}": names[r["set"]]
                                    for r in sets}
    assert set(table.official_parts.values()) == {"train", "val", "test"}
    assert table.label_info["column"] == "MOS"
    assert table.label_info["direction"] == "higher_better"

    assert read(biqa[0], "koniq-10k", official_split=False).official_parts is None


def test_kadid_dmos_not_flipped_refs_and_std(biqa):
    root = biqa[0] / "kadid10k"
    table = read(biqa[0], "kadid10k")
    with open(root / "dmos.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    frame = table.frame.set_index("image_id")
    assert sorted(frame.index) == sorted(f"images/{r['dist_img']}" for r in rows)
    for r in rows:
        got = frame.loc[f"images/{r['dist_img']}"]
        assert got["score"] == pytest.approx(float(r["dmos"]))  # already higher-is-better
        assert got["ref"] == r["ref_img"]
        assert got["std"] == pytest.approx(math.sqrt(float(r["var"])))
        assert (root / "images" / got["ref"]).is_file()
    assert table.scale == (1.0, 5.0)
    assert table.label_info["column"] == "dmos"
    assert table.label_info["direction"] == "higher_better"
    assert "target" not in table.label_info  # nothing flipped


# --------------------------------------------------------------------------- SPAQ


SPAQ_HEADER = ["Image name", "MOS", "Brightness", "Colorfulness", "Contrast", "Noisiness",
               "Sharpness"]


def spaq(root: Path, rows: list[list]) -> Path:
    import openpyxl

    book = openpyxl.Workbook()
    sheet = book.active
    sheet.append(SPAQ_HEADER)
    for row in rows:
        sheet.append(row)
    path = root / "Annotations" / "MOS and Image attribute scores.xlsx"
    path.parent.mkdir(parents=True, exist_ok=True)
    book.save(path)
    return path


def test_spaq(tmp_path):
    rows = [["00001.jpg", 42.5, 50, 40, 30, 20, 10],
            ["00002.jpg", 71.0, 60, 40, 30, 20, 10],
            ["00003.jpg", 12.25, 70, 40, 30, 20, 10]]
    labels = spaq(tmp_path, rows)
    for k, colour in enumerate([(200, 10, 10), (10, 200, 10), (10, 10, 200)], 1):
        jpeg(tmp_path / "TestImage" / f"0000{k}.jpg", 24, colour)
    e = {"name": "SPAQ", "format": "spaq", "root": str(tmp_path)}
    table = read_labels(e)
    assert table.frame["image_id"].tolist() == [f"TestImage/0000{k}.jpg" for k in (1, 2, 3)]
    assert table.frame["score"].tolist() == [42.5, 71.0, 12.25]  # MOS, not an attribute
    assert not table.has_refs
    assert table.scale == (0.0, 100.0)
    assert table.label_info == {"file": str(labels), "column": "MOS",
                                "direction": "higher_better", "scale": [0.0, 100.0]}

    (exp,) = load_experiences([merge_entry(e, 0)])
    assert exp.dropped.empty
    assert sorted(exp.split.train + exp.split.val + exp.split.test) == \
        table.frame["image_id"].tolist()
    assert all(Path(f).is_file() for f in exp.table["file"])
    assert exp.transform == "crop"


def test_spaq_mos_out_of_range_names_the_row(tmp_path):
    labels = spaq(tmp_path, [["00001.jpg", 42.5], ["00002.jpg", 142.0]])
    message = one_line_error(read_labels, {"name": "SPAQ", "format": "spaq",
                                           "root": str(tmp_path)})
    assert str(labels) in message and "row 3" in message and "MOS" in message


# --------------------------------------------------------------------------- bad input


def test_live_dmos_mat_without_orgs(biqa, tmp_path):
    root = copy_dataset(biqa, "databaserelease2", tmp_path)
    dmos = loadmat(root / "dmos.mat")["dmos"]
    (root / "dmos_realigned.mat").unlink()
    savemat(root / "dmos.mat", {"dmos": dmos})
    message = one_line_error(read_labels, {"name": "LIVE", "format": "live", "root": str(root)})
    assert str(root / "dmos.mat") in message
    assert "'orgs'" in message and "'dmos'" in message  # what is missing, what it has


def test_live_refnames_of_another_length(biqa, tmp_path):
    root = copy_dataset(biqa, "databaserelease2", tmp_path)
    cell = loadmat(root / "refnames_all.mat")["refnames_all"]
    n = cell.size
    savemat(root / "refnames_all.mat", {"refnames_all": cell[:, :-1]})
    message = one_line_error(read_labels, {"name": "LIVE", "format": "live", "root": str(root)})
    assert str(root / "refnames_all.mat") in message
    assert f": {n}" in message and f"'refnames_all': {n - 1}" in message


def test_live_folders_do_not_match_the_labels(biqa, tmp_path):
    root = copy_dataset(biqa, "databaserelease2", tmp_path)
    last = max((root / "fastfading").glob("img*.bmp"), key=lambda p: int(p.stem[3:]))
    last.unlink()  # the folder now holds one image fewer than the label arrays
    message = one_line_error(read_labels, {"name": "LIVE", "format": "live", "root": str(root)})
    assert str(root / "dmos_realigned.mat") in message
    n = len(loadmat(root / "dmos_realigned.mat")["dmos_new"].reshape(-1))
    assert f"{n} entries" in message and "'fastfading'" in message


def test_csiq_sheet_without_the_header(tmp_path):
    import openpyxl

    book = openpyxl.Workbook()
    book.active.title = "all_by_distortion"
    sheet = book.create_sheet("all_by_image")
    sheet.append(["image", "dst_idx", "dst_type", "dst_lev", "dmos"])  # no dmos_std
    sheet.append(["1600", 1, "noise", 1, 0.1])
    book.save(tmp_path / "csiq.DMOS.xlsx")
    message = one_line_error(read_labels, {"name": "CSIQ", "format": "csiq",
                                           "root": str(tmp_path)})
    assert str(tmp_path / "csiq.DMOS.xlsx") in message
    assert "sheet 'all_by_image'" in message and "'dmos_std'" in message


def test_csiq_without_the_sheet(tmp_path):
    import openpyxl

    book = openpyxl.Workbook()
    book.active.title = "Sheet1"
    book.save(tmp_path / "csiq.DMOS.xlsx")
    message = one_line_error(read_labels, {"name": "CSIQ", "format": "csiq",
                                           "root": str(tmp_path)})
    assert "no sheet 'all_by_image'" in message and "Sheet1" in message


def test_csiq_dmos_outside_0_1_names_the_excel_row(biqa, tmp_path):
    import openpyxl

    book = openpyxl.load_workbook(biqa[0] / "CSIQ" / "csiq.DMOS.xlsx")
    sheet = book["all_by_image"]
    assert sheet.cell(7, 6).value is not None and sheet.cell(4, 6).value == "dmos"
    sheet.cell(7, 6).value = 1.7  # Excel row 7, column dmos
    bad = tmp_path / "bad.xlsx"
    book.save(bad)
    message = one_line_error(read, biqa[0], "CSIQ", labels=str(bad))
    assert str(bad) in message and "row 7:" in message and "dmos 1.7" in message


def test_kadid_dmos_outside_1_5_names_the_line(biqa, tmp_path):
    lines = (biqa[0] / "kadid10k" / "dmos.csv").read_text().splitlines()
    fields = lines[3].split(",")
    fields[2] = "7.0"
    lines[3] = ",".join(fields)  # line 4 of the file (the header is line 1)
    bad = write(tmp_path / "dmos.csv", "\n".join(lines) + "\n")
    message = one_line_error(read, biqa[0], "kadid10k", labels=str(bad))
    assert str(bad) in message and "line 4:" in message and "dmos 7" in message


def test_koniq_without_mos_column_names_line_1(biqa, tmp_path):
    source = biqa[0] / "koniq-10k" / "koniq10k_scores_and_distributions.csv"
    with open(source, newline="") as fh:
        rows = list(csv.reader(fh))
    k = rows[0].index("MOS")
    bad = tmp_path / "scores.csv"
    with open(bad, "w", newline="") as fh:
        csv.writer(fh).writerows([r[:k] + r[k + 1:] for r in rows])
    message = one_line_error(read, biqa[0], "koniq-10k", labels=str(bad))
    assert str(bad) in message and "line 1:" in message and "'MOS'" in message


def test_csiq_duplicated_row_names_its_excel_row(biqa, tmp_path):
    import openpyxl

    book = openpyxl.load_workbook(biqa[0] / "CSIQ" / "csiq.DMOS.xlsx")
    sheet = book["all_by_image"]
    sheet.append([c.value for c in sheet[10]])  # a copy of Excel row 10, at the end
    row = sheet.max_row
    bad = tmp_path / "dup.xlsx"
    book.save(bad)
    message = one_line_error(read, biqa[0], "CSIQ", labels=str(bad))
    assert "listed twice" in message
    assert f"row {row}:" in message, message


def test_kadid_duplicated_line_names_its_line(biqa, tmp_path):
    lines = (biqa[0] / "kadid10k" / "dmos.csv").read_text().splitlines()
    bad = write(tmp_path / "dmos.csv", "\n".join(lines + [lines[3]]) + "\n")
    message = one_line_error(read, biqa[0], "kadid10k", labels=str(bad))
    assert "listed twice" in message
    assert f"line {len(lines) + 1}:" in message, message


def test_kadid_line_number_after_a_blank_line(biqa, tmp_path):
    lines = (biqa[0] / "kadid10k" / "dmos.csv").read_text().splitlines()
    fields = lines[3].split(",")
    fields[2] = "7.0"
    bad_lines = lines[:3] + [""] + [",".join(fields)] + lines[4:]  # the bad row: line 5
    bad = write(tmp_path / "dmos.csv", "\n".join(bad_lines) + "\n")
    message = one_line_error(read, biqa[0], "kadid10k", labels=str(bad))
    assert "line 5:" in message, message


# --------------------------------------------------------------------------- outside the root


def test_csv_path_leaving_the_root_is_dropped_as_outside_root(tmp_path):
    root = tmp_path / "ds"
    jpeg(tmp_path / "outside.jpg")  # it exists, but not under the root
    rows = ["name,mos,file"] + [f"{k},{k},img/{k}.jpg" for k in range(1, 6)]
    rows.append("outside,3.5,../outside.jpg")
    write(root / "labels.csv", "\n".join(rows) + "\n")
    for k in range(1, 6):
        jpeg(root / "img" / f"{k}.jpg")
    e = merge_entry({"name": "C", "format": "csv", "root": str(root), "labels": "labels.csv",
                     "scale": [1, 5], "columns": {"id": "name", "score": "mos",
                                                  "path": "file"}}, 0)
    (exp,) = load_experiences([e])
    assert exp.dropped["image_id"].tolist() == ["outside"]
    assert exp.dropped["kind"].tolist() == ["outside_root"]
    assert "../outside.jpg" in exp.dropped["reason"].iloc[0]
    assert "outside" not in exp.table.index
    assert exp.counts()["dropped_by_reason"]["outside_root"] == 1
    assert exp.counts()["labelled"] == 6 and exp.counts()["usable"] == 5


def test_kadid_row_leaving_the_root_is_dropped_as_outside_root(biqa, tmp_path):
    root = copy_dataset(biqa, "kadid10k", tmp_path)
    jpeg(tmp_path / "x.png")  # images/../../x.png: beside the root, not in it
    with open(root / "dmos.csv", "a", newline="") as fh:
        fh.write("../../x.png,I01.png,3.0,0.25\n")
    (exp,) = load_experiences([merge_entry({"name": "KADID", "format": "kadid",
                                            "root": str(root)}, 0)])
    assert exp.dropped["image_id"].tolist() == ["images/../../x.png"]
    assert exp.dropped["kind"].tolist() == ["outside_root"]
    assert exp.counts()["usable"] == biqa[1]["kadid10k"]
    assert "images/../../x.png" not in exp.table.index

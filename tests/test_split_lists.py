"""Splits of the BIQA datasets: by reference, from the field's split lists, official; mPSR."""

from __future__ import annotations

import csv
import itertools
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import jpeg, one_line_error, write
from scipy.io import loadmat

from benchmarks.datasets.labels import read_labels
from benchmarks.datasets.splits import SplitRequest, make_splits
from benchmarks.demo.biqa import make_biqa_demo
from benchmarks.errors import UserError
from benchmarks.metrics import mpsr, summary
from benchmarks.stream import load_experiences
from experiments.config import merge_entry

PARTS = ("train", "val", "test")
LIVE_FOLDERS = ["jp2k", "jpeg", "wn", "gblur", "fastfading"]
SYNTHETIC = [("LIVE", "live", "databaserelease2"), ("CSIQ", "csiq", "CSIQ"),
             ("KADID", "kadid", "kadid10k")]


@pytest.fixture(scope="session")
def biqa(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("biqa_splits")
    make_biqa_demo(root, scale=0.3, seed=0)
    return root


def load(*entries, **kw):
    kw = {"val_of": "all", "test_fraction": 0.2, "val_fraction": 0.1, **kw}
    return load_experiences([merge_entry(e, i) for i, e in enumerate(entries)], **kw)


# --------------------------------------------------------------------------- by reference


@pytest.mark.parametrize("name, fmt, folder", SYNTHETIC)
def test_synthetic_datasets_are_split_by_reference(biqa, name, fmt, folder):
    (exp,) = load({"name": name, "format": fmt, "root": str(biqa / folder)})
    assert exp.split.by == "reference"
    refs = {p: set(exp.table.loc[getattr(exp.split, p), "ref"]) for p in PARTS}
    for a, b in itertools.combinations(PARTS, 2):
        assert not refs[a] & refs[b], (a, b, refs[a] & refs[b])
    every = set(exp.table["ref"])
    counts = exp.counts()
    assert counts["references"] == {p: len(refs[p]) for p in PARTS}
    assert sum(counts["references"].values()) == len(every) == 10
    # 10 references, val_of all: 20% test, 10% val, of the references.
    assert counts["references"] == {"train": 7, "val": 1, "test": 2}
    assert counts["references_shared"] == 0
    assert sorted(exp.split.train + exp.split.val + exp.split.test) == sorted(exp.table.index)


@pytest.mark.parametrize("name, fmt, folder", SYNTHETIC)
def test_split_by_image_shares_references(biqa, name, fmt, folder):
    (exp,) = load({"name": name, "format": fmt, "root": str(biqa / folder),
                   "split_by": "image"})
    assert exp.split.by == "image"
    n = len(exp.table)
    assert (len(exp.split.test), len(exp.split.val)) == (round(0.2 * n), round(0.1 * n))
    refs = {p: set(exp.table.loc[getattr(exp.split, p), "ref"]) for p in PARTS}
    shared = (refs["train"] & refs["test"]) | (refs["train"] & refs["val"]) | \
        (refs["val"] & refs["test"])
    assert exp.counts()["references_shared"] == len(shared) > 0
    assert sum(exp.counts()["references"].values()) > len(set(exp.table["ref"]))


def test_split_by_reference_without_references_is_an_error(biqa):
    message = one_line_error(load, {"name": "BID", "format": "bid", "root": str(biqa / "BID"),
                                    "split_by": "reference"})
    assert "BID" in message and "DatabaseGrades.xls" in message and "split_by" in message


def test_29_references_split_20_3_6():
    """LIVE's 29 references as BIQA_CL splits them: 20 / 3 / 6 (BIQA.md)."""
    refs = [f"ref{r:02d}.bmp" for r in range(29)]
    groups = {f"img{r}_{k}": ref for r, ref in enumerate(refs) for k in range(4)}
    request = SplitRequest(sorted(groups), 0.2, groups=groups)
    split = make_splits({"LIVE": request}, seed=19901116, val_fraction=0.1,
                        val_of="all")["LIVE"]
    assert split.by == "reference"
    assert split.refs == {"train": 20, "val": 3, "test": 6}
    assert split.shared_refs == 0
    assert (len(split.train), len(split.val), len(split.test)) == (80, 12, 24)
    by_part = {p: {groups[i] for i in getattr(split, p)} for p in PARTS}
    assert set().union(*by_part.values()) == set(refs)


# --------------------------------------------------------------------------- split lists


def live_labels(root: Path) -> dict:
    """id -> (realigned DMOS, std, orgs, reference) read straight from the .mat files."""
    mat = loadmat(root / "dmos_realigned.mat")
    refs = [str(np.asarray(c).reshape(-1)[0]) for c in
            loadmat(root / "refnames_all.mat")["refnames_all"].reshape(-1)]
    ids = [f"{f}/img{i}.bmp" for f in LIVE_FOLDERS
           for i in range(1, len(list((root / f).glob("img*.bmp"))) + 1)]
    return {i: (d, s, o, r) for i, d, s, o, r in zip(
        ids, mat["dmos_new"].reshape(-1), mat["dmos_std"].reshape(-1),
        mat["orgs"].reshape(-1), refs, strict=True)}


def partition(labels: dict, shift: int = 0) -> dict[str, list[str]]:
    """Distorted LIVE images by reference: 6 references train, 1 val, 2 test, 1 unlisted."""
    refs = sorted({r for _, _, o, r in labels.values() if o == 0})
    refs = refs[shift:] + refs[:shift]
    where = {r: "train" for r in refs[:6]} | {refs[6]: "val"} | {r: "test" for r in refs[7:9]}
    out = {p: [] for p in PARTS}
    for image_id, (_, _, orgs, ref) in labels.items():
        if orgs == 0 and ref in where:
            out[where[ref]].append(image_id)
    return out


def write_lists(root: Path, k: int, parts: dict[str, list[str]], labels: dict,
                eol: str = "\r", scores: bool = True) -> dict[str, str]:
    """BIQA_CL's files: `path<TAB>score<TAB>std`, no header, its score (111.7747 - dmos)."""
    names = {"train": "live_train_score.txt", "val": "live_val.txt", "test": "live_test.txt"}
    for part, ids in parts.items():
        lines = [f"{i}\t{111.7747 - labels[i][0]:f}\t{labels[i][1]:f}" if scores else i
                 for i in ids]
        path = root / "splits2" / str(k) / names[part]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(eol.join(lines).encode() + eol.encode())
    return {p: f"splits2/{{k}}/{n}" for p, n in names.items()}


def live_entry(root: Path, splits: dict) -> dict:
    return {"name": "LIVE", "format": "live", "root": str(root), "splits": splits}


@pytest.fixture
def live(biqa, tmp_path) -> tuple[Path, dict]:
    """A LIVE root of its own (the lists are written into it): a copy of the demo's."""
    root = tmp_path / "databaserelease2"
    shutil.copytree(biqa / "databaserelease2", root)
    return root, live_labels(root)


@pytest.mark.parametrize("eol", ["\n", "\r\n", "\r"], ids=["LF", "CRLF", "CR"])
def test_lists_decide_the_split_and_labels_come_from_the_mat(live, eol):
    root, labels = live
    parts = partition(labels)
    splits = write_lists(root, 1, parts, labels, eol)
    (exp,) = load(live_entry(root, splits))
    assert exp.split.by == "list"
    for part in PARTS:
        assert getattr(exp.split, part) == sorted(parts[part])
    for image_id in parts["train"][:3] + parts["test"][:3]:
        dmos_new, std, _, _ = labels[image_id]
        # -10 + 120 - dmos_new from the .mat, not the list's 111.7747 - dmos
        assert exp.table.loc[image_id, "score"] == pytest.approx(110 - dmos_new)
        assert exp.table.loc[image_id, "std"] == pytest.approx(std)

    listed = set().union(*map(set, parts.values()))
    unlisted = sorted(i for i, (_, _, o, _) in labels.items() if o == 0 and i not in listed)
    assert unlisted
    assert sorted(i for i, r in exp.excluded if r == "in no split list") == unlisted
    assert not set(unlisted) & set(exp.table.index)
    assert exp.dropped.empty  # excluded by design, never dropped
    copies = sum(o == 1 for _, _, o, _ in labels.values())
    assert exp.counts()["excluded_by_reason"] == {"reference copy (orgs = 1)": copies,
                                                  "in no split list": len(unlisted)}
    assert exp.counts()["references"] == {"train": 6, "val": 1, "test": 2}
    assert exp.counts()["references_shared"] == 0


def test_k_is_the_split_number(live):
    root, labels = live
    first, second = partition(labels, 0), partition(labels, 3)
    assert first["test"] != second["test"]
    splits = write_lists(root, 1, first, labels)
    write_lists(root, 2, second, labels)
    (one,) = load(live_entry(root, splits))
    (two,) = load(live_entry(root, splits), split=2)
    for part in PARTS:
        assert getattr(one.split, part) == sorted(first[part])
        assert getattr(two.split, part) == sorted(second[part])
    message = one_line_error(load, live_entry(root, splits), split=3)
    assert str(root / "splits2/3/live_train_score.txt") in message


def test_path_only_lists(live):
    root, labels = live
    parts = partition(labels)
    (exp,) = load(live_entry(root, write_lists(root, 1, parts, labels, "\n", scores=False)))
    for part in PARTS:
        assert getattr(exp.split, part) == sorted(parts[part])
    image_id = parts["val"][0]
    assert exp.table.loc[image_id, "score"] == pytest.approx(110 - labels[image_id][0])


def test_lists_without_val(live):
    root, labels = live
    parts = partition(labels)
    splits = write_lists(root, 1, parts, labels)
    del splits["val"]
    (exp,) = load(live_entry(root, splits))
    assert exp.split.val == []
    assert exp.split.train == sorted(parts["train"])
    assert exp.split.test == sorted(parts["test"])
    listed = set(parts["train"]) | set(parts["test"])
    unlisted = sorted(i for i, (_, _, o, _) in labels.items() if o == 0 and i not in listed)
    assert set(parts["val"]) <= set(unlisted)
    assert sorted(i for i, r in exp.excluded if r == "in no split list") == unlisted


def list_error(root: Path, labels: dict, part: str, line: int, text: str,
               name: str | None = None) -> tuple[str, Path]:
    """Put `text` at `line` of one list (BIQA_CL's bare CR endings) and load."""
    splits = write_lists(root, 1, partition(labels), labels)
    if name is not None:
        splits[part] = f"splits2/{{k}}/{name}"
    file = root / splits[part].replace("{k}", "1")
    lines = file.read_bytes().decode().split("\r")[:-1] if file.is_file() else []
    lines.insert(line - 1, text)
    file.write_bytes("\r".join(lines).encode() + b"\r")
    return one_line_error(load, live_entry(root, splits)), file


def test_listed_path_not_in_the_labels(live):
    root, labels = live
    message, file = list_error(root, labels, "test", 2, "jp2k/img999.bmp\t50.0\t10.0")
    assert f"{file}, line 2:" in message
    assert "jp2k/img999.bmp" in message and "dmos_realigned.mat" in message


def test_listed_reference_copy(live):
    """A reference copy (orgs = 1) is excluded from the labels: listing it is an error."""
    root, labels = live
    copy = next(i for i, (_, _, o, _) in labels.items() if o == 1)
    message, file = list_error(root, labels, "train", 4, f"{copy}\t111.7747\t0.0")
    assert f"{file}, line 4:" in message and copy in message
    assert "left out by design (reference copy (orgs = 1))" in message


def test_listed_path_leaving_the_root(live):
    root, labels = live
    message, file = list_error(root, labels, "val", 1, "../x.bmp\t50.0\t10.0")
    assert f"{file}, line 1:" in message and "../x.bmp" in message and "root" in message


def test_pair_file_points_to_the_score_list(live):
    root, labels = live
    message, file = list_error(root, labels, "train", 1, "a.bmp\tb.bmp\t0.7\t1\t2\t1",
                               name="live_train.txt")
    assert f"{file}, line 1:" in message
    assert "pair file" in message and "live_train_score.txt" in message


def test_same_image_in_two_lists(live):
    root, labels = live
    train = partition(labels)["train"][0]
    message, file = list_error(root, labels, "test", 3, f"{train}\t50.0\t10.0")
    assert f"{file}, line 3:" in message and train in message
    assert "live_train_score.txt" in message  # where it is already


def test_non_numeric_score(live):
    root, labels = live
    image_id = partition(labels)["test"][0]
    message, file = list_error(root, labels, "test", 2, f"{image_id}\tgood\t1.0")
    assert f"{file}, line 2:" in message and "'good'" in message


# --------------------------------------------------------------------------- format: list


def test_list_as_label_source(tmp_path):
    write(tmp_path / "mylist.txt", "a/1.png\t20\t1.5\r\na/2.png\t75.5\t2\r\n\r\nb/3.png\t100\r\n")
    e = {"name": "L", "format": "list", "root": str(tmp_path), "labels": "mylist.txt",
         "scale": [0, 100], "direction": "lower_better"}
    table = read_labels(merge_entry(e, 0))
    assert table.frame["image_id"].tolist() == ["a/1.png", "a/2.png", "b/3.png"]
    assert table.frame["score"].tolist() == [80.0, 24.5, 0.0]  # 100 - score
    assert table.frame["std"].tolist()[:2] == [1.5, 2.0]
    assert np.isnan(table.frame["std"].iloc[2])
    assert table.label_info["direction"] == "lower_better"
    assert table.label_info["file"] == str(tmp_path / "mylist.txt")

    higher = read_labels(merge_entry({**e, "direction": "higher_better"}, 0))
    assert higher.frame["score"].tolist() == [20.0, 75.5, 100.0]


def test_list_labels_from_the_split_lists_themselves(tmp_path):
    """`format: list` with `splits` and no `labels`: the lists are labels and split."""
    parts = {"train": [f"i/{k}.png" for k in range(6)], "val": ["i/6.png"],
             "test": ["i/7.png", "i/8.png"]}
    for part, paths in parts.items():
        write(tmp_path / f"{part}.txt",
              "".join(f"{p}\t{10 * int(p[2])}\r" for p in paths))
        for p in paths:
            jpeg(tmp_path / p)
    (exp,) = load({"name": "L", "format": "list", "root": str(tmp_path),
                   "splits": {p: f"{p}.txt" for p in PARTS}, "scale": [0, 100],
                   "direction": "higher_better"})
    assert exp.split.by == "list"
    for part in PARTS:
        assert getattr(exp.split, part) == parts[part]
    assert exp.table.loc["i/7.png", "score"] == 70.0


def test_list_needs_a_direction_and_a_scale(tmp_path):
    write(tmp_path / "mylist.txt", "a/1.png\t20\n")
    e = {"name": "L", "format": "list", "root": str(tmp_path), "labels": "mylist.txt",
         "scale": [0, 100]}
    message = one_line_error(read_labels, merge_entry(e, 0))
    assert "'L'" in message and "direction" in message
    e = {**e, "direction": "lower_better", "scale": None}
    message = one_line_error(read_labels, merge_entry(e, 0))
    assert "mylist.txt" in message and "scale" in message


def test_list_score_outside_the_scale(tmp_path):
    write(tmp_path / "mylist.txt", "a/1.png\t20\na/2.png\t120\n")
    e = {"name": "L", "format": "list", "root": str(tmp_path), "labels": "mylist.txt",
         "scale": [0, 100], "direction": "higher_better"}
    message = one_line_error(read_labels, e)
    assert f"{tmp_path / 'mylist.txt'}, line 2:" in message and "120" in message


# --------------------------------------------------------------------------- KonIQ


def koniq_sets(root: Path) -> dict[str, str]:
    with open(root / "koniq10k_distributions_sets.csv", newline="") as fh:
        return {f"1024x768/{r['image_name']}": r["set"] for r in csv.DictReader(fh)}


def test_koniq_official_sets_decide_the_split(biqa):
    root = biqa / "koniq-10k"
    sets = koniq_sets(root)
    (exp,) = load({"name": "KonIQ", "format": "koniq", "root": str(root)})
    assert exp.split.by == "official"
    names = {"train": "training", "val": "validation", "test": "test"}
    for part in PARTS:
        assert getattr(exp.split, part) == sorted(i for i, s in sets.items()
                                                  if s == names[part])
    assert exp.excluded == []

    (random,) = load({"name": "KonIQ", "format": "koniq", "root": str(root),
                      "official_split": False})
    assert random.split.by == "image"
    assert random.split.test != exp.split.test


def test_koniq_split_lists_override_the_official_sets(biqa, tmp_path):
    root = tmp_path / "koniq-10k"
    shutil.copytree(biqa / "koniq-10k", root)
    ids = sorted(koniq_sets(root))
    mine = {"train": ids[:20], "val": ids[20:24], "test": ids[24:]}
    for part, chosen in mine.items():
        write(root / "lists" / f"koniq_{part}.txt", "\n".join(chosen) + "\n")
    (exp,) = load({"name": "KonIQ", "format": "koniq", "root": str(root),
                   "splits": {p: f"lists/koniq_{p}.txt" for p in PARTS}})
    assert exp.split.by == "list"
    for part in PARTS:
        assert getattr(exp.split, part) == mine[part]
    assert exp.excluded == []


# --------------------------------------------------------------------------- mPSR


def test_mpsr_by_hand():
    R = [[0.8, 0.1, 0.2],
         [0.6, 0.9, 0.3],
         [0.4, 0.45, 0.5]]
    # PSR_0 = R00                                 = 0.8
    # PSR_1 = R11 * (R10 / R00)        = 0.9 * 0.75 = 0.675
    # PSR_2 = R22 * mean(R20 / R00, R21 / R11)
    #       = 0.5 * mean(0.5, 0.5)                  = 0.25
    # mPSR  = (0.8 + 0.675 + 0.25) / 3 = 1.725 / 3  = 0.575
    assert mpsr(R) == pytest.approx(0.575)
    assert summary(R, [0.0, 0.0, 0.0])["mpsr"] == pytest.approx(0.575)
    assert mpsr(np.array(R)) == pytest.approx(0.575)


def test_mpsr_single_experience():
    assert mpsr([[0.7]]) == pytest.approx(0.7)
    assert summary([[0.7]], [0.1])["mpsr"] == pytest.approx(0.7)


@pytest.mark.parametrize("diagonal", [0.0, -0.2])
def test_mpsr_undefined_when_a_denominator_is_not_positive(diagonal):
    R = [[0.8, 0.1, 0.2],
         [0.6, diagonal, 0.3],
         [0.4, 0.45, 0.5]]
    assert mpsr(R) is None
    assert summary(R, [0.0, 0.0, 0.0])["mpsr"] is None
    R[0][0] = diagonal
    R[1][1] = 0.9
    assert mpsr(R) is None


def test_mpsr_last_diagonal_is_no_denominator():
    R = [[0.8, 0.1], [0.4, -0.5]]
    # PSR_0 = 0.8; PSR_1 = -0.5 * (0.4 / 0.8) = -0.25; mPSR = 0.55 / 2 = 0.275
    assert mpsr(R) == pytest.approx(0.275)
    assert mpsr([[0.8, 0.1], [float("nan"), 0.5]]) is None


def test_label_list_refuses_a_path_listed_twice(tmp_path):
    jpeg(tmp_path / "a.png")
    (tmp_path / "mylist.txt").write_text("a.png\t10\na.png\t90\n")
    e = merge_entry({"name": "L", "format": "list", "root": str(tmp_path),
                     "labels": "mylist.txt", "scale": [0, 100],
                     "direction": "higher_better"}, 0)
    with pytest.raises(UserError, match=r"mylist.txt, line 2: a.png is listed again"):
        read_labels(e)

"""Empty splits: an empty validation split is allowed and said; an empty training or test
split is refused in one line, before anything is written, naming where its ids came from.

The three ways to an empty validation split: split lists without `val` (many published
splits have none), an empty list file, and a dataset too small for the fractions to leave
a reference for validation.
"""

from __future__ import annotations

import csv
import json
import logging
import shutil
from pathlib import Path

import pytest
from conftest import one_line_error, write

from benchmarks.datasets.splits import SplitRequest, make_splits
from benchmarks.demo.biqa import make_biqa_demo
from benchmarks.stream import build_stream, load_experiences
from experiments.cli import main
from experiments.config import load_config, merge_entry
from experiments.grid import report, val_acc

SMALL = ["data.image_size=48", "train.epochs=1", "train.batch_size=8", "log.progress=false",
         "log.plots=false", "data.transform=resize"]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """BID with train/test lists (no val list) and an empty list file; KADID cut to two
    references (one goes to test, none is left for validation) and to one."""
    root = tmp_path_factory.mktemp("empty_splits")
    make_biqa_demo(root, scale=0.3, seed=0)
    bid = root / "BID"
    files = sorted(p.name for p in (bid / "ImageDatabase").glob("*.JPG"))
    write(bid / "lists" / "train.txt", "".join(f"ImageDatabase/{f}\t3\n" for f in files[:-6]))
    write(bid / "lists" / "test.txt", "".join(f"ImageDatabase/{f}\t3\n" for f in files[-6:]))
    write(bid / "lists" / "empty.txt", "")
    kadid = root / "kadid10k"
    rows = list(csv.reader((kadid / "dmos.csv").open()))
    for n in (2, 1):
        refs = sorted({r[1] for r in rows[1:]})[:n]
        small = root / f"kadid_{n}ref"
        shutil.copytree(kadid, small)
        with (small / "dmos.csv").open("w", newline="") as fh:
            csv.writer(fh).writerows([rows[0], *(r for r in rows[1:] if r[1] in refs)])
    return root


def config_file(tmp_path: Path, *entries: str) -> Path:
    return write(tmp_path / "stream.yaml", "seed: 0\nstream:\n" + "".join(
        f"  - {e}\n" for e in entries))


def bid(data: Path, **splits: str) -> str:
    lists = ", ".join(f"{k}: lists/{v}" for k, v in splits.items())
    return f"{{name: BID, format: bid, root: {data / 'BID'}, splits: {{{lists}}}}}"


def kadid(data: Path, refs: int) -> str:
    return f"{{name: KADID, format: kadid, root: {data / f'kadid_{refs}ref'}}}"


def csiq(data: Path) -> str:
    return f"{{name: CSIQ, format: csiq, root: {data / 'CSIQ'}}}"


def test_check_data_says_each_experience_without_validation_in_one_line(data, tmp_path,
                                                                         capsys):
    cfg = config_file(tmp_path, bid(data, train="train.txt", test="test.txt"), kadid(data, 2),
                      csiq(data))
    assert main(["check-data", str(cfg)]) == 0
    notes = [line.strip() for line in capsys.readouterr().out.splitlines()
             if "no validation split" in line]
    assert len(notes) == 2, notes
    assert notes[0].startswith("BID: no validation split (no `val` list in the entry's "
                               "`splits:`)")
    assert notes[1].startswith("KADID: no validation split (data.val_fraction = 0.1 of what "
                               "the test split leaves") and "2 reference(s) in all" in notes[1]


def test_an_empty_val_list_file_gives_a_stream_without_that_validation_set(data, tmp_path):
    cfg = load_config(config_file(tmp_path, bid(data, train="train.txt", val="empty.txt",
                                               test="test.txt"), csiq(data)), SMALL)
    stream = build_stream(cfg["stream"], image_size=48)  # Avalanche's IndexError before
    bid_exp, csiq_exp = stream.experiences
    assert bid_exp.split.val == [] and len(csiq_exp.split.val) > 0
    assert bid_exp.no_val().startswith(
        f"BID: no validation split (split list {data / 'BID/lists/empty.txt'} names no "
        "usable image)")
    assert [len(e.dataset) for e in stream.benchmark.valid_stream] == \
        [0, len(csiq_exp.split.val)]
    assert csiq_exp.no_val() == ""


def test_a_run_evaluates_validation_where_there_is_some_and_records_the_rest(data, tmp_path,
                                                                             caplog):
    cfg = config_file(tmp_path, bid(data, train="train.txt", test="test.txt"), csiq(data),
                      kadid(data, 2))
    out = tmp_path / "run"
    with caplog.at_level(logging.WARNING):
        assert main(["run", str(cfg), "--out", str(out), *SMALL]) == 0
    said = [r.getMessage() for r in caplog.records if "no validation split" in r.getMessage()]
    assert [m.split(":")[0] for m in said] == ["BID", "KADID"]  # one line each
    r = json.loads((out / "results.json").read_text())
    assert set(r["without_validation"]) == {"BID", "KADID"}
    assert r["without_validation"]["BID"] == "no `val` list in the entry's `splits:`"
    assert r["counts"]["BID"]["val"] == 0 and r["counts"]["CSIQ"]["val"] > 0
    for row in r["validation"]["matrices"]["srcc"]:  # 3 stages x 3 experiences
        assert row[0] is None and row[2] is None and isinstance(row[1], float)
    assert len(r["validation"]["matrices"]["srcc"]) == 3
    assert (out / "splits" / "BID" / "val.txt").read_text() == ""
    # Model selection by validation says what it did: val ACC is CSIQ's alone.
    assert val_acc(r) == pytest.approx(r["validation"]["matrices"]["srcc"][-1][1])
    table = report([{**r, "label": "naive"}])
    assert "no validation split in BID, KADID" in table


def test_no_validation_at_all_and_frozen_features(data, tmp_path):
    cfg = config_file(tmp_path, bid(data, train="train.txt", test="test.txt"))
    for extra in (["eval.validation=false"], ["model.freeze_backbone=true"]):
        out = tmp_path / extra[0]
        assert main(["run", str(cfg), "--out", str(out), *SMALL, *extra]) == 0
        r = json.loads((out / "results.json").read_text())
        assert r["validation"] is None and list(r["without_validation"]) == ["BID"]
        assert isinstance(r["matrices"]["srcc"][0][0], float)


@pytest.mark.parametrize("splits, part, said", [
    ({"train": "train.txt", "test": "empty.txt"}, "test", "the file is empty; list test "
     "images there"),
    ({"train": "empty.txt", "val": "test.txt", "test": "train.txt"}, "train",
     "the file is empty; list train images there"),
])
def test_an_empty_test_or_training_list_is_refused_before_anything_is_written(
        data, tmp_path, capsys, splits, part, said):
    cfg = config_file(tmp_path, bid(data, **splits))
    out = tmp_path / "run"
    assert main(["run", str(cfg), "--out", str(out), *SMALL]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0] == (f"iqacl: error: experience 'BID': its {part} split is empty (split list "
                      f"{data / 'BID/lists/empty.txt'}): {said}")
    assert not out.exists()


def test_a_dataset_of_one_reference_cannot_be_split(data, tmp_path, capsys):
    cfg = config_file(tmp_path, kadid(data, 1))
    assert main(["check-data", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "experience 'KADID': its test split is empty (test_fraction = 0.2 of 1 " \
           "reference(s))" in err and "split_by: image" in err and "\n" not in err.strip()


def test_official_split_without_validation_and_fractions_of_zero():
    ids = [f"i{k}" for k in range(10)]
    official = {i: ("test" if k < 3 else "train") for k, i in enumerate(ids)}
    split = make_splits({"K": SplitRequest(ids, fixed=official, fixed_by="official",
                                           official_source="sets.csv")}, 0, 0.1)["K"]
    assert split.val == [] and split.sources["val"] == \
        "the official split (sets.csv) has no validation set"
    split = make_splits({"X": SplitRequest(ids)}, 0, 0.0)["X"]
    assert split.val == [] and split.sources["val"].startswith("data.val_fraction = 0 of")
    message = one_line_error(make_splits, {"K": SplitRequest(
        ids, fixed=dict.fromkeys(ids, "train"), fixed_by="official",
        official_source="sets.csv")}, 0, 0.1)
    assert message.startswith("experience 'K': its test split is empty (the official split "
                              "(sets.csv)): ")


def test_load_experiences_on_the_split_lists_records_where_ids_came_from(data):
    entry = merge_entry({"name": "BID", "format": "bid", "root": str(data / "BID"),
                         "splits": {"train": "lists/train.txt", "test": "lists/test.txt"}}, 0)
    (exp,) = load_experiences([entry])
    assert exp.counts()["split_sources"] == {
        "train": f"split list {data / 'BID/lists/train.txt'}",
        "val": "no `val` list in the entry's `splits:`",
        "test": f"split list {data / 'BID/lists/test.txt'}"}

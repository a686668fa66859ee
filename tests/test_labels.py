"""Loaders on fixtures in the real formats: EVA's '=' votes and BOM, AVA's 15 columns."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from conftest import jpeg, one_line_error, write

from benchmarks.datasets.files import resolve_images
from benchmarks.datasets.labels import read_labels
from benchmarks.errors import UserError
from benchmarks.stream import load_experiences

# The real header, written out (not taken from the code under test).
EVA_HEADER = ("image_id=user_id=score=difficulty=visual=composition=quality=semantic="
              "vote_time=1=2=3=4")


def vote(image_id, user, score):
    return f"{image_id}={user}={score}=2=3=1=4=2=2019-05-11 12:00:00=1=0=0=1"


@pytest.fixture
def eva_root(tmp_path):
    lines = [EVA_HEADER, vote(11, 1, 7), vote(11, 2, 8), vote(11, 3, 9),
             vote(22, 1, 2), vote(22, 4, 3), vote(33, 1, 10)]
    write(tmp_path / "data/votes_filtered.csv", "\n".join(lines) + "\n")
    write(tmp_path / "data/image_content_category.csv",
          '"image_id","sort"\r\n"11","1"\r\n"22","3"\r\n"33","1"\r\n', encoding="utf-8-sig")
    jpeg(tmp_path / "images/EVA_together/11.jpg")
    jpeg(tmp_path / "images/EVA_category/EVA_category/3/22.jpg")  # the other layout
    jpeg(tmp_path / "images/EVA_together/33.jpg")
    return tmp_path


def eva(root, **kw):
    return {"name": "EVA", "format": "eva", "root": str(root), **kw}


def test_eva_votes_mean_per_image(eva_root):
    table = read_labels(eva(eva_root))
    scores = dict(zip(table.frame["image_id"], table.frame["score"], strict=True))
    assert scores == {"11": pytest.approx(8.0), "22": pytest.approx(2.5), "33": pytest.approx(10)}
    assert table.scale == (0.0, 10.0)


def test_eva_category_file_with_bom_splits_the_stream(eva_root):
    path = eva_root / "data/votes_filtered.csv"
    path.write_text(path.read_text() + vote(44, 1, 5) + "\n")
    cats = eva_root / "data/image_content_category.csv"
    cats.write_text(cats.read_text(encoding="utf-8-sig") + '"44","3"\r\n', encoding="utf-8-sig")
    jpeg(eva_root / "images/EVA_together/44.jpg")
    exps = load_experiences([eva(eva_root, split_by="category")], seed=0, test_fraction=0.5,
                            val_fraction=0.0)
    assert [e.name for e in exps] == ["EVA/animals", "EVA/human"]
    assert [e.task_label for e in exps] == [0, 1]
    assert sorted(exps[0].table["image_id"]) == ["11", "33"]
    assert sorted(exps[1].table["image_id"]) == ["22", "44"]


def test_eva_both_image_layouts_found(eva_root):
    table = read_labels(eva(eva_root))
    res = resolve_images(table.frame, eva_root)
    assert len(res.usable) == 3 and res.dropped.empty
    assert res.usable.set_index("image_id").loc["22", "file"].endswith("EVA_category/3/22.jpg")


def test_eva_simple_csv(tmp_path):
    write(tmp_path / "labels.csv", "image_id,score\n5,6.5\n6,3\n")
    table = read_labels(eva(tmp_path, labels="labels.csv"))
    assert table.frame["score"].tolist() == [6.5, 3.0]


def test_eva_wrong_delimiter_names_file(tmp_path):
    write(tmp_path / "data/votes_filtered.csv", EVA_HEADER.replace("=", ";") + "\n1;1;5\n")
    with pytest.raises(UserError, match=r"votes_filtered.csv, line 1: .*delimiter"):
        read_labels(eva(tmp_path))


def test_eva_non_numeric_score_names_line(eva_root):
    path = eva_root / "data/votes_filtered.csv"
    path.write_text(path.read_text() + vote(44, 1, "good") + "\n")
    with pytest.raises(UserError, match=r"votes_filtered.csv, line 8: score 'good'"):
        read_labels(eva(eva_root))


def test_eva_wrong_column_count(eva_root):
    path = eva_root / "data/votes_filtered.csv"
    path.write_text(path.read_text() + "44=1=5=2=3=1=4=2=x=1=0=0=1=9\n")
    with pytest.raises(UserError, match="14 fields where 13"):
        read_labels(eva(eva_root))


def test_eva_score_out_of_range(eva_root):
    path = eva_root / "data/votes_filtered.csv"
    path.write_text(path.read_text() + vote(44, 1, 11) + "\n")
    with pytest.raises(UserError, match=r"line 8: score 11.0 of image 44 is outside"):
        read_labels(eva(eva_root))


AVA_LINES = [
    "1 953619 0 1 5 17 38 36 15 6 5 1 1 22 1396",
    "2 953958 10 7 15 26 26 21 10 8 1 2 4 3 1396",
    "3 954184 0 0 4 8 41 56 10 3 4 0 0 0 1396",
]


def ava_mean(line):
    c = [int(v) for v in line.split()[2:12]]
    return sum(k * v for k, v in zip(range(1, 11), c, strict=True)) / sum(c)


@pytest.fixture
def ava_root(tmp_path):
    write(tmp_path / "AVA.txt", "\n".join(AVA_LINES) + "\n")
    write(tmp_path / "aesthetics_image_lists/generic_test.jpgl", "953958\n")
    for line in AVA_LINES:
        jpeg(tmp_path / f"images/{line.split()[1]}.jpg")
    return tmp_path


def ava(root, **kw):
    return {"name": "AVA", "format": "ava", "root": str(root), **kw}


def test_ava_mean_from_vote_histogram(ava_root):
    table = read_labels(ava(ava_root))
    got = dict(zip(table.frame["image_id"], table.frame["score"], strict=True))
    assert got == {line.split()[1]: pytest.approx(ava_mean(line)) for line in AVA_LINES}
    assert got["953619"] == pytest.approx(699 / 124)  # by hand
    assert table.official_test == {"953958"}
    assert table.scale == (1.0, 10.0)


def test_ava_column_count_error_names_line(ava_root):
    write(ava_root / "AVA.txt", AVA_LINES[0] + "\n" + "4 1 2 3\n")
    with pytest.raises(UserError, match=r"AVA.txt, line 2: 4 fields where AVA.txt has 15"):
        read_labels(ava(ava_root))


def test_ava_comma_delimited_is_refused(ava_root):
    write(ava_root / "AVA.txt", AVA_LINES[0].replace(" ", ",") + "\n")
    with pytest.raises(UserError, match=r"line 1: 1 fields .* check the delimiter"):
        read_labels(ava(ava_root))


def test_ava_non_integer_votes(ava_root):
    write(ava_root / "AVA.txt", AVA_LINES[0].replace(" 38 ", " x ") + "\n")
    with pytest.raises(UserError, match=r"line 1: vote counts"):
        read_labels(ava(ava_root))


def test_ava_duplicated_line(ava_root):
    write(ava_root / "AVA.txt", AVA_LINES[0] + "\n" + AVA_LINES[0] + "\n")
    with pytest.raises(UserError, match=r"line 2: image 953619 is listed twice"):
        read_labels(ava(ava_root))


def test_ava_json_both_shapes(ava_root):
    write(ava_root / "a.json", json.dumps([{"image_id": "953619", "score": 5.5}]))
    write(ava_root / "b.json", json.dumps([{"image": "images/954184.jpg", "gt_score": 4.25}]))
    a = read_labels(ava(ava_root, labels="a.json"))
    b = read_labels(ava(ava_root, labels="b.json"))
    assert a.frame.iloc[0][["image_id", "score"]].tolist() == ["953619", 5.5]
    assert b.frame.iloc[0][["image_id", "score", "path"]].tolist() == [
        "954184", 4.25, "images/954184.jpg"]
    assert b.official_test == {"953958"}
    res = resolve_images(b.frame, ava_root)
    assert res.usable["file"].iloc[0].endswith("images/954184.jpg")


def test_json_needs_scale_and_checks_it(tmp_path):
    write(tmp_path / "l.json", json.dumps([{"image_id": "1", "score": 120}]))
    entry = {"name": "K", "format": "json", "root": str(tmp_path), "labels": "l.json"}
    with pytest.raises(UserError, match="needs `scale"):
        read_labels(entry)
    with pytest.raises(UserError, match=r"item 0: score 120.0 of image 1 is outside"):
        read_labels({**entry, "scale": [0, 100]})


def test_generic_csv_pyiqa_columns(tmp_path):
    write(tmp_path / "meta.csv", "img_name,MOS,c1\n953619.jpg,5.6,0\n953958.jpg,4.1,3\n")
    entry = {"name": "AVA", "format": "csv", "root": str(tmp_path), "labels": "meta.csv",
             "scale": [1, 10], "columns": {"id": "img_name", "score": "MOS"}}
    table = read_labels(entry)
    assert table.frame["image_id"].tolist() == ["953619", "953958"]
    assert table.scale == (1.0, 10.0)
    with pytest.raises(UserError, match=r"column\(s\) \['quality'\] not in the header"):
        read_labels({**entry, "columns": {"id": "img_name", "score": "quality"}})


def test_generic_csv_columns_by_position_in_a_file_without_a_header(tmp_path):
    """A BIQA_CL-style list (path<TAB>score, no header) read as csv with positions."""
    write(tmp_path / "list.txt", "imgs/a1.bmp\t30.5\nimgs/b2.bmp\t71\n")
    entry = {"name": "L", "format": "csv", "root": str(tmp_path), "labels": "list.txt",
             "scale": [0, 100], "columns": {"path": 0, "score": 1}, "delimiter": "\t"}
    table = read_labels(entry)
    assert table.frame["image_id"].tolist() == ["a1", "b2"]
    assert table.frame["path"].tolist() == ["imgs/a1.bmp", "imgs/b2.bmp"]
    assert table.frame["score"].tolist() == [30.5, 71.0]  # the first line is data
    write(tmp_path / "list.txt", "imgs/a1.bmp\t30.5\nimgs/b2.bmp\t171\n")
    message = one_line_error(read_labels, entry)
    assert "list.txt, line 2: score 171.0 of image b2 is outside the scale" in message
    # The default delimiter: one column; the line says so and names `format: list`.
    message = one_line_error(read_labels, {**entry, "delimiter": None})
    assert "list.txt, line 1: column position(s) [1] beyond its 1 ','-delimited" in message
    assert "format: list" in message
    message = one_line_error(read_labels, {**entry, "columns": {"id": "img", "score": 1}})
    assert "mixes names and positions" in message
    # Names against a header-less file: the line suggests positions or `format: list`.
    write(tmp_path / "list.csv", "imgs/a1.bmp,30.5\n")
    message = one_line_error(read_labels, {**entry, "labels": "list.csv", "delimiter": None,
                                           "columns": {"id": "img_name", "score": "MOS"}})
    assert "not in the header ['imgs/a1.bmp', '30.5']" in message
    assert "{path: 0, score: 1}" in message and "format: list" in message


def test_missing_root_and_label_file(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        read_labels(ava(tmp_path / "nowhere"))
    with pytest.raises(UserError, match=r"label file .*AVA.txt not found"):
        read_labels(ava(tmp_path))


def test_missing_and_empty_images_are_dropped_and_counted(ava_root):
    (ava_root / "images/953619.jpg").unlink()
    (ava_root / "images/954184.jpg").write_bytes(b"")
    res = resolve_images(read_labels(ava(ava_root)).frame, ava_root)
    assert res.usable["image_id"].tolist() == ["953958"]
    assert dict(zip(res.dropped["image_id"], res.dropped["kind"], strict=True)) == {
        "953619": "missing", "954184": "empty"}
    assert res.dropped["reason"].tolist() == [
        "missing: no image file with this id under the dataset root", "empty file (0 bytes)"]
    assert set(res.dropped["stage"]) == {"indexing"}


def test_path_outside_root_is_refused(tmp_path):
    jpeg(tmp_path / "outside.jpg")
    root = tmp_path / "ds"
    write(root / "l.json", json.dumps([{"image": "../outside.jpg", "gt_score": 3}]))
    table = read_labels({"name": "X", "format": "json", "root": str(root), "labels": "l.json",
                         "scale": [1, 5]})
    res = resolve_images(table.frame, root)
    assert res.usable.empty
    assert "outside the dataset root" in res.dropped["reason"].iloc[0]
    assert res.dropped["kind"].tolist() == ["outside_root"]


def test_experience_without_usable_image_is_an_error(ava_root):
    for f in (ava_root / "images").iterdir():
        f.unlink()
    with pytest.raises(UserError, match="none of its 3 labelled images was found"):
        load_experiences([ava(ava_root)])


def test_json_duplicated_id(tmp_path):
    write(tmp_path / "l.json", json.dumps([{"image_id": "1", "score": 3},
                                           {"image_id": "2", "score": 3},
                                           {"image_id": "1", "score": 4}]))
    entry = {"name": "K", "format": "json", "root": str(tmp_path), "labels": "l.json",
             "scale": [1, 5]}
    with pytest.raises(UserError, match=r"l.json, item 2: image 1 is listed twice"):
        read_labels(entry)


def test_image_links_pointing_out_of_the_root_are_not_used(tmp_path):
    from benchmarks.datasets.files import index_images

    outside = jpeg(tmp_path / "elsewhere" / "7.jpg")
    root = tmp_path / "ds"
    jpeg(root / "images" / "8.jpg")
    (root / "images" / "7.jpg").symlink_to(outside)
    (root / "images" / "9.jpg").symlink_to(root / "images" / "8.jpg")  # inside: fine
    index = index_images(root)
    assert sorted(index) == ["8", "9"]
    assert list(index.outside) == ["7"]  # remembered, so its id is dropped as what it is
    frame = pd.DataFrame({"image_id": ["7", "8", "6"], "score": [1.0, 2.0, 3.0],
                          "path": ["", "", ""]})
    res = resolve_images(frame, root, index)
    assert res.usable["image_id"].tolist() == ["8"]
    assert res.dropped["kind"].tolist() == ["outside_root", "missing"]
    assert res.dropped["reason"].iloc[0] == (
        f"images/7.jpg is a link pointing outside the dataset root (to {outside})")


@pytest.mark.parametrize("bad", ["nan", "inf", "-inf", ""])
def test_non_finite_scores_name_the_line(tmp_path, bad):
    write(tmp_path / "l.csv", f"image_id,score\n1,5\n2,{bad}\n")
    entry = {"name": "K", "format": "csv", "root": str(tmp_path), "labels": "l.csv",
             "scale": [1, 10]}
    with pytest.raises(UserError, match=r"l.csv, line 3: score '.*' is not a finite number"):
        read_labels(entry)


@pytest.mark.parametrize("fmt, name", [("eva", "data/votes_filtered.csv"), ("ava", "AVA.txt"),
                                       ("csv", "l.csv")])
def test_empty_label_files(tmp_path, fmt, name):
    write(tmp_path / name, "")
    entry = {"name": "K", "format": fmt, "root": str(tmp_path), "labels": name,
             "scale": [1, 10]}
    with pytest.raises(UserError, match=r"(empty|no labelled image|header '')"):
        read_labels(entry)

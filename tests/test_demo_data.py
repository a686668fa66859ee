"""The demo pair: real formats, EVA inside AVA, deterministic, learnable rules."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
from PIL import Image

from benchmarks.datasets.labels import read_labels
from benchmarks.demo.eva_ava import make_demo_data


def digest(root):
    h = hashlib.sha256()
    for f in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(f.relative_to(root).as_posix().encode() + f.read_bytes())
    return h.hexdigest()


def test_deterministic_given_seed(tmp_path):
    a, b, c = (make_demo_data(tmp_path / n, n_ava=30, n_eva=10, size=48, seed=s) and tmp_path / n
               for n, s in (("a", 1), ("b", 1), ("c", 2)))
    assert digest(a) == digest(b) != digest(c)


def test_real_formats_and_eva_inside_ava(tiny_demo):
    votes = (tiny_demo / "EVA/data/votes_filtered.csv").read_text().splitlines()
    assert votes[0].count("=") == 12 and all(v.count("=") == 12 for v in votes[1:])
    per_image = pd.Series([v.split("=")[0] for v in votes[1:]]).value_counts()
    assert per_image.between(30, 46).all()
    assert (tiny_demo / "EVA/data/image_content_category.csv").read_bytes()[:3] == b"\xef\xbb\xbf"
    ava_lines = (tiny_demo / "AVA/AVA.txt").read_text().splitlines()
    assert len(ava_lines) == 200 and all(len(line.split()) == 15 for line in ava_lines)
    assert len((tiny_demo / "AVA/aesthetics_image_lists/generic_test.jpgl").read_text().split()) \
        == 40
    eva = read_labels({"name": "EVA", "format": "eva", "root": str(tiny_demo / "EVA")})
    ava = read_labels({"name": "AVA", "format": "ava", "root": str(tiny_demo / "AVA")})
    assert set(eva.frame["image_id"]) <= set(ava.frame["image_id"])
    some = eva.frame["image_id"].iloc[0]
    assert (tiny_demo / f"EVA/images/EVA_together/{some}.jpg").read_bytes() == \
        (tiny_demo / f"AVA/images/{some}.jpg").read_bytes()
    modes = {Image.open(p).mode for p in (tiny_demo / "AVA/images").glob("*.jpg")}
    assert modes == {"RGB", "L"}  # greyscale photos too, as in real AVA


def test_the_two_crowds_disagree(tiny_demo):
    """EVA and AVA score the shared pictures by different rules: weakly related at best."""
    eva = read_labels({"name": "EVA", "format": "eva", "root": str(tiny_demo / "EVA")}).frame
    ava = read_labels({"name": "AVA", "format": "ava", "root": str(tiny_demo / "AVA")}).frame
    both = eva.merge(ava, on="image_id", suffixes=("_eva", "_ava"))
    r = np.corrcoef(both["score_eva"], both["score_ava"])[0, 1]
    assert abs(r) < 0.4
    assert both["score_eva"].std() > 1.0 and both["score_ava"].std() > 1.0

"""Splits: deterministic, official where it exists, and no test id in any train/val set."""

from __future__ import annotations

import pytest

from benchmarks.datasets.splits import SplitRequest, make_splits
from benchmarks.errors import UserError

EVA_IDS = [str(i) for i in range(100, 160)]
AVA_IDS = [str(i) for i in range(100, 300)]  # EVA is a subset of AVA, as in reality
AVA_TEST = {str(i) for i in range(100, 300, 5)}


def splits(seed=0, val=0.1):
    return make_splits({"EVA": SplitRequest(EVA_IDS, 0.2),
                        "AVA": SplitRequest(AVA_IDS, 0.2, official_test=AVA_TEST)},
                       seed=seed, val_fraction=val)


def test_no_test_id_in_any_train_or_val_split():
    s = splits()
    all_test = set(s["EVA"].test) | set(s["AVA"].test)
    for sp in s.values():
        assert not (set(sp.train) | set(sp.val)) & all_test
        assert set(sp.train).isdisjoint(sp.val)


def test_leakage_removals_are_counted():
    s = splits()
    eva_test_in_ava = set(s["EVA"].test) - AVA_TEST  # EVA test ids AVA would have trained on
    assert s["AVA"].removed_for_leakage == len(eva_test_in_ava)
    ava_test_in_eva = (set(EVA_IDS) & AVA_TEST) - set(s["EVA"].test)
    assert s["EVA"].removed_for_leakage == len(ava_test_in_eva) > 0
    for name, ids in (("EVA", EVA_IDS), ("AVA", AVA_IDS)):
        sp = s[name]
        assert len(sp.train) + len(sp.val) + len(sp.test) + sp.removed_for_leakage == len(ids)


def test_official_test_split_is_used():
    s = splits()
    assert set(s["AVA"].test) == AVA_TEST and s["AVA"].official_test
    assert len(s["EVA"].test) == 12 and not s["EVA"].official_test  # 20% of 60


def test_deterministic_given_seed():
    assert splits(seed=3) == splits(seed=3)
    assert splits(seed=3)["EVA"].test != splits(seed=4)["EVA"].test


def test_validation_carved_from_training():
    s = splits(val=0.25)
    sp = s["AVA"]
    assert len(sp.val) == round(0.25 * (len(sp.val) + len(sp.train)))


def test_empty_train_is_an_error():
    with pytest.raises(UserError, match=r"experience 'A': its train split is empty \(.*\): "
                       r"nothing is left .*\(1 removed as test images of other experiences\)"):
        # A's only training image is a test image of B: the guard removes it.
        make_splits({"A": SplitRequest(["1", "2"], 0.2, official_test={"1"}),
                     "B": SplitRequest(["2", "3"], 0.5, official_test={"2"})}, seed=0,
                    val_fraction=0.0)

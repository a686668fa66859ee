"""Metric values against scipy and against matrices worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from benchmarks.metrics import intransigence, krcc, plcc, srcc, stability, summary


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    t = rng.normal(size=200)
    return t, t + rng.normal(scale=0.8, size=200)


def test_correlations_match_scipy(data):
    t, p = data
    assert srcc(t, p) == pytest.approx(stats.spearmanr(t, p).statistic)
    assert plcc(t, p) == pytest.approx(stats.pearsonr(t, p).statistic)
    assert krcc(t, p) == pytest.approx(stats.kendalltau(t, p).statistic)


def test_undefined_correlation_is_nan():
    assert math.isnan(srcc([1, 2, 3], [5, 5, 5]))
    assert math.isnan(plcc([1.0], [2.0]))


def test_logistic_plcc_undoes_a_monotone_nonlinearity():
    p = np.linspace(-3, 3, 100)
    t = 1 + 9 / (1 + np.exp(-2 * p))  # targets a logistic of the predictions: Pearson < 1
    assert plcc(t, p) < 0.97
    assert plcc(t, p, fit="logistic") > 0.999
    assert srcc(t, p) == pytest.approx(1.0)


R = [[0.8, 0.1, 0.0],
     [0.5, 0.9, 0.2],
     [0.3, 0.6, 0.7]]
B = [0.05, 0.0, -0.1]


def test_summary_by_hand():
    s = summary(R, B)
    assert s["acc"] == pytest.approx((0.3 + 0.6 + 0.7) / 3)
    assert s["bwt"] == pytest.approx(((0.3 - 0.8) + (0.6 - 0.9)) / 2)
    assert s["fwt"] == pytest.approx(((0.1 - 0.0) + (0.2 - -0.1)) / 2)
    # Chaudhry: max over l in [j, T-2] of R[l][j] - R[T-1][j]
    assert s["forgetting"] == pytest.approx((max(0.8, 0.5) - 0.3 + (0.9 - 0.6)) / 2)
    assert s["mpi"] == pytest.approx((0.8 + 0.9 + 0.7) / 3)
    assert s["msi"] is None and s["mpsi"] is None


def test_forgetting_uses_the_max_not_the_diagonal():
    r = [[0.5, 0.0, 0.0], [0.9, 0.5, 0.0], [0.4, 0.5, 0.5]]
    s = summary(r, [0, 0, 0])
    assert s["forgetting"] == pytest.approx(((0.9 - 0.4) + 0.0) / 2)
    assert s["bwt"] == pytest.approx(((0.4 - 0.5) + 0.0) / 2)


def test_stability_and_mpsi_by_hand():
    a = np.array([1.0, 2.0, 3.0, 4.0])
    rev = a[::-1].copy()
    # preds[t][s]: after stage t on task s
    preds = [[a, a, a],
             [a, a, a],        # task 0 kept its ranking: S[1][0] = 1
             [rev, a, a]]      # task 0 reversed: S[2][0] = -1; task 1 kept: S[2][1] = 1
    assert stability(preds) == [1.0, 1.0, 0.0]
    s = summary(R, B, preds)
    assert s["msi"] == pytest.approx(2.0 / 3)
    assert s["mpsi"] == pytest.approx((0.8 + 2.0 / 3) / 2)


def test_single_experience_stream_has_no_transfer_metrics():
    s = summary([[0.7]], [0.1], [[np.array([1.0, 2.0])]])
    assert s["acc"] == pytest.approx(0.7) and s["mpi"] == pytest.approx(0.7)
    assert s["bwt"] is None and s["fwt"] is None and s["forgetting"] is None
    assert s["msi"] == 1.0


def test_intransigence():
    assert intransigence([0.9, 0.95, 0.8], R) == pytest.approx([0.1, 0.05, 0.1])


def test_metric_comparison_is_none_aware():
    from conftest import same_metrics

    assert same_metrics([[None, 0.5]], [[None, 0.5 + 1e-9]], atol=1e-6)
    assert not same_metrics([0.5], [None]) and not same_metrics(None, 0.0)
    assert not same_metrics([0.5, 0.4], [0.5]) and not same_metrics([0.5], [0.6], atol=1e-3)

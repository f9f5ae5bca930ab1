"""Metrics against values computed by hand (spec 5)."""
import math

import pytest

from vant.core.metrics import auc, envelope, mean_std_ci, preserved_accuracy, rauc, sigma_mid, upper_bound


def test_auc_is_trapezoid_on_true_grid_positions():
    # segments: [0.1,0.3] (80+60)/2*0.2 = 14 ; [0.3,1.0] (60+20)/2*0.7 = 28  -> 42
    assert auc([0.1, 0.3, 1.0], [80, 60, 20]) == pytest.approx(42.0)
    # a plain mean over points would give 53.3; the non-uniform spacing must matter
    assert auc([0.1, 0.3, 1.0], [80, 60, 20]) != pytest.approx((80 + 60 + 20) / 3 * 0.9)


def test_auc_rejects_bad_grids():
    with pytest.raises(ValueError):
        auc([0.3, 0.1], [1, 2])
    with pytest.raises(ValueError):
        auc([0.1], [1])
    with pytest.raises(ValueError):
        auc([0.1, 0.2], [1, 2, 3])


def test_upper_bound_matched_diagonal_and_envelope():
    grid = [0.1, 0.5, 1.0]
    nt = {
        0.1: {0.1: 90, 0.5: 40, 1.0: 10},
        0.5: {0.1: 85, 0.5: 70, 1.0: 35},
        1.0: {0.1: 60, 0.5: 72, 1.0: 50},  # better at 0.5 than the model trained there
    }
    assert upper_bound(nt, grid) == [90, 70, 50]
    assert envelope(nt, grid) == [90, 72, 50]
    with pytest.raises(KeyError, match="no NT model trained at sigma=0.7"):
        upper_bound(nt, [0.1, 0.7])


def test_rauc_hand_computed():
    grid = [0.1, 0.5, 1.0]
    ub = [90, 70, 50]  # AUC = 0.4*80 + 0.5*60 = 62
    acc = [80, 60, 40]  # AUC = 0.4*70 + 0.5*50 = 53
    assert rauc(grid, acc, ub) == pytest.approx(100 * 53 / 62)
    assert rauc(grid, ub, ub) == pytest.approx(100.0)


def test_preserved_accuracy_sign():
    assert preserved_accuracy(91.0, 90.2) == pytest.approx(0.8)
    assert preserved_accuracy(89.0, 90.0) == pytest.approx(-1.0)


def test_sigma_mid_interpolates_in_log_sigma():
    # max 90, chance 10 -> level 50, crossed between 0.1 (70) and 1.0 (30): halfway in log10 -> sqrt(0.1)
    assert sigma_mid([0.01, 0.1, 1.0, 10.0], [90, 70, 30, 10], chance=10) == pytest.approx(math.sqrt(0.1))
    assert sigma_mid([0.1, 1.0], [90, 80], chance=10) is None
    assert sigma_mid([0.1, 1.0], [40, 30], chance=10, a_max=90) == pytest.approx(0.1)


def test_mean_std_ci():
    m, s, ci = mean_std_ci([1.0, 2.0, 3.0])
    assert (m, s) == (pytest.approx(2.0), pytest.approx(1.0))
    assert ci == pytest.approx(4.302652729911275 / math.sqrt(3))  # t_{0.975, 2}
    assert math.isnan(mean_std_ci([5.0])[2])

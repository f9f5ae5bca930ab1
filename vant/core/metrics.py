"""Robustness metrics as pure functions (spec 5). Accuracies are in percent; sigmas in the grid's units.

- AUC: trapezoid rule on a *linear* sigma axis at the true (non-uniform) grid positions.
- Upper bound (UB): the matched diagonal UB(s) = Acc_{NT@s}(s) of NT models trained at each grid
  sigma; the envelope max_j Acc_{NT@s_j}(s) is kept as a check.
- rAUC = 100 * AUC(model) / AUC(UB), on the same grid.
- Preserved accuracy PA = Acc_VANT(sigma_train) - Acc_NT(sigma_train), in points; > 0 means VANT is better.
- sigma_mid: the sigma where accuracy has fallen halfway from its maximum to chance, interpolated
  linearly in log10(sigma) (the Walking Noise summary).
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np


def _pair(sigmas: Sequence[float], acc: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    s, a = np.asarray(sigmas, dtype=float), np.asarray(acc, dtype=float)
    if s.shape != a.shape or s.ndim != 1 or len(s) < 2:
        raise ValueError(f"need two equal-length curves of >= 2 points, got {s.shape} and {a.shape}")
    if np.any(np.diff(s) <= 0):
        raise ValueError("sigmas must be strictly increasing")
    return s, a


def auc(sigmas: Sequence[float], acc: Sequence[float]) -> float:
    """Area under accuracy(sigma), trapezoid rule on the true grid positions."""
    s, a = _pair(sigmas, acc)
    return float(np.sum(np.diff(s) * (a[1:] + a[:-1]) / 2.0))


def upper_bound(nt_curves: Mapping[float, Mapping[float, float]], sigmas: Sequence[float]) -> list[float]:
    """Matched diagonal: at each grid sigma, the accuracy of the NT model trained at that sigma.

    ``nt_curves[sigma_train][sigma_test]`` is an accuracy. Raises if a grid sigma has no NT model.
    """
    out = []
    for s in sigmas:
        key = _find(nt_curves, s)
        if key is None:
            raise KeyError(f"no NT model trained at sigma={s}; the matched upper bound needs one per grid point "
                           f"(have {sorted(nt_curves)}); use envelope() or train the missing models")
        out.append(float(nt_curves[key][_find(nt_curves[key], s)]))
    return out


def envelope(nt_curves: Mapping[float, Mapping[float, float]], sigmas: Sequence[float]) -> list[float]:
    """Best accuracy any NT model reaches at each grid sigma (a check on the matched diagonal)."""
    out = []
    for s in sigmas:
        vals = [c[k] for c in nt_curves.values() if (k := _find(c, s)) is not None]
        if not vals:
            raise KeyError(f"no NT curve was evaluated at sigma={s}")
        out.append(float(max(vals)))
    return out


def rauc(sigmas: Sequence[float], acc: Sequence[float], ub: Sequence[float]) -> float:
    """Relative AUC in percent: 100 * AUC(acc) / AUC(ub)."""
    denom = auc(sigmas, ub)
    if denom <= 0:
        raise ValueError("the upper bound has zero area")
    return 100.0 * auc(sigmas, acc) / denom


def preserved_accuracy(acc_vant_at_train_sigma: float, acc_nt_at_train_sigma: float) -> float:
    """PA in percentage points; positive means VANT beats NT at the nominal noise level."""
    return float(acc_vant_at_train_sigma) - float(acc_nt_at_train_sigma)


def sigma_mid(sigmas: Sequence[float], acc: Sequence[float], chance: float, a_max: float | None = None) -> float | None:
    """First sigma where accuracy crosses (a_max + chance) / 2, interpolated in log10(sigma).

    ``a_max`` defaults to the curve's maximum. Returns None if the curve never falls that far;
    if it already starts below the level, returns the first grid sigma.
    """
    s, a = _pair(sigmas, acc)
    if np.any(s <= 0):
        raise ValueError("sigma_mid interpolates in log10(sigma): sigmas must be > 0")
    level = ((a.max() if a_max is None else a_max) + chance) / 2.0
    if a[0] <= level:
        return float(s[0])
    for i in range(1, len(s)):
        if a[i] <= level:
            t = (a[i - 1] - level) / (a[i - 1] - a[i])
            ls = math.log10(s[i - 1]) + t * (math.log10(s[i]) - math.log10(s[i - 1]))
            return float(10**ls)
    return None


def mean_std_ci(values: Sequence[float], level: float = 0.95) -> tuple[float, float, float]:
    """Mean, sample std (ddof=1; 0 for one value) and the half-width of the t confidence interval."""
    v = np.asarray(values, dtype=float)
    if v.size == 0:
        raise ValueError("no values")
    mean = float(v.mean())
    if v.size == 1:
        return mean, 0.0, float("nan")
    std = float(v.std(ddof=1))
    from scipy.stats import t

    return mean, std, float(t.ppf(0.5 + level / 2, v.size - 1) * std / math.sqrt(v.size))


def _find(mapping: Mapping[float, object], sigma: float, tol: float = 1e-9):
    for k in mapping:
        if abs(float(k) - float(sigma)) <= tol:
            return k
    return None

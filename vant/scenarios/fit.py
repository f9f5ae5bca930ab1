"""Training fitted to a scenario: VANT's sampler moment-matched to its sigma distribution, the
empirical sampler on its quantiles, and the training-noise settings a grid variant takes from it.

A grid spec with ``scenario: <name or file>`` may give a variant ``from_scenario: <what>``:

- ``nt``: Noisy Training at the nominal sigma (the scenario's mean, 2 decimals);
- ``vant``: the paper's VANT at the nominal sigma (alpha 0.45, theta from Table 1 / 0.4*sigma);
- ``vant_fit``: VANT with alpha and theta fitted so the half-normal sampler has the scenario's sigma
  mean and spread (:func:`fit_vant`; when that is impossible the floor is 0 and the mean is kept);
- ``empirical``: the empirical sampler drawing from the scenario's sigma quantiles
  (:func:`empirical_values`).
"""
from __future__ import annotations

import math

import numpy as np

from .spec import Scenario, weighted_quantile

FROM_SCENARIO = ("nt", "vant", "vant_fit", "empirical")


#: Mean and std of |z| for z ~ N(0, 1): the half-normal's moments per unit theta.
HALF_NORMAL_MEAN = math.sqrt(2 / math.pi)
HALF_NORMAL_STD = math.sqrt(1 - 2 / math.pi)


def fit_vant(mean: float, std: float) -> dict:
    """Moment-match VANT's half-normal sampler ``floor + theta*|z|`` to a sigma distribution.

    theta = std / sqrt(1 - 2/pi) and floor = mean - theta*sqrt(2/pi); the run is configured with
    sigma_train = mean and alpha = floor / mean. The match is impossible when the distribution is
    wider than a half-normal resting on 0 (std/mean > sqrt(pi/2 - 1) = 0.756, the floor would be
    negative): the floor is then set to 0 and theta keeps the *mean* (the std falls short); the
    result says so (``feasible`` False, ``achieved_std``). Use the empirical sampler for such a fleet.
    """
    if not (mean > 0 and std >= 0):
        raise ValueError(f"fit_vant needs mean > 0 and std >= 0, got mean={mean}, std={std}")
    theta = std / HALF_NORMAL_STD
    floor = mean - theta * HALF_NORMAL_MEAN
    feasible = floor >= -1e-12 * mean  # rounding at the exact edge (a half-normal resting on 0)
    floor = max(floor, 0.0)
    if not feasible:
        floor, theta = 0.0, mean / HALF_NORMAL_MEAN
    return dict(sigma_train=mean, alpha=floor / mean, theta=theta, floor=floor, feasible=feasible,
                target_mean=mean, target_std=std, achieved_mean=floor + theta * HALF_NORMAL_MEAN,
                achieved_std=theta * HALF_NORMAL_STD)


def empirical_values(scenario: Scenario, n: int = 256) -> list[float]:
    """Sigma values whose uniform draw reproduces the scenario's weighted sigma distribution: its
    (i + 1/2)/n quantiles, n = min(points, ``n``); with equal weights and few points, the points."""
    k = min(scenario.sigma.size, n)
    q = (np.arange(k) + 0.5) / k
    return [round(float(v), 6) for v in weighted_quantile(scenario.sigma, scenario.weights, q)]


def scenario_settings(scenario: Scenario, what: str) -> dict:
    """The ``train.*`` settings (dotted keys) of a grid variant ``from_scenario: what``."""
    mean, std = scenario.mean(), scenario.std()
    nominal = round(mean, 2)
    if what == "nt":
        return {"train.method": "nt", "train.sigma": nominal}
    if what == "vant":
        return {"train.method": "vant", "train.sigma": nominal}
    if what == "vant_fit":
        fit = fit_vant(mean, std)
        return {"train.method": "vant", "train.sigma": round(fit["sigma_train"], 4),
                "train.alpha": round(fit["alpha"], 4), "train.theta": round(fit["theta"], 4)}
    if what == "empirical":
        return {"train.method": "empirical", "train.sigma": round(mean, 4),
                "train.sigma_values": empirical_values(scenario)}
    raise ValueError(f"unknown {what!r}; choose one of {', '.join(FROM_SCENARIO)}")


def training_sigma(method: str, sigma: float, alpha: float, theta: float, sampler: str = "half_normal",
                   values=None) -> tuple[float, float]:
    """Mean and std of the training sigma a run's sampler draws (what a scenario table shows beside it)."""
    if method == "clean":
        return 0.0, 0.0
    if method == "nt":
        return sigma, 0.0
    if method == "empirical":
        v = np.asarray(values, float)
        return float(v.mean()), float(v.std())
    if sampler != "half_normal":
        return math.nan, math.nan
    return alpha * sigma + theta * HALF_NORMAL_MEAN, theta * HALF_NORMAL_STD

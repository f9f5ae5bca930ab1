"""Training from a measured noise profile, compared on that profile.

Given a scenario (a fleet, a drift, or both), train the same model several ways and evaluate each
on the scenario:

- ``clean``: no training noise (reference);
- ``nt``: Noisy Training at the nominal sigma (the scenario's mean unless set);
- ``vant``: the paper's VANT at the nominal sigma (alpha = 0.45, theta from Table 1 / 0.4*sigma);
- ``vant_fit``: VANT with alpha and theta fitted so the half-normal sampler has the scenario's sigma
  mean and spread (:func:`vant.scenarios.fit_vant`; when that is impossible the floor is 0 and the
  mean is kept, and the table says so);
- ``empirical``: the empirical sampler drawing from the scenario's sigma distribution
  (:func:`vant.scenarios.empirical_values`).

Trainings go through :func:`vant.runs.execute` (finished runs are reused); the scenario rows are
cached in each run. ``vant scenario-compare`` runs this with ``configs/scenario_compare.yaml``.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from .config import ConfigError, RunConfig, default_theta, from_dict, load_yaml, parse_override, resolve, set_dotted
from .runs import execute
from .scenario_eval import compare_on_scenario, write_report
from .scenarios import HALF_NORMAL_MEAN, HALF_NORMAL_STD, empirical_values, fit_vant, load_scenario

METHODS = ("clean", "nt", "vant", "vant_fit", "empirical")
PRESET = Path(__file__).parent / "configs" / "scenario_compare.yaml"


@dataclass
class ProfileCompareConfig:
    run: RunConfig = field(default_factory=RunConfig)  # shared settings of every training (model, data, epochs)
    scenario: str = "drifting_fleet"  # scenario YAML file, or the name of a bundled one (`vant list scenarios`)
    sigma_train: float | None = None  # nominal sigma of NT and paper VANT; None = the scenario's mean (2 decimals)
    theta: float | None = None  # paper VANT's spread; None = Table 1 / 0.4 * sigma_train
    alpha: float = 0.45  # paper VANT's floor multiplier
    methods: list = field(default_factory=lambda: list(METHODS))  # which of clean, nt, vant, vant_fit, empirical
    repeats: int = 3  # noisy passes over the test set per scenario point
    threshold: float | None = 80.0  # accuracy [%] below which device-time counts as failing
    worst: float = 0.05  # share of device-time whose accuracy is reported as the worst case
    report_dir: str = "runs/scenario_compare"  # where the table, JSON and figure go


def load_profile_config(path: str | Path | None = PRESET, overrides: list[str] | None = None) -> ProfileCompareConfig:
    data = load_yaml(path) if path else {}
    for text in overrides or []:
        key, value = parse_override(text)
        set_dotted(data, key, value)
    return from_dict(ProfileCompareConfig, data)


def _train_sigma_text(mean: float, std: float, note: str = "") -> str:
    return f"{mean:.3f} ± {std:.3f}{note}"


def plan(pc: ProfileCompareConfig) -> tuple[list[tuple[str, RunConfig, str]], dict]:
    """The trainings of the comparison: ``(label, config, training-sigma text)``, and the fit."""
    bad = [m for m in pc.methods if m not in METHODS]
    if bad or not pc.methods:
        raise ConfigError(f"methods: unknown {bad[0]!r}; choose from {', '.join(METHODS)}" if bad else "methods: empty")
    scn = load_scenario(pc.scenario)
    mean, std = scn.mean(), scn.std()
    nominal = round(mean, 2) if pc.sigma_train is None else float(pc.sigma_train)
    if nominal <= 0:
        raise ConfigError(f"sigma_train must be > 0, got {nominal}")
    fit = fit_vant(mean, std)
    theta = default_theta(nominal) if pc.theta is None else float(pc.theta)

    def cfg(**train) -> RunConfig:
        return resolve(dataclasses.replace(pc.run, train=dataclasses.replace(pc.run.train, **train)))

    jobs = []
    for m in pc.methods:
        if m == "clean":
            jobs.append(("clean", cfg(method="clean"), "0"))
        elif m == "nt":
            jobs.append((f"NT@{nominal:g}", cfg(method="nt", sigma=nominal), _train_sigma_text(nominal, 0.0)))
        elif m == "vant":
            floor = pc.alpha * nominal
            jobs.append((f"VANT@{nominal:g} (paper: a={pc.alpha:g}, t={theta:g})",
                         cfg(method="vant", sigma=nominal, alpha=pc.alpha, theta=theta),
                         _train_sigma_text(floor + theta * HALF_NORMAL_MEAN, theta * HALF_NORMAL_STD)))
        elif m == "vant_fit":
            s, a, t = round(fit["sigma_train"], 4), round(fit["alpha"], 4), round(fit["theta"], 4)
            note = "" if fit["feasible"] else " (floor 0: spread not reachable)"
            jobs.append((f"VANT fitted (s={s:g}, a={a:g}, t={t:g})", cfg(method="vant", sigma=s, alpha=a, theta=t),
                         _train_sigma_text(fit["achieved_mean"], fit["achieved_std"], note)))
        else:
            vals = empirical_values(scn)
            jobs.append((f"empirical ({len(vals)} values)", cfg(method="empirical", sigma=round(mean, 4), sigma_values=vals),
                         _train_sigma_text(mean, std)))
    info = dict(scenario=scn.name, describe=scn.describe(), sigma_mean=mean, sigma_std=std, nominal=nominal,
                paper_theta=theta, alpha=pc.alpha, fit=fit)
    return jobs, info


def profile_compare(pc: ProfileCompareConfig, progress: bool = True, log=print) -> dict:
    """Train (or reuse) every method's run, evaluate all on the scenario, write the report."""
    jobs, info = plan(pc)
    scn = load_scenario(pc.scenario)
    log(info["describe"])
    if not info["fit"]["feasible"]:
        log(f"note: the half-normal sampler cannot reach std {info['sigma_std']:.4g} at mean {info['sigma_mean']:.4g} "
            f"(std/mean > 0.756); fitted VANT keeps the mean with floor 0 (std {info['fit']['achieved_std']:.4g})")
    runs = []
    for i, (label, cfg, _) in enumerate(jobs, 1):
        log(f"[{i}/{len(jobs)}] train {label}")
        runs.append(execute(cfg, progress=progress))
    log(f"evaluating {len(runs)} runs on {scn.sigma.size} scenario points x {pc.repeats} repeats")
    result = compare_on_scenario(runs, scn, labels=[j[0] for j in jobs], out_dir=None, progress=progress,
                                 repeats=pc.repeats, threshold=pc.threshold, worst_q=pc.worst)
    for row, (_, _, text) in zip(result["rows"], jobs):
        row["train_sigma"] = text
    result.update(info)
    write_report(result, scn, Path(pc.report_dir))
    return result

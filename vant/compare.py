"""The paper's basic experiment: clean vs NT vs VANT against the NT upper bound.

Trains (or reuses) a clean model, an NT model at every sigma of the evaluation grid (the ladder
whose matched diagonal is the upper bound, Fig. 2), NT and VANT at sigma_train, then reports
clean accuracy, accuracy at sigma_train, AUC, rAUC and preserved accuracy, and draws the curves.
``vant demo`` is this experiment on the bundled digits.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from .config import ConfigError, RunConfig, build_config, from_dict, load_yaml, merge, parse_override, set_dotted, to_dict
from .grid import GridFailed, GridSpec, run_grid
from .metrics import auc, envelope
from .plots import accuracy_vs_sigma
from .report import curve_of, group_upper_bound


@dataclass
class CompareConfig:
    run: RunConfig = field(default_factory=RunConfig)  # shared settings of every run (model, data, epochs, grid)
    sigma_train: float = 0.5  # the noise level NT and VANT are trained for
    theta: float | None = None  # VANT spread; None = Table 1 / 0.4 * sigma_train
    alpha: float = 0.45  # VANT floor multiplier
    report_dir: str = "runs/compare"  # where the table and figure go


def load_compare_config(path: str | Path | None, overrides: list[str] | None = None, cls=CompareConfig):
    """An experiment config (``cls``, a dataclass with a ``run`` section) from YAML plus overrides."""
    data = load_yaml(path) if path else {}
    for text in overrides or []:
        key, value = parse_override(text)
        set_dotted(data, key, value)
    return from_dict(cls, data)


def compare(cc: CompareConfig, progress: bool = True, log=print) -> dict:
    """Run the comparison as a grid (clean, the NT ladder, VANT) in ``report_dir``; returns the table
    as a dict and writes results.md/json and a figure beside the grid's results.csv."""
    base = cc.run
    if cc.sigma_train <= 0:
        raise ConfigError(f"sigma_train must be > 0, got {cc.sigma_train}")
    grid = list(base.eval.sigmas)
    if not any(abs(s - cc.sigma_train) < 1e-9 for s in grid):
        raise ConfigError(f"sigma_train={cc.sigma_train} must be a point of eval.sigmas {grid} (the NT ladder)")
    spec = GridSpec(name="compare", description=f"clean vs NT vs VANT at sigma_train={cc.sigma_train:g}",
                    base=to_dict(base), report={"kind": "curves"},
                    variants={"clean": {"train.method": "clean"},
                              "NT": {"train.method": "nt", "grid": {"train.sigma": grid}},
                              "VANT": {"train.method": "vant", "train.sigma": cc.sigma_train, "train.theta": cc.theta,
                                       "train.alpha": cc.alpha}})
    out = Path(cc.report_dir)
    res = run_grid(spec, out, progress=progress, report=False, log=log)
    if res.failures:
        first = res.failures[0]
        raise GridFailed(f"{len(res.failures)} of {len(res.rows)} runs failed, first {first['run']}: {first['error']} "
                         f"(details in {out / 'errors.log'})")
    rows = {r["variant"] if r["variant"] == "clean" else f"{r['variant']}@{r['train.sigma']:g}": r for r in res.rows}
    nt_key, vant_key = f"NT@{cc.sigma_train:g}", f"VANT@{cc.sigma_train:g}"
    curves = {k: dict(zip(("sigmas", "mean", "std"), curve_of(r))) for k, r in rows.items()}
    ub = group_upper_bound(res.rows, grid)
    env = envelope({s: dict(zip(*curve_of(rows[f"NT@{s:g}"])[:2])) for s in grid}, grid)
    table = [dict(model=k, run=rows[k]["run"], clean_acc=rows[k]["clean_acc"],
                  acc_at_sigma_train=_at(curves[k], cc.sigma_train), auc=rows[k]["auc"], rauc=rows[k]["rauc"],
                  pa=rows[k]["pa"] if k == vant_key else None) for k in ("clean", nt_key, vant_key)]
    result = dict(sigma_train=cc.sigma_train, theta=rows[vant_key]["train.theta"], alpha=cc.alpha, grid=grid,
                  upper_bound=ub, envelope=env, auc_upper_bound=auc(grid, ub), rows=table, curves=curves)
    (out / "results.json").write_text(json.dumps(result, indent=2))
    (out / "results.md").write_text(format_table(result) + "\n")
    fig = [dict(label=k, **curves[k]) for k in ("clean", nt_key, vant_key)]
    accuracy_vs_sigma(fig, out / "accuracy_vs_sigma.png", upper_bound=dict(sigmas=grid, mean=ub),
                      title=f"{base.model.name} on {base.data.name}: NT vs VANT at sigma_train={cc.sigma_train:g}",
                      mark=cc.sigma_train)
    result["report_dir"] = str(out)
    return result


def _at(curve: dict, sigma: float) -> float:
    """The curve's accuracy at ``sigma`` (the comparison reads every model there, the clean one too)."""
    return next(m for s, m in zip(curve["sigmas"], curve["mean"]) if abs(s - sigma) < 1e-9)


def format_table(result: dict) -> str:
    st = result["sigma_train"]
    lines = [f"| model | clean acc [%] | acc @ sigma={st:g} [%] | AUC | rAUC [%] | PA [pp] |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in result["rows"]:
        pa = f"{r['pa']:+.1f}" if r["pa"] is not None else ""
        lines.append(f"| {r['model']} | {r['clean_acc']:.1f} | {r['acc_at_sigma_train']:.1f} | {r['auc']:.1f} | "
                     f"{r['rauc']:.1f} | {pa} |")
    lines.append(f"| upper bound (NT matched) | | | {result['auc_upper_bound']:.1f} | 100.0 | |")
    env = auc(result["grid"], result["envelope"])
    lines.append(f"| envelope (best NT at each sigma, check) | | | {env:.1f} | {100 * env / result['auc_upper_bound']:.1f} | |")
    return "\n".join(lines)


DEMO_CONFIG = Path(__file__).parent / "configs" / "demo.yaml"


def demo(overrides: list[str] | None = None, progress: bool = True, log=print) -> dict:
    """``vant demo``: the comparison on the bundled digits, on the CPU (settings in configs/demo.yaml)."""
    cc = load_compare_config(DEMO_CONFIG, overrides)
    return compare(cc, progress=progress, log=log)


__all__ = ["CompareConfig", "compare", "demo", "format_table", "load_compare_config", "merge", "build_config"]

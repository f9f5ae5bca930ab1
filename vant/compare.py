"""The paper's basic experiment: clean vs NT vs VANT against the NT upper bound.

Trains (or reuses) a clean model, an NT model at every sigma of the evaluation grid (the ladder
whose matched diagonal is the upper bound, Fig. 2), NT and VANT at sigma_train, then reports
clean accuracy, accuracy at sigma_train, AUC, rAUC and preserved accuracy, and draws the curves.
``vant demo`` is this experiment on the bundled digits.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from .config import ConfigError, RunConfig, build_config, from_dict, load_yaml, merge, parse_override, set_dotted
from .metrics import auc, envelope, preserved_accuracy, rauc, upper_bound
from .plots import accuracy_vs_sigma
from .runs import Run, execute


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


def _with(run: RunConfig, **train) -> RunConfig:
    cfg = dataclasses.replace(run, train=dataclasses.replace(run.train, **train))
    return cfg


def compare(cc: CompareConfig, progress: bool = True, log=print) -> dict:
    """Run the comparison; returns the table as a dict and writes results.md/json and a figure."""
    base = cc.run
    if cc.sigma_train <= 0:
        raise ConfigError(f"sigma_train must be > 0, got {cc.sigma_train}")
    grid = list(base.eval.sigmas)
    if not any(abs(s - cc.sigma_train) < 1e-9 for s in grid):
        raise ConfigError(f"sigma_train={cc.sigma_train} must be a point of eval.sigmas {grid} (the NT ladder)")
    jobs = [("clean", _with(base, method="clean"))]
    jobs += [(f"NT@{s:g}", _with(base, method="nt", sigma=s)) for s in grid]
    jobs += [(f"VANT@{cc.sigma_train:g}", _with(base, method="vant", sigma=cc.sigma_train, theta=cc.theta, alpha=cc.alpha))]
    runs: dict[str, Run] = {}
    for i, (name, cfg) in enumerate(jobs, 1):
        log(f"[{i}/{len(jobs)}] {name}")
        runs[name] = execute(cfg, progress=progress)
    summaries = {k: r.summary() for k, r in runs.items()}
    curves = {k: dict(zip(s["eval"]["sigmas"], s["eval"]["mean"])) for k, s in summaries.items()}
    nt_curves = {s: curves[f"NT@{s:g}"] for s in grid}
    ub = upper_bound(nt_curves, grid)
    env = envelope(nt_curves, grid)
    nt_key, vant_key = f"NT@{cc.sigma_train:g}", f"VANT@{cc.sigma_train:g}"
    rows = []
    for key in ("clean", nt_key, vant_key):
        s = summaries[key]
        acc = s["eval"]["mean"]
        rows.append(dict(model=key, run=s["run"], clean_acc=s["clean_accuracy"],
                         acc_at_sigma_train=curves[key][_k(curves[key], cc.sigma_train)],
                         auc=auc(grid, acc), rauc=rauc(grid, acc, ub),
                         pa=(preserved_accuracy(summaries[key]["acc_at_sigma_train"], summaries[nt_key]["acc_at_sigma_train"])
                             if key == vant_key else None)))
    result = dict(sigma_train=cc.sigma_train, theta=summaries[vant_key]["theta"], alpha=cc.alpha, grid=grid,
                  upper_bound=ub, envelope=env, auc_upper_bound=auc(grid, ub), rows=rows,
                  curves={k: summaries[k]["eval"] for k in summaries})
    out = Path(cc.report_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(result, indent=2))
    (out / "results.md").write_text(format_table(result) + "\n")
    fig = [dict(label=k, sigmas=summaries[k]["eval"]["sigmas"], mean=summaries[k]["eval"]["mean"],
                std=summaries[k]["eval"]["std"]) for k in ("clean", nt_key, vant_key)]
    accuracy_vs_sigma(fig, out / "accuracy_vs_sigma.png", upper_bound=dict(sigmas=grid, mean=ub),
                      title=f"{base.model.name} on {base.data.name}: NT vs VANT at sigma_train={cc.sigma_train:g}",
                      mark=cc.sigma_train)
    result["report_dir"] = str(out)
    return result


def _k(curve: dict, sigma: float):
    return next(k for k in curve if abs(k - sigma) < 1e-9)


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

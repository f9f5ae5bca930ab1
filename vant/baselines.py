"""The paper's hardening comparison (Fig. 3): noise-free training, NT, 4-bit QAT and SAM, one harness.

Every model is an ordinary run (``vant.runs.execute``), trained by the one loop and evaluated by
the same noisy sweep, so the comparison is fair by construction:

- clean:   ``train.method=clean``
- NT:      ``train.method=nt train.sigma=<sigma_train>``
- QAT-4b:  ``train.method=clean model.quant_bits=4`` (learned activation scale), and the same with
           ``model.quant_act_scale=s`` for each constant scale s of the grid (spec 2: report the
           learned scale and the best constant scale by AUC)
- SAM:     ``train.method=clean train.optimizer=sam train.sam_rho=<rho>`` (ASAM by default) for each
           rho of the grid, the best by AUC reported (spec 2)

``vant baselines`` runs it on the bundled digits (settings in ``configs/baselines.yaml``). Grid
points already trained are reused, so widening a grid trains only the new points.
"""
from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .compare import load_compare_config
from .config import ConfigError, RunConfig
from .metrics import auc
from .plots import accuracy_vs_sigma
from .runs import execute

#: The authors' ASAM rho sweep (spec 2).
SAM_RHOS = [0.05, 0.1, 0.5, 1.5, 2.5, 5.0]
#: Learned scale (None) and the constant activation steps the spec asks to choose from (spec 2).
ACT_SCALES = [None, 1.0, 2.0, 4.0, 8.0]


@dataclass
class BaselinesConfig:
    run: RunConfig = field(default_factory=RunConfig)  # shared settings of every run (model, data, epochs, grid)
    sigma_train: float = 1.0  # NT's training noise (Fig. 3's NT curve is sigma_train = 1.0)
    quant_bits: int = 4  # QAT bit width for weights and activations ("4-bit" in the paper)
    act_scales: list = field(default_factory=lambda: list(ACT_SCALES))  # QAT activation steps; null = learned
    sam_rhos: list = field(default_factory=lambda: list(SAM_RHOS))  # SAM radii tried; the best AUC is reported
    sam_adaptive: bool = True  # ASAM (authors' setting) or plain SAM
    report_dir: str = "runs/baselines"  # where the table and figure go


def load_baselines_config(path: str | Path | None, overrides: list[str] | None = None) -> BaselinesConfig:
    return load_compare_config(path, overrides, cls=BaselinesConfig)


def variant(run: RunConfig, model: dict | None = None, **train) -> RunConfig:
    """``run`` with some ``model.*`` and ``train.*`` fields replaced."""
    return dataclasses.replace(run, model=dataclasses.replace(run.model, **(model or {})),
                               train=dataclasses.replace(run.train, **train))


def best_by_auc(summaries: dict[object, dict]) -> tuple[object, list[dict]]:
    """The key whose run has the highest AUC (the first on ties), and one row per key.

    ``summaries`` maps a grid value (a rho, a scale) to that run's ``summary.json`` contents.
    """
    if not summaries:
        raise ValueError("best_by_auc needs at least one run")
    rows = [dict(value=k, run=s["run"], auc=s["auc"], clean_acc=s["clean_accuracy"]) for k, s in summaries.items()]
    best = max(rows, key=lambda r: r["auc"])  # max() keeps the first maximum
    return best["value"], rows


def hardening(bc: BaselinesConfig, progress: bool = True, log: Callable[[str], None] = print) -> dict:
    """Train (or reuse) every run, pick the best SAM rho and QAT scale by AUC, write a table and a figure."""
    base = bc.run
    if bc.sigma_train <= 0:
        raise ConfigError(f"sigma_train must be > 0, got {bc.sigma_train}")
    if not bc.sam_rhos or not bc.act_scales:
        raise ConfigError("sam_rhos and act_scales must each hold at least one value")
    scales = [None if s is None else float(s) for s in bc.act_scales]
    jobs: list[tuple[str, object, RunConfig]] = [
        ("clean", None, variant(base, method="clean")),
        (f"NT@{bc.sigma_train:g}", None, variant(base, method="nt", sigma=bc.sigma_train)),
    ]
    jobs += [("qat", s, variant(base, model=dict(quant_bits=bc.quant_bits, quant_act_scale=s), method="clean"))
             for s in scales]
    jobs += [("sam", float(r), variant(base, method="clean", optimizer="sam", sam_rho=float(r),
                                       sam_adaptive=bc.sam_adaptive)) for r in bc.sam_rhos]
    summaries: dict[tuple[str, object], dict] = {}
    for i, (kind, value, cfg) in enumerate(jobs, 1):
        log(f"[{i}/{len(jobs)}] {kind}" + ("" if value is None and kind != "qat" else f" {_value(kind, value)}"))
        summaries[(kind, value)] = execute(cfg, progress=progress).summary()

    best_rho, sam_rows = best_by_auc({v: s for (k, v), s in summaries.items() if k == "sam"})
    const = {v: s for (k, v), s in summaries.items() if k == "qat" and v is not None}
    best_scale, qat_rows = best_by_auc(const) if const else (None, [])
    sam_name = f"{'ASAM' if bc.sam_adaptive else 'SAM'} rho={best_rho:g}"
    q = f"QAT-{bc.quant_bits}b"
    chosen = [("clean", summaries[("clean", None)]), (f"NT@{bc.sigma_train:g}", summaries[(f"NT@{bc.sigma_train:g}", None)])]
    if ("qat", None) in summaries:
        chosen.append((f"{q} (learned scale)", summaries[("qat", None)]))
    if best_scale is not None:
        chosen.append((f"{q} (scale {best_scale:g}, best of {len(const)})", summaries[("qat", best_scale)]))
    chosen.append((f"{sam_name} (best of {len(sam_rows)})", summaries[("sam", best_rho)]))
    grid = list(base.eval.sigmas)
    rows = [dict(model=name, run=s["run"], clean_acc=s["clean_accuracy"], auc=auc(grid, s["eval"]["mean"]),
                 acc=s["eval"]["mean"]) for name, s in chosen]  # acc[i] is the mean accuracy at grid[i]
    result = dict(grid=grid, sigma_train=bc.sigma_train, quant_bits=bc.quant_bits, rows=rows,
                  ordering=[r["model"] for r in sorted(rows, key=lambda r: -r["auc"])],
                  sam_grid=dict(best=best_rho, rows=sam_rows), qat_scale_grid=dict(best=best_scale, rows=qat_rows),
                  qat_learned=(dict(auc=summaries[("qat", None)]["auc"], run=summaries[("qat", None)]["run"])
                               if ("qat", None) in summaries else None))
    out = Path(bc.report_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(result, indent=2, default=str))
    (out / "results.md").write_text(format_table(result) + "\n")
    accuracy_vs_sigma([dict(label=name, sigmas=s["eval"]["sigmas"], mean=s["eval"]["mean"], std=s["eval"]["std"])
                       for name, s in chosen], out / "accuracy_vs_sigma.png", mark=bc.sigma_train,
                      title=f"{base.model.name} on {base.data.name}: hardening methods (Fig. 3)")
    result["report_dir"] = str(out)
    return result


def _value(kind: str, value) -> str:
    if kind == "qat":
        return "learned scale" if value is None else f"scale={value:g}"
    return f"rho={value:g}"


def format_table(result: dict) -> str:
    grid: Sequence[float] = result["grid"]
    near = min(range(len(grid)), key=lambda i: abs(grid[i] - result["sigma_train"]))  # nearest NT's sigma_train
    shown = sorted({0, near, len(grid) - 1})
    head = " | ".join(f"acc @ {grid[i]:g} [%]" for i in shown)
    lines = [f"| model | clean acc [%] | {head} | AUC |", "|---|---:|" + "---:|" * len(shown) + "---:|"]
    for r in result["rows"]:
        accs = " | ".join(f"{r['acc'][i]:.1f}" for i in shown)
        lines.append(f"| {r['model']} | {r['clean_acc']:.1f} | {accs} | {r['auc']:.2f} |")
    for title, g, name in (("SAM rho grid", result["sam_grid"], "rho"), ("QAT constant-scale grid", result["qat_scale_grid"], "scale")):
        if g["rows"]:
            lines += ["", f"{title} (best by AUC: {name} = {g['best']:g})", "", f"| {name} | clean acc [%] | AUC |", "|---:|---:|---:|"]
            lines += [f"| {r['value']:g} | {r['clean_acc']:.1f} | {r['auc']:.2f} |" for r in g["rows"]]
    lines += ["", "AUC ordering: " + " > ".join(result["ordering"])]
    return "\n".join(lines)


DEFAULT_CONFIG = Path(__file__).parent / "configs" / "baselines.yaml"


def run_baselines(path: str | Path | None = None, overrides: list[str] | None = None, progress: bool = True,
                  log: Callable[[str], None] = print) -> dict:
    """``vant baselines``: the comparison with ``path`` (default configs/baselines.yaml) and overrides."""
    return hardening(load_baselines_config(path or DEFAULT_CONFIG, overrides), progress=progress, log=log)


__all__ = ["ACT_SCALES", "SAM_RHOS", "BaselinesConfig", "best_by_auc", "format_table", "hardening",
           "load_baselines_config", "run_baselines", "variant"]

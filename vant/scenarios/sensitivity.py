"""Layer sensitivity (Walking Noise): noise at one site at a time, and how much each site tolerates.

For every noise site ``i`` of a trained model (in :func:`vant.noise_sites` order) only that site is
noisy (``set_sigma_(model, {i: sigma})``) while sigma walks a log grid; the sigmas of one site share
a forward pass (per-sample sigma). Each site is summarised by ``sigma_mid``
(:func:`vant.metrics.sigma_mid`): the sigma at which accuracy has fallen halfway from the model's
clean accuracy to chance, interpolated in log10(sigma). A small sigma_mid marks a site that needs
the quietest circuit. The same sweep with every site noisy is reported as ``all sites``.

Rows live in ``<run>/sensitivity/rows.csv`` (one per site, sigma, repeat and seed); site ``i``
uses noise seed ``seed + SEED_STRIDE*(i+1) + repeat`` and all sites ``seed + repeat``. Asking
again computes only missing rows; the table, ``summary.json`` and ``sensitivity.png`` sit beside them.
"""
from __future__ import annotations

import fnmatch
import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from torch import nn

from ..data import DeviceBatches
from ..pipeline.evaluate import sweep
from ..core.inject import INPUT, noise_sites
from ..core.metrics import sigma_mid
from ..pipeline.runs import Run, load_trained, run_threads
from ..pipeline.store import lock, read_csv, write_csv, write_text_atomic
from ..tables import markdown

SEED_STRIDE = 100_003
ALL = "all sites"
ROW_FIELDS = ["site_index", "site", "type", "sigma", "repeat", "seed", "correct", "total", "accuracy"]


def log_grid(lo: float = 0.01, hi: float = 100.0, per_decade: int = 4) -> list[float]:
    """``per_decade`` points per decade from ``lo`` to ``hi`` (both included, rounded to 4 digits)."""
    if not (0 < lo < hi) or per_decade < 1:
        raise ValueError(f"need 0 < min < max and per_decade >= 1, got min={lo}, max={hi}, per_decade={per_decade}")
    n = int(round(math.log10(hi / lo) * per_decade)) + 1
    return [float(f"{v:.4g}") for v in np.logspace(math.log10(lo), math.log10(hi), max(n, 2))]


def walking_noise(model: nn.Module, batches: DeviceBatches, sigmas: Sequence[float], num_classes: int,
                  repeats: int = 2, seed: int = 0, sites: Sequence[str] | None = None, rows: list[dict] | None = None,
                  on_rows=None, progress: bool = False, autocast: bool = False) -> dict:
    """Walk noise through the sites of ``model``; returns the summary (``rows`` holds every row).

    ``rows`` already computed (same seeds) are reused; ``on_rows(rows)`` is called after every
    (site, repeat), so an interrupted walk keeps what it has done.
    """
    sigmas = sorted({float(s) for s in sigmas})
    if not sigmas or sigmas[0] <= 0:
        raise ValueError(f"sensitivity sigmas must be > 0 (sigma_mid is read on a log axis), got {sigmas}")
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    modules = dict(model.named_modules())
    names = list(noise_sites(model))
    chosen = list(range(len(names)))
    if sites:
        chosen = [i for i, n in enumerate(names) if any(fnmatch.fnmatchcase(n, p) for p in sites)]
        if not chosen:
            raise ValueError(f"site patterns {list(sites)} match none of the model's sites {names}")
    kinds = {n: "input" if n == INPUT else type(modules[n]).__name__ for n in names}
    targets = [(i, names[i], kinds[names[i]]) for i in chosen] + [(-1, ALL, "all")]
    rows = list(rows or [])
    have = {(r["site"], round(r["sigma"], 9), r["repeat"], r["seed"]) for r in rows}

    def site_seed(i):
        return seed + (SEED_STRIDE * (i + 1) if i >= 0 else 0)

    todo = []
    for i, name, kind in targets:
        for r in range(repeats):
            miss = [s for s in sigmas if (name, round(s, 9), r, site_seed(i) + r) not in have]
            if miss:
                todo.append((i, name, kind, r, miss))
    clean_rows = [r for r in rows if r["site"] == "clean" and r["seed"] == seed]
    if not clean_rows:
        clean_rows = sweep(model, batches, [0.0], 1, seed)
        for row in clean_rows:
            row.update(site_index=-2, site="clean", type="none")
        rows += clean_rows
        if on_rows is not None:
            on_rows(rows)
    bar = None
    if progress and todo:
        from ..progress import progress_bar
        bar = progress_bar(total=len(todo), unit="site", desc="walking noise", leave=False)
    try:
        for i, name, kind, r, miss in todo:
            new = sweep(model, batches, miss, [r], site_seed(i), autocast=autocast, site=None if i < 0 else i)
            for row in new:
                row.update(site_index=i, site=name, type=kind)
            rows += new
            if on_rows is not None:
                on_rows(rows)
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    clean = float(clean_rows[0]["accuracy"])
    chance = 100.0 / num_classes
    level = (clean + chance) / 2
    table = []
    for i, name, kind in targets:
        curve = [float(np.mean([r["accuracy"] for r in rows if r["site"] == name and abs(r["sigma"] - s) < 1e-9
                                and r["repeat"] < repeats and r["seed"] == site_seed(i) + r["repeat"]])) for s in sigmas]
        mid = sigma_mid(sigmas, curve, chance, a_max=clean) if len(sigmas) > 1 else None
        where = "above grid" if mid is None else ("below grid" if curve[0] <= level else "")
        table.append(dict(index=i, site=name, type=kind, sigma_mid=mid, where=where, accuracy=curve))
    ranked = sorted((t for t in table if t["index"] >= 0), key=lambda t: math.inf if t["sigma_mid"] is None else t["sigma_mid"])
    for k, t in enumerate(ranked, 1):
        t["rank"] = k
    return dict(sigmas=sigmas, repeats=repeats, seed=seed, clean_accuracy=clean, chance=chance, level=level,
                sites=table, rows=rows)


def sensitivity(run: Run | str | Path, sigmas: Sequence[float] | None = None, repeats: int = 2, seed: int | None = None,
                sites: Sequence[str] | None = None, device: str = "auto", progress: bool = True) -> dict:
    """Walking noise on a finished run, with its rows cached in ``<run>/sensitivity/``."""
    run = run if isinstance(run, Run) else Run.open(run)
    if not run.trained:
        raise ValueError(f"run {run.path} has not finished training; run `vant train` on its config first")
    seed = run.config.eval.seed if seed is None else int(seed)
    out = run.path / "sensitivity"
    out.mkdir(parents=True, exist_ok=True)
    with lock(out), run_threads(run.config, device):  # the run's thread count, as in training
        model, test, data = load_trained(run, device)
        summary = walking_noise(model, test, sigmas or log_grid(), data.num_classes, repeats, seed, sites,
                                rows=read_csv(out / "rows.csv", [f for f in ROW_FIELDS if f not in ("site", "type")]), on_rows=lambda rows: write_csv(out / "rows.csv", rows, ROW_FIELDS),
                                progress=progress, autocast=run.config.train.amp and test.device.type == "cuda")
        summary.pop("rows")
        summary["run"] = run.path.name
        write_text_atomic(out / "summary.json", json.dumps(summary, indent=2))
        write_text_atomic(out / "table.md", format_table(summary) + "\n")
        sensitivity_figure(summary, out / "sensitivity.png")
    summary["dir"] = str(out)
    return summary


def _mid_text(t: dict, sigmas: Sequence[float]) -> str:
    if t["sigma_mid"] is None:
        return f"> {sigmas[-1]:g}"
    return f"<= {sigmas[0]:g}" if t["where"] == "below grid" else f"{t['sigma_mid']:.3g}"


def format_table(summary: dict) -> str:
    """Markdown table: one row per site (network order), its sigma_mid and its rank (1 = most sensitive)."""
    s = summary["sigmas"]
    lines = [f"Walking noise on {summary.get('run', 'model')}: clean accuracy {summary['clean_accuracy']:.2f} %, chance "
             f"{summary['chance']:.1f} %, sigma_mid = sigma where accuracy falls to {summary['level']:.2f} %; "
             f"grid {s[0]:g}..{s[-1]:g} ({len(s)} sigmas), {summary['repeats']} repeat(s)", "",
             ""]
    rows = [("" if t["index"] < 0 else t["index"], t["site"], t["type"], _mid_text(t, s), t.get("rank", ""))
            for t in summary["sites"]]
    return "\n".join(lines + [markdown(["#", "site", "type", "sigma_mid", "rank"], rows, align="rllrr")])


def sensitivity_figure(summary: dict, path: Path) -> Path:
    """Top: accuracy of each site over sigma (heatmap). Bottom: sigma_mid per site (bars, log axis),
    hatched where the curve never reached the half-way level inside the grid."""
    import matplotlib

    from ..plots import new_figure, save_figure

    sites = [t for t in summary["sites"] if t["index"] >= 0]
    allsites = next(t for t in summary["sites"] if t["index"] < 0)
    s = summary["sigmas"]
    n = len(sites)
    fig = new_figure(figsize=(max(6.4, 0.28 * n + 2), 7.2))
    top, bot = fig.subplots(2, 1, sharex=True, gridspec_kw=dict(height_ratios=[1, 1.1]))
    acc = np.array([t["accuracy"] for t in sites]).T  # [sigma, site]
    im = top.imshow(acc, aspect="auto", origin="lower", cmap="viridis", vmin=0, vmax=100,
                    extent=(-0.5, n - 0.5, -0.5, len(s) - 0.5))
    ticks = np.linspace(0, len(s) - 1, min(len(s), 5)).round().astype(int)
    top.set_yticks(ticks, [f"{s[k]:.3g}" for k in ticks])
    top.set_ylabel("sigma at this site only")
    fig.colorbar(im, ax=top, label="accuracy [%]", pad=0.01)
    top.set_title(f"walking noise: {summary.get('run', 'model')}", fontsize=9)
    types = sorted({t["type"] for t in sites})
    colors = {k: matplotlib.colormaps["tab10"](j % 10) for j, k in enumerate(types)}
    floor = s[0] / 2  # bars rise from below the grid so a log axis can draw them
    heights = [(s[-1] if t["sigma_mid"] is None else t["sigma_mid"]) - floor for t in sites]
    bars = bot.bar(range(n), heights, color=[colors[t["type"]] for t in sites], bottom=floor)
    for b, t in zip(bars, sites):
        if t["where"]:
            b.set_hatch("//")
            b.set_alpha(0.5)
    if allsites["sigma_mid"] is not None:
        bot.axhline(allsites["sigma_mid"], color="k", ls="--", lw=1, label=f"all sites noisy: {allsites['sigma_mid']:.3g}")
    for k, c in colors.items():
        bot.bar([0], [0], color=c, label=k)
    bot.set_yscale("log")
    bot.set_ylim(floor, s[-1] * 2)
    bot.set_ylabel("sigma_mid (half-way to chance)")
    bot.set_xticks(range(n), [t["site"] for t in sites], rotation=75, fontsize=6)
    bot.grid(alpha=0.3, axis="y")
    bot.legend(fontsize=6, ncol=3, loc="upper right")
    fig.tight_layout()
    plotted = [dict(panel="accuracy", site=t["site"], type=t["type"], sigma=sig, accuracy=a)
               for t in sites for sig, a in zip(s, t["accuracy"])]
    plotted += [dict(panel="sigma_mid", site=t["site"], type=t["type"], sigma_mid=t["sigma_mid"], bar_top=floor + h,
                     where=t["where"]) for t, h in zip(sites, heights)]
    plotted.append(dict(panel="sigma_mid", site=ALL, type="", sigma_mid=allsites["sigma_mid"], where=allsites["where"]))
    return save_figure(fig, path, plotted)

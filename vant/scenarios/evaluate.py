"""Scenario evaluation: how a trained model does on a fleet of devices over their lifetime.

Every (device, time) point of a :class:`~vant.scenarios.Scenario` is evaluated *directly* at its
own sigma, with ``repeats`` noisy passes over the test set, never interpolated from a fixed-sigma
curve. Because a site's sigma can be one value per sample, ``CHUNK`` points share one forward pass
(:func:`vant.pipeline.evaluate.sweep`, batched mode): chunk c of repeat r uses noise seed
``seed + SEED_STRIDE*c + r``, recorded in its rows.

From the per-point accuracies (mean over repeats) and the scenario's weights (devices equal, time
by the trapezoid rule) the summary reports:

- ``expected``: the weighted mean accuracy, with the std and 95% t-interval of that mean over the
  repeats (evaluation noise);
- ``spread``: the weighted std of the per-point accuracy (variation across devices and time);
- ``worst``: the accuracy at the worst ``worst_q`` (default 5%) of device-time, a weighted lower
  quantile, and ``worst_mean``, the mean over that worst share (CVaR);
- ``below``: the share of device-time below a user threshold; for fleets also ``devices_below``
  (devices whose lifetime mean is below) and ``devices_ever_below`` (devices below at some time).

Rows live in ``<run>/scenarios/<name>-<key>/rows.csv`` (one per point, repeat and seed), keyed by
the scenario, the evaluation seed and the chunk size; asking again computes only missing rows.
"""
from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from torch import nn

from ..data import DeviceBatches
from ..pipeline.evaluate import sweep
from ..core.metrics import mean_std_ci
from ..pipeline.runs import Run, load_trained, run_threads
from ..pipeline.store import lock, read_csv, write_csv, write_text_atomic
from ..tables import fmt, markdown
from .spec import Scenario, save_scenario, weighted_quantile

CHUNK = 32  # scenario points per forward pass
SEED_STRIDE = 100_003  # seed offset between chunks, so no two chunks share a noise stream
ROW_FIELDS = ["point", "device", "time_index", "time", "sigma", "repeat", "seed", "correct", "total", "accuracy"]


def evaluate_points(model: nn.Module, batches: DeviceBatches, sigmas: Sequence[float], repeats: Sequence[int] | int,
                    seed: int, *, chunk: int = CHUNK, skip: set | frozenset = frozenset(), autocast: bool = False,
                    on_rows=None) -> list[dict]:
    """Accuracy (%) at every point's sigma for each repeat; one row per (point, repeat).

    Chunks ``(c, r)`` listed in ``skip`` are not computed; ``on_rows(rows)`` is called after each
    chunk (to store them), so an interrupted evaluation loses at most one chunk.
    """
    repeats = range(repeats) if isinstance(repeats, int) else list(repeats)
    out = []
    for r in repeats:
        for c, start in enumerate(range(0, len(sigmas), chunk)):
            if (c, r) in skip:
                continue
            idx = list(range(start, min(start + chunk, len(sigmas))))
            rows = sweep(model, batches, [sigmas[i] for i in idx], [r], seed + SEED_STRIDE * c, autocast=autocast)
            for i, row in zip(idx, rows):
                row["point"] = i
            out += rows
            if on_rows is not None:
                on_rows(rows)
    return out


def _cvar(values: np.ndarray, weights: np.ndarray, q: float) -> float:
    """Weighted mean of the lowest ``q`` share of the distribution."""
    order = np.argsort(values, kind="stable")
    v, w = values[order], weights[order] / weights.sum()
    take = np.clip(q - (np.cumsum(w) - w), 0.0, w)
    return float(np.sum(take * v) / np.sum(take))


def summarise(acc: np.ndarray, scenario: Scenario, threshold: float | None = None, worst_q: float = 0.05) -> dict:
    """Numbers and per-time/per-device series from accuracies ``acc[device, time, repeat]`` (percent)."""
    if acc.shape[:2] != scenario.sigma.shape:
        raise ValueError(f"accuracies of shape {acc.shape[:2]} do not fit the scenario's {scenario.sigma.shape}")
    if not 0 < worst_q < 1:
        raise ValueError(f"worst share must lie in (0, 1), got {worst_q}")
    w = scenario.weights
    a = acc.mean(axis=2)
    expected = float(np.sum(w * a))
    per_repeat = np.einsum("dt,dtr->r", w, acc)
    _, rep_std, ci = mean_std_ci(per_repeat)
    spread = math.sqrt(max(float(np.sum(w * (a - expected) ** 2)), 0.0))
    device_mean = a @ (w[0] / w[0].sum())  # time-weighted mean accuracy of each device
    out = dict(
        scenario=scenario.name, kind=scenario.kind, devices=scenario.devices, time_points=len(scenario.times),
        time_unit=scenario.time_unit, repeats=int(acc.shape[2]), sigma_mean=scenario.mean(), sigma_std=scenario.std(),
        expected=expected, expected_std=rep_std, expected_ci95=None if math.isnan(ci) else ci, spread=spread,
        worst_q=worst_q, worst=float(weighted_quantile(a, w, worst_q)[0]), worst_mean=_cvar(a.ravel(), w.ravel(), worst_q),
        threshold=threshold, below=None, devices_below=None, devices_ever_below=None,
        per_time=dict(
            t=scenario.times.tolist(),
            sigma_mean=scenario.sigma.mean(0).tolist(), sigma_lo=scenario.sigma.min(0).tolist(),
            sigma_hi=scenario.sigma.max(0).tolist(),
            acc_mean=a.mean(0).tolist(),
            # the band: 5..95% over devices for a fleet, +-1 std over repeats for a single device
            acc_lo=(np.percentile(a, 5, axis=0) if scenario.devices > 1 else a[0] - acc[0].std(1, ddof=1 if acc.shape[2] > 1 else 0)).tolist(),
            acc_hi=(np.percentile(a, 95, axis=0) if scenario.devices > 1 else a[0] + acc[0].std(1, ddof=1 if acc.shape[2] > 1 else 0)).tolist(),
        ),
        per_device=dict(sigma_mean=(scenario.sigma @ (w[0] / w[0].sum())).tolist(), acc_mean=device_mean.tolist()),
    )
    if threshold is not None:
        out["below"] = float(np.sum(w * (a < threshold)))
        out["devices_below"] = float(np.mean(device_mean < threshold))
        out["devices_ever_below"] = float(np.mean((a < threshold).any(axis=1)))
    return out


def _key(scenario: Scenario, seed: int, chunk: int) -> str:
    blob = json.dumps(dict(spec=scenario.spec, seed=seed, chunk=chunk), sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:10]


def scenario_dir(run: Run, scenario: Scenario, seed: int, chunk: int = CHUNK) -> Path:
    return run.path / "scenarios" / f"{scenario.name}-{_key(scenario, seed, chunk)}"


def evaluate_run(run: Run | str | Path, scenario: Scenario, repeats: int = 3, seed: int | None = None,
                 threshold: float | None = None, worst_q: float = 0.05, device: str = "auto", chunk: int = CHUNK,
                 progress: bool = True) -> dict:
    """Evaluate a finished run on ``scenario`` (cached rows are reused) and summarise it.

    Writes ``rows.csv``, ``scenario.yaml`` (the normalised spec), ``summary.json`` and
    ``scenario.png`` under :func:`scenario_dir`; ``seed`` defaults to the run's ``eval.seed``.
    """
    run = run if isinstance(run, Run) else Run.open(run)
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    if not run.trained:
        raise ValueError(f"run {run.path} has not finished training; run `vant train` on its config first")
    cfg = run.config
    seed = cfg.eval.seed if seed is None else int(seed)
    out = scenario_dir(run, scenario, seed, chunk)
    out.mkdir(parents=True, exist_ok=True)
    d, t = scenario.sigma.shape
    sigmas = scenario.sigma.ravel().tolist()
    n_chunks = -(-len(sigmas) // chunk)
    with lock(out):
        save_scenario(scenario, out / "scenario.yaml")
        rows = read_csv(out / "rows.csv", ROW_FIELDS)
        have = {(r["point"], r["repeat"], r["seed"]) for r in rows}
        todo = [(c, r) for r in range(repeats) for c in range(n_chunks)
                if any((p, r, seed + SEED_STRIDE * c + r) not in have for p in range(c * chunk, min((c + 1) * chunk, len(sigmas))))]
        if todo:
            with run_threads(cfg, device):  # the run's thread count, as in training (pipeline.runs.run_threads)
                model, test, _ = load_trained(run, device)
                autocast = cfg.train.amp and test.device.type == "cuda"
                bar = None
                if progress:
                    from ..progress import progress_bar
                    bar = progress_bar(total=len(todo), unit="chunk", desc=f"{run.path.name[:28]} on {scenario.name}", leave=False)

                def store(new):
                    for row in new:
                        p = row["point"]
                        row.update(device=p // t, time_index=p % t, time=float(scenario.times[p % t]))
                    rows.extend(new)
                    write_csv(out / "rows.csv", rows, ROW_FIELDS)
                    if bar is not None:
                        bar.update(1)

                try:
                    skip = {(c, r) for r in range(repeats) for c in range(n_chunks)} - set(todo)
                    evaluate_points(model, test, sigmas, repeats, seed, chunk=chunk, skip=skip, autocast=autocast, on_rows=store)
                finally:
                    if bar is not None:
                        bar.close()
        acc = np.full((d * t, repeats), np.nan)
        for r in rows:
            if r["repeat"] < repeats and r["seed"] == seed + SEED_STRIDE * (r["point"] // chunk) + r["repeat"]:
                acc[r["point"], r["repeat"]] = r["accuracy"]
        if np.isnan(acc).any():
            raise RuntimeError(f"{out / 'rows.csv'} is missing rows after evaluation; delete the directory and rerun")
        summary = summarise(acc.reshape(d, t, repeats), scenario, threshold, worst_q)
        stored = run.summary() if (run.path / "summary.json").is_file() else {}
        summary.update(run=run.path.name, run_path=str(run.path), method=cfg.train.method, seed=seed, chunk=chunk,
                       scenario_digest=scenario.digest(), clean_accuracy=stored.get("clean_accuracy"))
        write_text_atomic(out / "summary.json", json.dumps(summary, indent=2))
        scenario_figure([(run.path.name, summary)], scenario, out / "scenario.png")
    summary["dir"] = str(out)
    return summary


def compare_on_scenario(runs: Sequence[Run | str | Path], scenario: Scenario, labels: Sequence[str] | None = None,
                        out_dir: str | Path | None = None, progress: bool = True, **kwargs) -> dict:
    """Evaluate several runs on one scenario; one table (``results.md``/``.json``) and one figure."""
    summaries = []
    for i, r in enumerate(runs):
        s = evaluate_run(r, scenario, progress=progress, **kwargs)
        s["label"] = labels[i] if labels else s["run"]
        summaries.append(s)
    result = dict(scenario=scenario.name, describe=scenario.describe(), rows=summaries)
    if out_dir is not None:
        write_report(result, scenario, Path(out_dir))
    return result


def write_report(result: dict, scenario: Scenario, out: Path) -> None:
    """``results.md`` (table), ``results.json``, ``scenario.yaml`` and ``scenario.png`` in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    result["report_dir"] = str(out)
    save_scenario(scenario, out / "scenario.yaml")
    (out / "results.json").write_text(json.dumps(result, indent=2))
    (out / "results.md").write_text(result["describe"] + "\n\n" + format_table(result["rows"]) + "\n")
    scenario_figure([(r.get("label", r["run"]), r) for r in result["rows"]], scenario, out / "scenario.png")


def format_table(summaries: Sequence[dict]) -> str:
    """A markdown table of scenario summaries (accuracies in %, spread in points)."""
    s0 = summaries[0]
    q = f"{100 * s0['worst_q']:g}%"
    thr = s0.get("threshold")
    train = any("train_sigma" in s for s in summaries)
    head = ["model"] + (["training sigma (mean ± std)"] if train else []) + ["clean acc [%]", "expected acc [%]", "95% CI",
                                                                          "spread [pp]", f"worst {q} [%]", f"mean of worst {q} [%]"]
    if thr is not None:
        head.append(f"share below {thr:g}% [%]")
        if s0["devices"] > 1 and s0["time_points"] > 1:
            head += [f"devices below {thr:g}% (mean) [%]", f"devices ever below {thr:g}% [%]"]
    rows = []
    for s in summaries:
        cells = [s.get("label", s.get("run", ""))] + ([s.get("train_sigma", "")] if train else []) + [
            fmt(s.get("clean_accuracy"), ".2f"), fmt(s["expected"], ".2f"),
            "" if s["expected_ci95"] is None else f"±{s['expected_ci95']:.2f}", fmt(s["spread"], ".2f"),
            fmt(s["worst"], ".2f"), fmt(s["worst_mean"], ".2f")]
        if thr is not None:
            cells.append(fmt(100 * s["below"]))
            if s0["devices"] > 1 and s0["time_points"] > 1:
                cells += [fmt(100 * s["devices_below"]), fmt(100 * s["devices_ever_below"])]
        rows.append(cells)
    return markdown(head, rows)


def scenario_figure(items: Sequence[tuple[str, dict]], scenario: Scenario, path: Path) -> Path:
    """Accuracy over time with a band (5..95% over devices, or +-std over repeats) and sigma(t) on a
    second axis; a histogram of device accuracies for fleets; expected accuracy bars for a fixed sigma."""
    import matplotlib

    from ..plots import new_figure, save_figure

    has_time, has_fleet = len(scenario.times) > 1, scenario.devices > 1
    panels = int(has_time) + int(has_fleet) or 1
    fig = new_figure(figsize=(6.2 * panels, 4.2))
    axes = fig.subplots(1, panels, squeeze=False)
    axes = list(axes[0])
    thr = items[0][1].get("threshold")
    plotted = []  # the values drawn, one row each; `panel` says where
    if has_time:
        ax = axes.pop(0)
        tw = ax.twinx()
        pt = items[0][1]["per_time"]
        tw.fill_between(pt["t"], pt["sigma_lo"], pt["sigma_hi"], color="grey", alpha=0.07, lw=0)
        tw.plot(pt["t"], pt["sigma_mean"], color="grey", ls="--", lw=1.0, label="sigma (fleet mean, range)")
        plotted += [dict(panel="sigma over time", series="sigma", time=t, sigma_mean=m, sigma_lo=lo, sigma_hi=hi)
                    for t, m, lo, hi in zip(pt["t"], pt["sigma_mean"], pt["sigma_lo"], pt["sigma_hi"])]
        tw.set_ylabel("noise sigma [activation std]", color="grey")
        for label, s in items:
            p = s["per_time"]
            line, = ax.plot(p["t"], p["acc_mean"], lw=1.6, marker="o", ms=2.5, label=f"{label}: {s['expected']:.1f}%")
            ax.fill_between(p["t"], p["acc_lo"], p["acc_hi"], color=line.get_color(), alpha=0.18, lw=0)
            plotted += [dict(panel="accuracy over time", series=label, time=t, accuracy=m, accuracy_lo=lo, accuracy_hi=hi)
                        for t, m, lo, hi in zip(p["t"], p["acc_mean"], p["acc_lo"], p["acc_hi"])]
        if thr is not None:
            ax.axhline(thr, color="k", lw=0.8, ls=":")
        band = "5-95% of devices" if has_fleet else "+-1 std over repeats"
        ax.set_xlabel(f"time [{scenario.time_unit}]")
        ax.set_ylabel(f"top-1 accuracy [%] (mean, band {band})")
        ax.set_zorder(tw.get_zorder() + 1)
        ax.patch.set_visible(False)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower left")
        ax.set_title("accuracy over time", fontsize=10)
    if has_fleet:
        ax = axes.pop(0)
        allacc = np.concatenate([s["per_device"]["acc_mean"] for _, s in items])
        bins = np.linspace(allacc.min() - 0.5, allacc.max() + 0.5, 41)
        for label, s in items:
            ax.hist(s["per_device"]["acc_mean"], bins=bins, histtype="step", lw=1.6, label=label)
            plotted += [dict(panel="device accuracy histogram", series=label, device=k, accuracy=float(a))
                        for k, a in enumerate(s["per_device"]["acc_mean"])]
        if thr is not None:
            ax.axvline(thr, color="k", lw=0.8, ls=":")
        ax.set_xlabel("device accuracy [%]" + (" (mean over time)" if has_time else ""))
        ax.set_ylabel("devices")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        ax.set_title(f"{scenario.devices} devices", fontsize=10)
    if not has_time and not has_fleet:
        ax = axes.pop(0)
        names = [label for label, _ in items]
        ax.bar(names, [s["expected"] for _, s in items], yerr=[s["expected_std"] for _, s in items], capsize=3)
        plotted += [dict(panel="expected accuracy", series=label, accuracy=s["expected"], std=s["expected_std"])
                    for label, s in items]
        ax.set_ylabel("expected accuracy [%] (+-std over repeats)")
        ax.set_title(f"sigma = {scenario.sigma[0, 0]:g}", fontsize=10)
        ax.tick_params(axis="x", labelrotation=20, labelsize=7)
    fig.suptitle(scenario.describe(), fontsize=8)
    fig.tight_layout()
    if has_fleet:  # the histogram's bins, so that it can be redrawn exactly
        plotted += [dict(panel="device accuracy histogram", series="bin edges", accuracy=float(b)) for b in bins]
    return save_figure(fig, path, plotted)


__all__ = ["evaluate_points", "summarise", "evaluate_run", "compare_on_scenario", "format_table", "scenario_figure", "write_report",
           "scenario_dir", "CHUNK", "SEED_STRIDE"]

"""Reports of grids, made from the stored results table only: a figure (PNG) and the same numbers as
a Markdown table beside it. The derived metrics and the selection rules are in
:mod:`vant.experiments.table`.

Report kinds (``report.kind`` of a grid spec), checked with the spec before any run
(:func:`check_report`): ``curves`` (accuracy vs sigma with the dashed upper bound; Fig. 2, 3, 4, and
``best:`` variants drawn by their best-AUC run), ``heatmap`` (a metric over two keys with the
selected cells framed; Fig. 5, 6), ``table1`` (the selection per sigma_train in the paper's table
format), ``bars`` (rAUC bars with an NT dot and a VANT star, and PA; Fig. 7), ``compare`` (clean vs
NT vs VANT against the upper bound: ``vant demo``) and ``scenario`` (every run evaluated on the
spec's scenario: ``vant scenario-compare``).
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Union

import matplotlib
import numpy as np
import yaml
from matplotlib.patches import Rectangle

from ..config import ConfigError, from_dict
from ..core.metrics import auc, envelope
from ..plots import curve_rows, data_path, draw_curves, new_figure, save_figure
from ..tables import fmt as _fmt
from ..tables import markdown
from .spec import GridSpec
from .table import (LEVEL, SEED, _finite, _num, _ok, band_of, best_by_auc, curve_of, group_upper_bound, paired, pm,
                    read_results, select_setting, summarise)

SYMBOL = {"train.sigma": "σ_train", "train.theta": "θ", "train.alpha": "α", "train.sam_rho": "ρ",
          "model.quant_act_scale": "scale", "model.quant_bits": "bits"}


# ----------------------------------------------------------------------------- formatting helpers

def _short(key: str) -> str:
    if key.endswith(".name"):  # data.name -> data, model.name -> model
        return key.split(".")[0]
    return SYMBOL.get(key, key.split(".")[-1])


def _value(v) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def _varying(rows: Sequence[dict], keys: Sequence[str]) -> dict[str, list[str]]:
    """Per variant, the keys whose value changes between its rows (they name the rows)."""
    by_variant: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by_variant[r["variant"]].append(r)
    return {v: [k for k in keys if len({str(r.get(k)) for r in rs}) > 1] for v, rs in by_variant.items()}


def _row_label(row: dict, varying: dict[str, list[str]]) -> str:
    parts = [row["variant"]] if row["variant"] else []
    keys = varying.get(row["variant"], [])
    if not keys and row["train.method"] in ("nt", "vant"):  # a lone noisy run still says its sigma_train
        keys = ["train.sigma"]
    parts += [f"{_short(k)}={_value(row[k])}" for k in keys]
    return " ".join(parts) or row.get("run") or row.get("runs", "")


def _header(spec, rows: Sequence[dict]) -> list[str]:
    ok = _ok(rows)
    lines = [f"# {spec.description.split(':')[0] if spec.description else spec.name}", ""]
    if spec.description:
        lines += [spec.description.strip(), ""]
    lines += [f"Grid `{spec.name}`" + (f", profile `{spec.profile}`" if spec.profile else "")
              + f": {len(ok)} of {len(rows)} points finished. Made by `vant report` from `results.csv` only.", ""]
    return lines


def _failures(rows: Sequence[dict]) -> list[str]:
    bad = [r for r in rows if r.get("status") != "ok"]
    if not bad:
        return []
    lines = ["", "## Not finished", ""]
    lines += [f"- {r['variant']} `{r['run']}`: {r['status']}" + (f" ({r['error']})" if r.get("error") else "")
              for r in bad]
    return lines


def _title(spec) -> str:
    import textwrap

    return textwrap.fill(spec.description or spec.name, 110)


def _save(fig, path: Path, data: Sequence[dict]) -> Path:
    """The report's figure and, beside it (same stem, .csv), the values it plots."""
    return save_figure(fig, path, data, bbox_inches="tight")


# ----------------------------------------------------------------------------- report kinds

@dataclass
class CurvesReport:
    panels: dict = field(default_factory=dict)  # title -> list of variants; default one panel of all
    upper_bound: bool = True  # draw the matched NT upper bound (dashed) where the group has it
    best: list = field(default_factory=list)  # variants drawn by their highest-AUC run only (spec 2: SAM's rho, QAT's scale)


@dataclass
class HeatmapReport:
    variant: str = "VANT"  # the runs that form the map
    x: str = "train.alpha"  # key along the columns
    y: str = "train.theta"  # key along the rows
    metrics: list = field(default_factory=lambda: ["rauc", "pa"])  # one panel each
    select: str = "all"  # all: one selected cell; per_x: one per column (e.g. per sigma_train)
    nt_row: bool = False  # add a row with NT at each x (x must be train.sigma)
    tolerance: float = 0.5  # PA >= -tolerance is feasible (pp)


@dataclass
class Table1Report:
    variant: str = "VANT"  # the candidate settings
    by: str = "train.sigma"  # one column per value of this key
    tolerance: float = 0.5  # PA >= -tolerance is feasible (pp)


@dataclass
class BarsReport:
    nt: str = "NT"  # variant holding the NT runs (at least at each sigma_train of `vant`)
    vant: str = "VANT"  # variant holding the VANT runs
    group_by: list = field(default_factory=lambda: ["data.name", "model.name"])  # one bar colour per group
    x: str = "train.sigma"  # bars along this key


METRIC_NAME = {"rauc": "rAUC [%]", "pa": "preserved accuracy [pp]", "auc": "AUC", "clean_acc": "clean accuracy [%]",
               "acc_at_sigma_train": "accuracy at σ_train [%]"}


def _seeds_note(settings: Sequence[dict]) -> list[str]:
    """What a summarised table's ``±`` means, and how many seeds stand behind it."""
    counts = sorted({int(r.get("seeds") or 1) for r in settings})
    if counts == [1]:
        return ["One seed per setting: no interval (several seeds of a setting, `grid.train.seed=[0,1,2]`, give one).", ""]
    return [f"Seeds per setting: {', '.join(map(str, counts))}. Values are means over seeds; `±` is the half-width of "
            f"the {100 * LEVEL:g} % Student-t confidence interval of the mean (none for one seed).", ""]


def _curves(spec, rows, out: Path, opts: CurvesReport) -> list[Path]:
    raw = _ok(rows)
    ok = summarise(rows)
    variants = list(dict.fromkeys(r["variant"] for r in rows))
    panels = opts.panels or {"": variants}
    for title, names in panels.items():
        unknown = [n for n in names if n not in variants]
        if unknown:
            raise ConfigError(f"report.panels[{title!r}]: unknown variants {unknown}; the grid has {variants}")
    cols = list(rows[0]) if rows else []
    keys = cols[cols.index("variant") + 1:cols.index("group")] if rows else []  # the grid keys of the table
    varying = _varying(ok, [k for k in keys if k != SEED])
    n = len(panels)
    fig = new_figure(figsize=(6.6 * n, 4.6), layout="constrained")
    axes = fig.subplots(1, n, squeeze=False)
    plotted = []
    for ax, (title, names) in zip(axes[0], panels.items()):
        prow = [r for r in ok if r["variant"] in names]
        curves = []
        singles = iter(matplotlib.rcParams["axes.prop_cycle"].by_key()["color"][1:])
        for vi, name in enumerate(names):
            style = dict(ls=("-", ":", "-.")[vi % 3], marker=("o", "s", "^")[vi % 3])  # variants told apart by line
            vr = [r for r in prow if r["variant"] == name]
            suffix = ""
            if name in opts.best and vr:
                suffix = f" (best AUC of {len(vr)})" if len(vr) > 1 else ""
                vr = [best_by_auc(vr)]
            cmap = matplotlib.colormaps["viridis"]
            for i, r in enumerate(vr):
                sig, acc, _ = curve_of(r)
                color = cmap(0.9 * i / max(1, len(vr) - 1)) if len(vr) > 1 else next(singles, None)
                curves.append(dict(label=_row_label(r, varying) + _seed_suffix(r) + suffix, sigmas=sig, mean=acc,
                                   std=band_of(r), color=color, **(style if len(names) > 1 else {})))
        ub = None
        if opts.upper_bound:
            groups = list(dict.fromkeys(r["group"] for r in prow))
            for g in groups:
                members = [r for r in raw if r["group"] == g]
                sig = curve_of(prow[0])[0]
                bound = group_upper_bound(members, sig)
                if bound is not None and ub is None:
                    ub = dict(sigmas=sig, mean=bound, label="upper bound (NT, matched)")
        marks = {_num(r["train.sigma"]) for r in prow if r["train.method"] != "clean"}
        draw_curves(ax, curves, title, ub, marks.pop() if len(marks) == 1 else None)
        plotted += curve_rows(curves, ub, **({"panel": title} if n > 1 else {}))
        if len(curves) > 6:  # many curves: the legend goes beside the axes, not over the curves
            ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.suptitle(_title(spec), fontsize=10)
    png = _save(fig, out / "report.png", plotted)

    lines = _header(spec, rows) + _seeds_note(ok)
    labelled = {}
    for r in ok:  # a run that two variants share (or a repeated point) is listed once
        labelled.setdefault(_row_label(r, varying), r)
    body = []
    for label, r in labelled.items():
        vant = r["train.method"] == "vant"
        body.append((label, r["train.method"], _value(r["train.sigma"]), _value(r["train.alpha"]) if vant else "",
                     _value(r["train.theta"]) if vant else "", str(r["seeds"]), pm(r, "clean_acc"),
                     pm(r, "acc_at_sigma_train"), pm(r, "auc"), pm(r, "rauc"), pm(r, "pa", sign=True),
                     pm(r, "train_seconds", ".0f")))
    lines.append(markdown(["run", "method", "σ_train", "α", "θ", "seeds", "clean acc [%]", "acc @ σ_train [%]", "AUC",
                           "rAUC [%]", "PA [pp]", "train time [s]"], body, align="llrrrrrrrrrr"))
    for name in opts.best:
        vr = [r for r in ok if r["variant"] == name]
        if vr:
            lines.append(f"\nBest {name} by AUC (drawn in the figure): {_row_label(best_by_auc(vr), varying)}.")
    if ok:
        sig = curve_of(ok[0])[0]
        body = []
        for label, r in labelled.items():
            body.append([label] + [pm(r, f"acc@{s:g}") for s in sig])
        for g in dict.fromkeys(r["group"] for r in ok):
            bound = group_upper_bound([r for r in raw if r["group"] == g], sig)
            if bound is not None:
                body.append(["upper bound (NT matched)"] + [_fmt(v) for v in bound])
        lines += ["", "## Accuracy [%] at each inference σ", "", markdown(["run"] + [_value(s) for s in sig], body)]
    md = out / "report.md"
    md.write_text("\n".join(lines + _failures(rows)) + "\n")
    return [png, data_path(png), md]


def _seed_suffix(row: dict) -> str:
    n = int(row.get("seeds") or 1)
    return f" ({n} seeds)" if n > 1 else ""


def _axis_values(rows: Sequence[dict], key: str) -> list:
    return sorted({_num(r[key]) for r in rows}, key=lambda v: (isinstance(v, str), v))


def _heatmap(spec, rows, out: Path, opts: HeatmapReport) -> list[Path]:
    ok = summarise(rows)
    cells = [r for r in ok if r["variant"] == opts.variant]
    if not any(r["variant"] == opts.variant for r in rows):
        raise ConfigError(f"report.variant: the grid has no variant {opts.variant!r}")
    if opts.select not in ("all", "per_x"):
        raise ConfigError(f"report.select must be all or per_x, got {opts.select!r}")
    if opts.nt_row and opts.x != "train.sigma":
        raise ConfigError("report.nt_row needs x = train.sigma (the NT row is NT trained at each column's sigma)")
    xs = _axis_values([r for r in rows if r["variant"] == opts.variant], opts.x)
    ys = _axis_values([r for r in rows if r["variant"] == opts.variant], opts.y)
    at = {(_num(r[opts.x]), _num(r[opts.y])): r for r in cells}
    if opts.select == "all":
        chosen = [select_setting(cells, opts.tolerance)]
    else:
        chosen = [select_setting([r for r in cells if _num(r[opts.x]) == x], opts.tolerance) for x in xs]
    chosen_keys = {(_num(c[opts.x]), _num(c[opts.y])) for c in chosen if c is not None}
    nt_row = {}
    if opts.nt_row:
        groups = {r["group"] for r in cells}
        for r in ok:  # the NT setting with the most seeds at each sigma
            x = _num(r["train.sigma"])
            if r["train.method"] == "nt" and r["group"] in groups and x in xs and r["seeds"] >= nt_row.get(x, {}).get("seeds", 0):
                nt_row[x] = r

    n = len(opts.metrics)
    w = max(4.8, 0.62 * len(xs) + 2.2)
    h = max(3.6, 0.42 * (len(ys) + (1 if opts.nt_row else 0)) + 1.8)
    fig = new_figure(figsize=(w * n, h), layout="constrained")
    axes = fig.subplots(1, n, squeeze=False)
    small = len(xs) * len(ys) > 60
    plotted = []
    for ax, metric in zip(axes[0], opts.metrics):
        grid = np.full((len(ys), len(xs)), np.nan)
        for (x, y), r in at.items():
            v = r.get(metric)
            if _finite(v):
                grid[ys.index(y), xs.index(x)] = v
        extra = 1 if opts.nt_row else 0
        full = np.full((len(ys) + extra, len(xs)), np.nan)
        full[extra:] = grid
        if opts.nt_row:
            for x, r in nt_row.items():
                v = 0.0 if metric == "pa" else r.get(metric)
                if _finite(v):
                    full[0, xs.index(x)] = v
        for i, y in enumerate((["NT"] if opts.nt_row else []) + ys):
            for j, x in enumerate(xs):  # a grey (missing) cell is a row with an empty value
                v = full[i, j]
                plotted.append({"metric": metric, opts.y: y, opts.x: x, "value": float(v) if np.isfinite(v) else None,
                                "selected": (x, y) in chosen_keys})
        finite = full[np.isfinite(full)]
        if metric == "pa":
            m = max(1.0, float(np.abs(finite).max())) if finite.size else 1.0
            cmap, vmin, vmax = matplotlib.colormaps["RdBu"], -m, m
        else:
            cmap = matplotlib.colormaps["viridis"]
            vmin, vmax = (float(finite.min()), float(finite.max())) if finite.size else (0, 1)
        cmap = cmap.with_extremes(bad="#dddddd")  # missing or failed cells are grey
        im = ax.imshow(np.ma.masked_invalid(full), origin="lower", aspect="auto", cmap=cmap, vmin=vmin, vmax=vmax)
        for i in range(full.shape[0]):
            for j in range(full.shape[1]):
                v = full[i, j]
                if np.isfinite(v):
                    lum = np.dot(cmap((v - vmin) / (vmax - vmin) if vmax > vmin else 0.5)[:3], [0.299, 0.587, 0.114])
                    ax.text(j, i, f"{v:.1f}" if metric != "pa" else f"{v:+.1f}", ha="center", va="center",
                            fontsize=5.5 if small else 7.5, color="black" if lum > 0.5 else "white")
        for (x, y) in chosen_keys:
            ax.add_patch(Rectangle((xs.index(x) - 0.5, ys.index(y) + extra - 0.5), 1, 1, fill=False,
                                       edgecolor="red", lw=2.2, zorder=3))
        if opts.nt_row:
            ax.axhline(0.5, color="black", lw=1.5)
        ax.set_xticks(range(len(xs)), [_value(x) for x in xs], fontsize=8)
        ax.set_yticks(range(len(ys) + extra), (["NT"] if extra else []) + [_value(y) for y in ys], fontsize=8)
        ax.set_xlabel(_short(opts.x))
        ax.set_ylabel(_short(opts.y))
        ax.set_title(METRIC_NAME.get(metric, metric), fontsize=10)
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02)
    fig.suptitle(_title(spec) + f"\nred frame: the selected setting (PA ≥ −{opts.tolerance:g} pp, then the highest rAUC)",
                 fontsize=10)
    png = _save(fig, out / "report.png", plotted)

    lines = _header(spec, rows) + _seeds_note(ok)
    lines += [f"Selection (spec 3.4): PA ≥ −{opts.tolerance:g} pp, then the highest rAUC"
              + (", per column." if opts.select == "per_x" else ", over the whole map."), ""]
    for x, c in zip(xs if opts.select == "per_x" else [None], chosen):
        where = f"{_short(opts.x)}={_value(x)}: " if x is not None else ""
        if c is None:
            lines.append(f"- {where}no feasible setting")
        else:
            at_x = "" if x is not None else f"{_short(opts.x)}={_value(c[opts.x])}, "
            lines.append(f"- {where}{at_x}{_short(opts.y)}={_value(c[opts.y])} "
                         f"(rAUC {pm(c, 'rauc')} %, PA {pm(c, 'pa', sign=True)} pp)")
    for metric in opts.metrics:
        body = []
        for y in ys:
            vals = []
            for x in xs:
                r = at.get((x, y))
                s = pm(r, metric, sign=metric == "pa") if r else ""
                vals.append(f"**{s}**" if (x, y) in chosen_keys and s else s)
            body.append([_value(y)] + vals)
        if opts.nt_row:
            body.append(["NT"] + [("+0.0" if metric == "pa" else pm(nt_row[x], metric)) if x in nt_row else ""
                                  for x in xs])
        lines += ["", f"## {METRIC_NAME.get(metric, metric)}; rows {_short(opts.y)}, columns {_short(opts.x)}"
                  + ("; selected cells in bold" if chosen_keys else ""), "",
                  markdown([f"{_short(opts.y)} \\ {_short(opts.x)}"] + [_value(x) for x in xs], body)]
    md = out / "report.md"
    md.write_text("\n".join(lines + _failures(rows)) + "\n")
    return [png, data_path(png), md]


def table1(rows: Sequence[dict], variant: str = "VANT", by: str = "train.sigma", tolerance: float = 0.5) -> list[dict]:
    """Table 1 from results rows: per value of ``by``, the selected setting and NT's rAUC.

    Returns one dict per column: ``{by, selected (row or None), candidates, feasible, nt_rauc}``.
    """
    ok = summarise(rows)  # one row per setting: means over its seeds, with their intervals
    cand = [r for r in ok if r["variant"] == variant]
    out = []
    for v in _axis_values([r for r in rows if r["variant"] == variant], by):
        cells = [r for r in cand if _num(r[by]) == v]
        chosen = select_setting(cells, tolerance)
        groups = {r["group"] for r in cells}
        nt = [r for r in ok if r["train.method"] == "nt" and r["group"] in groups and _num(r["train.sigma"]) == v]
        nt = max(nt, key=lambda r: r["seeds"], default=None)  # the NT setting with the most seeds
        out.append(dict(value=v, selected=chosen, candidates=len(cells),
                        feasible=sum(1 for c in cells if _finite(c.get("pa")) and c["pa"] >= -tolerance - 1e-12),
                        nt_rauc=nt["rauc"] if nt else None, nt=nt))
    return out


def format_table1(cols: Sequence[dict], by: str = "train.sigma") -> str:
    """The paper's Table 1 layout: one column per sigma_train; the best VANT rAUC in bold."""
    def row(name, f):
        return [name] + [f(c) for c in cols]

    sel = lambda c, k: c["selected"][k] if c["selected"] is not None else None  # noqa: E731
    best = max((sel(c, "rauc") for c in cols if _finite(sel(c, "rauc"))), default=None)
    vpm = lambda c, k, **kw: pm(c["selected"], k, **kw) if c["selected"] is not None else ""  # noqa: E731
    body = [row("α", lambda c: _value(sel(c, "train.alpha")) if c["selected"] else "—"),
             row("θ", lambda c: _value(sel(c, "train.theta")) if c["selected"] else "—"),
             row("Preserved Accuracy (pp)", lambda c: vpm(c, "pa")),
             row("rAUC NT [%]", lambda c: pm(c["nt"], "rauc") if c.get("nt") else _fmt(c["nt_rauc"])),
             row("rAUC VANT [%]", lambda c: (f"**{vpm(c, 'rauc')}**" if sel(c, "rauc") == best
                                             else vpm(c, "rauc"))),
             row("feasible / candidates", lambda c: f"{c['feasible']}/{c['candidates']}")]
    return markdown(row(_short(by), lambda c: _value(c["value"])), body)


def _table1(spec, rows, out: Path, opts: Table1Report) -> list[Path]:
    if not any(r["variant"] == opts.variant for r in rows):
        raise ConfigError(f"report.variant: the grid has no variant {opts.variant!r}")
    cols = table1(rows, opts.variant, opts.by, opts.tolerance)
    fig = new_figure(figsize=(11, 4.2), layout="constrained")
    a1, a2 = fig.subplots(1, 2)
    xs = [c["value"] for c in cols]
    nt = [c["nt_rauc"] if _finite(c["nt_rauc"]) else np.nan for c in cols]
    va = [c["selected"]["rauc"] if c["selected"] and _finite(c["selected"]["rauc"]) else np.nan for c in cols]
    pa = [c["selected"]["pa"] if c["selected"] else np.nan for c in cols]
    ci = lambda row, k: row.get(k + "_ci") if row and _finite(row.get(k + "_ci")) else np.nan  # noqa: E731
    a1.errorbar(xs, nt, yerr=[ci(c.get("nt"), "rauc") for c in cols], fmt="o-", color="C1", capsize=3,
                label="NT at σ_train")
    a1.errorbar(xs, va, yerr=[ci(c["selected"], "rauc") for c in cols], fmt="*-", color="C0", ms=10, capsize=3,
                label="VANT, selected (α, θ)")
    for c, v in zip(cols, va):
        if np.isfinite(v):
            a1.annotate(f"θ={_value(c['selected']['train.theta'])}", (c["value"], v), textcoords="offset points",
                        xytext=(0, 7), ha="center", fontsize=7)
    a1.margins(y=0.12)
    a1.set_xlabel(_short(opts.by)); a1.set_ylabel("rAUC [%]"); a1.grid(alpha=0.3); a1.legend(fontsize=8)
    a1.set_title("(a) rAUC against the NT upper bound", fontsize=10)
    width = 0.6 * (min(np.diff(xs)) if len(xs) > 1 else 1.0)
    a2.bar(xs, pa, width=width, color=["C2" if p >= 0 else "C3" for p in pa], capsize=3,
           yerr=[ci(c["selected"], "pa") for c in cols])
    a2.axhline(0, color="black", lw=0.8)
    a2.axhline(-opts.tolerance, color="grey", ls="--", lw=1, label=f"tolerance −{opts.tolerance:g} pp")
    a2.set_xlabel(_short(opts.by)); a2.set_ylabel("preserved accuracy [pp]"); a2.grid(alpha=0.3, axis="y")
    a2.legend(fontsize=8); a2.set_title("(b) PA of the selected setting", fontsize=10)
    fig.suptitle(_title(spec), fontsize=10)
    plotted = [{opts.by: x, "nt_rauc": n, "vant_rauc": v, "vant_theta": c["selected"]["train.theta"] if c["selected"] else None,
                "pa": p} for x, n, v, p, c in zip(xs, nt, va, pa, cols)]
    png = _save(fig, out / "report.png", plotted)
    lines = _header(spec, rows) + _seeds_note(summarise(rows))
    lines += [f"Two-step selection (spec 3.4): keep (α, θ) with PA ≥ −{opts.tolerance:g} pp, then the highest rAUC. "
              "The PA shown is the raw value.", "", format_table1(cols, opts.by)]
    md = out / "report.md"
    md.write_text("\n".join(lines + _failures(rows)) + "\n")
    return [png, data_path(png), md]


def paired_table(pairs: Sequence[dict], by: str = "train.sigma", label: str = "VANT − NT") -> str:
    """The paired difference per setting: mean ± interval over seed pairs, and whether it excludes 0."""
    def cell(p, m):
        text = pm(p, m, sign=True)
        if not text:
            return ""
        ex = p.get(m + "_excludes_0")
        return text + ("" if ex is None else (" (excludes 0)" if ex else " (includes 0)"))

    body = [(_value(p[by]), str(p["pairs"]), cell(p, "rauc"), cell(p, "pa"), cell(p, "clean_acc")) for p in pairs]
    return markdown([_short(by), "seed pairs", f"{label}: rAUC [pp]", f"PA = {label} acc @ σ_train [pp]",
                     f"{label}: clean acc [pp]"], body)


def _bars(spec, rows, out: Path, opts: BarsReport) -> list[Path]:
    ok = summarise(rows)
    for v in (opts.nt, opts.vant):
        if not any(r["variant"] == v for r in rows):
            raise ConfigError(f"report: the grid has no variant {v!r}")
    label = lambda r: " / ".join(_value(r[k]) for k in opts.group_by)  # noqa: E731
    groups = list(dict.fromkeys(label(r) for r in rows if r["variant"] == opts.vant))
    xs = _axis_values([r for r in rows if r["variant"] == opts.vant], opts.x)
    pairs = {(label(p["setting"]), _num(p["setting"][opts.x])): p for p in paired(rows, opts.nt, opts.vant)}
    table: dict[tuple, dict] = {}
    for r in ok:
        if r["variant"] == opts.vant:
            nt = [n for n in ok if n["variant"] == opts.nt and n["group"] == r["group"]
                  and _num(n["train.sigma"]) == _num(r["train.sigma"])]
            nt = max(nt, key=lambda n: n["seeds"], default=None)
            table.setdefault((label(r), _num(r[opts.x])), dict(vant=r, nt=nt, pair=pairs.get((label(r), _num(r[opts.x])))))
    fig = new_figure(figsize=(max(7.5, 0.9 * len(xs) + 2.5), 7.6), layout="constrained")
    a1, a2 = fig.subplots(2, 1, sharex=True)
    width = 0.8 / max(1, len(groups))
    pos = np.arange(len(xs))
    plotted = []
    get = lambda g, x, who, k: (table.get((g, x), {}).get(who) or {}).get(k)  # noqa: E731
    f = lambda v: [u if _finite(u) else np.nan for u in v]  # noqa: E731
    for gi, g in enumerate(groups):
        off = pos - 0.4 + width * (gi + 0.5)
        va, va_ci = [get(g, x, "vant", "rauc") for x in xs], [get(g, x, "vant", "rauc_ci") for x in xs]
        nt, nt_ci = [get(g, x, "nt", "rauc") for x in xs], [get(g, x, "nt", "rauc_ci") for x in xs]
        pa, pa_ci = [get(g, x, "vant", "pa") for x in xs], [get(g, x, "vant", "pa_ci") for x in xs]
        color = f"C{gi}"
        a1.bar(off, f(va), width=width, color=color, alpha=0.35, label=g)
        a1.errorbar(off - width / 6, f(nt), yerr=f(nt_ci), fmt="o", color=color, mec="black", ms=5, capsize=3, ecolor="black")
        a1.errorbar(off + width / 6, f(va), yerr=f(va_ci), fmt="*", color=color, mec="black", ms=10, capsize=3, ecolor="black")
        a2.bar(off, f(pa), width=width, color=color, label=g, yerr=f(pa_ci), capsize=3)
        plotted += [{"group": g, opts.x: x, "vant_rauc": v, "vant_rauc_ci": vc, "nt_rauc": t, "nt_rauc_ci": tc,
                     "pa": p, "pa_ci": pc, "seeds_vant": get(g, x, "vant", "seeds"), "seeds_nt": get(g, x, "nt", "seeds")}
                    for x, v, vc, t, tc, p, pc in zip(xs, va, va_ci, nt, nt_ci, pa, pa_ci)]
    a1.plot([], [], "o", color="grey", mec="black", label="NT (dot)")
    a1.plot([], [], "*", color="grey", mec="black", ms=10, label="VANT (star)")
    for ax in (a1, a2):
        ax.set_xticks(pos, [_value(x) for x in xs])
        ax.grid(alpha=0.3, axis="y")
    a2.set_xlabel(_short(opts.x))
    whiskers = f"; whiskers: {100 * LEVEL:g} % CI over seeds" if any(r["seeds"] > 1 for r in ok) else ""
    a1.set_ylabel("rAUC [%]"); a1.set_title("(a) rAUC against the NT upper bound" + whiskers, fontsize=10)
    a1.legend(fontsize=7, ncol=2, loc="lower right")
    a2.axhline(0, color="black", lw=0.8)
    a2.set_ylabel("preserved accuracy [pp]"); a2.set_title("(b) preserved accuracy" + whiskers, fontsize=10)
    a2.legend(fontsize=7)
    fig.suptitle(_title(spec), fontsize=10)
    png = _save(fig, out / "report.png", plotted)
    lines = _header(spec, rows) + _seeds_note(ok)
    body, pair_rows = [], []
    for g in groups:
        for x in xs:
            t = table.get((g, x))
            if t is None:
                continue
            body.append((g, _value(x), f"{t['nt']['seeds'] if t['nt'] else 0} / {t['vant']['seeds']}",
                         pm(t["nt"], "rauc") if t["nt"] else "", pm(t["vant"], "rauc"), pm(t["vant"], "pa", sign=True)))
            if t["pair"] is not None:
                pair_rows.append(dict(t["pair"], **{opts.x: x}))
    lines.append(markdown([" / ".join(_short(k) for k in opts.group_by), _short(opts.x), "seeds NT / VANT",
                           "rAUC NT [%]", "rAUC VANT [%]", "PA [pp]"], body))
    if pair_rows:
        lines += ["", f"## Paired by seed: {opts.vant} − {opts.nt} (same σ_train, same seed)", "",
                  paired_table(pair_rows, opts.x, f"{opts.vant} − {opts.nt}")]
    md = out / "report.md"
    md.write_text("\n".join(lines + _failures(rows)) + "\n")
    return [png, data_path(png), md]


@dataclass
class CompareReport:
    clean: str = "clean"  # variant of the noise-free model
    nt: str = "NT"  # variant holding the NT ladder (its matched diagonal is the upper bound)
    vant: str = "VANT"  # variant of the VANT run; its sigma_train is where NT and VANT are compared


def compare_table(rows: Sequence[dict], opts: CompareReport | None = None) -> tuple[str, dict]:
    """The paper's basic comparison from a results table: clean, NT and VANT at VANT's sigma_train,
    with clean accuracy, accuracy at sigma_train, AUC, rAUC and PA, the upper bound and the envelope.
    With several seeds per variant: means ± the 95 % t interval over seeds, and VANT − NT paired by
    seed. Returns the Markdown table (and the paired one below it) and its numbers."""
    opts = opts or CompareReport()
    raw = _ok(rows)
    ok = summarise(rows)
    vant = [r for r in ok if r["variant"] == opts.vant]
    clean = [r for r in ok if r["variant"] == opts.clean]
    ladder = [r for r in raw if r["variant"] == opts.nt]
    if not vant or not clean or not ladder:
        raise ConfigError(f"report (compare): needs finished runs of the variants {opts.clean!r}, {opts.nt!r} and "
                          f"{opts.vant!r}; finished: {sorted({r['variant'] for r in raw})}")
    st = _num(vant[0]["train.sigma"])
    grid = curve_of(vant[0])[0]
    nt_at = {_num(r["train.sigma"]): r for r in ok if r["variant"] == opts.nt}
    if st not in nt_at or any(_num(s) not in nt_at for s in grid):
        raise ConfigError(f"report (compare): the {opts.nt!r} ladder must hold NT at every sigma of the grid {grid} "
                          f"(sigma_train {st:g} included)")
    ub = group_upper_bound(ladder, grid)
    env = envelope({s: dict(zip(*curve_of(r)[:2])) for s, r in nt_at.items()}, grid)
    auc_ub, auc_env = auc(grid, ub), auc(grid, env)
    chosen = [("clean", clean[0]), (f"NT@{st:g}", nt_at[st]), (f"VANT@{st:g}", vant[0])]
    table = []
    for name, r in chosen:
        table.append(dict(model=name, run=r["runs"], seeds=r["seeds"], clean_acc=r["clean_acc"],
                          acc_at_sigma_train=r[f"acc@{st:g}"], auc=r["auc"], rauc=r["rauc"],
                          pa=r["pa"] if r is vant[0] else None, summary=r))
    body = [(t["model"], str(t["seeds"]), pm(t["summary"], "clean_acc"), pm(t["summary"], f"acc@{st:g}"),
             pm(t["summary"], "auc"), pm(t["summary"], "rauc"), pm(t["summary"], "pa", sign=True) if t["pa"] is not None
             else "") for t in table]
    body += [("upper bound (NT matched)", "", "", "", _fmt(auc_ub), "100.0", ""),
             ("envelope (best NT at each sigma, check)", "", "", "", _fmt(auc_env), _fmt(100 * auc_env / auc_ub), "")]
    text = markdown(["model", "seeds", "clean acc [%]", f"acc @ sigma={st:g} [%]", "AUC", "rAUC [%]", "PA [pp]"], body)
    pairs = [p for p in paired(rows, opts.nt, opts.vant) if p["pairs"] > 0]
    if pairs and any(p["pairs"] > 1 for p in pairs):
        text += "\n\nPaired by seed (VANT and NT of the same seed):\n\n" + paired_table(pairs)
    return text, dict(sigma_train=st, grid=grid, rows=table, upper_bound=ub, envelope=env, auc_upper_bound=auc_ub,
                      alpha=vant[0]["train.alpha"], theta=vant[0]["train.theta"], paired=pairs)


def _compare(spec, rows, out: Path, opts: CompareReport) -> list[Path]:
    text, result = compare_table(rows, opts)
    names = {"clean": opts.clean, "nt": opts.nt, "vant": opts.vant}
    curves = []
    for t in result["rows"]:
        r = t["summary"]
        sig, acc, _ = curve_of(r)
        curves.append(dict(label=t["model"] + _seed_suffix(r), sigmas=sig, mean=acc, std=band_of(r)))
    fig = new_figure(figsize=(6.4, 4.2))
    ax = fig.subplots()
    ub = dict(sigmas=result["grid"], mean=result["upper_bound"])
    draw_curves(ax, curves, _title(spec), ub, result["sigma_train"])
    fig.tight_layout()
    png = _save(fig, out / "report.png", curve_rows(curves, ub))
    lines = _header(spec, rows) + _seeds_note([t["summary"] for t in result["rows"]])
    lines += [f"Variants: {names}. VANT: α={_value(result['alpha'])}, θ={_value(result['theta'])}.", "", text]
    md = out / "report.md"
    md.write_text("\n".join(lines + _failures(rows)) + "\n")
    return [png, data_path(png), md]


@dataclass
class ScenarioReport:
    repeats: int = 3  # noisy passes over the test set at every (device, time) point of the scenario
    threshold: Union[float, None] = 80.0  # accuracy [%] below which device-time counts as failing
    worst: float = 0.05  # share of device-time whose accuracy is reported as the worst case
    seed: Union[int, None] = None  # base seed of the evaluation noise; None = each run's eval.seed


def scenario_label(row: dict) -> str:
    """A run's name in a scenario table: its variant and, for VANT, its sampler settings."""
    label = row["variant"] or row["run"]
    if row["train.method"] == "vant":
        label += f" (σ={_value(row['train.sigma'])}, α={_value(row['train.alpha'])}, θ={_value(row['train.theta'])})"
    elif row["train.method"] == "nt":
        label += f"@{_value(row['train.sigma'])}"
    return label


def _scenario(spec, rows, out: Path, opts: ScenarioReport, progress: bool = True) -> list[Path]:
    import json

    from ..pipeline.runs import Run
    from ..scenarios.evaluate import compare_on_scenario, format_table, scenario_figure
    from ..scenarios.fit import training_sigma
    from ..scenarios.spec import load_scenario

    scn = load_scenario(spec.scenario)
    ok = list({r["run"]: r for r in _ok(rows)}.values())  # a run two variants share is evaluated once
    runs = [Run.open(out / r["run_dir"]) for r in ok]
    settings = [scenario_label(r) for r in ok]
    seeded = len({str(r.get(SEED)) for r in ok}) > 1
    labels = [f"{lab} seed {r.get(SEED)}" if seeded else lab for lab, r in zip(settings, ok)]
    result = compare_on_scenario(runs, scn, labels=labels, out_dir=None, progress=progress,
                                 repeats=opts.repeats, seed=opts.seed, threshold=opts.threshold, worst_q=opts.worst)
    for summary, setting in zip(result["rows"], settings):
        summary["setting"] = setting
    for summary, r, run in zip(result["rows"], ok, runs):
        t = run.config.train
        mean, std = training_sigma(t.method, t.sigma, t.alpha, t.theta, t.sampler, t.sigma_values)
        summary["train_sigma"] = f"{_fmt(mean, '.3f')} ± {_fmt(std, '.3f')}"
    png = scenario_figure([(s["label"], s) for s in result["rows"]], scn, out / "report.png")
    over_seeds = scenario_over_seeds(result["rows"])
    if over_seeds:
        result["over_seeds"] = over_seeds
    (out / "results.json").write_text(json.dumps(result, indent=2, default=str))
    lines = _header(spec, rows) + [scn.describe(), "", format_table(result["rows"])]
    if over_seeds:
        lines += ["", f"## Over seeds: mean ± the {100 * LEVEL:g} % Student-t interval of each setting's runs", "",
                  markdown(["model", "seeds", "expected acc [%]", f"mean of worst {100 * opts.worst:g}% [%]",
                            "share below threshold [%]"], [(o["label"], str(o["seeds"]), pm(o, "expected", ".2f"),
                                               pm(o, "worst_mean", ".2f"), pm(o, "below_pct")) for o in over_seeds])]
    md = out / "report.md"
    md.write_text("\n".join(lines + _failures(rows)) + "\n")
    return [png, data_path(png), md]


def scenario_over_seeds(summaries: Sequence[dict]) -> list[dict]:
    """Scenario summaries of runs that share a label (the seeds of one setting) as mean ± interval;
    empty when no label has two runs."""
    from .table import interval

    by: dict[str, list[dict]] = defaultdict(list)
    for s in summaries:
        by[s.get("setting", s["label"])].append(s)
    if all(len(v) < 2 for v in by.values()):
        return []
    out = []
    for label, ss in by.items():
        o = {"label": label, "seeds": len(ss)}
        for key, get in (("expected", lambda x: x["expected"]), ("worst_mean", lambda x: x["worst_mean"]),
                         ("below_pct", lambda x: 100 * x["below"] if x.get("below") is not None else None)):
            vals = [get(x) for x in ss]
            if all(_finite(v) for v in vals):
                o[key], _, o[key + "_ci"] = interval(vals)
        out.append(o)
    return out


REPORTS = {"curves": (CurvesReport, _curves), "heatmap": (HeatmapReport, _heatmap),
           "table1": (Table1Report, _table1), "bars": (BarsReport, _bars), "compare": (CompareReport, _compare),
           "scenario": (ScenarioReport, _scenario)}
#: Options of each kind that name variants of the grid (checked before any run).
_VARIANT_FIELDS = ("variant", "nt", "vant", "clean", "best")


def check_report(spec: GridSpec):
    """The spec's report options, parsed and checked against the spec (kind, fields, variant names,
    the scenario) before any run trains; returns ``(kind, options)``."""
    opts = dict(spec.report or {})
    kind = opts.pop("kind", "curves")
    if kind not in REPORTS:
        raise ConfigError(f"{spec.name}: report.kind: unknown kind {kind!r}; choose one of {sorted(REPORTS)}")
    cls, _ = REPORTS[kind]
    try:
        parsed = from_dict(cls, opts, "report")
    except ConfigError as e:
        raise ConfigError(f"{spec.name}: {e}") from None
    variants = list(spec.variants) if spec.variants else [""]
    named = [n for f in _VARIANT_FIELDS if hasattr(parsed, f) for n in (
        getattr(parsed, f) if isinstance(getattr(parsed, f), list) else [getattr(parsed, f)])]
    named += [n for names in getattr(parsed, "panels", {}).values() for n in names]
    unknown = [n for n in named if n not in variants]
    if unknown:
        raise ConfigError(f"{spec.name}: report names variants {unknown} that the grid does not have ({variants})")
    if kind == "scenario":
        if not spec.scenario:
            raise ConfigError(f"{spec.name}: report.kind scenario needs the spec's `scenario`")
        from ..scenarios.spec import load_scenario

        load_scenario(spec.scenario)
    return kind, parsed


def make_report(grid_dir: str | Path, progress: bool = False) -> list[Path]:
    """Draw the grid's figure and write its Markdown table, from ``grid.yaml`` and ``results.csv``."""
    grid_dir = Path(grid_dir)
    if not (grid_dir / "grid.yaml").is_file():
        raise FileNotFoundError(f"{grid_dir} is not a grid directory (no grid.yaml)")
    try:
        spec = from_dict(GridSpec, yaml.safe_load((grid_dir / "grid.yaml").read_text()))
    except (yaml.YAMLError, ConfigError) as e:
        raise ConfigError(f"{grid_dir / 'grid.yaml'} does not parse: {str(e).splitlines()[0]}") from None
    rows = read_results(grid_dir)
    kind, opts = check_report(spec)
    draw = REPORTS[kind][1]
    return draw(spec, rows, grid_dir, opts, progress) if kind == "scenario" else draw(spec, rows, grid_dir, opts)


__all__ = ["table1", "format_table1", "make_report", "check_report", "compare_table", "REPORTS"]

"""Figures, drawn only from stored rows (never from live objects).

Built with matplotlib's object API (``matplotlib.figure.Figure``), never pyplot: functions return
the ``Figure`` and save it where asked, and importing vant leaves matplotlib's backend and pyplot's
figure list as the user set them (a notebook's figures do not change).

Every figure is saved with the values it plots: :func:`save_figure` takes them as rows and writes
them to the CSV of the same stem beside the image (``report.png`` -> ``report.csv``), so a figure
can be redrawn, restyled or checked without vant.
"""
from __future__ import annotations

import csv
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from matplotlib.figure import Figure


def new_figure(figsize=(6.4, 4.2), dpi: int = 120, **kwargs) -> Figure:
    """A figure that belongs to no backend's window list (pyplot never sees it)."""
    return Figure(figsize=figsize, dpi=dpi, **kwargs)


def save_figure(fig: Figure, path: Path, data: Sequence[Mapping], **kwargs) -> Path:
    """Save ``fig`` to ``path`` (the format from its suffix), creating the folder, and ``data``, one
    mapping per plotted value, to :func:`data_path` beside it (columns in order of first use)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_rows(data_path(path), data)
    fig.savefig(path, **kwargs)
    return path


def data_path(figure: Path) -> Path:
    """Where the values of ``figure`` are: the same stem, ``.csv``."""
    return Path(figure).with_suffix(".csv")


def _cell(v):
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "" if v is None or math.isnan(v) else v  # +-inf is kept: it was plotted as such
    return v


def write_rows(path: Path, rows: Sequence[Mapping]) -> Path:
    """``rows`` as a CSV (written to a temporary file, then moved into place); None and NaN are empty."""
    fields: dict[str, None] = {}
    for r in rows:
        fields.update(dict.fromkeys(r))
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(fields))
        w.writeheader()
        w.writerows({k: _cell(v) for k, v in r.items()} for r in rows)
    os.replace(tmp, path)
    return path


def curve_rows(curves: Sequence[dict], upper_bound: dict | None = None, **extra) -> list[dict]:
    """The values :func:`draw_curves` plots, one row per point: series, sigma, mean accuracy and std
    (the band is mean +- std), the upper bound as one more series; ``extra`` columns go first."""
    rows = []
    for c in curves:
        std = c.get("std")
        for k, (s, m) in enumerate(zip(c["sigmas"], c["mean"])):
            rows.append(dict(extra, series=c["label"], sigma=s, accuracy=m, std=None if std is None else std[k]))
    if upper_bound is not None:
        label = upper_bound.get("label", "upper bound (NT, matched)")
        rows += [dict(extra, series=label, sigma=s, accuracy=m, std=None)
                 for s, m in zip(upper_bound["sigmas"], upper_bound["mean"])]
    return rows


def accuracy_vs_sigma(curves: Sequence[dict], path: Path, title: str = "", upper_bound: dict | None = None,
                      mark: float | None = None) -> Path:
    """One line per curve ``{label, sigmas, mean, std}`` with a +-std band; the UB dashed."""
    fig = new_figure(figsize=(6.4, 4.2))
    draw_curves(fig.subplots(), curves, title, upper_bound, mark)
    fig.tight_layout()
    return save_figure(fig, path, curve_rows(curves, upper_bound))


def draw_curves(ax, curves: Sequence[dict], title: str = "", upper_bound: dict | None = None,
                mark: float | None = None) -> None:
    """Draw :func:`accuracy_vs_sigma` into existing axes; a curve may carry its own ``color``."""
    for c in curves:
        line, = ax.plot(c["sigmas"], c["mean"], marker=c.get("marker", "o"), ms=3, lw=1.6, label=c["label"],
                        color=c.get("color"), ls=c.get("ls", "-"))
        if c.get("std") is not None:
            lo = [m - s for m, s in zip(c["mean"], c["std"])]
            hi = [m + s for m, s in zip(c["mean"], c["std"])]
            ax.fill_between(c["sigmas"], lo, hi, color=line.get_color(), alpha=0.18, lw=0)
    if upper_bound is not None:
        ax.plot(upper_bound["sigmas"], upper_bound["mean"], "k--", lw=1.4, label=upper_bound.get("label", "upper bound (NT, matched)"))
    if mark is not None:
        ax.axvline(mark, color="grey", lw=0.8, ls=":")
    ax.set_xlabel("inference noise sigma (std, at every site)")
    ax.set_ylabel("top-1 accuracy [%]")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title, fontsize=10)


def training_curves(rows: Sequence[dict], path: Path, title: str = "") -> Path:
    """Train loss, train accuracy and per-epoch test accuracy (at sigma_train) over epochs."""
    ep = [r["epoch"] for r in rows]
    fig = new_figure(figsize=(8.4, 3.2))
    a1, a2 = fig.subplots(1, 2)
    a1.plot(ep, [r["train_loss"] for r in rows])
    a1.set_xlabel("epoch"); a1.set_ylabel("train loss"); a1.grid(alpha=0.3)
    a2.plot(ep, [r["train_acc"] for r in rows], label="train (noisy)")
    test = [(r["epoch"], r["test_acc"]) for r in rows if r.get("test_acc") == r.get("test_acc")]
    if test:
        a2.plot(*zip(*test), label="test at sigma_train")
    a2.set_xlabel("epoch"); a2.set_ylabel("accuracy [%]"); a2.grid(alpha=0.3); a2.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    values = [dict(epoch=r["epoch"], train_loss=r["train_loss"], train_acc=r["train_acc"],
                   test_acc=r["test_acc"] if r.get("test_acc") == r.get("test_acc") else None) for r in rows]
    return save_figure(fig, path, values)

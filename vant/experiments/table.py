"""The results table of a grid: one row per grid point, and the metrics derived from the rows.

``results.csv`` holds, per grid point, the grid keys, the run, its status and error, the summary
metrics, the accuracy (and std) at every sigma, and two metrics that need other rows of the table:

- rAUC, against the matched NT upper bound of the run's *group* (runs that differ only in the
  training-noise recipe or the seed share one NT ladder, :func:`group_key`); where the group holds
  several seeds of NT at a sigma, the bound there is their mean accuracy (issue 19);
- PA, against the NT run trained at the same sigma_train and seed in the group (the mean of the
  group's NT runs at that sigma_train where none has the same seed).

Seeds (:func:`summarise`, :func:`paired`): the rows of one *setting* (they differ only in
``train.seed``) are summarised as the mean and a 95 % Student-t confidence interval over seeds, and
two variants are compared seed by seed (VANT - NT of the same seed). Every report and ``vant
collect``'s summary are made with these two functions.

:func:`select_setting` is the paper's two-step rule (spec 3.4) and :func:`best_by_auc` the rule
that picks SAM's rho and QAT's constant scale (spec 2); reports and presets use only these.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from ..config import NON_SEMANTIC, ConfigError, RunConfig, to_dict
from ..core.metrics import mean_std_ci, preserved_accuracy, rauc, upper_bound
from ..pipeline.store import CheckpointError, read_csv, write_csv
from .spec import RECIPE_KEYS, SEED, Job, group_key  # noqa: F401 (group_key, RECIPE_KEYS: re-exported)

#: The confidence level of every interval vant reports.
LEVEL = 0.95
#: Columns every results table has, besides the grid keys.
STANDARD_KEYS = ("model.name", "data.name", "train.method", "train.sigma", "train.alpha", "train.theta")
METRICS = ("clean_acc", "acc_at_sigma_train", "acc_at_sigma_train_std", "auc", "rauc", "pa", "epochs",
           "final_train_loss", "train_seconds")


def _get(cfg_dict: dict, key: str):
    node = cfg_dict
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _cell(value):
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    return value


def grid_keys(jobs: list[Job]) -> list[str]:
    keys: list[str] = []
    for j in jobs:
        for k in j.point:
            if k not in keys:
                keys.append(k)
    return keys + [k for k in STANDARD_KEYS if k not in keys]


def sigma_col(sigma: float, what: str = "acc") -> str:
    return f"{what}@{sigma:g}"


def job_row(job: Job, grid_dir: Path, status: str = "pending", error: str = "", summary: dict | None = None,
            keys: list[str] | None = None) -> dict:
    cfg = to_dict(job.config)
    row = {"variant": job.variant}
    for k in keys or grid_keys([job]):
        row[k] = _cell(_get(cfg, k))
    row.update(group=job.group or group_key(job.config), upper_bound=job.ub_variant or "", run=job.path.name, run_dir=os.path.relpath(job.path, grid_dir),
               status=status, error=error)
    if summary is not None:
        row.update(clean_acc=summary["clean_accuracy"], acc_at_sigma_train=summary["acc_at_sigma_train"],
                   acc_at_sigma_train_std=summary["acc_at_sigma_train_std"], auc=summary["auc"],
                   epochs=summary["epochs"], final_train_loss=summary["final_train_loss"],
                   train_seconds=summary["train_seconds"])
        e = summary["eval"]
        for s, m, sd in zip(e["sigmas"], e["mean"], e["std"]):
            row[sigma_col(s)] = m
            row[sigma_col(s, "std")] = sd
    return row


def table_fields(rows: list[dict], keys: list[str]) -> list[str]:
    sig = sorted({float(k[4:]) for r in rows for k in r if k.startswith("acc@")})
    return (["variant", *keys, "group", "upper_bound", "run", "run_dir", "status", "error", *METRICS]
            + [sigma_col(s) for s in sig] + [sigma_col(s, "std") for s in sig])


def write_results(grid_dir: Path, rows: list[dict], keys: list[str]) -> Path:
    path = grid_dir / "results.csv"
    write_csv(path, derive(rows), table_fields(rows, keys))
    return path


def read_results(grid_dir: str | Path) -> list[dict]:
    path = Path(grid_dir) / "results.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{grid_dir} is not a grid directory (no results.csv)")
    try:
        rows = read_csv(path)
    except CheckpointError as e:  # the store's advice is for run files; the grid rewrites its table
        raise ConfigError(str(e).replace("delete it and run the same command again",
                                         "run the grid again to rewrite it")) from None
    if not rows:
        raise ConfigError(f"{path} has no rows; run the grid again to rewrite it")
    required = ("variant", "group", "run", "run_dir", "status", "train.method", "train.sigma")
    for i, r in enumerate(rows, 2):  # a truncated file: a short last line, or a header without the columns
        missing = [k for k in required if r.get(k) is None]
        if missing or None in r:
            what = f"lacks {missing}" if missing else "has more cells than columns"
            raise ConfigError(f"{path} is damaged: line {i} {what}; run the grid again to rewrite it")
        for k, v in r.items():  # empty cells are missing values
            if v == "":
                r[k] = None
    return rows


def _num(v):
    return round(float(v), 9) if isinstance(v, (int, float)) and not isinstance(v, bool) else v


def _ok(rows: Sequence[dict]) -> list[dict]:
    return [r for r in rows if r.get("status") == "ok"]


def curve_of(row: Mapping) -> tuple[list[float], list[float], list[float]]:
    """The stored accuracy curve of a results row: sigmas, mean accuracy, std."""
    pts = sorted((float(k[4:]), v, row.get(f"std@{k[4:]}")) for k, v in row.items()
                 if k.startswith("acc@") and v is not None and v == v)
    return [p[0] for p in pts], [p[1] for p in pts], [p[2] for p in pts]


def _nt_by_sigma(members: Sequence[dict]) -> dict[float, list[dict]]:
    """A group's NT rows by sigma_train, one per run (a run two variants share counts once)."""
    out: dict[float, dict[str, dict]] = defaultdict(dict)
    for r in members:
        if r["train.method"] == "nt" and not r.get("upper_bound"):  # not a run measured against another's ladder
            out[_num(r["train.sigma"])].setdefault(str(r.get("run") or r.get("runs") or id(r)), r)
    return {s: list(runs.values()) for s, runs in out.items()}


def _mean_curve(rows: Sequence[dict]) -> dict[float, float]:
    """The accuracy at each sigma averaged over ``rows`` (sigmas that every row has)."""
    curves = [dict(zip(*curve_of(r)[:2])) for r in rows]
    common = set(curves[0]).intersection(*curves[1:])
    return {s: float(np.mean([c[s] for c in curves])) for s in sorted(common)}


def group_upper_bound(members: Sequence[dict], sigmas: Sequence[float]) -> list[float] | None:
    """The matched NT diagonal over ``sigmas`` from a group's NT rows (at each sigma the mean over
    the NT runs trained there, i.e. over their seeds), or None if one is missing."""
    curves = {s: _mean_curve(rs) for s, rs in _nt_by_sigma(members).items()}
    try:
        return upper_bound(curves, sigmas)
    except KeyError:
        return None


def derive(rows: Sequence[dict]) -> list[dict]:
    """Rows with ``rauc`` and ``pa`` filled in where the group holds what they need (None otherwise)."""
    out = [dict(r, rauc=None, pa=None) for r in rows]
    groups: dict[str, list[dict]] = defaultdict(list)
    for r in _ok(out):
        groups[r["group"]].append(r)
    for members in groups.values():
        nt = _nt_by_sigma(members)
        for r in members:
            sig, acc, _ = curve_of(r)
            ub = group_upper_bound(members, sig) if len(sig) > 1 else None
            if ub is not None:
                r["rauc"] = rauc(sig, acc, ub)
            partners = nt.get(_num(r["train.sigma"]))
            if r["train.method"] not in ("nt", "clean") and partners:
                same_seed = [p for p in partners if str(p.get(SEED)) == str(r.get(SEED))]
                ref = same_seed[0]["acc_at_sigma_train"] if same_seed else float(
                    np.mean([p["acc_at_sigma_train"] for p in partners]))
                r["pa"] = preserved_accuracy(r["acc_at_sigma_train"], ref)
    return out


# ----------------------------------------------------------------------------- seeds: summaries and pairs

#: Columns that differ between the seeds of one setting without naming the setting.
_PER_RUN = {SEED, "run", "run_dir", "hash", "status", "error", "runs", "seeds"}  # "upper_bound" names the setting
#: Summary columns that describe one training, not the setting (summarised like metrics).
_PER_RUN_METRICS = {"epochs", "final_train_loss", "train_seconds", "final_train_acc", "clean_accuracy",
                    "acc_at_sigma_train_std"}


def _is_metric(key: str) -> bool:
    return (key in METRICS or key in _PER_RUN_METRICS or key in ("rauc", "pa")
            or key.startswith(("acc@", "std@", "ci@", "meta.")) or key.endswith(("_ci", "_sd")))


def setting_of(row: Mapping) -> tuple:
    """What names a row's setting: every column but the seed, the run's own names and the metrics."""
    return tuple((k, str(v)) for k, v in row.items() if k not in _PER_RUN and not _is_metric(k))


def interval(values: Sequence[float], level: float = LEVEL) -> tuple[float, float | None, float | None]:
    """``(mean, sd, half-width)`` of values over seeds: the Student-t interval ``mean ± t(n-1) s/√n``.

    With one value there is no interval (sd and half-width are None), never a made-up one. Why t and
    not a bootstrap: with the 2 to 5 seeds a CPU study affords, a bootstrap over seeds has too few
    resamples to estimate a tail, while the t interval is exact for normal errors and its width shows
    honestly how little two or three seeds pin down."""
    mean, sd, hw = mean_std_ci(values, level)
    return (mean, None, None) if len(values) < 2 else (mean, sd, hw)


def summarise(rows: Sequence[Mapping], level: float = LEVEL) -> list[dict]:
    """One row per setting (the finished rows that differ only in ``train.seed``), in first-seen order.

    Each metric column (``clean_acc``, ``acc_at_sigma_train``, ``auc``, ``rauc``, ``pa``, ``acc@<sigma>``,
    ...) holds the mean over the setting's seeds, and beside it ``<metric>_ci`` (``ci@<sigma>`` for the
    curve) the half-width of the ``level`` Student-t interval (:func:`interval`) and ``<metric>_sd``
    the sample std; both empty for one seed. ``seeds`` counts the runs, ``train.seed`` lists their
    seeds and ``runs`` their names. A metric missing in any seed is missing in the summary.
    Works on the rows of a grid's ``results.csv`` (:func:`read_results`) or on any rows of that form.
    """
    groups: dict[tuple, dict[str, Mapping]] = {}
    for r in _ok(rows):
        groups.setdefault(setting_of(r), {}).setdefault(str(r.get("run", id(r))), r)  # a repeated run counts once
    out = []
    for members in groups.values():
        ms = list(members.values())
        first = ms[0]
        row = {k: v for k, v in first.items() if k not in _PER_RUN and not _is_metric(k)}
        row.update(seeds=len(ms), runs=";".join(str(m.get("run", "")) for m in ms), status="ok")
        row[SEED] = ",".join(str(m.get(SEED)) for m in ms)
        metric_keys = [k for k in first if _is_metric(k) and not k.startswith(("std@", "ci@", "meta."))
                       and not k.endswith(("_ci", "_sd"))]
        for k in metric_keys:
            vals = [m.get(k) for m in ms]
            if not all(_finite(v) for v in vals):
                row[k] = None
                continue
            mean, sd, hw = interval(vals, level)
            row[k] = mean
            if k.startswith("acc@"):
                row["ci@" + k[4:]] = hw
                # the band a curve draws: over seeds where there are several, else the repeats' std
                row["std@" + k[4:]] = first.get("std@" + k[4:]) if len(ms) == 1 else None
            else:
                row[k + "_ci"], row[k + "_sd"] = hw, sd
        out.append(row)
    return out


def paired(rows: Sequence[Mapping], a: str, b: str, by: str = "train.sigma", level: float = LEVEL,
           metrics: Sequence[str] = ("rauc", "pa", "clean_acc", "acc_at_sigma_train", "auc")) -> list[dict]:
    """``b - a`` seed by seed: for each setting of variant ``b``, its runs against the runs of variant
    ``a`` with the same ``by`` value, the same group (so the same NT upper bound) and the same seed.

    Returns one dict per setting of ``b``: ``{by, setting (b's summary row), pairs (count), seeds,
    <metric>: mean difference, <metric>_ci: half-width (None below 2 pairs), <metric>_excludes_0:
    True/False (None without an interval)}``. PA is already a difference (VANT - NT at sigma_train,
    paired by seed in :func:`derive`): its "difference" is PA itself, averaged over the pairs."""
    ok = _ok(rows)
    settings: dict[tuple, dict[str, Mapping]] = {}
    for r in ok:
        if r["variant"] == b:
            settings.setdefault(setting_of(r), {}).setdefault(str(r["run"]), r)
    out = []
    for members in settings.values():
        runs_b = list(members.values())
        setting = summarise(runs_b, level)[0]
        pairs = []
        for rb in runs_b:
            match = [r for r in ok if r["variant"] == a and r["group"] == rb["group"]
                     and _num(r[by]) == _num(rb[by]) and str(r.get(SEED)) == str(rb.get(SEED))]
            if match:
                pairs.append((match[0], rb))
        res = {by: _num(setting[by]), "setting": setting, "pairs": len(pairs),
               "seeds": ",".join(str(rb.get(SEED)) for _, rb in pairs)}
        for m in metrics:
            diffs = [rb.get(m) if m == "pa" else (rb.get(m) - ra.get(m) if _finite(rb.get(m)) and _finite(ra.get(m))
                                                  else None) for ra, rb in pairs]
            if not diffs or not all(_finite(d) for d in diffs):
                res[m], res[m + "_ci"], res[m + "_excludes_0"] = None, None, None
                continue
            mean, _, hw = interval(diffs, level)
            res[m], res[m + "_ci"] = mean, hw
            res[m + "_excludes_0"] = None if hw is None else bool(abs(mean) > hw)
        out.append(res)
    return out


def band_of(row: Mapping) -> list | None:
    """The band a curve of a summarised row draws: the confidence interval over seeds where it has
    several, else the std of the noisy repeats (None where neither is stored)."""
    sig = curve_of(row)[0]
    key = "ci@" if (row.get("seeds") or 1) > 1 else "std@"
    band = [row.get(f"{key}{s:g}") for s in sig]
    return band if all(_finite(b) for b in band) else None


def pm(row: Mapping, key: str, spec: str = ".1f", sign: bool = False) -> str:
    """``mean ± half-width`` of a summarised metric (just the mean for one seed; empty if missing)."""
    from ..tables import fmt

    ci = row.get("ci@" + key[4:]) if key.startswith("acc@") else row.get(key + "_ci")
    text = fmt(row.get(key), spec, sign)
    return f"{text} ± {fmt(ci, spec)}" if text and _finite(ci) else text


def select_setting(cells: Sequence[Mapping], tolerance: float = 0.5, pa: str = "pa", score: str = "rauc"):
    """The paper's two-step rule: among cells with PA >= -tolerance, the one with the highest score.

    Cells without a PA or score are skipped. Ties go to the higher PA, then to the earlier cell.
    Returns None when no cell is feasible.
    """
    feasible = [c for c in cells if _finite(c.get(pa)) and _finite(c.get(score)) and c[pa] >= -tolerance - 1e-12]
    if not feasible:
        return None
    best = max(range(len(feasible)), key=lambda i: (feasible[i][score], feasible[i][pa], -i))
    return feasible[best]


def best_by_auc(rows: Sequence[dict]) -> dict:
    """The row with the highest AUC (the first on ties): how spec 2 picks SAM's rho and QAT's constant scale."""
    return max(rows, key=lambda r: r["auc"] if _finite(r.get("auc")) else -np.inf)


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v)



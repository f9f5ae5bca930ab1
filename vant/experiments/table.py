"""The results table of a grid: one row per grid point, and the metrics derived from the rows.

``results.csv`` holds, per grid point, the grid keys, the run, its status and error, the summary
metrics, the accuracy (and std) at every sigma, and two metrics that need other rows of the table:

- rAUC, against the matched NT upper bound of the run's *group* (runs that differ only in the
  training-noise recipe share one NT ladder, :func:`group_key`);
- PA, against the NT run trained at the same sigma_train in the group.

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
from ..core.metrics import preserved_accuracy, rauc, upper_bound
from ..pipeline.store import CheckpointError, read_csv, write_csv
from .spec import Job

RECIPE_KEYS = ("train.method", "train.sigma", "train.alpha", "train.theta", "train.sampler", "train.sigma_values",
               "train.warmup_epochs")
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


def group_key(cfg: RunConfig) -> str:
    """Runs with the same group share an NT upper bound: the config without recipe and bookkeeping keys."""
    data = to_dict(cfg)
    for key in RECIPE_KEYS + tuple(k for k in NON_SEMANTIC if k != "eval") + ("eval.batch_size", "eval.batched"):
        *parents, leaf = key.split(".")
        node = data
        for p in parents:
            node = node.get(p, {}) if isinstance(node, dict) else {}
        if isinstance(node, dict):
            node.pop(leaf, None)
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:8]


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
    row.update(group=group_key(job.config), run=job.path.name, run_dir=os.path.relpath(job.path, grid_dir),
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
    return (["variant", *keys, "group", "run", "run_dir", "status", "error", *METRICS]
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


def _nt_by_sigma(members: Sequence[dict]) -> dict[float, dict]:
    return {_num(r["train.sigma"]): r for r in members if r["train.method"] == "nt"}


def group_upper_bound(members: Sequence[dict], sigmas: Sequence[float]) -> list[float] | None:
    """The matched NT diagonal over ``sigmas`` from a group's NT rows, or None if one is missing."""
    curves = {s: dict(zip(*curve_of(r)[:2])) for s, r in _nt_by_sigma(members).items()}
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
            partner = nt.get(_num(r["train.sigma"]))
            if r["train.method"] not in ("nt", "clean") and partner is not None:
                r["pa"] = preserved_accuracy(r["acc_at_sigma_train"], partner["acc_at_sigma_train"])
    return out


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



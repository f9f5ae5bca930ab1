"""One long table of many runs for analysis: a row per run x sigma x repeat, read by pandas as is.

Each row is one stored evaluation of ``sweep.csv`` (every noisy repeat is kept there, with its own
seed): the run, ``sigma``, ``repeat``, ``eval_seed``, ``accuracy`` (and ``correct``/``total``),
``in_summary`` (whether the run's summary curve counts this row: its sigma is on the run's grid,
or is 0 or sigma_train, and its repeat and seed are the run's evaluation settings), the run's summary
metrics, every config field flattened to a dotted column (``train.sigma``, ``train.seed``, ...;
lists and mappings as JSON; ``eval.*`` as the summary was made, which ``vant sweep`` may have
changed) and the provenance of ``config.yaml`` (``meta.*``). Collected from a
grid directory, the rows also carry the grid point's ``variant`` and the metrics that need the
whole table (``rauc``, ``pa``); a run two variants share appears under each.

Beside the long table, ``vant collect`` writes its summary over seeds (``table-summary.csv``): one
row per setting, each metric's mean over the seeds with ``<metric>_ci``, the half-width of the 95 %
Student-t interval (:func:`vant.experiments.table.summarise`, the function the reports use).

sigma = 0 is the clean evaluation: one repeat (it is deterministic).
"""
from __future__ import annotations

import csv
import importlib.util
import json
import math
import os
from pathlib import Path

from ..config import ConfigError, to_dict
from ..pipeline.runs import Run, eval_sigmas
from ..pipeline.store import CheckpointError
from .table import read_results

#: The run's summary metrics copied onto each of its rows (see vant.pipeline.runs.summary_of).
SUMMARY = ("clean_accuracy", "acc_at_sigma_train", "acc_at_sigma_train_std", "auc", "final_train_loss",
           "final_train_acc", "train_seconds")
#: What a grid adds: metrics computed against the other runs of its table.
GRID = ("rauc", "pa")
META = ("vant", "torch", "git_commit", "device", "created", "test_split")
FORMATS = (".csv", ".parquet")


def flatten(data: dict, prefix: str = "") -> dict:
    """``{train: {sigma: 0.5}}`` -> ``{'train.sigma': 0.5}``; lists and mappings below become JSON text."""
    out = {}
    for k, v in data.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and not key.endswith("kwargs"):
            out.update(flatten(v, f"{key}."))
        elif isinstance(v, (dict, list, tuple)):
            out[key] = json.dumps(v, sort_keys=True)
        else:
            out[key] = v
    return out


def run_rows(run: Run, run_dir: str, variant: dict | None = None, grid: dict | None = None) -> list[dict]:
    """The long rows of one finished run; ``variant`` and ``grid`` (rAUC, PA) where it is a grid point."""
    cfg = run.config
    summary = run.summary()
    meta = run.meta
    # The evaluation the summary was made with: `vant sweep` changes it without touching config.yaml.
    e = summary["eval"]
    cfg.eval.sigmas, cfg.eval.repeats, cfg.eval.seed = list(e["sigmas"]), e["repeats"], e["seed"]
    cfg.eval.batched = e.get("batched", cfg.eval.batched)
    curve = {round(s, 9) for s in eval_sigmas(cfg)}
    common = {k: summary.get(k) for k in SUMMARY}
    config = flatten(to_dict(cfg))
    provenance = {f"meta.{k}": meta.get(k) for k in META}
    rows = []
    for r in run.rows():
        counted = (round(r["sigma"], 9) in curve and r["repeat"] < (1 if r["sigma"] == 0 else e["repeats"])
                   and r["seed"] == e["seed"] + r["repeat"])
        rows.append({**(variant or {}), "run": run.path.name, "run_dir": run_dir, "hash": summary.get("hash"),
                     "sigma": r["sigma"], "repeat": r["repeat"], "eval_seed": r["seed"], "accuracy": r["accuracy"],
                     "correct": r["correct"], "total": r["total"], "mode": r.get("mode"), "in_summary": counted,
                     **common, **(grid or {}), **config, **provenance})
    return rows


def collect(source: str | Path) -> tuple[list[dict], list[str]]:
    """The long table of a grid directory, a directory of runs, or one run directory.

    Returns ``(rows, skipped)``: ``skipped`` names each run or grid point left out and why (not
    finished, failed)."""
    source = Path(source)
    if not source.is_dir():
        raise ConfigError(f"{source} is not a directory (give a grid directory, a runs directory or a run)")
    if (source / "results.csv").is_file():
        return _grid(source)
    if (source / "config.yaml").is_file():
        runs = [source]
    else:
        runs = sorted(p.parent for p in source.glob("*/config.yaml"))
        if not runs:
            raise ConfigError(f"{source} holds no runs (no */config.yaml) and is no grid directory (no results.csv)")
    rows, skipped = [], []
    for path in runs:
        run = Run(path)
        if not (path / "summary.json").is_file():
            skipped.append(f"{path.name}: not finished (no summary.json)")
            continue
        rows += run_rows(run, os.path.relpath(path, source))
    return rows, skipped


def _grid(grid_dir: Path) -> tuple[list[dict], list[str]]:
    rows, skipped = [], []
    for point in read_results(grid_dir):
        if point["status"] != "ok":
            skipped.append(f"{point['run']} ({point['variant']}): {point['status']} {point.get('error') or ''}".rstrip())
            continue
        path = grid_dir / point["run_dir"]
        if not (path / "summary.json").is_file():
            skipped.append(f"{point['run']} ({point['variant']}): its run directory {path} has no summary.json")
            continue
        rows += run_rows(Run(path), point["run_dir"], {"variant": point["variant"]}, {k: point.get(k) for k in GRID})
    return rows, skipped


def _column_types(rows: list[dict]) -> list[dict]:
    """One type per column, as parquet needs: numbers where any is a float become floats, and a
    column that mixes text with anything else becomes text (None stays missing)."""
    keys = list(dict.fromkeys(k for r in rows for k in r))
    for k in keys:
        values = [r.get(k) for r in rows if r.get(k) is not None]
        kinds = {type(v) for v in values}
        if kinds <= {int, float} and float in kinds:
            for r in rows:
                if r.get(k) is not None:
                    r[k] = float(r[k])
        elif len(kinds) > 1:
            for r in rows:
                if r.get(k) is not None:
                    r[k] = str(r[k])
    return rows


def check_output(path: Path) -> None:
    """A table path vant can write: .csv, or .parquet where pyarrow is installed."""
    if path.suffix not in FORMATS:
        raise ConfigError(f"-o {path}: write .csv or .parquet, not {path.suffix or 'a file without suffix'!r}")
    if path.suffix == ".parquet" and importlib.util.find_spec("pyarrow") is None:
        raise ConfigError('writing .parquet needs pyarrow: pip install "vant[parquet]"')


def write_table(rows: list[dict], path: str | Path) -> Path:
    """``rows`` as CSV or parquet (by the suffix), every column in every row; written atomically."""
    path = Path(path)
    check_output(path)
    if not rows:
        raise ConfigError("there is nothing to collect: no finished run")
    keys = list(dict.fromkeys(k for r in rows for k in r))
    rows = _column_types([{k: r.get(k) for k in keys} for r in rows])
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    if path.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), tmp)
    else:
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=keys)
            w.writeheader()
            w.writerows({k: "" if v is None or (isinstance(v, float) and math.isnan(v)) else v for k, v in r.items()}
                        for r in rows)
    os.replace(tmp, path)
    return path


def run_result_row(run: Run, run_dir: str) -> dict:
    """One finished run as a row of the results-table form (:mod:`vant.experiments.table`): its config
    flattened, its summary metrics and its accuracy curve, so that runs outside a grid can be
    summarised over seeds too (without rAUC and PA, which need a grid's NT ladder)."""
    from ..config import NON_SEMANTIC
    from .table import sigma_col

    summary = run.summary()
    config = flatten(to_dict(run.config))
    row = {"variant": "", **{k: v for k, v in config.items()
                             if not any(k == n or k.startswith(n + ".") for n in NON_SEMANTIC)},
           "run": run.path.name, "run_dir": run_dir, "status": "ok",
           "clean_acc": summary["clean_accuracy"], "acc_at_sigma_train": summary["acc_at_sigma_train"],
           "auc": summary["auc"], "final_train_loss": summary.get("final_train_loss"),
           "train_seconds": summary.get("train_seconds")}
    e = summary["eval"]
    for s, m, sd in zip(e["sigmas"], e["mean"], e["std"]):
        row[sigma_col(s)], row[sigma_col(s, "std")] = m, sd
    return row


def summary_rows(source: str | Path) -> list[dict]:
    """:func:`vant.experiments.table.summarise` of ``source`` (a grid directory, a directory of runs
    or one run): one row per setting with the mean and the 95 % interval over its seeds; the same
    numbers as the grid's report."""
    from .table import summarise

    source = Path(source)
    if (source / "results.csv").is_file():
        return summarise(read_results(source))
    runs = [source] if (source / "config.yaml").is_file() else sorted(p.parent for p in source.glob("*/config.yaml"))
    return summarise([run_result_row(Run(p), os.path.relpath(p, source)) for p in runs
                      if (p / "summary.json").is_file()])


def summary_path(output: Path) -> Path:
    """Where ``vant collect`` writes the per-setting summary beside the long table."""
    return output.with_name(f"{output.stem}-summary{output.suffix}")


def collect_table(source: str | Path, output: str | Path | None = None) -> tuple[Path, list[dict], list[str]]:
    """:func:`collect` ``source`` and write it to ``output`` (default ``<source>/table.csv``), and its
    per-setting summary over seeds (:func:`summary_rows`) beside it as ``<stem>-summary<suffix>``."""
    output = Path(output) if output is not None else Path(source) / "table.csv"
    check_output(output)  # before reading anything
    try:
        rows, skipped = collect(source)
        summary = summary_rows(source) if rows else []
    except CheckpointError as e:
        raise ConfigError(str(e)) from None
    path = write_table(rows, output)
    if summary:
        write_table(summary, summary_path(output))
    return path, rows, skipped


__all__ = ["collect", "collect_table", "run_rows", "write_table", "flatten", "summary_rows", "run_result_row"]

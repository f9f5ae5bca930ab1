"""Grids of runs: one YAML spec expanded into runs, run where you like, collected into one table.

A grid spec (the presets in ``vant/presets/`` are examples) is a mapping::

    description: one line shown before the grid runs
    cost: what the full grid costs, with the measurement behind it
    base: {...}                   # a RunConfig mapping shared by every run
    grid: {dotted.key: [v, ...]}  # Cartesian product, applied to every variant
    variants:                     # named, non-Cartesian sets of settings (optional)
      NT:   {train.method: nt, grid: {train.sigma: [0.1, 0.3]}}   # a variant may carry its own grid
      VANT: {train.method: vant, train.sigma: 0.5}
    report: {kind: curves | heatmap | table1 | bars, ...}          # what `vant report` draws
    profiles:                     # partial specs merged over this one; `null` deletes a variant or grid key
      full: {}
      smoke: {base: {data: {name: digits}, train: {epochs: 2}}}

Runs = for each variant, the product of the top-level grid and the variant's grid. A run's config
is base < variant settings < grid point, checked like any run config (unknown keys are errors).

The grid directory holds ``grid.yaml`` (the resolved spec), ``results.csv`` (one row per grid
point: the grid keys, the run, status, error, summary metrics, accuracy per sigma, rAUC and PA)
and the report files. Runs live in their own directories (``runs.execute``), so a grid killed at
any moment and started again skips what is finished, resumes what was cut, and ends with each run
in the table once. A failing run is recorded with its error and the others go on.
"""
from __future__ import annotations

import copy
import hashlib
import itertools
import json
import os
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .config import (NON_SEMANTIC, ConfigError, RunConfig, from_dict, load_yaml, merge, parse_override, resolve,
                     set_dotted, to_dict)
from .data import check_dataset_name
from .models import model_info
from .runs import Run, _lock, is_done, read_csv, run_dir, summary_of, write_csv, write_text_atomic

PRESETS = Path(__file__).parent / "presets"

#: Keys of the training-noise recipe: runs that differ only in these share one NT upper bound (their
#: "group"). QAT and SAM settings are not among them, so a quantized or SAM-trained model is measured
#: against an NT ladder trained the same way (none in Fig. 3, which compares AUC).
RECIPE_KEYS = ("train.method", "train.sigma", "train.alpha", "train.theta", "train.sampler", "train.sigma_values",
               "train.warmup_epochs")
#: Columns every results table has, besides the grid keys.
STANDARD_KEYS = ("model.name", "data.name", "train.method", "train.sigma", "train.alpha", "train.theta")
METRICS = ("clean_acc", "acc_at_sigma_train", "acc_at_sigma_train_std", "auc", "rauc", "pa", "epochs",
           "final_train_loss", "train_seconds")


class GridFailed(RuntimeError):
    """Runs of a grid failed (each is recorded in the results table and errors.log)."""


@dataclass
class GridSpec:
    name: str = ""  # defaults to the file's stem
    description: str = ""  # one line: what the grid reproduces
    cost: str = ""  # what the full grid costs and how that was measured
    base: dict = field(default_factory=dict)  # RunConfig mapping shared by every run
    grid: dict = field(default_factory=dict)  # dotted key -> list of values (Cartesian product)
    variants: dict = field(default_factory=dict)  # name -> {dotted key: value, grid: {...}}
    report: dict = field(default_factory=dict)  # {kind: ..., options}; see vant.report
    profile: str = ""  # which profile was applied (set by load_spec)


@dataclass
class Job:
    """One grid point: its variant, its grid values and the resolved run config."""

    variant: str
    point: dict  # dotted key -> value, the grid values of this run
    config: RunConfig

    @property
    def path(self) -> Path:
        return run_dir(self.config)


# ----------------------------------------------------------------------------- spec loading

def list_presets() -> dict[str, str]:
    out = {}
    for p in sorted(PRESETS.glob("*.yaml")):
        out[p.stem] = str((yaml.safe_load(p.read_text()) or {}).get("description", ""))
    return out


def find_spec(name_or_path: str) -> Path:
    """A preset name (``fig2``) or the path of a YAML file."""
    p = Path(name_or_path)
    if p.is_file():
        return p
    preset = PRESETS / f"{name_or_path}.yaml"
    if preset.is_file():
        return preset
    raise ConfigError(f"no grid spec {name_or_path!r}: not a file, and not a preset ({', '.join(list_presets())})")


def _merge_profile(spec: dict, profile: dict) -> dict:
    """Deep-merge ``profile`` over ``spec``; a ``null`` entry of ``variants`` or ``grid`` deletes it.
    Options of ``report`` are replaced, not merged."""
    out = copy.deepcopy(spec)
    for key, value in profile.items():
        if key in ("variants", "grid") and isinstance(value, dict):
            target = dict(out.get(key) or {})
            for k, v in value.items():
                if v is None:
                    target.pop(k, None)
                elif key == "variants" and isinstance(target.get(k), dict) and isinstance(v, dict):
                    target[k] = _merge_variant(target[k], v)
                else:
                    target[k] = v
            out[key] = target
        elif key == "report" and isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = {**out[key], **value}  # a profile's report option replaces the whole option (panels)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def _merge_variant(variant: dict, update: dict) -> dict:
    out = dict(variant)
    for k, v in update.items():
        if k == "grid" and isinstance(v, dict):
            g = dict(out.get("grid") or {})
            for gk, gv in v.items():
                if gv is None:
                    g.pop(gk, None)
                else:
                    g[gk] = gv
            out["grid"] = g
        else:
            out[k] = v
    return out


def load_spec(name_or_path: str | Path, profile: str | None = None, overrides: list[str] | None = None) -> GridSpec:
    """Read a spec, apply a profile (default ``full`` when the spec has one) and ``key=value`` overrides."""
    path = find_spec(str(name_or_path))
    data = load_yaml(path)
    profiles = data.pop("profiles", None) or {}
    if not isinstance(profiles, dict):
        raise ConfigError(f"{path}: profiles must be a mapping of name -> partial spec")
    if profile is None:
        profile = "full" if "full" in profiles else ""
    if profile:
        if profile not in profiles:
            raise ConfigError(f"{path.name} has no profile {profile!r}; it has {sorted(profiles) or 'none'}")
        data = _merge_profile(data, profiles[profile] or {})
    for text in overrides or []:
        key, value = parse_override(text)
        set_dotted(data, key, value)  # grid.train.sigma=[..] nests; _flatten reads both forms, the later wins
    data.setdefault("name", path.stem)
    data["profile"] = profile
    try:
        return from_dict(GridSpec, data)
    except ConfigError as e:
        hint = " (run settings go under base., e.g. base.train.epochs=3)" if "unknown config key" in str(e) else ""
        raise ConfigError(f"{path.name}: {e}{hint}") from None


def spec_dict(spec: GridSpec) -> dict:
    return to_dict(spec)


# ----------------------------------------------------------------------------- expansion

def _flatten(mapping: dict, prefix: str = "") -> dict:
    """``{train: {sigma: [..]}}`` and ``{train.sigma: [..]}`` both become ``{'train.sigma': [..]}``."""
    out = {}
    for k, v in (mapping or {}).items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, dict) and not key.endswith("kwargs"):
            out.update(_flatten(v, key))
        else:
            out[key] = v
    return out


def _nested(flat: dict) -> dict:
    out: dict = {}
    for k, v in flat.items():
        set_dotted(out, k, copy.deepcopy(v))
    return out


def _check_grid(grid: dict, where: str) -> dict:
    flat = _flatten(grid)
    for k, v in flat.items():
        if not isinstance(v, list) or not v:
            raise ConfigError(f"{where}.{k}: a grid key needs a non-empty list of values, got {v!r}")
    return flat


def expand(spec: GridSpec) -> list[Job]:
    """Every grid point of the spec as a resolved run config; bad keys or values fail here, before any run."""
    top = _check_grid(spec.grid, "grid")
    variants = spec.variants or {"": {}}
    jobs = []
    for vname, settings in variants.items():
        if not isinstance(settings, dict):
            raise ConfigError(f"variants.{vname}: expected a mapping of settings, got {settings!r}")
        settings = dict(settings)
        vgrid = _check_grid(settings.pop("grid", None) or {}, f"variants.{vname}.grid")
        fixed = _flatten(settings)
        grid = {**top, **vgrid}
        for values in itertools.product(*grid.values()):
            point = dict(zip(grid, values))
            data = merge(merge(copy.deepcopy(spec.base), _nested(fixed)), _nested(point))
            where = f"variant {vname!r}, " if vname else ""
            try:
                cfg = resolve(from_dict(RunConfig, data))
                check_dataset_name(cfg.data.name)
                model_info(cfg.model.name)
            except (ConfigError, ValueError) as e:
                raise ConfigError(f"{spec.name}: {where}point {point}: {e}") from None
            jobs.append(Job(vname, point, cfg))
    if not jobs:
        raise ConfigError(f"{spec.name}: the grid has no runs")
    return jobs


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


# ----------------------------------------------------------------------------- the results table

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
    from .report import derive

    path = grid_dir / "results.csv"
    write_csv(path, derive(rows), table_fields(rows, keys))
    return path


def read_results(grid_dir: str | Path) -> list[dict]:
    path = Path(grid_dir) / "results.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{grid_dir} is not a grid directory (no results.csv)")
    rows = read_csv(path)
    for r in rows:  # empty cells are missing values
        for k, v in r.items():
            if v == "":
                r[k] = None
    return rows


# ----------------------------------------------------------------------------- executors

def _first_line(e: BaseException) -> str:
    msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
    return f"{type(e).__name__}: {msg}".splitlines()[0]


def run_job(cfg_dict: dict, threads: int | None = None, progress: bool = False) -> dict:
    """Train and evaluate one config (in whatever process this is); never raises for a failing run.

    Returns ``{status, error, traceback, summary}``; the summary is computed from the stored rows.
    """
    if threads:
        import torch

        torch.set_num_threads(threads)
    from .runs import execute

    try:
        cfg = resolve(from_dict(RunConfig, cfg_dict))
        run = execute(cfg, progress=progress)
        return dict(status="ok", error="", traceback="", summary=summary_of(run, cfg))
    except Exception as e:  # a failing run is a row of the table, not the end of the grid
        return dict(status="failed", error=_first_line(e), traceback=traceback.format_exc(), summary=None)


Done = Callable[[int, dict], None]


def _local(cfgs: list[dict], on_done: Done, progress: bool) -> None:
    for i, c in enumerate(cfgs):
        on_done(i, run_job(c, progress=progress))


def _die_with_parent() -> None:
    """Linux: a worker is killed with the grid process, so a killed grid leaves no run locked behind it."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _processes(cfgs: list[dict], on_done: Done, workers: int, threads: int | None) -> None:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from concurrent.futures.process import BrokenProcessPool

    threads = threads or max(1, (os.cpu_count() or 1) // workers)
    ctx = multiprocessing.get_context("spawn")  # CUDA and fork do not mix
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_die_with_parent) as pool:
        futures = {pool.submit(run_job, c, threads): i for i, c in enumerate(cfgs)}
        for fut in as_completed(futures):
            try:
                result = fut.result()
            except BrokenProcessPool as e:  # a worker died (killed, out of memory): the run did not finish
                result = dict(status="failed", error=f"worker process died ({e})", traceback="", summary=None)
            on_done(futures[fut], result)


def _ray(cfgs: list[dict], on_done: Done, address: str | None, cpus: float, gpus: float | None) -> None:
    try:
        import ray
    except ImportError:
        raise ConfigError("--executor ray needs Ray: pip install 'vant[ray]'") from None
    if not ray.is_initialized():
        if address:
            ray.init(address=address)
        else:
            ray.init(include_dashboard=False)
    if gpus is None:  # one GPU per run where the cluster has GPUs; pass a fraction to pack runs
        gpus = 1.0 if ray.cluster_resources().get("GPU", 0) > 0 else 0.0
    task = ray.remote(num_cpus=cpus, num_gpus=gpus)(run_job)
    threads = max(1, int(cpus))
    pending = {task.remote(c, threads): i for i, c in enumerate(cfgs)}
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1)
        ref = ready[0]
        i = pending.pop(ref)
        try:
            result = ray.get(ref)
        except Exception as e:  # the task itself died (node lost, worker killed) after Ray's retries
            result = dict(status="failed", error=_first_line(e), traceback=traceback.format_exc(), summary=None)
        on_done(i, result)


# ----------------------------------------------------------------------------- running a grid

def default_grid_dir(spec: GridSpec) -> Path:
    out = Path(os.path.expanduser(str(spec.base.get("out_dir", "runs"))))
    return out / "grids" / (f"{spec.name}-{spec.profile}" if spec.profile else spec.name)


def _describe(job: Job) -> str:
    point = " ".join(f"{k.split('.')[-1]}={_cell(v)}" for k, v in job.point.items())
    return " ".join(x for x in (job.variant, point) if x) or job.path.name


@dataclass
class GridResult:
    grid_dir: Path
    rows: list[dict]
    failures: list[dict]
    report: list[Path] = field(default_factory=list)


def run_grid(spec: GridSpec, grid_dir: str | Path | None = None, executor: str = "local", workers: int = 1,
             address: str | None = None, cpus_per_run: float = 1.0, gpus_per_run: float | None = None,
             threads: int | None = None, progress: bool = True, report: bool = True, log=print) -> GridResult:
    """Run every unfinished point of ``spec``, keep ``results.csv`` current, then draw the report."""
    if executor not in ("local", "ray"):
        raise ConfigError(f"unknown executor {executor!r}; choose local or ray")
    if workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {workers}")
    jobs = expand(spec)
    grid_dir = Path(grid_dir) if grid_dir else default_grid_dir(spec)
    grid_dir.mkdir(parents=True, exist_ok=True)
    with _lock(grid_dir, "grid"):  # one process per grid directory: two would race on results.csv
        return _run_grid(spec, jobs, grid_dir, executor, workers, address, cpus_per_run, gpus_per_run, threads,
                         progress, report, log)


def _run_grid(spec, jobs, grid_dir, executor, workers, address, cpus_per_run, gpus_per_run, threads, progress,
              report, log) -> GridResult:
    write_text_atomic(grid_dir / "grid.yaml", yaml.safe_dump(spec_dict(spec), sort_keys=False, allow_unicode=True))
    keys = grid_keys(jobs)
    rows = [job_row(j, grid_dir, keys=keys) for j in jobs]
    by_run: dict[Path, list[int]] = {}
    for i, j in enumerate(jobs):
        by_run.setdefault(j.path, []).append(i)
    todo = []
    for path, idx in by_run.items():
        job = jobs[idx[0]]
        if is_done(job.config):
            summary = summary_of(Run(path), job.config)
            for i in idx:
                rows[i] = job_row(jobs[i], grid_dir, "ok", "", summary, keys)
        else:
            todo.append(path)
    write_results(grid_dir, rows, keys)
    where = (f"ray ({address or 'local instance'})" if executor == "ray"
             else f"{workers} local processes" if workers > 1 else "this process")
    log(f"grid {spec.name}{f' ({spec.profile})' if spec.profile else ''}: {len(jobs)} points, {len(by_run)} runs, "
        f"{len(by_run) - len(todo)} done, {len(todo)} to run in {where}; table: {grid_dir / 'results.csv'}")
    if spec.cost and todo:
        log(f"cost: {spec.cost.strip()}")
    done = [0]
    tic = time.perf_counter()

    def on_done(k: int, result: dict) -> None:
        path = todo[k]
        for i in by_run[path]:
            rows[i] = job_row(jobs[i], grid_dir, result["status"], result["error"], result["summary"], keys)
        if result["status"] != "ok" and result.get("traceback"):
            with open(grid_dir / "errors.log", "a") as f:
                f.write(f"--- {path.name} ({time.strftime('%Y-%m-%d %H:%M:%S')})\n{result['traceback']}\n")
        write_results(grid_dir, rows, keys)
        done[0] += 1
        s = result["summary"]
        what = (f"clean {s['clean_accuracy']:.1f}%  at sigma_train {s['acc_at_sigma_train']:.1f}%"
                + (f"  AUC {s['auc']:.1f}" if s["auc"] is not None else "") if s else result["error"])
        log(f"[{done[0]}/{len(todo)}] {result['status']:6s} {_describe(jobs[by_run[path][0]])}  {what}  "
            f"({time.perf_counter() - tic:.0f} s since the grid started)")

    cfgs = [to_dict(jobs[by_run[p][0]].config) for p in todo]
    if cfgs:
        if executor == "ray":
            _ray(cfgs, on_done, address, cpus_per_run, gpus_per_run)
        elif workers > 1:
            _processes(cfgs, on_done, workers, threads)
        else:
            _local(cfgs, on_done, progress)
    rows = read_results(grid_dir)
    failures = [r for r in rows if r["status"] != "ok"]
    result = GridResult(grid_dir, rows, failures)
    if report and len(failures) < len(rows):
        from .report import make_report

        result.report = make_report(grid_dir)
    return result


def dry_run(spec: GridSpec, log=print) -> list[Job]:
    """List the points of a grid and whether each run is done, partly done or to do."""
    jobs = expand(spec)
    seen: set[Path] = set()
    for i, j in enumerate(jobs, 1):
        state = ("done" if is_done(j.config) else "partial" if j.path.exists() else "todo")
        dup = " (same run as above)" if j.path in seen else ""
        seen.add(j.path)
        log(f"{i:4d}  {state:7s}  {_describe(j):40s}  {j.path}{dup}")
    epochs = sum(j.config.train.epochs for j in {j.path: j for j in jobs}.values())
    log(f"{len(jobs)} points, {len(seen)} runs, {epochs} training epochs in all")
    return jobs


__all__ = ["GridFailed", "GridSpec", "Job", "GridResult", "load_spec", "find_spec", "list_presets", "expand", "run_grid",
           "run_job", "dry_run", "read_results", "group_key", "RECIPE_KEYS"]

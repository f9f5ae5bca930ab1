"""Running a grid: every unfinished point of a spec, on an executor, into one results table.

The grid directory holds ``grid.yaml`` (the resolved spec), ``results.csv`` (one row per grid
point, :mod:`vant.experiments.table`) and the report files. Runs live in their own directories
(:func:`vant.pipeline.runs.execute`), so a grid killed at any moment and started again skips what is
finished, resumes what was cut, and ends with each run in the table once. A failing run is recorded
with its error and the others go on. Everything the spec asks for (every point, the report) is
checked before anything is written.
"""
from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..config import ConfigError
from ..pipeline.runs import Run, is_done, summary_of
from ..pipeline.store import lock, write_text_atomic
from ..progress import plain_lines
from . import executors
from .report import check_report, make_report
from .slurm import check_available, slurm_options
from .spec import GridSpec, Job, expand, spec_dict
from .table import _cell, grid_keys, job_row, read_results, write_results


class GridFailed(RuntimeError):
    """Runs of a grid failed (each is recorded in the results table and errors.log)."""


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
             threads: int | None = None, progress: bool = True, report: bool = True, log=print,
             slurm: dict | None = None) -> GridResult:
    """Run every unfinished point of ``spec``, keep ``results.csv`` current, then draw the report.
    ``slurm``: settings of ``--executor slurm`` over the spec's ``slurm:`` section (``--slurm-*``)."""
    if executor not in executors.EXECUTORS:
        raise ConfigError(f"unknown executor {executor!r}; choose one of {', '.join(executors.EXECUTORS)}")
    if workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {workers}")
    given = {k: v for k, v in (slurm or {}).items() if v is not None and v is not False}
    if given and executor != "slurm":
        raise ConfigError(f"{', '.join('--slurm-' + k.replace('_', '-') for k in given)}: needs --executor slurm")
    slurm_opts = slurm_options(spec.slurm, slurm)  # the spec's section is checked whatever the executor
    if executor == "slurm":
        check_available(slurm_opts)
    jobs = expand(spec)  # every point, and the report, checked before anything is written
    if report:
        check_report(spec)
    grid_dir = Path(grid_dir) if grid_dir else default_grid_dir(spec)
    if grid_dir.exists() and not grid_dir.is_dir():
        raise ConfigError(f"grid directory {grid_dir} exists and is not a directory")
    grid_dir.mkdir(parents=True, exist_ok=True)
    with lock(grid_dir, "grid"):  # one process per grid directory: two would race on results.csv
        return _run_grid(spec, jobs, grid_dir, executor, workers, address, cpus_per_run, gpus_per_run, threads,
                         progress, report, log, slurm_opts)


def _run_grid(spec, jobs, grid_dir, executor, workers, address, cpus_per_run, gpus_per_run, threads, progress,
              report, log, slurm_opts=None) -> GridResult:
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
    cfgs = [jobs[by_run[p][0]].config for p in todo]
    where = executors.describe(executor, workers, address, slurm_opts, cfgs)
    log(f"grid {spec.name}{f' ({spec.profile})' if spec.profile else ''}: {len(jobs)} points, {len(by_run)} runs, "
        f"{len(by_run) - len(todo)} done, {len(todo)} to run in {where}; table: {grid_dir / 'results.csv'}")
    if spec.cost and todo:
        log(f"cost: {spec.cost.strip()}")
    done = [0]
    tic = time.perf_counter()
    weight = [jobs[by_run[p][0]].config.train.epochs for p in todo]  # the estimate weighs runs by their epochs
    finished = [0]

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
        finished[0] += weight[k]
        if progress:
            print(progress_line(done[0], len(todo), time.perf_counter() - tic, finished[0], sum(weight)),
                  file=sys.stderr, flush=True)

    # sources first: a run that starts from another's weights (init_from_variant) waits for it, and
    # fails with its reason, untrained, where the source failed
    first = [k for k, p in enumerate(todo) if jobs[by_run[p][0]].source is None]
    for wave in (first, [k for k in range(len(todo)) if k not in set(first)]):
        runnable = []
        for k in wave:
            src = jobs[by_run[todo[k]][0]].source
            srow = rows[by_run[src.path][0]] if src is not None else None
            if srow is not None and srow["status"] != "ok":
                why = f"{srow['status']}: {srow['error']}" if srow.get("error") else srow["status"]
                on_done(k, dict(status="failed", summary=None, traceback="",
                                error=f"its source run {src.path.name} ({src.variant}) did not finish ({why})"))
            else:
                runnable.append(k)
        if runnable:
            # in a log, a grid says one line per finished run (on_done); its runs' own bars stay silent
            executors.run_all([cfgs[k] for k in runnable], lambda i, result, ks=runnable: on_done(ks[i], result),
                              executor, workers, address, cpus_per_run, gpus_per_run, threads,
                              progress and not plain_lines(),
                              slurm=slurm_opts, folder=grid_dir / "slurm", name=spec.name, log=log)
    rows = read_results(grid_dir)
    failures = [r for r in rows if r["status"] != "ok"]
    result = GridResult(grid_dir, rows, failures)
    if report and len(failures) < len(rows):
        result.report = make_report(grid_dir, progress=progress)
    return result


def _duration(seconds: float) -> str:
    s = round(seconds)
    return f"{s} s" if s < 60 else f"{s // 60} min {s % 60:02d} s" if s < 3600 else f"{s // 3600} h {s % 3600 // 60:02d} min"


def progress_line(done: int, total: int, elapsed: float, work_done: float, work_total: float) -> str:
    """``grid: 2/4 runs, 1 min 10 s elapsed, about 1 min 10 s left``: the estimate is the time so far
    times the work left over the work done (work = training epochs, so a long run counts for more)."""
    line = f"grid: {done}/{total} runs, {_duration(elapsed)} elapsed"
    if done < total and work_done > 0:
        line += f", about {_duration(elapsed * (work_total - work_done) / work_done)} left"
    return line


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


__all__ = ["GridFailed", "GridResult", "run_grid", "dry_run", "default_grid_dir"]

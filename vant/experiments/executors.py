"""Executors: where the runs of a grid train. Each calls ``on_done(i, result)`` as run i finishes.

- ``local``: one run after another in this process;
- ``processes``: N runs at once, each in its own (spawned) process, dying with the grid process;
- ``ray``: every run a Ray task declaring CPUs and GPUs, on a local instance or a cluster;
- ``slurm``: every run a SLURM job through submitit (:mod:`vant.experiments.slurm`).

A failing run is a result (``status="failed"`` with its error), never an exception of the grid.
"""
from __future__ import annotations

import os
import traceback
from collections.abc import Callable
from pathlib import Path

from ..config import ConfigError, RunConfig
from ..pipeline.runs import execute, summary_of

EXECUTORS = ("local", "ray", "slurm")


def _first_line(e: BaseException) -> str:
    msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
    return f"{type(e).__name__}: {msg}".splitlines()[0]


def run_job(cfg: RunConfig, threads: int | None = None, progress: bool = False) -> dict:
    """Train and evaluate one resolved config (in whatever process this is); never raises for a
    failing run. Returns ``{status, error, traceback, summary}``; the summary is computed from the
    stored rows.
    """
    if threads:
        import torch

        torch.set_num_threads(threads)
    try:
        run = execute(cfg, progress=progress, resolved=True)
        return dict(status="ok", error="", traceback="", summary=summary_of(run, cfg))
    except Exception as e:  # a failing run is a row of the table, not the end of the grid
        return dict(status="failed", error=_first_line(e), traceback=traceback.format_exc(), summary=None)


Done = Callable[[int, dict], None]


def _local(cfgs: list[RunConfig], on_done: Done, progress: bool) -> None:
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


def _processes(cfgs: list[RunConfig], on_done: Done, workers: int, threads: int | None) -> None:
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


def _ray(cfgs: list[RunConfig], on_done: Done, address: str | None, cpus: float, gpus: float | None) -> None:
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


def run_all(cfgs: list[RunConfig], on_done: Done, executor: str = "local", workers: int = 1, address: str | None = None,
            cpus_per_run: float = 1.0, gpus_per_run: float | None = None, threads: int | None = None,
            progress: bool = False, slurm=None, folder: Path | None = None, name: str = "grid", log=print) -> None:
    """Run every config on the chosen executor; ``on_done(i, result)`` in this process as each ends.
    ``slurm`` (:class:`~vant.experiments.slurm.SlurmOptions`), ``folder`` (submitit's) and ``name``
    are the SLURM executor's."""
    if executor == "slurm":
        from .slurm import SlurmOptions, run_slurm

        run_slurm(run_job, cfgs, on_done, slurm or SlurmOptions(), Path(folder or "slurm"), name, log)
    elif executor == "ray":
        _ray(cfgs, on_done, address, cpus_per_run, gpus_per_run)
    elif workers > 1:
        _processes(cfgs, on_done, workers, threads)
    else:
        _local(cfgs, on_done, progress)


def describe(executor: str, workers: int, address: str | None, slurm=None, cfgs: list[RunConfig] | None = None) -> str:
    if executor == "slurm":
        from .slurm import SlurmOptions, describe as slurm_describe

        return slurm_describe(slurm or SlurmOptions(), cfgs or [])
    return (f"ray ({address or 'local instance'})" if executor == "ray"
            else f"{workers} local processes" if workers > 1 else "this process")

"""The SLURM executor: every run of a grid a SLURM job, submitted and watched through submitit.

``vant grid <spec> --executor slurm`` on a login node submits the unfinished runs as one job array
(at most ``array_parallelism`` running at once), waits, and fills ``results.csv`` as each job ends,
like the local and Ray executors. No sbatch script is written by hand: the settings come from the
``slurm:`` section of the grid spec and the ``--slurm-*`` flags (:class:`SlurmOptions`).

A job that reaches its time limit or is preempted gets SLURM's warning signal ``signal_delay``
seconds before the end; submitit then calls :meth:`RunJob.checkpoint` and requeues the same run,
which resumes from its ``checkpoint.pt`` (a vant run always resumes). Stopping the grid process
(Ctrl-C, SIGTERM, SIGHUP) cancels its jobs; running the same command again submits only the runs
that are not finished. submitit's folder (the jobs' logs and pickles) is ``<grid>/slurm/``, with
``jobs.tsv`` listing which job trained which run.

``--slurm-local`` runs the same path through submitit's local executor (a process per job on this
machine, with the same time limit, signal and requeue): how it is tested without SLURM.
"""
from __future__ import annotations

import importlib.util
import math
import os
import re
import shutil
import signal
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Union

from ..config import ConfigError, RunConfig, from_dict
from ..pipeline.runs import run_dir

MEMORY = re.compile(r"[1-9][0-9]*[KMGT]?")
SLURM_TIME = re.compile(r"(?:(?P<d>\d+)-)?(?P<a>\d+)(?::(?P<b>\d+))?(?::(?P<c>\d+))?")


@dataclass
class SlurmOptions:
    """How each run is submitted (a ``slurm:`` section of a grid spec; ``--slurm-*`` flags override it)."""

    partition: Union[str, None] = None  # sbatch --partition; null = the cluster's default partition
    account: Union[str, None] = None  # sbatch --account, where the cluster bills projects
    qos: Union[str, None] = None  # sbatch --qos
    gpus: Union[int, None] = None  # GPUs per run; null = 1, or 0 when every run has device: cpu (--slurm-local: 0)
    cpus: Union[int, None] = None  # CPUs per run; null = the largest cpu_threads of the runs
    mem: Union[str, None] = None  # memory per run in SLURM's form (16G, 8000M); null = the partition's default
    time: str = "4:00:00"  # limit per job, quoted: "90" (minutes), "H:MM:SS", "D-HH:MM"...; a cut run requeues
    array_parallelism: Union[int, None] = None  # jobs running at once; null = all of them (--slurm-local: cores / cpus)
    requeue: int = 10  # times a job may be requeued after its time limit (a preemption does not count)
    signal_delay: int = 90  # seconds before the limit at which a job checkpoints and requeues itself
    setup: list = field(default_factory=list)  # shell lines before each job, e.g. ["module load cuda/12"]
    additional: dict = field(default_factory=dict)  # any other sbatch option, e.g. {constraint: a100}
    local: bool = False  # submitit's local executor: the same path on a machine without SLURM


def parse_time(value: str, key: str = "slurm.time") -> float:
    """A SLURM time limit in minutes: ``"90"``, ``"MM:SS"``, ``"H:MM:SS"``, ``"D-H"``, ``"D-H:MM"``, ``"D-H:MM:SS"``."""
    if not isinstance(value, str):
        # YAML 1.1 reads an unquoted 8:00:00 as the number 28800 (base 60): never guess what a number meant
        raise ConfigError(f"{key}: write the time limit as a quoted string (\"90\" minutes, \"8:00:00\"); got the "
                          f"number {value!r} (YAML reads an unquoted 8:00:00 as 28800)")
    m = SLURM_TIME.fullmatch(value.strip())
    if m is None:
        raise ConfigError(f"{key}: {value!r} is not a SLURM time (minutes, MM:SS, H:MM:SS, D-H, D-H:MM or D-H:MM:SS)")
    d, a, b, c = (int(x) if x is not None else None for x in m.group("d", "a", "b", "c"))
    if d is None:  # M, M:S, H:M:S
        minutes = a if b is None else (a + b / 60 if c is None else 60 * a + b + c / 60)
    else:  # D-H, D-H:M, D-H:M:S
        minutes = 1440 * d + 60 * a + (b or 0) + (c or 0) / 60
    if minutes <= 0:
        raise ConfigError(f"{key} must be longer than zero, got {value!r}")
    return float(minutes)


def slurm_options(section: dict | None, overrides: dict | None = None) -> SlurmOptions:
    """The grid spec's ``slurm:`` section with the command line's settings over it, checked."""
    data = dict(section or {})
    data.update({k: v for k, v in (overrides or {}).items() if v is not None})
    if "time" in data:
        parse_time(data["time"])  # its own message before the type check's
    opts = from_dict(SlurmOptions, data, "slurm")
    limit = parse_time(opts.time) * 60
    for key in ("gpus", "cpus", "array_parallelism"):
        v = getattr(opts, key)
        if v is not None and v < (0 if key == "gpus" else 1):
            raise ConfigError(f"slurm.{key} must be >= {0 if key == 'gpus' else 1}, got {v}")
    if opts.requeue < 0:
        raise ConfigError(f"slurm.requeue must be >= 0, got {opts.requeue}")
    if not 0 <= opts.signal_delay < limit:
        raise ConfigError(f"slurm.signal_delay must lie in [0, the time limit of {limit:g} s), got {opts.signal_delay}")
    if opts.mem is not None and not MEMORY.fullmatch(str(opts.mem)):
        raise ConfigError(f"slurm.mem: {opts.mem!r} is not SLURM's memory form (an integer with K, M, G or T, e.g. 16G)")
    for key in ("partition", "account", "qos"):
        v = getattr(opts, key)
        if v is not None and (not v.strip() or any(c.isspace() or ord(c) < 32 for c in v)):
            raise ConfigError(f"slurm.{key} must be a name without spaces, got {v!r}")
    if not all(isinstance(line, str) for line in opts.setup):
        raise ConfigError(f"slurm.setup must be a list of shell lines, got {opts.setup!r}")
    return opts


def check_available(opts: SlurmOptions) -> None:
    """submitit installed, and sbatch on this machine unless the local executor is asked for."""
    if importlib.util.find_spec("submitit") is None:
        raise ConfigError('--executor slurm needs submitit: pip install "vant[slurm]"')
    if not opts.local and (shutil.which("sbatch") is None or shutil.which("srun") is None):
        raise ConfigError("--executor slurm: there is no sbatch/srun on this machine; run the grid on a SLURM login "
                          "node, or try the same path here with --slurm-local")


def resources(opts: SlurmOptions, cfgs: list[RunConfig]) -> tuple[int, int, int]:
    """GPUs and CPUs per run and the jobs running at once, defaults filled in."""
    gpus = opts.gpus if opts.gpus is not None else (0 if opts.local or all(c.device == "cpu" for c in cfgs) else 1)
    cpus = opts.cpus if opts.cpus is not None else max([c.cpu_threads or 1 for c in cfgs] or [1])
    at_once = opts.array_parallelism
    if at_once is None:
        at_once = max(1, (os.cpu_count() or 1) // cpus) if opts.local else max(1, len(cfgs))
    return gpus, cpus, at_once


def describe(opts: SlurmOptions, cfgs: list[RunConfig]) -> str:
    gpus, cpus, at_once = resources(opts, cfgs)
    where = "submitit's local executor (no SLURM)" if opts.local else \
        f"SLURM jobs (partition {opts.partition or 'default'})"
    return (f"{where}, {gpus} GPU{'' if gpus == 1 else 's'} and {cpus} CPU{'' if cpus == 1 else 's'} per run, "
            f"{at_once} at once, {opts.time} each")


class RunJob:
    """One run as a submitit job: ``job(cfg, threads)`` (the executors' ``run_job``). Its
    :meth:`checkpoint` is what lets submitit requeue it when SLURM stops it (time limit, preemption):
    the same run again, which resumes from its checkpoint.pt."""

    def __init__(self, job: Callable[[RunConfig, int], dict], cfg: RunConfig, threads: int):
        self.job, self.cfg, self.threads = job, cfg, threads

    def __call__(self) -> dict:
        return self.job(self.cfg, self.threads)

    def checkpoint(self, *args, **kwargs):
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(RunJob(self.job, self.cfg, self.threads))


def _executor(opts: SlurmOptions, folder: Path, name: str, cfgs: list[RunConfig]):
    import submitit

    gpus, cpus, at_once = resources(opts, cfgs)
    minutes = parse_time(opts.time)
    if opts.local:
        ex = submitit.LocalExecutor(folder=folder / "%j", max_num_timeout=opts.requeue)
        ex.update_parameters(timeout_min=minutes, gpus_per_node=gpus, signal_delay_s=opts.signal_delay,
                             **({"setup": list(opts.setup)} if opts.setup else {}))
        return ex
    ex = submitit.SlurmExecutor(folder=folder / "%j", max_num_timeout=opts.requeue)
    params = dict(job_name=f"vant-{name}", time=math.ceil(minutes), cpus_per_task=cpus, array_parallelism=at_once,
                  signal_delay_s=opts.signal_delay, partition=opts.partition, account=opts.account, qos=opts.qos,
                  mem=opts.mem, gpus_per_node=gpus or None, setup=list(opts.setup) or None,
                  additional_parameters=dict(opts.additional) or None)
    ex.update_parameters(**{k: v for k, v in params.items() if v is not None})
    return ex


def _outcome(job) -> dict:
    """The run's result, or a failed result saying where the job's logs are."""
    try:
        return job.result()
    except Exception as e:  # killed by SLURM (out of memory, too many time-outs, node failure) or crashed
        return dict(status="failed", error=f"job {job.job_id} ended without a result ({type(e).__name__}, "
                                           f"state {job.state}); its log: {job.paths.stderr}",
                    traceback=f"{e}\nlogs: {job.paths.stdout}\n      {job.paths.stderr}", summary=None)


class _Stop(KeyboardInterrupt):
    """SIGTERM or SIGHUP to the grid process, handled like Ctrl-C: cancel the jobs, keep what finished."""


def _raise_stop(signum, frame):
    raise _Stop(f"signal {signal.Signals(signum).name}")


def run_slurm(job: Callable[[RunConfig, int], dict], cfgs: list[RunConfig], on_done: Callable[[int, dict], None],
              opts: SlurmOptions, folder: Path, name: str = "grid", log=print, poll: float | None = None) -> None:
    """Submit ``job(cfg, cpus)`` for every config, wait, and call ``on_done(i, result)`` in this
    process as each job ends."""
    check_available(opts)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    ex = _executor(opts, folder, name, cfgs)
    _, cpus, at_once = resources(opts, cfgs)
    poll = poll if poll is not None else (1.0 if opts.local else 10.0)
    if opts.local and any(getattr(opts, k) for k in ("partition", "account", "qos", "mem", "additional")):
        log("--slurm-local: partition, account, qos, mem and additional are SLURM's; ignored here")
    jobs: dict = {}
    queue = list(range(len(cfgs)))

    def record(new: dict) -> None:
        with open(folder / "jobs.tsv", "a") as f:
            for i, j in new.items():
                f.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')}\t{j.job_id}\t{run_dir(cfgs[i]).name}\n")

    def submit(indices: list[int]) -> None:
        try:
            if opts.local:
                new = {i: ex.submit(RunJob(job, cfgs[i], cpus)) for i in indices}
            else:  # one job array; SLURM keeps at most array_parallelism of it running
                with ex.batch():
                    delayed = [ex.submit(RunJob(job, cfgs[i], cpus)) for i in indices]
                new = dict(zip(indices, delayed))
        except Exception as e:  # sbatch refused (no such partition, limits): nothing of these runs started
            msg = str(e).strip().splitlines()
            raise ConfigError(f"submitting to SLURM failed: {msg[-1] if msg else type(e).__name__}") from None
        jobs.update(new)
        record(new)
        for i in indices:
            queue.remove(i)

    handlers = {}
    try:
        for sig in (signal.SIGTERM, signal.SIGHUP):
            try:
                handlers[sig] = signal.signal(sig, _raise_stop)
            except ValueError:  # not the main thread: the caller handles its own signals
                pass
        submit(queue[:at_once] if opts.local else list(queue))
        log(f"submitted {len(jobs)} jobs" + (f" ({len(queue)} more as these end)" if queue else "")
            + f"; logs in {folder}")
        before = None
        while jobs or queue:
            for i, j in list(jobs.items()):
                if j.done():
                    del jobs[i]
                    on_done(i, _outcome(j))
            if queue and len(jobs) < at_once:
                submit(queue[:at_once - len(jobs)])
            states = Counter(str(j.state).split()[0].lower() for j in jobs.values())
            if queue:
                states["waiting to be submitted"] = len(queue)
            if states and states != before:
                log("jobs: " + ", ".join(f"{n} {s}" for s, n in sorted(states.items())))
                before = states
            if jobs or queue:
                time.sleep(poll)
    except BaseException:
        if jobs:
            for j in jobs.values():
                try:
                    j.cancel(check=False)
                except Exception:  # scancel unreachable: the jobs end at their time limit
                    pass
            log(f"cancelled {len(jobs)} jobs; run the same command again to resume their runs")
        raise
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)


__all__ = ["SlurmOptions", "slurm_options", "parse_time", "check_available", "describe", "run_slurm", "RunJob"]

"""The SLURM executor, tested on a machine without SLURM through submitit's local executor
(``--slurm-local``): the same table as the in-process executor, a signalled job requeued and resumed
from its checkpoint, a stopped grid cancelling its jobs, and settings checked before anything runs."""
import csv
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from vant.cli import main
from vant.config import ConfigError
from vant.experiments.grid import run_grid
from vant.experiments.slurm import parse_time, slurm_options
from vant.experiments.spec import load_spec

QUIET = dict(progress=False, log=lambda *a, **k: None)
BASE = {"data": {"name": "digits"}, "model": {"name": "lenet5"}, "device": "cpu",
        "eval": {"sigmas": [0.1, 0.3], "repeats": 1}, "train": {"epochs": 1, "test_every": 0}}


def table(grid_dir):
    """The results table without its timing column (wall-clock time differs from run to run)."""
    with open(grid_dir / "results.csv", newline="") as f:
        return [{k: v for k, v in row.items() if k != "train_seconds"} for row in csv.DictReader(f)]


@pytest.mark.parametrize("text, minutes", [("90", 90), ("1:30", 1.5), ("2:00:00", 120), ("1-0", 1440),
                                           ("1-2:30", 1590), ("0-0:0:30", 0.5), ("0:45", 0.75)])
def test_slurm_time_forms(text, minutes):
    assert parse_time(text) == minutes


@pytest.mark.parametrize("section, message", [
    ({"time": "soon"}, "slurm.time: 'soon' is not a SLURM time"),
    ({"time": "0:00"}, "slurm.time must be longer than zero"),
    ({"mem": "16 GB"}, "slurm.mem: '16 GB' is not SLURM's memory form"),
    ({"gpus": -1}, "slurm.gpus must be >= 0"),
    ({"array_parallelism": 0}, "slurm.array_parallelism must be >= 1"),
    ({"time": "1", "signal_delay": 60}, "slurm.signal_delay must lie in [0, the time limit of 60 s)"),
    ({"time": 28800}, "slurm.time: write the time limit as a quoted string"),  # what YAML makes of 8:00:00
    ({"partition": "gpu large"}, "slurm.partition must be a name without spaces"),
    ({"partiton": "gpu"}, "unknown config key 'slurm.partiton'"),
])
def test_bad_slurm_settings_are_one_line_errors(section, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        slurm_options(section)


def test_the_command_line_overrides_the_spec_section():
    opts = slurm_options({"partition": "cpu", "time": "8:00:00", "setup": ["module load cuda"]},
                         {"partition": "gpu", "gpus": 2, "mem": None})
    assert (opts.partition, opts.gpus, opts.time, opts.setup, opts.mem) == ("gpu", 2, "8:00:00", ["module load cuda"], None)


def _spec(tmp_path, **extra):
    path = tmp_path / "g.yaml"
    path.write_text(yaml.safe_dump({"name": "g", "base": dict(BASE, out_dir=str(tmp_path / "runs")),
                                    "variants": {"NT": {"train.method": "nt", "train.sigma": 0.1}}, **extra}))
    return path


def test_what_cannot_run_fails_before_anything_is_written(tmp_path, monkeypatch, capsys):
    pytest.importorskip("submitit")  # without it, "needs submitit" is (rightly) said before "no sbatch"
    spec, grid = _spec(tmp_path), tmp_path / "grid"
    assert main(["grid", str(spec), "--dir", str(grid), "--slurm-partition", "gpu"]) == 2
    monkeypatch.setattr(shutil, "which", lambda name: None)  # no SLURM on this machine
    assert main(["grid", str(spec), "--dir", str(grid), "--executor", "slurm"]) == 2
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "submitit" else real(name, *a))
    assert main(["grid", str(spec), "--dir", str(grid), "--executor", "slurm", "--slurm-local"]) == 2
    bad = _spec(tmp_path, slurm={"mem": "lots"})  # the spec's section is checked whatever the executor
    assert main(["grid", str(bad), "--dir", str(grid)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == ["vant: error: --slurm-partition: needs --executor slurm",
                   "vant: error: --executor slurm: there is no sbatch/srun on this machine; run the grid on a SLURM "
                   "login node, or try the same path here with --slurm-local",
                   'vant: error: --executor slurm needs submitit: pip install "vant[slurm]"',
                   "vant: error: slurm.mem: 'lots' is not SLURM's memory form (an integer with K, M, G or T, e.g. 16G)"]
    assert not grid.exists() and not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_slurm_local_gives_the_in_process_table_and_a_rerun_submits_nothing(tmp_path):
    """fig2's smoke grid as jobs of submitit's local executor: the in-process executor's table."""
    pytest.importorskip("submitit")
    local = run_grid(load_spec("fig2", "smoke", [f"base.out_dir={tmp_path / 'a'}"]), tmp_path / "a" / "grid",
                     report=False, **QUIET)
    slurm = run_grid(load_spec("fig2", "smoke", [f"base.out_dir={tmp_path / 'b'}"]), tmp_path / "b" / "grid",
                     executor="slurm", slurm={"local": True}, report=False, **QUIET)
    assert not local.failures and not slurm.failures and len(slurm.rows) == 2
    assert table(slurm.grid_dir) == table(local.grid_dir)
    folder = slurm.grid_dir / "slurm"
    jobs = (folder / "jobs.tsv").read_text().splitlines()
    assert len(jobs) == 2 and {line.split("\t")[2] for line in jobs} == {r["run"] for r in slurm.rows}
    assert all((folder / line.split("\t")[1] / f"{line.split(chr(9))[1]}_0_log.err").is_file() for line in jobs)
    lines = []
    again = run_grid(load_spec("fig2", "smoke", [f"base.out_dir={tmp_path / 'b'}"]), tmp_path / "b" / "grid",
                     executor="slurm", slurm={"local": True}, report=False, progress=False, log=lines.append)
    assert "2 done, 0 to run" in lines[0] and not again.failures
    assert (folder / "jobs.tsv").read_text().splitlines() == jobs  # nothing submitted


def _task_pids(folder: Path) -> list[int]:
    """The processes running a submitit job (``submitit.core._submit <folder>``) of this grid."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            cmd = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"submitit.core._submit" in cmd and any(str(folder).encode() in c for c in cmd):
            pids.append(int(proc.name))
    return pids


def _wait(predicate, timeout=300, what=""):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _epochs(runs: Path) -> list[list[str]]:
    files = list(runs.glob("*/epochs.csv"))
    return files and [line.split(",") for line in files[0].read_text().splitlines()[1:]]


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the job's process through /proc")
def test_a_stopped_job_requeues_and_resumes_and_a_stopped_grid_cancels_its_jobs(tmp_path):
    """SIGUSR2 is what SLURM sends before a time limit or a preemption: the job checkpoints, is
    requeued and resumes from checkpoint.pt (the epochs already trained are kept, not trained again).
    SIGTERM to the grid process cancels its job; the same command again finishes the run."""
    pytest.importorskip("submitit")
    spec = tmp_path / "g.yaml"
    spec.write_text(yaml.safe_dump({"name": "g", "base": dict(BASE, train={"epochs": 8, "test_every": 0}),
                                    "variants": {"NT": {"train.method": "nt", "train.sigma": 0.1}}}))
    runs, grid = tmp_path / "runs", tmp_path / "grid"
    cmd = [sys.executable, "-m", "vant.cli", "grid", str(spec), "-q", "--out-dir", str(runs), "--dir", str(grid),
           "--no-report", "--executor", "slurm", "--slurm-local", "--slurm-time", "30:00"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = _wait(lambda: len(_epochs(runs)) >= 2 and _epochs(runs), what="two epochs")
        [task] = _task_pids(grid / "slurm")
        os.kill(task, signal.SIGUSR2)  # "your time is nearly up"
        _wait(lambda: _task_pids(grid / "slurm") and _task_pids(grid / "slurm") != [task], what="the requeued task")
        resumed = _wait(lambda: len(_epochs(runs)) > len(first) + 1 and _epochs(runs), what="an epoch after the requeue")
        assert resumed[:len(first)] == first  # same rows, same wall-clock seconds: kept, not trained again
        proc.send_signal(signal.SIGTERM)  # the grid process is stopped: its job goes with it
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130 and "cancelled 1 jobs" in out, (out, err)
    _wait(lambda: not _task_pids(grid / "slurm"), timeout=30, what="the cancelled job to end")
    stopped = _epochs(runs)
    assert 3 <= len(stopped) < 8 and [r["status"] for r in table(grid)] == ["pending"]
    text = "".join(p.read_text() for p in (grid / "slurm").glob("*/*_0_log.*"))  # submitit's log of the job
    assert "Calling checkpoint method" in text and "Requeued job" in text

    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "0 done, 1 to run" in r.stdout
    done = _epochs(runs)
    assert [int(row[0]) for row in done] == list(range(1, 9)) and done[:len(stopped)] == stopped
    assert [row["status"] for row in table(grid)] == ["ok"]
    assert len((grid / "slurm" / "jobs.tsv").read_text().splitlines()) == 2  # the first job, and one for the rest


def fake_slurm(tmp_path, monkeypatch, sbatch="exit 1"):
    """sbatch and srun on PATH, as on a login node (submitit looks for srun before anything else)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in (("sbatch", sbatch), ("srun", "exit 1")):
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")


def test_the_sbatch_script_carries_the_settings(tmp_path, monkeypatch):
    """What would reach SLURM: submitit's sbatch file for these settings (written here, not submitted)."""
    pytest.importorskip("submitit")
    fake_slurm(tmp_path, monkeypatch)
    from vant.config import build_config, resolve
    from vant.experiments.slurm import _executor

    opts = slurm_options({"partition": "gpu", "account": "proj42", "gpus": 1, "cpus": 4, "mem": "16G", "time": "1:30:00",
                          "setup": ["module load cuda/12"], "additional": {"constraint": "a100"},
                          "array_parallelism": 2})
    ex = _executor(opts, tmp_path / "slurm", "fig2", [resolve(build_config(None, ["device=cuda"]))])
    ex.parameters["map_count"] = 5  # what submitit sets for a job array of 5 runs
    text = ex._make_submission_file_text("python -m submitit.core._submit folder", "uid")
    for line in ("#SBATCH --partition=gpu", "#SBATCH --account=proj42", "#SBATCH --gpus-per-node=1",
                 "#SBATCH --cpus-per-task=4", "#SBATCH --mem=16G", "#SBATCH --time=90", "#SBATCH --job-name=vant-fig2",
                 "#SBATCH --constraint=a100", "#SBATCH --signal=USR2@90", "#SBATCH --array=0-4%2", "module load cuda/12"):
        assert line in text.splitlines(), (line, text)
    assert ex.max_num_timeout == 10


def test_a_refused_submission_is_one_line(tmp_path, monkeypatch, capsys):
    """sbatch refusing the jobs (a partition that does not exist) ends the grid with its reason."""
    pytest.importorskip("submitit")
    fake_slurm(tmp_path, monkeypatch, "echo 'sbatch: error: invalid partition specified: nope' >&2\nexit 1")
    spec = _spec(tmp_path)
    assert main(["grid", str(spec), "--dir", str(tmp_path / "grid"), "-q", "--executor", "slurm",
                 "--slurm-partition", "nope"]) == 2
    err = [line for line in capsys.readouterr().err.strip().splitlines() if line.startswith("vant:")]
    assert err == ["vant: error: submitting to SLURM failed: sbatch: error: invalid partition specified: nope"]
    assert [r["status"] for r in table(tmp_path / "grid")] == ["pending"]  # nothing ran; the same command retries

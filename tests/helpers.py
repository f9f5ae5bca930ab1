"""Shared test settings (importable as tests.helpers; pyproject puts the repo root on sys.path)."""
from vant.config import build_config

#: A run small enough to train in a couple of seconds on the CPU (bundled digits, LeNet-5).
TINY = ["model.name=lenet5", "train.method=vant", "train.sigma=0.5", "train.epochs=3", "eval.sigmas=[0.1,0.5,1.0]",
        "eval.repeats=2", "device=cpu", "train.test_every=1"]


def tiny_config(tmp_path, *extra):
    return build_config(None, TINY + [f"out_dir={tmp_path}"] + list(extra))


def kill_after_epochs(proc, out_dir, epochs: int, timeout: float = 300):
    """SIGKILL a training process once its run under ``out_dir`` has ``epochs`` rows in epochs.csv;
    returns that epochs.csv (None if it never got there, or the process ended first)."""
    import signal
    import time

    deadline, found = time.time() + timeout, None
    while time.time() < deadline and proc.poll() is None:
        runs = list(out_dir.glob("*/epochs.csv"))
        if runs and len(runs[0].read_text().splitlines()) >= epochs + 1:  # header + epochs
            found = runs[0]
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return found


#: The demo as two tests run it: its own model (ResNet-18 at width 16), trained 2 epochs and evaluated
#: with 2 repeats, so that the reproducibility check covers a second epoch and a second repeat.
DEMO_ARGS = ["demo", "-q", "base.train.epochs=2", "base.eval.repeats=2"]


def run_demo(out_dir):
    """``vant demo`` (DEMO_ARGS) in a fresh process into ``out_dir``; returns the CompletedProcess."""
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "vant", *DEMO_ARGS, "--out-dir", str(out_dir)],
                          capture_output=True, text=True)

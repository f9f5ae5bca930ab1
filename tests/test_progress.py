"""Progress in a log (issue 21): plain lines, one per epoch, not one per step; bars on a terminal."""
import subprocess
import sys

import pytest

from vant.progress import plain_lines, progress_bar


def train_log(tmp_path, epochs):
    log = tmp_path / f"stderr-{epochs}.log"
    with open(log, "w") as err:  # stderr is a file, as in a SLURM job or `vant demo > log 2>&1`
        proc = subprocess.run([sys.executable, "-m", "vant", "train", "model.name=lenet5", "device=cpu",
                               f"train.epochs={epochs}", "train.test_every=0", "eval.sigmas=[0.1,0.5]", "eval.repeats=1",
                               f"out_dir={tmp_path / str(epochs)}"], stdout=subprocess.DEVNULL, stderr=err)
    assert proc.returncode == 0, log.read_text()
    return log.read_text()


def test_a_log_gets_a_line_per_epoch_not_per_step(tmp_path):
    two, six = train_log(tmp_path, 2), train_log(tmp_path, 6)
    assert "\r" not in two + six and "\x1b[" not in two + six
    # 12 steps per epoch on the digits: four more epochs are four more lines, not 48
    assert len(six.splitlines()) - len(two.splitlines()) == 4
    assert "72/72" in six and len(six) < 3000


def test_the_mode_follows_the_terminal_unless_told(monkeypatch):
    monkeypatch.delenv("VANT_PROGRESS", raising=False)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    assert not plain_lines()
    monkeypatch.setenv("VANT_PROGRESS", "lines")
    assert plain_lines()
    bar = progress_bar(total=3, leave=False)
    assert bar.plain_lines and bar.mininterval == 60.0
    bar.close()
    monkeypatch.setenv("VANT_PROGRESS", "bars")
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False, raising=False)
    assert not plain_lines()


@pytest.mark.parametrize("interval,expected", [("5", 5.0), ("junk", 60.0), ("-1", 0.0)])
def test_the_interval_is_read_from_the_environment(monkeypatch, interval, expected):
    monkeypatch.setenv("VANT_PROGRESS", "lines")
    monkeypatch.setenv("VANT_PROGRESS_INTERVAL", interval)
    bar = progress_bar(total=1)
    assert bar.mininterval == expected
    bar.close()


def test_a_grid_in_a_log_says_a_line_per_run(tmp_path):
    log = tmp_path / "demo.log"
    with open(log, "w") as out:
        proc = subprocess.run([sys.executable, "-m", "vant", "demo", "-p", "smoke", "--out-dir", str(tmp_path / "d")],
                              stdout=out, stderr=subprocess.STDOUT)
    text = log.read_text()
    assert proc.returncode == 0, text
    assert "\r" not in text and "batch/s" not in text  # the runs' bars are silent; the grid's lines remain
    assert text.count("] ok ") == 7 and text.count("grid: ") == 7 and len(text) < 6000

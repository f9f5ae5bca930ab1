"""The run/grid directory lock: a second process is refused at once, a killed holder blocks no one,
and vant works where fcntl does not exist (the lock is filelock's, not fcntl's)."""
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from vant.pipeline.store import RunBusy, lock

ROOT = Path(__file__).resolve().parents[2]


def test_a_second_process_is_refused_and_a_killed_holder_leaves_no_stale_lock(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom pathlib import Path\nfrom vant.pipeline.store import lock\n"
                               f"with lock(Path({str(tmp_path)!r})):\n    print('held', flush=True)\n    time.sleep(600)"],
        stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunBusy, match=f"run {tmp_path} is being worked on by another process"):
            with lock(tmp_path):
                pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert (tmp_path / ".lock").exists()  # the file stays; the OS released the lock with the process
    with lock(tmp_path):
        with pytest.raises(RunBusy):  # and it is exclusive within one process too
            with lock(tmp_path, "grid"):
                pass


def test_vant_imports_and_runs_where_fcntl_does_not_exist(tmp_path):
    code = ("import sys\nsys.modules['fcntl'] = None  # as on a platform without it\n"
            "import warnings\nwarnings.simplefilter('ignore')\n"
            "import vant, vant.cli\n"
            "from tests.helpers import tiny_config\nfrom vant.pipeline.runs import execute\n"
            f"run = execute(tiny_config({str(tmp_path)!r}, 'train.epochs=1', 'eval.repeats=1'), progress=False)\n"
            "import filelock\n"
            "print(filelock.FileLock.__name__, run.summary()['clean_accuracy'] > 0, (run.path / 'trained').is_file())")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["SoftFileLock", "True", "True"], r.stdout

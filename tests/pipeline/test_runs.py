"""Run directories: self-describing, never redone, resumable after SIGKILL to the same result."""
import json
import subprocess
import sys

import pytest
import torch
import yaml

from tests.helpers import TINY, kill_after_epochs, tiny_config
from vant.pipeline.runs import Run, execute, run_dir
from vant.pipeline.store import CheckpointError
from vant.pipeline.train import TrainingDiverged


def test_run_directory_explains_itself(trained_run):
    p = trained_run.path
    for f in ("config.yaml", "epochs.csv", "checkpoint.pt", "sweep.csv", "summary.json", "trained",
              "figures/accuracy_vs_sigma.png", "figures/training.png"):
        assert (p / f).is_file(), f
    stored = yaml.safe_load((p / "config.yaml").read_text())
    assert stored["config"]["train"]["theta"] == pytest.approx(0.25)  # resolved: Table 1's theta at 0.5
    assert {"vant", "torch", "torchvision", "python", "hash"} <= set(stored["meta"])
    from vant.pipeline import provenance  # vant's own commit (this checkout) or its installed version

    assert provenance.source().items() <= stored["meta"].items()
    assert len(trained_run.epochs()) == 6
    rows = trained_run.rows()
    assert sorted({r["sigma"] for r in rows}) == [0.0, 0.1, 0.5, 1.0]
    assert len(rows) == 1 + 3 * 2  # clean once (deterministic), each grid sigma twice
    s = trained_run.summary()
    assert s["eval"]["sigmas"] == [0.1, 0.5, 1.0] and len(s["eval"]["std"]) == 3
    ckpt = torch.load(p / "checkpoint.pt", weights_only=True)
    assert ckpt["epoch"] == 6 and ckpt["config"]["train"]["sigma"] == 0.5
    assert p.name.startswith("lenet5-digits-vant0.5-a0.45-t0.25-")


def test_finished_run_is_never_redone_and_new_rows_only_fill_gaps(trained_run):
    ckpt = trained_run.path / "checkpoint.pt"
    mtime = ckpt.stat().st_mtime_ns
    rows = trained_run.rows()
    cfg = trained_run.config
    again = execute(cfg, progress=False)
    assert again.path == trained_run.path and ckpt.stat().st_mtime_ns == mtime
    assert again.rows() == rows
    cfg.eval.repeats = 3
    more = execute(cfg, progress=False).rows()
    assert more[: len(rows)] == rows and len(more) == len(rows) + 3
    assert ckpt.stat().st_mtime_ns == mtime


def test_eval_settings_do_not_change_the_run_identity(tmp_path):
    a = tiny_config(tmp_path)
    b = tiny_config(tmp_path, "eval.repeats=9", "eval.sigmas=[0.2,0.4]", "device=cuda", "name=")
    c = tiny_config(tmp_path, "train.sigma=0.6")
    from vant.config import resolve
    assert run_dir(resolve(a)) == run_dir(resolve(b)) != run_dir(resolve(c))


def _train_cmd(out_dir, epochs):
    return [sys.executable, "-m", "vant.cli", "train", "-q", *TINY, f"train.epochs={epochs}", f"out_dir={out_dir}"]


def test_sigkill_mid_training_resumes_to_the_same_result(tmp_path):
    epochs = 10  # killed after 3: 7 epochs of margin (the 50 ms poll kills it within one)
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    proc = subprocess.Popen(_train_cmd(killed, epochs), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    csv = kill_after_epochs(proc, killed, 3, timeout=120)
    assert csv is not None, "training never got going"
    done = torch.load(csv.parent / "checkpoint.pt", weights_only=True)["epoch"]
    assert 3 <= done < epochs and not (csv.parent / "trained").exists()
    subprocess.run(_train_cmd(killed, epochs), check=True, capture_output=True)
    subprocess.run(_train_cmd(clean, epochs), check=True, capture_output=True)
    a, b = Run(csv.parent), Run(next(clean.glob("*/config.yaml")).parent)
    assert a.path.name == b.path.name
    wa = torch.load(a.path / "checkpoint.pt", weights_only=True)["model"]
    wb = torch.load(b.path / "checkpoint.pt", weights_only=True)["model"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert a.rows() == b.rows()
    sa, sb = a.summary(), b.summary()
    assert sa["eval"] == sb["eval"] and sa["final_train_loss"] == sb["final_train_loss"]
    assert [r["train_loss"] for r in a.epochs()] == [r["train_loss"] for r in b.epochs()]


def test_nan_loss_stops_with_epoch_and_sigma(tmp_path):
    cfg = tiny_config(tmp_path, "train.method=nt", "train.sigma=1e38")
    with pytest.raises(TrainingDiverged, match=r"epoch 1 .*sigma_train=1e\+38"):
        execute(cfg, progress=False)


def test_corrupt_checkpoint_is_a_clear_error(tmp_path):
    cfg = tiny_config(tmp_path, "train.epochs=2")
    from vant.config import resolve
    path = run_dir(resolve(cfg))
    path.mkdir(parents=True)
    (path / "checkpoint.pt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="checkpoint.pt is unreadable"):
        execute(cfg, progress=False)


def test_clean_and_nt_runs(tmp_path):
    for method in ("clean", "nt"):
        run = execute(tiny_config(tmp_path, f"train.method={method}", "train.epochs=1"), progress=False)
        s = run.summary()
        assert s["method"] == method and 0 <= s["clean_accuracy"] <= 100
        assert json.loads((run.path / "summary.json").read_text())["auc"] > 0


def test_a_last_batch_of_one_image_under_batchnorm_is_refused_before_anything_is_written(tmp_path):
    from vant.config import ConfigError

    cfg = tiny_config(tmp_path, "model.name=lenet5_bn", "train.batch_size=1436")  # 1437 digits: 1436 + 1
    with pytest.raises(ConfigError, match="train.batch_size=1436 leaves a last training batch of one image"):
        execute(cfg, progress=False)
    assert not any(tmp_path.iterdir())

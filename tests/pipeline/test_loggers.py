"""Trackers: TensorBoard and MLflow record what the run directory holds, read back from their own
stores; they never change a run's identity, are checked before a run starts, and a resumed run
shows each epoch once."""
import importlib.util
import os
import subprocess
import sys

import pytest

from tests.helpers import TINY, kill_after_epochs, tiny_config
from vant.config import ConfigError, config_hash, resolve
from vant.experiments.table import group_key
from vant.pipeline.loggers import Trackers
from vant.pipeline.runs import Run, execute, run_dir


def test_trackers_are_not_part_of_the_run_identity(tmp_path):
    plain = resolve(tiny_config(tmp_path))
    logged = resolve(tiny_config(tmp_path, "log.tensorboard=true", f"log.mlflow=file:{tmp_path}/mlruns",
                                 "log.experiment=other"))
    assert config_hash(plain) == config_hash(logged) and run_dir(plain) == run_dir(logged)
    assert group_key(plain) == group_key(logged)


@pytest.mark.parametrize("override, message", [
    ("log.mlflow=''", "log.mlflow must be a tracking URI"),
    ("log.experiment=' '", "log.experiment must be a non-empty name"),
    ("log.tensorboard=maybe", "log.tensorboard: expected true or false"),
])
def test_bad_tracker_settings_fail_when_the_config_is_resolved(tmp_path, override, message):
    with pytest.raises(ConfigError, match=message):
        resolve(tiny_config(tmp_path, override))


@pytest.mark.parametrize("key, package, extra", [("log.tensorboard=true", "tensorboard", "tensorboard"),
                                                 ("log.mlflow=http://localhost:5000", "mlflow", "mlflow")])
def test_a_missing_extra_is_one_line_before_anything_is_written(tmp_path, monkeypatch, capsys, key, package, extra):
    from vant.cli import main

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == package else real(name, *a))
    assert main(["train", "-q", *TINY, f"out_dir={tmp_path / 'runs'}", key]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == [f'vant: error: {key.split("=")[0]} needs {"TensorBoard" if extra == "tensorboard" else "MLflow"}: '
                   f'pip install "vant[{extra}]"']
    assert not (tmp_path / "runs").exists()
    spec = tmp_path / "g.yaml"  # a grid fails at expansion, before its directory exists
    spec.write_text(f"base: {{model: {{name: lenet5}}, device: cpu, log: {{{key.split('.')[1].replace('=', ': ')}}}}}\n")
    assert main(["grid", str(spec), "--dir", str(tmp_path / "grid"), "--out-dir", str(tmp_path / "runs")]) == 2
    assert not (tmp_path / "grid").exists()


class Recorder:
    name = "recorder"

    def __init__(self, fail_at=None):
        self.calls, self.fail_at = [], fail_at

    def on_start(self, config, history):
        self.calls.append(("start", [r["epoch"] for r in history]))

    def on_epoch(self, row):
        if row["epoch"] == self.fail_at:
            raise ConnectionError("server gone\nmore detail")
        self.calls.append(("epoch", row["epoch"]))

    def on_end(self, summary, curve, figures):
        self.calls.append(("end", curve["sigmas"]))

    def close(self, status):
        self.calls.append(("close", status))


def test_trackers_log_each_epoch_once_and_a_failing_one_is_dropped(capsys):
    ok, bad = Recorder(), Recorder(fail_at=3)
    t = Trackers([ok, bad])
    t.start({}, [{"epoch": 1}])
    for e in (2, 3, 2):  # 2 again: already logged
        t.epoch({"epoch": e})
    summary = {"eval": {"sigmas": [0.1], "mean": [50.0], "std": [1.0]}}
    t.end(summary, [{"epoch": 1}, {"epoch": 2}, {"epoch": 3}, {"epoch": 4}], [])  # 4: checkpointed, never handed over
    t.close("finished")
    assert ok.calls == [("start", [1]), ("epoch", 2), ("epoch", 3), ("epoch", 4), ("end", [0.1]), ("close", "finished")]
    assert bad.calls == [("start", [1]), ("epoch", 2)]
    err = capsys.readouterr().err.splitlines()
    assert err == ["vant: warning: recorder logging stopped (ConnectionError: server gone); the run goes on"]


def _scalars(logdir, tag):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(logdir), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    return acc, [(e.step, e.value) for e in acc.Scalars(tag)]


def _mlflow_run(uri):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("vant")
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 1, [r.info.run_name for r in runs]
    return client, runs[0]


@pytest.fixture
def file_store(monkeypatch, tmp_path):
    """A local MLflow file store (MLflow 3 keeps it behind this switch; the test process and its children)."""
    pytest.importorskip("mlflow")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    return f"file:{tmp_path / 'mlruns'}"


def test_tensorboard_and_mlflow_hold_the_runs_numbers(tmp_path, file_store):
    pytest.importorskip("tensorboard")
    run = execute(tiny_config(tmp_path / "runs", "log.tensorboard=true", f"log.mlflow={file_store}"), progress=False)
    epochs, summary = run.epochs(), run.summary()

    acc, loss = _scalars(run.path / "tensorboard", "train/loss")
    assert [s for s, _ in loss] == [1, 2, 3]
    assert [v for _, v in loss] == pytest.approx([r["train_loss"] for r in epochs], rel=1e-6)  # stored as float32
    _, curve = _scalars(run.path / "tensorboard", "eval/accuracy_vs_sigma")
    assert [s for s, _ in curve] == [100, 500, 1000]  # sigma in thousandths
    assert [v for _, v in curve] == pytest.approx(summary["eval"]["mean"], rel=1e-6)
    _, auc = _scalars(run.path / "tensorboard", "summary/auc")
    assert auc[0][1] == pytest.approx(summary["auc"], rel=1e-6)
    assert set(acc.Tags()["images"]) == {"figures/accuracy_vs_sigma", "figures/training"}

    client, mrun = _mlflow_run(file_store)
    assert mrun.info.status == "FINISHED" and mrun.info.run_name == run.path.name
    assert mrun.data.params["train.sigma"] == "0.5" and mrun.data.params["model.name"] == "lenet5"
    assert mrun.data.params["eval.sigmas"] == "[0.1, 0.5, 1.0]" and mrun.data.tags["vant_hash"] == summary["hash"]
    history = client.get_metric_history(mrun.info.run_id, "train/loss")
    assert sorted((m.step, m.value) for m in history) == [(r["epoch"], r["train_loss"]) for r in epochs]
    assert mrun.data.metrics["summary/auc"] == summary["auc"]
    assert mrun.data.metrics["summary/clean_accuracy"] == summary["clean_accuracy"]
    sweep = sorted((m.step, m.value) for m in client.get_metric_history(mrun.info.run_id, "eval/accuracy_vs_sigma"))
    assert sweep == [(round(1000 * s), m) for s, m in zip(summary["eval"]["sigmas"], summary["eval"]["mean"])]
    files = {a.path for a in client.list_artifacts(mrun.info.run_id, "figures")}
    assert files == {f"figures/{n}.{x}" for n in ("accuracy_vs_sigma", "training") for x in ("png", "csv")}


@pytest.mark.slow
def test_a_killed_run_resumed_shows_each_epoch_once(tmp_path, file_store):
    pytest.importorskip("tensorboard")
    out = tmp_path / "runs"
    cmd = [sys.executable, "-m", "vant.cli", "train", "-q", *TINY, "train.epochs=8", f"out_dir={out}",
           "log.tensorboard=true", f"log.mlflow={file_store}"]
    env = dict(os.environ, MLFLOW_ALLOW_FILE_STORE="true")
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    assert kill_after_epochs(proc, out, 2, timeout=300) is not None, "training never got going"
    [path] = [p.parent for p in out.glob("*/config.yaml")]
    client, killed = _mlflow_run(file_store)
    assert killed.info.status == "RUNNING"  # SIGKILL: nobody closed it
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    run = Run(path)
    assert [e["epoch"] for e in run.epochs()] == list(range(1, 9))
    _, loss = _scalars(path / "tensorboard", "train/loss")
    assert [s for s, _ in loss] == list(range(1, 9))
    assert [v for _, v in loss] == pytest.approx([e["train_loss"] for e in run.epochs()], rel=1e-6)
    client, resumed = _mlflow_run(file_store)  # the same MLflow run, continued
    assert resumed.info.run_id == killed.info.run_id and resumed.info.status == "FINISHED"
    steps = sorted(m.step for m in client.get_metric_history(resumed.info.run_id, "train/loss"))
    assert steps == list(range(1, 9))

"""Checkpoints and run files: nothing in a run directory executes, a run adopts only its own state,
and a file that does not parse or does not belong is one line (exit 2) naming it, with advice that works."""
import importlib.util
import os
import shutil
import subprocess
import sys

import pytest
import torch

from tests.helpers import TINY, tiny_config
from vant.cli import main
from vant.config import config_hash, resolve
from vant.pipeline.runs import Run, execute, run_dir

#: The small finished run these tests copy and damage: 2 epochs, one evaluation sigma, one repeat.
SMALL = ["train.epochs=2", "train.test_every=0", "eval.sigmas=[0.5,1.0]", "eval.repeats=1"]


class _Touch:
    """Unpickling this creates ``path``: what a crafted checkpoint could do if it were unpickled freely."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    return execute(tiny_config(tmp_path_factory.mktemp("small"), *SMALL), progress=False)


def _copy(run: Run, tmp_path, name="copy") -> Run:
    """A copy of ``run`` under ``tmp_path/name`` (same directory name: out_dir is not part of the hash)."""
    dest = tmp_path / name / run.path.name
    shutil.copytree(run.path, dest, ignore=shutil.ignore_patterns(".lock"))
    return Run(dest)


def _small_args(out_dir) -> list[str]:
    return [*TINY, *SMALL, f"out_dir={out_dir}"]


def _one_line_error(capsys, *needles) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vant: error: "), err
    for n in needles:
        assert str(n) in lines[0], (n, lines[0])
    return lines[0]


def _evil_checkpoint(path, marker):
    torch.save(dict(model={"conv1.weight": _Touch(marker)}, epoch=1, history=[{}], config_hash="x"), path)


# ----------------------------------------------------------------------------- what a checkpoint holds

def test_checkpoint_is_plain_data_with_the_runs_hash(small):
    ckpt = torch.load(small.path / "checkpoint.pt", weights_only=True)
    assert ckpt["config_hash"] == config_hash(resolve(small.config)) == small.path.name.rsplit("-", 1)[1]
    assert ckpt["epoch"] == 2 and len(ckpt["history"]) == 2
    assert all(isinstance(v, (int, float)) for row in ckpt["history"] for v in row.values())
    assert ckpt["rng"]["torch"].dtype == torch.uint8 and ckpt["sampler"]["generator"].dtype == torch.uint8
    assert isinstance(ckpt["config"], dict) and ckpt["config"]["train"]["epochs"] == 2


@pytest.mark.skipif(importlib.util.find_spec("brevitas") is None, reason='needs pip install "vant[qat]"')
def test_qat_and_sam_checkpoint_loads_weights_only_and_resumes(tmp_path):
    """A learned-scale QAT model (its QuantReLU keeps extra state) trained with ASAM."""
    cfg = tiny_config(tmp_path, "model.quant_bits=4", "train.optimizer=sam", "train.epochs=1", "train.test_every=0",
                      "eval.sigmas=[0.5,1.0]", "eval.repeats=1")
    run = execute(cfg, progress=False)
    ckpt = torch.load(run.path / "checkpoint.pt", weights_only=True)
    extra = {k: v for k, v in ckpt["model"].items() if k.endswith("_extra_state")}
    assert extra and all(isinstance(s["counter"], int) and s["counter"] > 0 for v in extra.values() for s in v.values())
    # resume path: with the marker gone, execute hands the checkpoint to fit, which adopts all of it
    (run.path / "trained").unlink()
    again = execute(cfg, progress=False)
    assert again.trained and torch.equal(torch.load(run.path / "checkpoint.pt", weights_only=True)["rng"]["torch"],
                                         ckpt["rng"]["torch"])
    from vant.pipeline.runs import load_trained
    model, _, _ = load_trained(again, "cpu")
    relu = next(m for m in model.modules() if type(m).__name__ == "QuantReLU")
    counters = [m.counter for m in relu.modules() if hasattr(m, "collect_stats_steps")]
    assert counters and counters[0] == next(iter(next(iter(extra.values())).values()))["counter"]


# ----------------------------------------------------------------------------- nothing in a run executes

def test_crafted_checkpoint_payload_works_when_unpickled_freely(tmp_path):
    """The payload of the next tests is real: an unrestricted torch.load runs it."""
    marker = tmp_path / "pwned"
    _evil_checkpoint(tmp_path / "evil.pt", marker)
    torch.load(tmp_path / "evil.pt", weights_only=False)
    assert marker.exists()


def test_crafted_checkpoint_in_a_finished_run_runs_nothing_from_the_command_line(small, tmp_path):
    run = _copy(small, tmp_path)
    marker = tmp_path / "pwned"
    _evil_checkpoint(run.path / "checkpoint.pt", marker)
    env = dict(os.environ, PYTHONPATH=os.getcwd() + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-m", "vant", "sweep", str(run.path), "--repeats", "5", "-q"],
                          capture_output=True, text=True, env=env)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "checkpoint.pt" in lines[0] and f"delete the run directory {run.path}" in lines[0], \
        proc.stderr
    assert not marker.exists()


@pytest.mark.parametrize("command", [
    ["evaluate", "{run}", "--scenario", "chip_lot", "-q"],
    ["sensitivity", "{run}", "-q"],
])
def test_crafted_checkpoint_is_refused_by_evaluate_and_sensitivity(small, tmp_path, capsys, command):
    run = _copy(small, tmp_path)
    marker = tmp_path / "pwned"
    _evil_checkpoint(run.path / "checkpoint.pt", marker)
    assert main([a.format(run=run.path) for a in command]) == 2
    _one_line_error(capsys, run.path / "checkpoint.pt", f"delete the run directory {run.path}")
    assert not marker.exists()


def test_crafted_checkpoint_in_an_unfinished_run_is_refused_on_resume(small, tmp_path, capsys):
    run = _copy(small, tmp_path)
    (run.path / "trained").unlink()
    marker = tmp_path / "pwned"
    _evil_checkpoint(run.path / "checkpoint.pt", marker)
    assert main(["train", "-q", *_small_args(run.path.parent)]) == 2
    _one_line_error(capsys, run.path / "checkpoint.pt", f"delete {run.path / 'checkpoint.pt'} to train this run from scratch")
    assert not marker.exists() and not (run.path / "trained").exists()


# ----------------------------------------------------------------------------- a run adopts only its own state

def test_another_runs_checkpoint_is_not_adopted_by_an_unfinished_run(trained_run, tmp_path, capsys):
    """The issue's sample: a 6-epoch run's checkpoint copied into an unfinished 2-epoch run."""
    path = run_dir(resolve(tiny_config(tmp_path, *SMALL)))
    path.mkdir(parents=True)
    ckpt = path / "checkpoint.pt"
    shutil.copy(trained_run.path / "checkpoint.pt", ckpt)
    before = ckpt.read_bytes()
    assert main(["train", "-q", *_small_args(tmp_path)]) == 2
    theirs, ours = torch.load(ckpt, weights_only=True)["config_hash"], path.name.rsplit("-", 1)[1]
    _one_line_error(capsys, ckpt, theirs, ours, f"delete {ckpt} to train this run from scratch")
    assert ckpt.read_bytes() == before and not (path / "epochs.csv").exists() and not (path / "trained").exists()
    ckpt.unlink()  # the advice
    assert main(["train", "-q", *_small_args(tmp_path)]) == 0
    assert len(Run(path).epochs()) == 2 and torch.load(ckpt, weights_only=True)["config_hash"] == ours


def test_another_runs_checkpoint_in_a_finished_run_says_delete_the_run_directory(trained_run, small, tmp_path, capsys):
    run = _copy(small, tmp_path)
    shutil.copy(trained_run.path / "checkpoint.pt", run.path / "checkpoint.pt")
    assert main(["sweep", str(run.path), "--repeats", "2", "-q"]) == 2
    _one_line_error(capsys, run.path / "checkpoint.pt", f"delete the run directory {run.path} to train it again")
    shutil.rmtree(run.path)  # the advice, followed: the same config trains and evaluates again
    assert main(["train", "-q", *_small_args(run.path.parent)]) == 0
    assert main(["sweep", str(run.path), "--repeats", "2", "-q"]) == 0
    assert len(Run(run.path).epochs()) == 2 and Run(run.path).summary()["eval"]["repeats"] == 2


def _other_architecture(small, tmp_path, same_hash: bool):
    """A checkpoint of lenet5_bn (its own hash, or the small run's hash forged into it)."""
    import vant

    ckpt = torch.load(small.path / "checkpoint.pt", weights_only=True)
    model = vant.create_model("lenet5_bn", 10, 1)
    vant.inject_noise_(model)
    cfg = resolve(tiny_config(tmp_path, *SMALL, "model.name=lenet5_bn"))
    ckpt.update(model=model.state_dict(), config_hash=config_hash(cfg) if not same_hash else ckpt["config_hash"])
    return ckpt


@pytest.mark.parametrize("same_hash", [False, True], ids=["own-hash", "forged-hash"])
def test_checkpoint_of_another_architecture_is_one_line(small, tmp_path, capsys, same_hash):
    run = _copy(small, tmp_path)
    ckpt = run.path / "checkpoint.pt"
    torch.save(_other_architecture(small, tmp_path, same_hash), ckpt)
    assert main(["sensitivity", str(run.path), "-q"]) == 2
    line = _one_line_error(capsys, ckpt, f"delete the run directory {run.path}")
    assert ("does not fit the model" in line and "bn" in line) if same_hash else "belongs to config" in line
    # the same checkpoint in an unfinished run: refused on resume, strict load named by its first key
    (run.path / "trained").unlink()
    assert main(["train", "-q", *_small_args(run.path.parent)]) == 2
    line = _one_line_error(capsys, ckpt, f"delete {ckpt} to train this run from scratch")
    assert ("does not fit the model" in line) if same_hash else "belongs to config" in line


def test_old_checkpoint_without_a_hash_is_refused(small, tmp_path, capsys):
    run = _copy(small, tmp_path)
    ckpt = torch.load(run.path / "checkpoint.pt", weights_only=True)
    del ckpt["config_hash"]  # what the previous version wrote
    torch.save(ckpt, run.path / "checkpoint.pt")
    assert main(["sweep", str(run.path), "--repeats", "2", "-q"]) == 2
    _one_line_error(capsys, run.path / "checkpoint.pt", "older vant", f"delete the run directory {run.path}")


def test_loadable_but_malformed_checkpoint_is_one_line(small, tmp_path, capsys):
    run = _copy(small, tmp_path)
    ckpt = torch.load(run.path / "checkpoint.pt", weights_only=True)
    ckpt["history"] = ckpt["history"][:1]  # one row for two epochs
    torch.save(ckpt, run.path / "checkpoint.pt")
    assert main(["sweep", str(run.path), "--repeats", "2", "-q"]) == 2
    _one_line_error(capsys, run.path / "checkpoint.pt", "damaged")


# ----------------------------------------------------------------------------- every file of a run parses or is named

GARBAGE = b"\x80\x04\x95garbage\x00\xff\xfe not text"


@pytest.mark.parametrize("name,content,command", [
    ("checkpoint.pt", GARBAGE, "sweep"),
    ("checkpoint.pt", b"", "sweep"),
    ("config.yaml", b"config: [unclosed", "sweep"),
    ("config.yaml", b"config: !!python/object/apply:os.system ['touch {marker}']\n", "sweep"),
    ("config.yaml", b"- just\n- a list\n", "evaluate"),
    ("config.yaml", b"config: {train: {epochs: many}}\n", "sensitivity"),
    ("summary.json", b"{not json", "plot"),
    ("summary.json", b"[1, 2]", "plot"),
    ("epochs.csv", GARBAGE, "sweep"),
    ("epochs.csv", b"epoch,train_loss\n1,0.5\n", "sweep"),
    ("epochs.csv", b"epoch,train_loss,train_acc,test_acc,seconds\n1,0.5,oops,nan,1\n", "sweep"),
    ("sweep.csv", GARBAGE, "sweep"),
    ("sweep.csv", b"sigma,repeat,seed,correct,total,accuracy,mode\n0.5,0,1000\n", "sweep"),
    ("sweep.csv", b"hello,world\n1,2\n", "sweep"),
])
def test_a_run_file_that_does_not_parse_is_one_line_naming_it(small, tmp_path, capsys, name, content, command):
    run = _copy(small, tmp_path)
    marker = tmp_path / "pwned"
    (run.path / name).write_bytes(content.replace(b"{marker}", str(marker).encode()))
    argv = {"sweep": ["sweep", str(run.path), "--repeats", "2", "-q"],
            "evaluate": ["evaluate", str(run.path), "--scenario", "chip_lot", "-q"],
            "sensitivity": ["sensitivity", str(run.path), "-q"],
            "plot": ["plot", str(run.path), "-o", str(tmp_path / "p.png")]}[command]
    assert main(argv) == 2
    _one_line_error(capsys, run.path / name)
    assert not marker.exists()

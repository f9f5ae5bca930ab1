"""Hostile inputs, one end-to-end case per trust principle of the command line (issue 12). The
detailed cases live beside each module: tests/test_config_hostile.py (every field, names),
tests/test_data_hostile.py (trees, caches, pickles), tests/pipeline/test_checkpoints.py (run files),
tests/core/test_inputs.py (library inputs), tests/pipeline/test_determinism.py (threads)."""
import pickle
import shutil
import subprocess
import sys

import pytest
import torch
import yaml

from tests.helpers import TINY


def vant(*args, cwd=None, **env):
    import os

    return subprocess.run([sys.executable, "-m", "vant", *args], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, **env})


def one_line_exit_2(r) -> str:
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("vant: error:"), r.stderr
    return lines[0]


class _Touch:
    """Unpickling this creates a file: what a crafted checkpoint would do."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def test_nothing_in_a_run_directory_executes(tmp_path, trained_run):
    run = tmp_path / trained_run.path.name
    shutil.copytree(trained_run.path, run)
    marker = tmp_path / "pwned"
    torch.save({"model": _Touch(marker), "epoch": 1}, run / "checkpoint.pt", pickle_protocol=pickle.DEFAULT_PROTOCOL)
    line = one_line_exit_2(vant("sweep", str(run), "--repeats", "4", "-q"))
    assert "checkpoint.pt" in line and not marker.exists()


def test_a_run_adopts_only_its_own_state(tmp_path, trained_run):
    """The issue's sample: a 6-epoch run's checkpoint copied into an unfinished 2-epoch run."""
    out = tmp_path / "runs"
    args = ["train", "-q", *TINY, f"out_dir={out}", "train.epochs=2"]
    from vant.config import resolve
    from vant.pipeline.runs import run_dir
    from tests.helpers import tiny_config

    path = run_dir(resolve(tiny_config(out, "train.epochs=2")))
    path.mkdir(parents=True)
    shutil.copy(trained_run.path / "checkpoint.pt", path / "checkpoint.pt")
    line = one_line_exit_2(vant(*args))
    assert "checkpoint.pt" in line and "delete" in line
    (path / "checkpoint.pt").unlink()  # the advice works
    assert vant(*args).returncode == 0
    assert len((path / "epochs.csv").read_text().splitlines()) == 3  # header + 2 epochs


def test_every_cache_is_keyed_by_what_it_is_derived_from(tmp_path):
    from PIL import Image

    from vant.data import load_dataset

    def tree(value):
        for split, n in (("train", 3), ("test", 2)):
            for c, cls in enumerate(("a", "b")):
                (tmp_path / split / cls).mkdir(parents=True, exist_ok=True)
                for i in range(n):
                    Image.new("RGB", (8, 8), (value + c, 0, 0)).save(tmp_path / split / cls / f"{i}.png")

    tree(10)
    first = load_dataset("imagefolder", tmp_path).train_x[0, 0, 0, 0].item()
    import time

    time.sleep(0.01)
    tree(200)  # same file names, same count, other pixels
    assert first == 10 and load_dataset("imagefolder", tmp_path).train_x[0, 0, 0, 0].item() == 200


@pytest.mark.parametrize("args", [["name=../../x"], ["name=/tmp/abs"], ["data.name=../x"]])
def test_a_user_given_name_becomes_a_path_only_inside_its_parent(tmp_path, args):
    line = one_line_exit_2(vant("train", "-q", *TINY, f"out_dir={tmp_path / 'runs'}", *args))
    assert "name" in line and not (tmp_path / "runs").exists() and not (tmp_path / "x").exists()


def test_a_grid_name_and_a_scenario_name_stay_inside(tmp_path):
    spec = tmp_path / "g.yaml"
    spec.write_text(yaml.safe_dump({"name": "../../escape", "base": {"data": {"name": "digits"}}}))
    line = one_line_exit_2(vant("grid", str(spec), "--dry-run"))
    assert "name" in line
    scn = tmp_path / "s.yaml"
    scn.write_text(yaml.safe_dump({"name": "../x", "kind": "fixed", "sigma": 0.5, "units": {"sigma": "activation_std"}}))
    from vant.scenarios.spec import ScenarioError, load_scenario

    with pytest.raises(ScenarioError, match="name"):
        load_scenario(scn)


@pytest.mark.parametrize("args,key", [
    (["train.sigma=nan"], "train.sigma"), (["train.theta=inf"], "train.theta"), (["train.sampler=bogus"], "train.sampler"),
    (["eval.sigmas=[0.1,.nan]"], "eval.sigmas"), (["eval.sigmas=[0.1]"], "eval.sigmas"), (["device=tpu"], "device"),
    (["data.image_size=-4"], "data.image_size"), (["train.method=empirical", "train.sigma_values=[-1]"], "sigma_values"),
])
def test_everything_is_validated_before_anything_is_written(tmp_path, args, key):
    line = one_line_exit_2(vant("train", "-q", *TINY, f"out_dir={tmp_path / 'runs'}", *args))
    assert key in line and not (tmp_path / "runs").exists()


def test_a_grid_with_one_bad_point_trains_nothing_and_writes_nothing(tmp_path):
    spec = tmp_path / "g.yaml"
    spec.write_text(yaml.safe_dump({"base": {"data": {"name": "digits"}, "model": {"name": "lenet5"},
                                             "out_dir": str(tmp_path / "runs"), "train": {"epochs": 1}},
                                    "variants": {"ok": {"train.method": "nt", "train.sigma": 0.5},
                                                 "bad": {"train.method": "nt", "train.sigma": float("nan")}}}))
    line = one_line_exit_2(vant("grid", str(spec), "-q", "--dir", str(tmp_path / "grid")))
    assert "variant 'bad'" in line and "train.sigma" in line
    assert not (tmp_path / "runs").exists() and not (tmp_path / "grid").exists()


def test_library_inputs_are_checked_like_cli_inputs():
    import vant as v

    model = v.create_model("lenet5")
    v.inject_noise_(model)
    for bad in (-1.0, float("nan"), float("inf"), torch.tensor([0.5, -0.1])):
        with pytest.raises(ValueError):
            v.set_sigma_(model, bad)
    with pytest.raises((TypeError, ValueError), match="paper"):
        v.inject_noise_(v.create_model("lenet5"), sites=None)


def test_a_degenerate_data_set_is_refused_in_one_line(tmp_path):
    from PIL import Image

    for split in ("train", "test"):
        (tmp_path / split / "only").mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (8, 8)).save(tmp_path / split / "only" / f"{i}.png")
    line = one_line_exit_2(vant("train", "-q", *TINY, "data.name=imagefolder", f"data.root={tmp_path}",
                                f"out_dir={tmp_path / 'runs'}"))
    assert "class" in line and not (tmp_path / "runs").exists()


def test_an_out_dir_that_is_a_file_or_read_only_is_one_line(tmp_path):
    f = tmp_path / "file"
    f.write_text("")
    assert "out_dir" in one_line_exit_2(vant("train", "-q", *TINY, f"out_dir={f}"))
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        import os

        if os.access(ro, os.W_OK):  # root ignores permissions: nothing to test there
            pytest.skip("running as a user who can write anywhere")
        one_line_exit_2(vant("train", "-q", *TINY, f"out_dir={ro / 'runs'}"))
    finally:
        ro.chmod(0o700)

"""Shared test settings (importable as tests.helpers; pyproject puts the repo root on sys.path)."""
from vant.config import build_config

#: A run small enough to train in a couple of seconds on the CPU (bundled digits, LeNet-5).
TINY = ["model.name=lenet5", "train.method=vant", "train.sigma=0.5", "train.epochs=3", "eval.sigmas=[0.1,0.5,1.0]",
        "eval.repeats=2", "device=cpu", "train.test_every=1"]


def tiny_config(tmp_path, *extra):
    return build_config(None, TINY + [f"out_dir={tmp_path}"] + list(extra))

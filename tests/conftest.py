import pytest
import torch

from vant.config import build_config

torch.set_num_threads(2)

#: A run small enough to train in a couple of seconds on the CPU (bundled digits, LeNet-5).
TINY = ["model.name=lenet5", "train.method=vant", "train.sigma=0.5", "train.epochs=3", "eval.sigmas=[0.1,0.5,1.0]",
        "eval.repeats=2", "device=cpu", "train.test_every=1"]


def tiny_config(tmp_path, *extra):
    return build_config(None, TINY + [f"out_dir={tmp_path}"] + list(extra))


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    from vant.runs import execute

    return execute(tiny_config(tmp_path_factory.mktemp("runs"), "train.epochs=6"), progress=False)

import pytest
import torch

from tests.helpers import tiny_config

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    from vant.runs import execute

    return execute(tiny_config(tmp_path_factory.mktemp("runs"), "train.epochs=6"), progress=False)

import pytest
import torch

from tests.helpers import run_demo, tiny_config

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    from vant.pipeline.runs import execute

    return execute(tiny_config(tmp_path_factory.mktemp("runs"), "train.epochs=6"), progress=False)


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory):
    """One demo run shared by the test of what it prints and the test that it is reproducible."""
    out = tmp_path_factory.mktemp("demo") / "demo"
    return out, run_demo(out)


def pytest_collection_modifyitems(config, items):
    """``gpu`` tests run where CUDA is available and are skipped (not silently deselected) elsewhere."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)

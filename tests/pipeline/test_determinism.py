"""Determinism that does not depend on threads or executors (issue 12): the same run gives the same
bytes with OMP_NUM_THREADS=1 and =2, in one process and in grid workers, and resumed at another
thread count. LeNet-5 on the digits at batch 128 has sites of 602,112 values, so the split CPU draw
(vant.core.noise.normal_) is exercised. oneDNN's convolution weight gradients depend on the thread
count, so a run's math uses its config's ``cpu_threads`` whatever the environment says (README, Speed)."""
import csv
import os
import subprocess
import sys

import pytest
import torch
import yaml

from tests.helpers import kill_after_epochs
from vant.core.noise import _PARALLEL_MIN

RUN = ["model.name=lenet5", "train.method=vant", "train.sigma=0.5", "eval.sigmas=[0.1,0.5]", "eval.repeats=1",
       "device=cpu"]


def _train(out, threads: int, epochs: int = 2, **kw):
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    cmd = [sys.executable, "-m", "vant.cli", "train", "-q", *RUN, f"train.epochs={epochs}", f"out_dir={out}"]
    return subprocess.Popen(cmd, env=env, **kw) if kw else subprocess.run(cmd, env=env, check=True, capture_output=True)


def _losses(run_dir):
    with open(run_dir / "epochs.csv", newline="") as f:
        return [(r["train_acc"], r["test_acc"], r["sigma_mean"]) for r in csv.DictReader(f)]


def _train_losses(run_dir):
    with open(run_dir / "epochs.csv", newline="") as f:
        return [r["train_loss"] for r in csv.DictReader(f)]


def test_data_statistics_do_not_depend_on_the_thread_count():
    # A float32 mean over the whole set is summed in an order that follows the threads: its last bit
    # moved every number of a run started with OMP_NUM_THREADS=1 instead of 2 (from epoch 3 on).
    from vant.data import channel_stats

    x = torch.randint(0, 256, (3000, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    before, stats = torch.get_num_threads(), {}
    try:
        for t in (1, 2, 3):
            torch.set_num_threads(t)
            stats[t] = channel_stats(x)
    finally:
        torch.set_num_threads(before)
    assert stats[1] == stats[2] == stats[3]
    px = x.double().div(255)
    assert stats[1][0] == pytest.approx(px.mean(dim=(0, 2, 3)).tolist(), rel=1e-12)
    assert stats[1][1] == pytest.approx(px.std(dim=(0, 2, 3)).tolist(), rel=1e-12)


def test_lenet5_on_digits_has_a_site_that_is_split():
    import vant.core.noise as noise
    from vant import create_model, inject_noise_, set_sigma_

    sizes, draw = [], noise.normal_
    model = create_model("lenet5", num_classes=10, in_channels=1)
    inject_noise_(model, "paper")
    set_sigma_(model, 0.5)
    try:
        noise.normal_ = lambda b: (sizes.append(b.numel()), draw(b))[1]
        with torch.no_grad():
            model(torch.zeros(128, 1, 32, 32))
    finally:
        noise.normal_ = draw
    assert max(sizes) >= _PARALLEL_MIN


@pytest.fixture(scope="module")
def one_and_two_threads(tmp_path_factory):
    """The same run trained with OMP_NUM_THREADS=1 and =2 (each in its own process): its two run directories."""
    out = tmp_path_factory.mktemp("threads")
    for t in (1, 2):
        _train(out / f"t{t}", t)
    (a,), (b,) = (list((out / f"t{t}").glob("*/config.yaml")) for t in (1, 2))
    return a.parent, b.parent


@pytest.mark.slow
def test_same_run_with_one_and_two_threads_writes_the_same_bytes(one_and_two_threads):
    a, b = one_and_two_threads
    assert a.name == b.name
    assert (a / "sweep.csv").read_bytes() == (b / "sweep.csv").read_bytes()
    assert _losses(a) == _losses(b)


@pytest.mark.slow
def test_same_run_with_one_and_two_threads_has_the_same_train_loss(one_and_two_threads):
    a, b = one_and_two_threads
    assert _train_losses(a) == _train_losses(b)


@pytest.mark.slow
def test_resumed_at_another_thread_count_equals_the_uninterrupted_run(tmp_path):
    epochs = 6
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    proc = _train(killed, 2, epochs, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    found = kill_after_epochs(proc, killed, 2)
    assert found is not None, "training never got going, or finished before it could be stopped"
    assert not (found.parent / "trained").exists()
    _train(killed, 1, epochs)
    _train(clean, 1, epochs)
    (a,), (b,) = list(killed.glob("*/sweep.csv")), list(clean.glob("*/sweep.csv"))
    assert a.read_bytes() == b.read_bytes()
    assert _losses(a.parent) == _losses(b.parent)


@pytest.mark.slow
def test_grid_in_one_process_and_in_two_workers_gives_the_same_table(tmp_path):
    from tests.experiments.test_grid import BASE, table, write_spec

    spec = write_spec(tmp_path / "g.yaml", base=dict(BASE, train={"epochs": 1, "test_every": 0, "method": "vant"}),
                      variants={"VANT": {"grid": {"train.sigma": [0.3, 0.5]}}}, report={"kind": "curves"})
    out = {}
    for name, extra, threads in (("one", [], "2"), ("workers", ["--workers", "2", "--threads", "1"], "2")):
        cmd = [sys.executable, "-m", "vant.cli", "grid", str(spec), "-q", "--out-dir", str(tmp_path / name),
               "--no-report", *extra]
        env = dict(os.environ, OMP_NUM_THREADS=threads)
        subprocess.run(cmd, check=True, capture_output=True, env=env)
        out[name] = table(tmp_path / name / "grids" / "g")
    assert len(out["one"]) == 2 and all(r["status"] == "ok" for r in out["one"])
    assert out["one"] == out["workers"]


def _nchw(shape):
    n, c, h, w = shape
    return (c * h * w, h * w, w, 1)


@pytest.mark.parametrize("augment", [False, True])
def test_batches_of_one_channel_data_are_plain_nchw(augment):
    # Indexing a one-channel set gave batches with channel stride 1, which PyTorch reads as
    # channels-last; the whole ResNet then ran in channels-last on the CPU (see the next test).
    from vant.data import DeviceBatches, as_nchw, load_dataset

    data = load_dataset("digits")
    batches = DeviceBatches(data.train_x, data.train_y, data.mean, data.std, 128, torch.device("cpu"), train=True,
                            augment=augment, flip=augment, seed=0)
    for x, _ in batches:
        assert x.stride() == _nchw(x.shape)
    ambiguous = torch.randn(4, 8, 8, 1).permute(0, 3, 1, 2)  # strides (64, 1, 8, 1): reads as both formats
    assert ambiguous.is_contiguous(memory_format=torch.channels_last)
    plain = as_nchw(ambiguous)
    assert plain.stride() == _nchw(plain.shape) and torch.equal(plain, ambiguous)


@pytest.mark.parametrize("threads", [1, 2])
def test_a_resnet_with_thin_strided_shortcuts_trains_to_the_same_weights_twice(threads):
    # ResNet-18 four channels wide on the digits has 1x1 stride-2 shortcut convolutions with 4 input
    # channels. Fed channels-last-looking batches, torch 2.14.1's CPU backward of those convolutions
    # gave wrong weight gradients, different in every call (two runs of `vant grid demo -p smoke`
    # disagreed in every number), and corrupted the heap at one thread.
    from vant import create_model, inject_noise_
    from vant.data import DeviceBatches, load_dataset
    from vant.pipeline.train import fit

    data = load_dataset("digits")
    before = torch.get_num_threads()
    weights = []
    try:
        torch.set_num_threads(threads)
        for _ in range(2):
            torch.manual_seed(0)
            model = create_model("resnet18", num_classes=10, in_channels=1, width=4)
            inject_noise_(model, "paper")
            batches = DeviceBatches(data.train_x, data.train_y, data.mean, data.std, 128, torch.device("cpu"),
                                    train=True, seed=0)
            fit(model, batches, 1, lr=1e-2, progress=False, noise_seed=1)
            weights.append([p.detach().clone() for p in model.parameters()])
    finally:
        torch.set_num_threads(before)
    assert all(torch.equal(a, b) for a, b in zip(*weights))

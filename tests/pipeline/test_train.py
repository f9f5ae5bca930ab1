"""The library calls take ordinary PyTorch objects: fit and sweep on a torchvision model and DataLoaders."""
import torch
from torch.utils.data import DataLoader, TensorDataset

import vant


def _loaders(n_train=256, n_test=128, seed=0):
    """A learnable 2-class problem: the class is the sign of the mean of the first channel."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n_train + n_test, 3, 32, 32, generator=g)
    y = (x[:, 0].mean((1, 2)) > 0).long()
    x[:, 0] += (2 * y - 1).view(-1, 1, 1).float()  # make it easy
    train = DataLoader(TensorDataset(x[:n_train], y[:n_train]), batch_size=64, shuffle=True,
                       generator=torch.Generator().manual_seed(1))
    test = DataLoader(TensorDataset(x[n_train:], y[n_train:]), batch_size=50)
    return train, test


def test_fit_and_sweep_a_torchvision_model_from_dataloaders(tmp_path):
    import torchvision

    torch.manual_seed(0)
    train, test = _loaders()
    model = torchvision.models.resnet18(num_classes=2)
    vant.inject_noise_(model)
    history = vant.fit(model, train, epochs=2, lr=1e-3, sampler=vant.VantSampler(0.5, theta=0.2, seed=0),
                       test_batches=test, test_every=1, test_sigma=0.5, progress=False,
                       checkpoint=tmp_path / "ckpt.pt")
    assert [h["epoch"] for h in history] == [1, 2] and all(h["test_acc"] == h["test_acc"] for h in history)
    assert 0.2 < history[-1]["sigma_mean"] < 0.5 + 0.2 * 2  # half-normal around alpha*0.5 + 0.2*|z|
    rows = vant.sweep(model, test, [0.0, 0.5, 2.0], repeats=2, seed=3)
    assert [(r["sigma"], r["repeat"], r["seed"]) for r in rows] == [
        (0.0, 0, 3), (0.5, 0, 3), (2.0, 0, 3), (0.0, 1, 4), (0.5, 1, 4), (2.0, 1, 4)]
    assert all(r["total"] == 128 for r in rows)
    clean = [r["accuracy"] for r in rows if r["sigma"] == 0.0]
    assert clean[0] == clean[1] > 80  # sigma 0 is exact, and the model learnt the easy problem
    again = vant.sweep(model, test, [0.0, 0.5, 2.0], repeats=2, seed=3)
    assert again == rows  # recorded seeds reproduce every row
    # a fit asked again with the finished checkpoint trains nothing more
    assert vant.fit(model, train, epochs=2, sampler=0.5, checkpoint=tmp_path / "ckpt.pt", progress=False) == history


def test_batched_sweep_equals_the_loop_in_distribution_on_a_plain_iterable():
    torch.manual_seed(0)
    _, test = _loaders(n_train=8, n_test=200)
    batches = list(test)  # any iterable of (x, y) works, a list too
    model = vant.create_model("lenet5", num_classes=2)
    vant.inject_noise_(model)
    for batched in (True, False):
        rows = vant.sweep(model, batches, [0.0], repeats=1, seed=0, batched=batched)
        assert rows[0]["total"] == 200
    a = vant.sweep(model, batches, [0.0], 1, 0, batched=True)[0]["correct"]
    b = vant.sweep(model, batches, [0.0], 1, 0, batched=False)[0]["correct"]
    assert a == b  # no noise: both modes see the same model


def test_fit_runs_nt_from_a_number_and_clean_from_none():
    torch.manual_seed(0)
    train, _ = _loaders(n_train=128, n_test=0)
    model = vant.create_model("lenet5", num_classes=2)
    vant.inject_noise_(model)
    nt = vant.fit(model, train, epochs=1, sampler=0.3, progress=False)
    assert abs(nt[0]["sigma_mean"] - 0.3) < 1e-6
    clean = vant.fit(model, train, epochs=1, progress=False)
    assert clean[0]["sigma_mean"] == 0.0

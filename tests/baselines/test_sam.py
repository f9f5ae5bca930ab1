"""SAM/ASAM: the two-step update against a hand computation, exact restore, BN statistics, config, runs."""
import math

import pytest
import torch
from torch import nn

from tests.helpers import tiny_config
from vant.config import ConfigError, build_config, config_hash, resolve
from vant.baselines.sam import SAM, frozen_bn_stats


class Quadratic(nn.Module):
    """L(w) = 0.5 * ||A w - b||^2, whose gradient A^T (A w - b) is easy to write by hand."""

    def __init__(self, w):
        super().__init__()
        self.w = nn.Parameter(torch.tensor(w, dtype=torch.float64))
        self.A = torch.tensor([[2.0, 0.5], [-1.0, 3.0], [0.5, 1.0]], dtype=torch.float64)
        self.b = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
        self.seen = []  # weights at each forward call

    def forward(self):
        self.seen.append(self.w.detach().clone())
        r = self.A @ self.w - self.b
        return 0.5 * (r * r).sum()

    def grad(self, w):
        return self.A.T @ (self.A @ w - self.b)


@pytest.mark.parametrize("adaptive", [False, True])
def test_sam_step_matches_a_hand_computed_update(adaptive):
    rho, lr = 0.3, 0.1
    w0 = torch.tensor([0.7, -1.2], dtype=torch.float64)
    model = Quadratic(w0.tolist())
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    sam = SAM(model.parameters(), rho=rho, adaptive=adaptive)
    opt.zero_grad()
    model().backward()
    with sam.perturbed(model):
        opt.zero_grad()
        model().backward()
    opt.step()

    g1 = model.grad(w0)
    t = w0.abs() if adaptive else torch.ones(2, dtype=torch.float64)
    e = rho * t * t * g1 / torch.linalg.vector_norm(t * g1)  # Foret et al. (t = 1); Kwon et al. ASAM (t = |w|)
    g2 = model.grad(w0 + e)
    assert torch.allclose(model.seen[0], w0) and torch.allclose(model.seen[1], w0 + e, atol=1e-12)
    assert torch.linalg.vector_norm(e / t) == pytest.approx(rho)  # e lies on the rho-sphere of the T-norm
    assert torch.allclose(model.w.detach(), w0 - lr * g2, atol=1e-12)
    # and it is not plain gradient descent (the second gradient differs from the first)
    assert not torch.allclose(g1, g2)


def test_ascent_is_undone_exactly_and_misuse_is_an_error():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 3))
    before = [p.detach().clone() for p in model.parameters()]
    sam = SAM(model.parameters(), rho=2.5, adaptive=True)
    with pytest.raises(RuntimeError, match="first backward"):
        sam.ascent()
    model(torch.randn(4, 5)).square().sum().backward()
    with sam.perturbed(model):
        assert not all(torch.equal(a, p) for a, p in zip(before, model.parameters()))
        with pytest.raises(RuntimeError, match="twice"):
            sam.ascent()
    assert all(torch.equal(a, p) for a, p in zip(before, model.parameters()))
    with pytest.raises(RuntimeError, match="without ascent"):
        sam.restore()
    with pytest.raises(ValueError, match="rho must be > 0"):
        SAM(model.parameters(), rho=0.0)


def test_perturbed_pass_leaves_batchnorm_running_statistics_alone():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.BatchNorm2d(4, momentum=None)).train()
    model(torch.randn(8, 1, 6, 6))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with frozen_bn_stats(model):
        out = model(torch.randn(8, 1, 6, 6) * 3 + 1)
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert out.mean(dim=(0, 2, 3)).abs().max() < 1e-5  # still normalised by the batch's own statistics
    assert model[1].momentum == 0.1 and model[2].momentum is None


@pytest.mark.parametrize("override,message", [
    ("train.optimizer=sgd", "unknown optimizer 'sgd'"),
    ("train.sam_rho=0", "train.sam_rho must be a number > 0"),
])
def test_bad_sam_config_is_an_error(override, message):
    with pytest.raises(ConfigError, match=message):
        resolve(build_config(None, ["train.optimizer=sam", override]))


def test_sam_fields_of_an_adam_run_do_not_split_runs():
    a = resolve(build_config(None, ["train.sam_rho=2.5", "train.sam_adaptive=false"]))
    b = resolve(build_config(None, []))
    c = resolve(build_config(None, ["train.optimizer=sam"]))
    d = resolve(build_config(None, ["train.optimizer=sam", "train.sam_rho=2.5"]))
    assert config_hash(a) == config_hash(b) != config_hash(c) != config_hash(d)


def test_sam_run_trains_sweeps_and_reports(tmp_path):
    from vant.pipeline.runs import execute

    run = execute(tiny_config(tmp_path, "train.optimizer=sam", "train.sam_rho=0.05", "train.epochs=1",
                              "train.test_every=0", "eval.sigmas=[0.1,0.5]", "eval.repeats=1"), progress=False)
    s = run.summary()
    assert (s["optimizer"], s["sam_rho"], s["sam_adaptive"], s["method"]) == ("sam", 0.05, True, "vant")
    assert run.path.name.startswith("lenet5-digits-vant0.5-a0.45-t0.25-asam0.05-")
    assert len(run.epochs()) == 1 and math.isfinite(run.epochs()[-1]["train_loss"])
    assert s["auc"] > 0 and (run.path / "figures" / "accuracy_vs_sigma.png").is_file()

"""Invariants and statistics of the noise core (spec 1)."""
import math

import pytest
import torch
import torchvision
from torch import nn

import vant
from vant.core.noise import additive, mixed, multiplicative


def _z_bounds(n: int, k: float = 5.0):
    """k-sigma sampling tolerances for the mean and the std of n N(0, s^2) draws (per unit s)."""
    return k / math.sqrt(n), k / math.sqrt(2 * n)


@pytest.mark.parametrize("sigma", [0.1, 1.0, 2.7])
def test_additive_noise_has_mean_zero_and_std_sigma(sigma):
    torch.manual_seed(0)
    x = torch.full((400, 1000), 3.0)
    eps = additive(x, torch.tensor(sigma)) - x
    tol_mean, tol_std = _z_bounds(eps.numel())
    assert abs(eps.mean().item()) < tol_mean * sigma
    assert abs(eps.std().item() - sigma) < tol_std * sigma


def test_multiplicative_noise_has_mean_one():
    torch.manual_seed(1)
    x = torch.full((400, 1000), 2.0)
    eta = multiplicative(x, torch.tensor(0.5)) / 2.0
    tol_mean, tol_std = _z_bounds(eta.numel())
    assert abs(eta.mean().item() - 1.0) < tol_mean * 0.5
    assert abs(eta.std().item() - 0.5) < tol_std * 0.5


def test_mixed_noise_variance_combines_both_parts():
    torch.manual_seed(2)
    x = torch.full((400, 1000), 2.0)
    sm, sa = 0.3, 0.4
    y = mixed(x, torch.tensor(sm), torch.tensor(sa))
    expected_std = math.sqrt((2.0 * sm) ** 2 + sa**2)  # Var(x*eta + eps) = x^2 sm^2 + sa^2
    assert abs(y.mean().item() - 2.0) < 5 * expected_std / math.sqrt(y.numel())
    assert abs(y.std().item() - expected_std) < 5 * expected_std / math.sqrt(2 * y.numel())
    y2 = mixed(x, torch.tensor(sm), torch.tensor(sa), mul_first=False)  # (x+eps)*eta
    expected2 = math.sqrt(4 * sm**2 + sa**2 + sa**2 * sm**2)
    assert abs(y2.std().item() - expected2) < 5 * expected2 / math.sqrt(2 * y2.numel())


def test_per_sample_sigma_broadcasts_and_zero_rows_are_exact():
    torch.manual_seed(3)
    x = torch.randn(4, 8, 16, 16)
    sigma = torch.tensor([0.0, 1.0, 0.0, 2.0])
    y = additive(x, sigma)
    assert torch.equal(y[0], x[0]) and torch.equal(y[2], x[2])
    d = (y - x).flatten(1).std(dim=1)
    n = x[0].numel()
    assert abs(d[1].item() - 1.0) < 5 / math.sqrt(2 * n)
    assert abs(d[3].item() - 2.0) < 2 * 5 / math.sqrt(2 * n)
    with pytest.raises(ValueError, match="per-sample sigma"):
        additive(x, torch.ones(3))


def test_noise_is_not_in_place_and_backward_is_identity():
    x = torch.randn(5, 7, requires_grad=True)
    x0 = x.detach().clone()
    y = additive(x, torch.tensor(1.0))
    assert torch.equal(x.detach(), x0)
    y.sum().backward()
    assert torch.equal(x.grad, torch.ones_like(x))


def test_autocast_keeps_activation_dtype():
    x = torch.randn(2, 3, 32, 32)
    model = vant.create_model("lenet5")
    vant.inject_noise_(model)
    vant.set_sigma_(model, 0.5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x)
        assert out.dtype == torch.bfloat16
    xb = torch.randn(4, 4, dtype=torch.bfloat16)
    assert additive(xb, torch.tensor(0.1)).dtype == torch.bfloat16


@pytest.mark.parametrize("name,sites,draws", [("lenet5", 12, 12), ("lenet5_bn", 12, 12), ("resnet18", 33, 41), ("resnet50", 74, 106)])
def test_paper_placement_counts(name, sites, draws):
    model = vant.create_model(name)
    names = vant.inject_noise_(model, "paper")
    assert len(names) == sites and names[0] == vant.INPUT
    counter = []
    for site in vant.noise_sites(model).values():
        site.register_forward_hook(lambda *_: counter.append(1))
    vant.set_sigma_(model, 0.3)
    model(torch.randn(2, 3, 32, 32))
    assert len(counter) == draws


def test_paper_placement_is_before_batchnorm_and_never_after_it():
    model = vant.create_model("resnet18")
    names = vant.inject_noise_(model)
    modules = dict(model.named_modules())
    assert not any(isinstance(modules[n], nn.BatchNorm2d) for n in names if n != "input")
    assert "layer2.0.shortcut.0" in names  # the projection conv, before its BN
    assert "fc" in names and "avgpool" in names and "maxpool" in names


@pytest.mark.parametrize("name", ["lenet5", "lenet5_bn", "resnet18"])
def test_sigma_zero_is_bit_identical_to_plain_model(name):
    torch.manual_seed(0)
    plain = vant.create_model(name)
    noisy = vant.create_model(name)
    noisy.load_state_dict(plain.state_dict())
    vant.inject_noise_(noisy)
    x = torch.randn(3, 3, 32, 32)
    for mode in ("train", "eval"):
        getattr(plain, mode)(); getattr(noisy, mode)()
        vant.set_sigma_(noisy, 0.0)
        assert torch.equal(plain(x), noisy(x))
        vant.set_sigma_(noisy, torch.zeros(3))  # a zero tensor is applied, but adds exactly nothing
        assert torch.equal(plain(x), noisy(x))


def test_rows_with_zero_sigma_are_exact_in_a_model():
    torch.manual_seed(0)
    model = vant.create_model("resnet18").eval()
    x = torch.randn(4, 3, 32, 32)
    ref = model(x)
    vant.inject_noise_(model)
    vant.set_sigma_(model, torch.tensor([0.0, 0.5, 0.0, 1.0]))
    out = model(x)
    assert torch.equal(out[0], ref[0]) and torch.equal(out[2], ref[2])
    assert not torch.allclose(out[1], ref[1])


def test_noise_is_on_in_eval_mode_and_fresh_at_every_call():
    model = vant.create_model("lenet5").eval()
    vant.inject_noise_(model)
    vant.set_sigma_(model, 1.0)
    x = torch.randn(2, 3, 32, 32)
    assert not torch.equal(model(x), model(x))


def test_shared_module_draws_fresh_noise_at_each_call():
    relu = nn.ReLU()

    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.relu = relu

        def forward(self, x):
            return self.relu(x), self.relu(x)

    m = Twice()
    vant.inject_noise_(m, ["relu"], types=(nn.ReLU,))
    vant.set_sigma_(m, 1.0)
    a, b = m(torch.ones(1000))
    assert not torch.equal(a, b)


def test_inject_then_remove_is_identity_and_state_dict_keys_unchanged():
    torch.manual_seed(0)
    model = vant.create_model("resnet18").eval()
    keys, text = list(model.state_dict()), repr(model)
    x = torch.randn(2, 3, 32, 32)
    ref = model(x)
    vant.inject_noise_(model)
    assert list(model.state_dict()) == keys
    vant.set_sigma_(model, 1.0)
    vant.remove_noise_(model)
    assert repr(model) == text and torch.equal(model(x), ref)
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_clean_checkpoint_loads_into_noisy_model_and_back():
    clean = vant.create_model("resnet18")
    noisy = vant.create_model("resnet18")
    vant.inject_noise_(noisy)
    noisy.load_state_dict(clean.state_dict())  # strict
    clean.load_state_dict(noisy.state_dict())  # strict


def test_errors_name_the_problem():
    model = vant.create_model("lenet5")
    with pytest.raises(ValueError, match="'nope.*'"):
        vant.inject_noise_(model, ["conv1", "nope.*"])
    assert not vant.noise_sites(model)  # nothing half-injected
    vant.inject_noise_(model)
    with pytest.raises(RuntimeError, match="already has noise sites"):
        vant.inject_noise_(model)
    with pytest.raises(KeyError, match="no noise site named 'fc9'"):
        vant.set_sigma_(model, {"fc9": 1.0})
    with pytest.raises(KeyError, match="out of range"):
        vant.set_sigma_(model, {99: 1.0})
    with pytest.raises(ValueError, match="unknown noise kind"):
        vant.inject_noise_(vant.create_model("lenet5"), kind="gauss")
    with pytest.raises(RuntimeError, match="no noise sites"):
        vant.remove_noise_(vant.create_model("lenet5"))
    with pytest.raises(ValueError, match="unknown model"):
        vant.create_model("resnet17")


def test_site_selection_by_pattern_type_and_filter():
    model = vant.create_model("resnet18")
    names = vant.inject_noise_(model, ["input", "layer1.*"], types=(nn.Conv2d,))
    assert names == ["input", "layer1.0.conv1", "layer1.0.conv2", "layer1.1.conv1", "layer1.1.conv2"]
    vant.remove_noise_(model)
    names = vant.inject_noise_(model, lambda m, n: n.startswith("layer4") and isinstance(m, nn.ReLU))
    assert names == ["layer4.0.relu", "layer4.1.relu"]


def test_walking_noise_touches_only_the_chosen_site():
    torch.manual_seed(0)
    model = vant.create_model("lenet5").eval()
    names = vant.inject_noise_(model)
    x = torch.randn(2, 3, 32, 32)
    ref = model(x)
    draws = {}
    for name, site in vant.noise_sites(model).items():
        site.register_forward_hook(lambda mod, i, o, name=name: draws.__setitem__(name, not torch.equal(i[0], o)))
    for index in (0, 5, len(names) - 1):
        vant.set_sigma_(model, {index: 0.5})
        out = model(x)
        assert [n for n, changed in draws.items() if changed] == [names[index]]
        assert not torch.equal(out, ref)
    vant.set_sigma_(model, {"fc3": 0.5})
    model(x)
    assert [n for n, changed in draws.items() if changed] == ["fc3"]


def test_every_parameter_gets_a_gradient_in_a_noisy_training_step():
    for name in ("lenet5", "resnet18"):
        model = vant.create_model(name).train()
        vant.inject_noise_(model)
        vant.set_sigma_(model, torch.rand(4))
        loss = nn.functional.cross_entropy(model(torch.randn(4, 3, 32, 32)), torch.randint(10, (4,)))
        loss.backward()
        missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
        assert not missing, missing


def test_torchvision_models_take_noise():
    for name in ("resnet18", "mobilenet_v3_small"):
        model = torchvision.models.get_model(name, weights=None, num_classes=10).eval()
        names = vant.inject_noise_(model)
        assert len(names) > 10
        vant.set_sigma_(model, 0.1)
        assert model(torch.randn(2, 3, 64, 64)).shape == (2, 10)


def test_sequential_root_and_children_get_hosts_that_do_not_change_forward():
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Sequential(nn.Linear(8, 2)))
    ref = model(torch.ones(1, 4))
    names = vant.inject_noise_(model, ["input", "2"], types=(nn.Sequential,))
    assert names == ["input", "2"]
    assert torch.equal(model(torch.ones(1, 4)), ref)  # silent sites, and nothing appended to the Sequential
    vant.set_sigma_(model, {"input": 100.0})
    assert not torch.equal(model(torch.ones(1, 4)), ref)


def test_changing_sigma_does_not_recompile():
    compiles = []

    def counting_backend(gm, example_inputs):
        compiles.append(gm)
        return gm.forward

    torch._dynamo.reset()
    model = vant.create_model("lenet5")
    vant.inject_noise_(model)
    compiled = torch.compile(model, backend=counting_backend)
    x = torch.randn(4, 3, 32, 32)
    vant.set_sigma_(model, 0.3)
    compiled(x)
    after_scalar = len(compiles)
    for s in (0.7, 1.9, 0.01):
        vant.set_sigma_(model, s)
        compiled(x)
    assert len(compiles) == after_scalar
    vant.set_sigma_(model, torch.rand(4))
    compiled(x)
    after_vector = len(compiles)
    outs = []
    for _ in range(3):
        vant.set_sigma_(model, torch.rand(4) * 3)
        outs.append(compiled(x))
    assert len(compiles) == after_vector
    assert not torch.equal(outs[0], outs[1])  # the noise really is drawn inside the compiled graph

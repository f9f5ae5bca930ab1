"""Library inputs are checked like CLI inputs (issue 12, principle 7): a bad argument is an error of
the right type whose message names the problem, before anything is changed."""
import numpy as np
import pytest
import torch
from torch import nn

import vant
from vant.core.noise import NoiseSite, check_sigma
from vant.core.samplers import ConstantSampler, EmpiricalSampler, VantSampler, WarmupSampler, make_sampler

NAN, INF = float("nan"), float("inf")


@pytest.fixture
def model():
    m = vant.create_model("lenet5")
    vant.inject_noise_(m)  # 12 sites: input, conv1, relu1, pool1, conv2, relu2, pool2, fc1, relu3, fc2, relu4, fc3
    return m


def sigmas(model):
    return {name: site.sigma.clone() for name, site in vant.noise_sites(model).items()}


# ---- set_sigma_: the level ----------------------------------------------------------------------

@pytest.mark.parametrize("sigma, error, match", [
    (-1.0, ValueError, r"finite number >= 0, got -1\.0"),
    (-1, ValueError, r"finite number >= 0, got -1\.0"),
    (NAN, ValueError, r"finite number >= 0, got nan"),
    (INF, ValueError, r"finite number >= 0, got inf"),
    (-INF, ValueError, r"finite number >= 0, got -inf"),
    (np.float32(-0.5), ValueError, r"got -0\.5"),
    (True, TypeError, r"must be a number.*got bool True"),
    ("0.5", TypeError, r"must be a number.*got str '0\.5'"),
    (None, TypeError, r"must be a number.*mapping.*got NoneType"),
    ([0.1, 0.2], TypeError, r"must be a number, a 0-dim or \[batch\] tensor.*got list"),
    (torch.tensor(-0.5), ValueError, r"finite and >= 0; got -0\.5"),
    (torch.tensor([0.1, -0.2, 0.3]), ValueError, r"1 of 3 entries.*sigma\[1\] = -0\.2"),
    (torch.tensor([0.1, NAN, INF, -INF, -1.0]), ValueError, r"4 of 5 entries.*sigma\[1\] = nan, sigma\[2\] = inf.*\.\.\."),
    (torch.tensor([0, -1]), ValueError, r"sigma\[1\] = -1"),
    (torch.ones(4, 1), ValueError, r"0-dim or a \[batch\] tensor, got shape \(4, 1\)"),
    (torch.tensor([True, False]), TypeError, r"real tensor, got dtype torch\.bool"),
    (torch.ones(2, dtype=torch.complex64), TypeError, r"real tensor, got dtype torch\.complex64"),
])
def test_set_sigma_refuses_a_bad_level(model, sigma, error, match):
    vant.set_sigma_(model, 0.25)
    before = sigmas(model)
    with pytest.raises(error, match=match):
        vant.set_sigma_(model, sigma)
    after = sigmas(model)
    assert all(torch.equal(before[n], after[n]) for n in before)  # refused before any site changed


@pytest.mark.parametrize("sigma, error, match", [
    ({"fc3": -1.0}, ValueError, r"sigma for site 'fc3' must be a finite number >= 0, got -1\.0"),
    ({3: NAN}, ValueError, r"site 'pool1'.*got nan"),
    ({"input": torch.tensor([0.1, INF])}, ValueError, r"site 'input'.*sigma\[1\] = inf"),
    ({"conv1": True}, TypeError, r"site 'conv1' must be a number.*bool"),
    ({"fc9": 1.0}, KeyError, r"no noise site named 'fc9'; sites \(index: name\) are 0: 'input', 1: 'conv1'.*11: 'fc3'"),
    ({12: 1.0}, KeyError, r"site index 12 out of range: the model has 12 sites, indices 0\.\.11 \(or -12\.\.-1\).*0: 'input'"),
    ({-13: 1.0}, KeyError, r"site index -13 out of range"),
    ({1.5: 1.0}, TypeError, r"keys are site names or indices, got float 1\.5.*0: 'input'"),
    ({True: 1.0}, TypeError, r"keys are site names or indices, got bool True"),
    ({0: 0.1, "input": 0.2}, ValueError, r"site 'input' is given twice"),
    ({"fc3": {"x": 1.0}}, TypeError, r"site 'fc3' must be a number, a 0-dim or \[batch\] tensor; got dict"),
])
def test_set_sigma_mapping_names_the_site(model, sigma, error, match):
    vant.set_sigma_(model, 0.25)
    before = sigmas(model)
    with pytest.raises(error, match=match):
        vant.set_sigma_(model, sigma)
    after = sigmas(model)
    assert all(torch.equal(before[n], after[n]) for n in before)


@pytest.mark.parametrize("sigma", [0, 0.0, 2, np.float64(0.3), torch.tensor(0.5), torch.tensor([0, 1, 2, 3]),
                                   torch.rand(4, dtype=torch.float64), torch.zeros(4), {}, {np.int64(2): 0.5},
                                   {-1: 0.5, "input": torch.rand(4)}])
def test_set_sigma_accepts_good_levels(model, sigma):
    vant.set_sigma_(model, sigma)
    assert model(torch.randn(4, 3, 32, 32)).isfinite().all()


def test_wrong_batch_size_names_the_expected_shape(model):
    vant.set_sigma_(model, torch.rand(3))
    with pytest.raises(ValueError, match=r"per-sample sigma must have shape \[batch\]=4, got \(3,\)"):
        model(torch.randn(4, 3, 32, 32))


def test_negative_sigma_no_longer_acts_as_its_absolute_value():
    site = NoiseSite("s")
    with pytest.raises(ValueError, match=r"sigma for site 's' must be a finite number >= 0, got -1\.0"):
        site.set(-1.0)
    site.set(1.0)
    assert site.sigma.item() == 1.0 and site.active


def test_set_sigma_needs_a_model_with_sites():
    with pytest.raises(TypeError, match="set_sigma_: model must be a torch.nn.Module, got dict"):
        vant.set_sigma_({"fc1": 1.0}, 0.5)
    with pytest.raises(RuntimeError, match="no noise sites"):
        vant.set_sigma_(nn.Linear(2, 2), 0.5)


def test_values_of_a_tensor_off_the_cpu_are_not_read():
    # A device tensor is checked for dtype and shape only (reading it would synchronise the device);
    # a meta tensor stands in for CUDA here: it has no values to read.
    bad = torch.full((4,), -1.0, device="meta")
    assert check_sigma(bad) is bad
    with pytest.raises(ValueError, match=r"got shape \(4, 1\)"):
        check_sigma(torch.empty(4, 1, device="meta"))
    with pytest.raises(TypeError, match="torch.bool"):
        check_sigma(torch.empty(4, dtype=torch.bool, device="meta"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_sigma_does_not_synchronise():
    model = vant.create_model("lenet5").cuda()
    vant.inject_noise_(model)
    sig = torch.rand(4, device="cuda")
    torch.cuda.set_sync_debug_mode("error")
    try:
        vant.set_sigma_(model, sig)
        vant.set_sigma_(model, torch.rand(4))  # a CPU tensor is checked on the CPU, then copied
        vant.set_sigma_(model, {"fc3": sig})
        vant.set_sigma_(model, -sig)  # not read on CUDA: accepted (acts as |sigma|)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    with pytest.raises(ValueError, match="got -1"):
        vant.set_sigma_(model, -1.0)


# ---- inject_noise_ ------------------------------------------------------------------------------

ACCEPTED = r'"paper", "all", a list of fnmatch patterns over module names \("input" = the network input\), or a callable'


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(sites=None), TypeError, "sites must be " + ACCEPTED + ".*got NoneType None"),
    (dict(sites=3), TypeError, "sites must be " + ACCEPTED + ".*got int 3"),
    (dict(sites=["conv1", 3]), TypeError, r"site patterns must be strings, got int 3 in \['conv1', 3\]; sites must be " + ACCEPTED),
    (dict(sites=[]), ValueError, "sites is empty.*sites must be " + ACCEPTED),
    (dict(sites=()), ValueError, "sites is empty"),
    (dict(sites="papr"), ValueError, r"site pattern 'papr' matches no module; did you mean 'paper'\?; sites must be " + ACCEPTED),
    (dict(sites="everything"), ValueError, r"site pattern 'everything' matches no module; sites must be " + ACCEPTED),
    (dict(sites={"conv1": 0.5}), TypeError, "sites must be " + ACCEPTED + ".*got dict"),
    (dict(sites=nn.Conv2d), TypeError, r"got the class Conv2d \(to select modules by type, pass types=\(Conv2d,\)"),
    (dict(kind="gauss"), ValueError, r"unknown noise kind 'gauss'; choose one of 'add', 'mul', 'mixed'"),
    (dict(kind=None), ValueError, r"unknown noise kind None"),
    (dict(types=3), TypeError, r"types must be a tuple of module classes, got int 3"),
    (dict(types=(nn.Conv2d, int)), TypeError, r"<class 'int'> is not an nn.Module subclass"),
    (dict(ratio=1.5, kind="mixed"), ValueError, r"ratio must be a number in \[0, 1\], got 1\.5"),
    (dict(ratio=NAN, kind="mixed"), ValueError, r"ratio must be a number in \[0, 1\], got nan"),
    (dict(mul_first="yes"), TypeError, r"mul_first must be True or False, got str 'yes'"),
])
def test_inject_noise_refuses_bad_arguments(kwargs, error, match):
    model = vant.create_model("lenet5")
    with pytest.raises(error, match=match):
        vant.inject_noise_(model, **kwargs)
    assert not vant.noise_sites(model)  # nothing half-injected


@pytest.mark.parametrize("fn", [vant.inject_noise_, vant.remove_noise_, vant.select_sites, vant.list_modules])
def test_model_must_be_a_module(fn):
    with pytest.raises(TypeError, match=fn.__name__ + r": model must be a torch\.nn\.Module, got str"):
        fn("lenet5")


def test_a_single_type_and_pattern_string_are_accepted():
    model = vant.create_model("lenet5")
    assert vant.inject_noise_(model, "conv*", types=nn.Conv2d) == ["conv1", "conv2"]


# ---- samplers -----------------------------------------------------------------------------------

@pytest.mark.parametrize("make, error, match", [
    (lambda: ConstantSampler(INF), ValueError, r"sigma must be a finite number >= 0, got inf"),
    (lambda: ConstantSampler(NAN), ValueError, r"sigma must be a finite number >= 0, got nan"),
    (lambda: ConstantSampler(-0.1), ValueError, r"sigma must be a finite number >= 0, got -0\.1"),
    (lambda: ConstantSampler(True), TypeError, r"sigma must be a number, got bool True"),
    (lambda: ConstantSampler("0.5"), TypeError, r"sigma must be a number, got str"),
    (lambda: ConstantSampler(0.5, seed=1.5), TypeError, r"seed must be an integer >= 0, got float 1\.5"),
    (lambda: ConstantSampler(0.5, seed=-1), ValueError, r"seed must be an integer >= 0, got -1"),
    (lambda: VantSampler(INF, 0.2), ValueError, r"sigma_train must be a finite number >= 0, got inf"),
    (lambda: VantSampler(-1.0, 0.2), ValueError, r"sigma_train .* got -1\.0"),
    (lambda: VantSampler(1.0, NAN), ValueError, r"theta must be a finite number >= 0, got nan"),
    (lambda: VantSampler(1.0, -0.2), ValueError, r"theta .* got -0\.2"),
    (lambda: VantSampler(1.0, 0.2, alpha=INF), ValueError, r"alpha must be a finite number >= 0, got inf"),
    (lambda: VantSampler(1.0, 0.2, alpha=None), TypeError, r"alpha must be a number, got NoneType"),
    (lambda: VantSampler(1.0, 0.2, mode="gamma"), ValueError, r"unknown VANT sampler 'gamma'; choose one of"),
    (lambda: EmpiricalSampler([]), ValueError, r"at least one sigma value"),
    (lambda: EmpiricalSampler(torch.tensor([])), ValueError, r"at least one sigma value"),
    (lambda: EmpiricalSampler([0.1, NAN]), ValueError, r"empirical sigma value \[1\] must be a finite number >= 0, got nan"),
    (lambda: EmpiricalSampler([0.1, 0.2, INF]), ValueError, r"value \[2\] .* got inf"),
    (lambda: EmpiricalSampler(torch.tensor([0.1, -0.2])), ValueError, r"value \[1\] .* got -0\.2"),
    (lambda: EmpiricalSampler("0.5"), TypeError, r"sequence of numbers, got str"),
    (lambda: EmpiricalSampler(0.5), TypeError, r"sequence of numbers, got float"),
    (lambda: WarmupSampler(ConstantSampler(1.0), 1.0, 0), ValueError, r"warm-up epochs must be an integer >= 1, got 0"),
    (lambda: WarmupSampler(ConstantSampler(1.0), 1.0, 2.5), TypeError, r"warm-up epochs must be an integer >= 1, got float 2\.5"),
    (lambda: WarmupSampler(ConstantSampler(1.0), NAN, 3), ValueError, r"sigma_train must be a finite number >= 0, got nan"),
    (lambda: WarmupSampler(0.5, 1.0, 3), TypeError, r"after warm-up must be a SigmaSampler, got float"),
    (lambda: make_sampler("sgd", 1.0), ValueError, r"unknown noise method 'sgd'; choose clean, nt, vant or empirical"),
    (lambda: make_sampler(None), ValueError, r"unknown noise method None"),
    (lambda: make_sampler("vant", 1.0, theta=0.2, warmup_epochs=-1), ValueError, r"warmup_epochs must be an integer >= 0, got -1"),
    (lambda: make_sampler("nt", INF), ValueError, r"sigma must be a finite number >= 0, got inf"),
    (lambda: make_sampler("empirical"), ValueError, r"at least one sigma value"),
])
def test_sampler_parameters_are_checked(make, error, match):
    with pytest.raises(error, match=match):
        make()


SAMPLERS = [ConstantSampler(0.5), VantSampler(0.5, 0.2), EmpiricalSampler([0.1, 0.2]),
            WarmupSampler(ConstantSampler(1.0), 1.0, 2)]


@pytest.mark.parametrize("sampler", SAMPLERS, ids=lambda s: type(s).__name__)
@pytest.mark.parametrize("batch_size, epoch, error, match", [
    (0, 0, ValueError, r"batch_size must be an integer >= 1, got 0"),
    (-3, 0, ValueError, r"batch_size must be an integer >= 1, got -3"),
    (3.0, 0, TypeError, r"batch_size must be an integer >= 1, got float 3\.0"),
    (True, 0, TypeError, r"batch_size must be an integer >= 1, got bool True"),
    (4, -1, ValueError, r"epoch must be an integer >= 0, got -1"),
    (4, "1", TypeError, r"epoch must be an integer >= 0, got str '1'"),
])
def test_sampler_calls_are_checked(sampler, batch_size, epoch, error, match):
    with pytest.raises(error, match=match):
        sampler(batch_size, epoch)


@pytest.mark.parametrize("sampler", SAMPLERS, ids=lambda s: type(s).__name__)
def test_samplers_accept_numpy_ints(sampler):
    s = sampler(np.int64(5), np.int64(1))
    assert s.shape == (5,) and s.isfinite().all() and (s >= 0).all()


def test_make_sampler_takes_tensor_values():
    s = make_sampler("empirical", values=torch.tensor([0.1, 0.3]), warmup_epochs=2)
    assert torch.allclose(s(3, 1), torch.full((3,), 0.2))  # the ramp ends at the values' mean

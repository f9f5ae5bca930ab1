"""QAT with Brevitas: bit widths, scales, the same noise sites as the float model, resume, errors, runs."""
import importlib.util
import sys

import pytest
import torch
from torch import nn

import vant
from tests.helpers import tiny_config
from vant.config import ConfigError, build_config, resolve
from vant.core.inject import select_sites

from vant.baselines.qat import act_max_val, quantize_, weight_levels

needs_brevitas = pytest.mark.skipif(importlib.util.find_spec("brevitas") is None, reason='needs pip install "vant[qat]"')


def _qlenet(bits=4, scale=None):
    torch.manual_seed(0)
    return quantize_(vant.create_model("lenet5", 10, 3), bits, scale)


@needs_brevitas
@pytest.mark.parametrize("bits", [4, 8])
def test_weights_take_at_most_2_to_the_b_values_per_channel(bits):
    import brevitas.nn as qnn

    model = _qlenet(bits)
    layers = [m for m in model.modules() if isinstance(m, (qnn.QuantConv2d, qnn.QuantLinear))]
    assert len(layers) == 5
    for m in layers:
        levels = weight_levels(m)
        assert int(levels.max()) <= 2**bits and len(levels) == m.weight.shape[0]
    # per-channel conv scales (one per output channel), one scale for a whole linear layer
    assert model.conv1.quant_weight().scale.numel() == 6
    assert model.fc1.quant_weight().scale.numel() == 1
    assert torch.unique(model.fc1.quant_weight().value).numel() <= 2**bits
    assert not model.conv1.bias_quant.is_quant_enabled and not model.conv1.input_quant.is_quant_enabled


@needs_brevitas
def test_quantized_models_keep_the_float_sites_and_parameter_names():
    for name, kwargs, n in (("lenet5", {}, 12), ("resnet18", {"width": 8}, 33)):
        float_model = vant.create_model(name, 10, 3, **kwargs)
        q = quantize_(vant.create_model(name, 10, 3, **kwargs), 4)
        assert select_sites(q) == select_sites(float_model) and len(select_sites(q)) == n
        assert set(float_model.state_dict()) <= set(q.state_dict())
        # "all" stops at a quantized layer: no site inside a quantizer
        assert all(".act_quant" not in s and ".weight_quant" not in s for s in select_sites(q, "all"))
    # the shared block ReLU of ResNet stays one (quantized) module, called twice
    assert q.layer1[0].relu is q.layer1[0].relu and type(q.layer1[0].relu).__name__ == "QuantReLU"


@needs_brevitas
def test_noise_lands_after_the_quantized_activation():
    model = _qlenet(4, scale=0.5)
    vant.inject_noise_(model)
    seen = {}
    model.relu1.register_forward_hook(lambda m, a, out: seen.setdefault("relu1", out.detach()))
    x = torch.randn(16, 3, 32, 32)
    vant.set_sigma_(model, 0.0)
    model.eval()(x)
    clean = seen.pop("relu1")
    steps = clean / 0.5
    assert torch.equal(steps, steps.round()) and clean.min() >= 0 and clean.max() <= act_max_val(4, 0.5)
    assert act_max_val(4, 0.5) == 7.5 and act_max_val(8, 1.0) == 256 and act_max_val(5, 1.0) == 31
    vant.set_sigma_(model, {"relu1": 0.3})  # only the site on the quantized activation
    model(x)
    noisy = seen.pop("relu1")
    # exactly N(0, 0.3^2) on top of the quantized levels: added after quantisation, never rounded away
    assert 0.29 < (noisy - clean).std() < 0.31 and abs((noisy - clean).mean()) < 0.01


@needs_brevitas
def test_learned_scale_statistics_phase_survives_a_checkpoint():
    a = _qlenet(4).train()
    for _ in range(3):
        a(torch.randn(8, 3, 32, 32))
    b = _qlenet(4)
    b.load_state_dict(a.state_dict())
    scaling = [m for m in b.modules() if hasattr(m, "collect_stats_steps")]
    assert scaling and all(m.counter == 3 for m in scaling)  # Brevitas alone would end the phase here
    x = torch.randn(8, 3, 32, 32)
    assert torch.equal(a.train()(x), b.train()(x))


@needs_brevitas
def test_quantize_refuses_what_it_cannot_do():
    with pytest.raises(ValueError, match=r"cannot quantize module '1' \(GELU\)"):
        quantize_(nn.Sequential(nn.Linear(3, 3), nn.GELU()), 4)
    with pytest.raises(RuntimeError, match="already quantized"):
        quantize_(_qlenet(), 4)
    with pytest.raises(ValueError, match=r"bit width must be an integer in \[2, 16\]"):
        quantize_(vant.create_model("lenet5"), 1)


@pytest.mark.parametrize("override,message", [
    ("model.quant_bits=1", r"model.quant_bits must be an integer in \[2, 16\]"),
    ("model.quant_bits=17", r"model.quant_bits must be an integer in \[2, 16\]"),
    ("model.quant_act_scale=2", "quant_act_scale is set but model.quant_bits is null"),
])
def test_bad_qat_config_is_an_error(override, message):
    with pytest.raises(ConfigError, match=message):
        resolve(build_config(None, [override]))


@needs_brevitas
def test_qat_with_noise_run_trains_sweeps_and_reports(tmp_path):
    from vant.pipeline.runs import execute

    run = execute(tiny_config(tmp_path, "model.quant_bits=4", "model.quant_act_scale=1", "train.method=nt",
                              "train.epochs=1", "train.test_every=0", "eval.sigmas=[0.1,0.5]", "eval.repeats=1"),
                  progress=False)
    s = run.summary()
    assert (s["quant_bits"], s["quant_act_scale"], s["method"], s["optimizer"]) == (4, 1.0, "nt", "adam")
    assert run.path.name.startswith("lenet5-digits-nt0.5-w4a4-s1-")
    assert s["auc"] > 0 and all(r["sigma_mean"] == pytest.approx(0.5) for r in run.epochs())  # noise in training
    ckpt = torch.load(run.path / "checkpoint.pt", weights_only=True)
    fresh = quantize_(vant.create_model("lenet5", 10, 1), 4, 1.0)
    vant.inject_noise_(fresh)
    fresh.load_state_dict(ckpt["model"])  # strict: the checkpoint is exactly the quantized model's state
    rows = run.rows()
    cfg = run.config
    cfg.eval.sigmas, cfg.eval.repeats = [0.1, 0.5, 1.0], 2  # a later sweep loads the QAT checkpoint
    more = execute(cfg, progress=False)
    assert more.path == run.path and more.rows()[: len(rows)] == rows and len(more.rows()) == len(rows) + 4
    assert more.summary()["eval"]["sigmas"] == [0.1, 0.5, 1.0]


def test_missing_brevitas_is_a_clear_cli_error(tmp_path, monkeypatch, capsys):
    from vant.cli import main

    for name in ("brevitas", "brevitas.nn"):  # importing them now fails, as on an install without the extra
        monkeypatch.setitem(sys.modules, name, None)
    assert main(["train", "-q", "model.quant_bits=4", "device=cpu", f"out_dir={tmp_path}"]) == 2
    err = capsys.readouterr().err
    assert 'vant: error: quantization-aware training needs Brevitas, an optional extra: pip install "vant[qat]"' in err
    assert not any(tmp_path.iterdir())  # failed before creating a run directory

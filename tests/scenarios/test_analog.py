"""The aihwkit bridge: device-model options, stored and reused rows, calibration against a closed form.

The first half needs no aihwkit (argument checks, the missing-extra message, tables, figures and the
scenario made from calibration rows); the second half skips without it (`pip install "vant[aihwkit]"`).
"""
import json
import math
import shutil
import sys

import numpy as np
import pytest
import torch
from torch import nn

from vant.cli import main
from vant.scenarios import analog, calibrate as cal
from vant.scenarios.analog import DeviceModel, cell_seed, device_model, parse_times, summarise_rows, time_label
from vant.scenarios.spec import load_scenario

IDEAL = dict(prog_noise_scale=0, read_noise_scale=0, drift_scale=0, out_noise=0, out_bound=0, inp_res=0, out_res=0,
             drift_compensation=False)


# ----------------------------------------------------------------------------- without aihwkit


def test_device_model_options_are_parsed_by_type_and_checked():
    assert device_model() == DeviceModel()
    dm = device_model("pcm", ["drift_compensation=off", "out_noise=0.04", "bound_management=iterative"])
    assert dm.drift_compensation is False and dm.out_noise == 0.04 and dm.bound_management == "iterative"
    assert device_model("pcm", {"g_max": "10"}).g_max == 10.0
    assert dm.key() != DeviceModel().key() and "without" in dm.describe() and "out_noise=0.04" in dm.describe()
    for bad, match in ((["nope=1"], "unknown device option 'nope'"), (["out_noise"], "KEY=VALUE"),
                       (["out_noise=-0.1"], "out_noise must be >= 0"), (["g_max=0"], "g_max must be > 0"),
                       (["out_noise=nan"], "finite"), (["drift_compensation=maybe"], "true or false"),
                       (["inp_res=2"], "fraction"), (["bound_management=clip"], "none, iterative")):
        with pytest.raises(ValueError, match=match):
            device_model("pcm", bad)
    with pytest.raises(ValueError, match="unknown device model 'rram'"):
        device_model("rram")


def test_times_are_seconds_sorted_and_checked():
    assert parse_times("3600,1, 86400") == [1.0, 3600.0, 86400.0]
    assert parse_times([0, 2.5]) == [0.0, 2.5]
    for bad in ("1,1", "-1", "1,x", "", "inf"):
        with pytest.raises(ValueError, match="--times"):
            parse_times(bad)
    assert [time_label(t) for t in (1, 90, 3600, 86400, 2592000, 31536000, 0)] == \
        ["1 s", "1.5 min", "1 h", "1 d", "30 d", "1 y", "0 s"]


def test_a_cell_seed_depends_on_the_chip_and_the_time_only():
    assert cell_seed(1000, 1.0) == cell_seed(1000, 1) and 0 <= cell_seed(1000, 1.0) < 2 ** 56
    assert len({cell_seed(s, t) for s in (1000, 1001) for t in (1.0, 3600.0)}) == 4


def test_command_line_errors_are_one_line_before_anything_runs(tmp_path, capsys):
    for argv, match in (([str(tmp_path), "--device-model", "pcm", "-D", "nope=1"], "unknown device option"),
                        ([str(tmp_path)], "either --scenario or --device-model"),
                        ([str(tmp_path), "--scenario", "chip_lot", "--device-model", "pcm"], "either --scenario"),
                        ([str(tmp_path), "--scenario", "chip_lot", "--times", "1"], "go with --device-model"),
                        ([str(tmp_path), "--device-model", "pcm", "--times", "1,1"], "names a time twice"),
                        ([str(tmp_path), "--device-model", "pcm", "--images", "0"], "--images must be >= 1")):
        assert main(["evaluate", *argv]) == 2
        err = capsys.readouterr().err
        assert match in err and len(err.strip().splitlines()) == 1, err
    assert not any(tmp_path.iterdir())
    assert main(["calibrate", str(tmp_path), "-D", "t0=-1"]) == 2
    assert "t0 must be > 0" in capsys.readouterr().err


def test_without_aihwkit_the_error_names_the_extra(monkeypatch, trained_run, capsys):
    monkeypatch.setitem(sys.modules, "aihwkit", None)
    with pytest.raises(analog.MissingDependency, match=r'pip install "vant\[aihwkit\]"'):
        analog.require_aihwkit()
    out = trained_run.path / "analog"
    had = set(out.rglob("rows.csv")) if out.exists() else set()
    assert main(["evaluate", str(trained_run.path), "--device-model", "pcm", "--times", "7", "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("vant: error: the device-model evaluation needs aihwkit") and len(err.splitlines()) == 1
    assert 'pip install "vant[aihwkit]"' in err
    assert set(out.rglob("rows.csv")) == had


def _rows(times, repeats, seed, acc):
    return [dict(time=t, repeat=r, seed=seed + r, read_seed=cell_seed(seed + r, t), correct=0, total=10,
                 accuracy=acc(t, r)) for r in range(repeats) for t in times]


def test_summary_table_and_figure_from_stored_rows(tmp_path):
    times = [1.0, 3600.0, 31536000.0]
    rows = _rows(times, 3, 5, lambda t, r: 80 - math.log10(t + 1) + r)
    rows += _rows(times, 1, 99, lambda t, r: 0.0)  # another seed's rows: not this evaluation's
    s = summarise_rows(rows, times, 3, 5)
    assert s["per_time"]["mean"] == pytest.approx([80 - math.log10(t + 1) + 1 for t in times])
    assert s["per_time"]["std"] == pytest.approx([1.0] * 3) and s["per_time"]["label"] == ["1 s", "1 h", "1 y"]
    with pytest.raises(RuntimeError, match="2 of 3 repeats"):
        summarise_rows([r for r in rows if (r["seed"], r["time"]) != (7, 31536000.0)], times, 3, 5)
    s.update(run="r", label="NT@1", digital_accuracy=81.0, images=10)
    table = analog.format_table([s])
    assert "| NT@1 | 81.00 | 80.70 ± 1.00 | 77.44 ± 1.00 |" in table and "3 programmed chips, 10 test images" in table
    assert analog.device_figure([("NT@1", s)], tmp_path / "f.png").stat().st_size > 0


def test_layer_moments_match_numpy():
    g = torch.Generator().manual_seed(0)
    y = torch.randn(3000, generator=g) * 2 + 1
    a = 0.7 * y + 0.3 * torch.randn(3000, generator=g) + 0.1
    m = cal._Moments()
    m.add(y[:1000], a[:1000])
    m.add(y[1000:], a[1000:])
    st = m.stats()
    yn, an = y.double().numpy(), a.double().numpy()
    gain = (an * yn).sum() / (yn * yn).sum()
    assert st["n"] == 3000 and st["sigma"] == pytest.approx(np.std(an - yn), rel=1e-9)
    assert st["act_std"] == pytest.approx(np.std(yn), rel=1e-9) and st["gain"] == pytest.approx(gain, rel=1e-9)
    assert st["resid"] == pytest.approx(np.std(an - gain * yn), rel=1e-7)


def test_calibration_rows_become_a_scenario_a_vant_run_can_be_fitted_to(tmp_path):
    times, layers = [1.0, 86400.0], ["conv1", "fc1"]
    rows = [dict(time=t, repeat=r, seed=7 + r, read_seed=0, layer=n, n=10, sigma=s, act_std=2.0, gain=0.9, resid=s)
            for r in range(2) for t in times for n, s in zip(layers, (0.1 * (r + 1) * (1 + (t > 1)), 0.3))]
    s = cal.summarise_calibration(rows, times, 2, 7)
    rms = np.sqrt((np.array([[0.1, 0.2], [0.2, 0.4]]) ** 2 + 0.09) / 2)
    assert np.allclose(s["rms"], rms) and s["layers"] == layers
    assert np.allclose(s["relative_mean"][0], [0.075, 0.15])
    scn = cal.calibration_scenario(s, DeviceModel(), "run-x")
    assert scn.kind == "fleet_trajectory" and scn.sigma.shape == (2, 2) and np.allclose(scn.sigma, rms, atol=1e-6)
    p = tmp_path / "s.yaml"
    from vant.scenarios.spec import save_scenario
    save_scenario(scn, p)
    back = load_scenario(p)
    assert np.allclose(back.sigma, scn.sigma) and back.time_unit == "s"
    from vant.scenarios.fit import scenario_settings
    fit = scenario_settings(back, "vant_fit")
    assert fit["train.method"] == "vant" and fit["train.sigma"] == pytest.approx(back.mean(), abs=1e-4)
    with pytest.raises(RuntimeError, match="miss layer 'fc1'"):
        cal.summarise_calibration(rows[:-1], times, 2, 7)


# ----------------------------------------------------------------------------- with aihwkit


def _need_aihwkit():
    return pytest.importorskip("aihwkit.simulator.configs", reason='needs aihwkit: pip install "vant[aihwkit]"')


def test_the_unfold_convolution_computes_aihwkit_s_patches():
    _need_aihwkit()
    from aihwkit.nn import AnalogConv2d
    from aihwkit.simulator.configs import TorchInferenceRPUConfig

    torch.manual_seed(0)
    conv = nn.Conv2d(3, 5, 3, stride=2, padding=1)
    cfg = TorchInferenceRPUConfig()
    cfg.forward.is_perfect = True  # the exact product: only the patches can differ
    ours, theirs = analog._unfold_conv_class().from_digital(conv, cfg), AnalogConv2d.from_digital(conv, cfg)
    x = torch.randn(4, 3, 9, 9)
    with torch.no_grad():
        assert torch.equal(ours.eval()(x), theirs.eval()(x))
        assert torch.allclose(ours(x), conv(x), atol=1e-5)


def test_an_ideal_device_is_the_plain_model_and_no_vant_site_survives(trained_run):
    _need_aihwkit()
    from vant.core.noise import NoiseSite
    from vant.pipeline.runs import load_trained

    model, test, _ = load_trained(trained_run, "cpu")
    a = analog.to_analog(model, device_model("pcm", IDEAL))
    assert not any(isinstance(m, NoiseSite) for m in a.modules())
    assert any(isinstance(m, NoiseSite) for m in model.modules())  # the run's model is left as it was
    analog.program_(a, 0)
    analog.drift_(a, 3600)
    x = test.normalise(test.x[:64])
    with torch.no_grad():
        assert torch.allclose(a(x), analog.plain_copy(model)(x), atol=1e-4)


def test_evaluate_device_model_writes_rows_and_reuses_them(trained_run, tmp_path, capsys, monkeypatch):
    _need_aihwkit()
    run = tmp_path / "run"
    shutil.copytree(trained_run.path, run, ignore=shutil.ignore_patterns("analog"))
    argv = ["evaluate", str(run), "--device-model", "pcm", "--times", "1,3600", "--repeats", "2", "--images", "120", "-q"]
    assert main(argv) == 0
    first = capsys.readouterr().out
    lines = [ln.split() for ln in first.splitlines() if ln.strip().split()[:1] in (["1"], ["3600"])]
    assert [ln[:3] for ln in lines] == [["1", "1", "s"], ["3600", "1", "h"]]  # one accuracy and its spread per time
    assert all(0 <= float(ln[3]) <= 100 and float(ln[4]) >= 0 for ln in lines)
    (folder,) = (run / "analog").iterdir()
    rows = (folder / "rows.csv").read_text()
    assert len(rows.splitlines()) == 1 + 4 and json.loads((folder / "summary.json").read_text())["images"] == 120

    def refuse(*a, **k):
        raise AssertionError("asked again: nothing should be computed")

    with monkeypatch.context() as m:
        m.setattr(analog, "to_analog", refuse)
        m.setattr(analog, "load_trained", refuse)
        assert main(argv) == 0
    assert capsys.readouterr().out == first and (folder / "rows.csv").read_text() == rows

    assert json.loads((folder / "device.json").read_text())["aihwkit"] == analog.aihwkit_version()
    meta = json.loads((folder / "device.json").read_text())
    (folder / "device.json").write_text(json.dumps(dict(meta, aihwkit="0.0.1")))
    with pytest.raises(analog.CheckpointError, match="computed with aihwkit 0.0.1"):  # no mixing of versions
        analog.evaluate_device(run, DeviceModel(), [1, 60], repeats=2, images=120, progress=False)
    assert analog.evaluate_device(run, DeviceModel(), [1, 3600], repeats=2, images=120, progress=False)["aihwkit"] \
        == "0.0.1"  # what is stored is still read
    (folder / "device.json").write_text(json.dumps(meta))

    drifted = []
    real_drift = analog.drift_
    monkeypatch.setattr(analog, "drift_", lambda a, t: (drifted.append(t), real_drift(a, t)))
    s = analog.evaluate_device(run, DeviceModel(), [1, 60, 3600], repeats=2, images=120, progress=False)
    assert drifted == [60.0, 60.0] and (folder / "rows.csv").read_text().startswith(rows)
    # a cell does not depend on the others: t = 60 alone, in a fresh copy, gives the same accuracies
    alone = tmp_path / "alone"
    shutil.copytree(trained_run.path, alone, ignore=shutil.ignore_patterns("analog"))
    s2 = analog.evaluate_device(alone, DeviceModel(), [60], repeats=2, images=120, progress=False)
    assert s2["per_time"]["values"][0] == s["per_time"]["values"][1]


def test_calibration_measures_the_output_noise_in_closed_form():
    """Only output noise s, no quantization, no bound: a Linear layer's error is s * max|W| * max|x|
    per input row (aihwkit maps max|W| to full scale and divides each row by its abs max)."""
    _need_aihwkit()
    torch.manual_seed(0)
    plain = nn.Sequential(nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 4)).eval()
    dm = device_model("pcm", dict(IDEAL, out_noise=0.05))
    a = analog.to_analog(plain, dm)
    analog.program_(a, 0)
    analog.drift_(a, 1.0)
    x = [torch.randn(2000, 16) * torch.rand(2000, 1) for _ in range(2)]
    st = cal.layer_errors(plain, a, x, cal.analog_layers(plain))
    with torch.no_grad():
        h = torch.relu(plain[0](torch.cat(x)))
    for name, inp in (("0", torch.cat(x)), ("2", h)):
        w = dict(plain.named_modules())[name].weight.detach()
        expected = 0.05 * w.abs().max() * inp.abs().amax(1).pow(2).mean().sqrt()
        n = st[name]["n"]
        assert n == 4000 * w.shape[0]
        assert st[name]["sigma"] == pytest.approx(float(expected), rel=6 / math.sqrt(2 * n) + 0.01)
        assert st[name]["gain"] == pytest.approx(1.0, abs=0.01)


def test_calibrate_and_predict_on_a_run(trained_run, tmp_path, capsys):
    _need_aihwkit()
    run = tmp_path / "run"
    shutil.copytree(trained_run.path, run, ignore=shutil.ignore_patterns("analog"))
    out = tmp_path / "device.yaml"
    argv = ["calibrate", str(run), "--times", "1,86400", "--repeats", "2", "--images", "100", "--predict",
            "--eval-images", "100", "-o", str(out), "-q"]
    assert main(argv) == 0
    text = capsys.readouterr().out
    scn = load_scenario(out)
    assert scn.kind == "fleet_trajectory" and scn.sigma.shape == (2, 2) and (scn.sigma > 0).all()
    assert "train.method=vant train.sigma=" in text and "mean |vant - aihwkit|" in text
    assert main(argv) == 0 and capsys.readouterr().out == text  # stored rows: the same numbers again

"""Scenario files: they materialise as written, round-trip, reject bad input by naming the field,
and the fitted/empirical samplers reproduce a scenario's sigma distribution."""
import math

import numpy as np
import pytest
import torch
import yaml

from vant.core.samplers import EmpiricalSampler, VantSampler
from vant.scenarios.fit import empirical_values, fit_vant
from vant.scenarios.spec import ScenarioError, list_scenarios, load_scenario, save_scenario, scenario_from_dict

UNITS = {"sigma": "activation_std", "time": "h"}


def spec(**kw):
    return {"name": "t", "units": dict(UNITS), **kw}


def test_bundled_scenarios_load_and_round_trip(tmp_path):
    assert {"drifting_fleet", "temperature_cycle", "chip_lot"} <= set(list_scenarios())
    for name in list_scenarios():
        a = load_scenario(name)
        b = load_scenario(save_scenario(a, tmp_path / f"{name}.yaml"))
        assert b.spec == a.spec and np.array_equal(a.sigma, b.sigma) and np.array_equal(a.weights, b.weights)
        assert a.weights.sum() == pytest.approx(1.0) and (a.sigma >= 0).all()


def test_parametric_drift_and_time_weights_are_as_written():
    s = scenario_from_dict(spec(kind="trajectory", trajectory={"duration": 4, "steps": 5, "drift": [
        {"kind": "rise", "from": 0.2, "to": 0.6, "power": 2},
        {"kind": "cycle", "amplitude": 0.1, "period": 4, "phase": 0}]}))
    t = np.arange(5.0)
    expected = 0.2 + 0.4 * (t / 4) ** 2 + 0.1 * np.sin(2 * math.pi * t / 4)
    assert np.allclose(s.times, t) and np.allclose(s.sigma[0], expected)
    assert np.allclose(s.weights[0], [1 / 8, 1 / 4, 1 / 4, 1 / 4, 1 / 8])  # trapezoid on the true times
    # uneven points: the time mean is the integral of the piecewise-linear sigma(t) over the span
    p = scenario_from_dict(spec(kind="trajectory", trajectory={"points": [[0, 0.2], [1, 0.4], [4, 0.4]]}))
    assert p.mean() == pytest.approx((0.5 * (0.2 + 0.4) * 1 + 0.4 * 3) / 4)


def test_fleet_kinds_and_combination():
    q = scenario_from_dict(spec(kind="fleet", fleet={"distribution": "lognormal", "mean": 0.5, "std": 0.1,
                                                      "devices": 2000, "draw": "quantile"}))
    assert q.mean() == pytest.approx(0.5, rel=2e-3) and q.std() == pytest.approx(0.1, rel=2e-2)
    r1 = scenario_from_dict(spec(kind="fleet", fleet={"distribution": "uniform", "low": 0.2, "high": 0.4, "devices": 5, "seed": 3}))
    r2 = scenario_from_dict(spec(kind="fleet", fleet={"distribution": "uniform", "low": 0.2, "high": 0.4, "devices": 5, "seed": 3}))
    assert np.array_equal(r1.sigma, r2.sigma) and ((r1.sigma >= 0.2) & (r1.sigma <= 0.4)).all()
    both = dict(kind="fleet_trajectory", fleet={"values": [1.0, 2.0]}, trajectory={"points": [[0, 0.1], [2, 0.3]]})
    assert np.allclose(scenario_from_dict(spec(**both)).sigma, [[0.1, 0.3], [0.2, 0.6]])
    assert np.allclose(scenario_from_dict(spec(**both, combine="offset")).sigma, [[1.1, 1.3], [2.1, 2.3]])
    fixed = scenario_from_dict({"name": "f", "kind": "fixed", "sigma": 0.7, "units": {"sigma": "activation_std"}})
    assert fixed.sigma.shape == (1, 1) and fixed.mean() == 0.7 and fixed.std() == 0


def test_csv_sources_are_read_relative_to_the_file_and_inlined(tmp_path):
    (tmp_path / "log.csv").write_text("t,sigma\n0,0.3\n5,0.5\n10,0.4\n")
    (tmp_path / "lab.csv").write_text("device,t,sigma\n1,0,0.3\n1,5,0.4\n2,0,0.5\n2,5,0.6\n")
    (tmp_path / "a.yaml").write_text(yaml.safe_dump(spec(kind="trajectory", trajectory={"csv": "log.csv"})))
    (tmp_path / "b.yaml").write_text(yaml.safe_dump(spec(kind="fleet_trajectory", measurements={"csv": "lab.csv"})))
    a, b = load_scenario(tmp_path / "a.yaml"), load_scenario(tmp_path / "b.yaml")
    assert a.spec["trajectory"] == {"source": "log.csv", "points": [[0.0, 0.3], [5.0, 0.5], [10.0, 0.4]]}
    assert np.allclose(b.sigma, [[0.3, 0.4], [0.5, 0.6]]) and np.allclose(b.times, [0, 5])
    moved = tmp_path / "elsewhere" / "b.yaml"  # the saved spec is self-contained
    assert np.array_equal(load_scenario(save_scenario(b, moved)).sigma, b.sigma)


@pytest.mark.parametrize("data,message", [
    ({"name": "x", "kind": "fixed", "sigma": 0.5}, "units: is required"),
    (spec(kind="fixed", sigma=0.5, units={"sigma": "percent"}), "units.sigma: unsupported unit 'percent'"),
    (spec(kind="fleeet"), "kind: unknown value 'fleeet'"),
    (spec(kind="fixed", sigma=-0.1), "sigma: must be >= 0"),
    (spec(kind="fixed", sigma="loud"), "sigma: expected a number"),
    (spec(kind="fixed", sigma=0.5, fleet={"values": [1]}), "fleet: not used by kind 'fixed'"),
    (spec(kind="fixed", sigma=0.5, colour="red"), "colour: unknown key"),
    (spec(kind="fleet", fleet={"distribution": "normal", "mean": 0.5, "std": 0.1, "devics": 3}), "fleet.devices: is required (found 'devics': a typo?)"),
    (spec(kind="fleet", fleet={"distribution": "normal", "mean": 0.5, "std": 0.1, "devices": 3, "sed": 1}), "fleet.sed: unknown key"),
    (spec(kind="fleet", fleet={"distribution": "normal", "mean": 0.5, "std": -1, "devices": 3}), "fleet.std: must be >= 0"),
    (spec(kind="fleet", fleet={"distribution": "normal", "mean": 0.1, "std": 0.2, "devices": 50}), "gave a negative sigma"),
    (spec(kind="fleet", fleet={"distribution": "normal", "mean": 0.5, "std": 0.1}), "fleet.devices: is required"),
    (spec(kind="fleet", fleet={"values": [0.3, -0.2]}), "fleet.values[1]: expected a number >= 0"),
    (spec(kind="trajectory", trajectory={"points": [[0, 0.3], [0, 0.4]]}), "trajectory.points: times must be strictly increasing"),
    (spec(kind="trajectory", trajectory={"points": [[0, 0.3, 1]]}), "trajectory.points[0]: expected [t, sigma]"),
    (spec(kind="trajectory", trajectory={"points": [[0, 0.3]], "duration": 3, "drift": []}), "give exactly one of points, csv or drift"),
    (spec(kind="trajectory", trajectory={"duration": 10, "drift": {"kind": "cycle", "amplitude": 0.2, "period": 5}}),
     "trajectory.drift: sigma(t) is negative"),
    (spec(kind="trajectory", trajectory={"duration": 10, "drift": {"kind": "cycle", "amplitude": 0.2, "period": 0}}),
     "trajectory.drift[0].period: must be > 0"),
    (spec(kind="trajectory", trajectory={"duration": 10, "drift": {"kind": "ramp"}}), "trajectory.drift[0].kind: unknown value 'ramp'"),
    ({"name": "x", "kind": "trajectory", "units": {"sigma": "activation_std"}, "trajectory": {"points": [[0, 1]]}},
     "units.time: is required"),
    (spec(kind="fleet_trajectory", measurements={"rows": [[1, 0, 0.3], [1, 1, 0.3], [2, 0, 0.4]]}),
     "device 2 is logged at other times than device 1"),
    (spec(kind="fleet_trajectory", fleet={"values": [1]}, trajectory={"points": [[0, 0.1]]}, combine="product"),
     "combine: unknown value 'product'"),
])
def test_malformed_scenarios_are_one_line_errors_naming_the_field(data, message):
    with pytest.raises(ScenarioError) as e:
        scenario_from_dict(data, source="s.yaml")
    text = str(e.value)
    assert message in text and text.startswith("s.yaml: ") and "\n" not in text, text


def test_missing_files_and_bad_yaml(tmp_path):
    with pytest.raises(ScenarioError, match="does not exist"):
        load_scenario(tmp_path / "nope.yaml")
    (tmp_path / "bad.yaml").write_text("kind: [fleet\n")
    with pytest.raises(ScenarioError, match="bad.yaml: not valid YAML"):
        load_scenario(tmp_path / "bad.yaml")
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(spec(kind="trajectory", trajectory={"csv": "gone.csv"})))
    with pytest.raises(ScenarioError, match=r"trajectory.csv: file .*gone.csv does not exist"):
        load_scenario(tmp_path / "c.yaml")
    (tmp_path / "d.csv").write_text("time,level\n0,0.3\n")
    (tmp_path / "d.yaml").write_text(yaml.safe_dump(spec(kind="trajectory", trajectory={"csv": "d.csv"})))
    with pytest.raises(ScenarioError, match="needs a column 'sigma'"):
        load_scenario(tmp_path / "d.yaml")


def _draw(sampler, n=200_000):
    x = sampler(n).double()
    return x.mean().item(), x.std().item()


def test_fitted_vant_sampler_reproduces_the_scenario_mean_and_spread():
    scn = load_scenario("drifting_fleet")
    fit = fit_vant(scn.mean(), scn.std())
    assert fit["feasible"] and fit["alpha"] > 0
    sampler = VantSampler(fit["sigma_train"], fit["theta"], fit["alpha"], seed=0)
    m, s = _draw(sampler)
    # 200k draws: the sample mean's std is ~2.6e-4 here, the sample std's ~2e-4
    assert m == pytest.approx(scn.mean(), abs=2e-3) and s == pytest.approx(scn.std(), abs=2e-3)
    # the empirical sampler fed the scenario's quantiles reproduces it too (weights included)
    m, s = _draw(EmpiricalSampler(empirical_values(scn), seed=0))
    assert m == pytest.approx(scn.mean(), abs=3e-3) and s == pytest.approx(scn.std(), rel=0.03)


def test_fit_that_cannot_match_keeps_the_mean_and_says_so():
    fit = fit_vant(0.5, 0.5)  # std/mean = 1 > sqrt(pi/2 - 1): a half-normal on a floor >= 0 cannot be this wide
    assert not fit["feasible"] and fit["floor"] == 0 and fit["alpha"] == 0
    m, s = _draw(VantSampler(fit["sigma_train"], fit["theta"], fit["alpha"], seed=1))
    assert m == pytest.approx(0.5, abs=3e-3) and s == pytest.approx(fit["achieved_std"], abs=3e-3) and s < 0.4
    edge = fit_vant(1.0, math.sqrt(math.pi / 2 - 1))  # exactly a half-normal resting on 0
    assert edge["feasible"] and edge["floor"] == pytest.approx(0, abs=1e-12)
    with pytest.raises(ValueError):
        fit_vant(0.0, 0.1)


def test_empirical_values_of_equal_weight_points_are_the_points():
    scn = load_scenario("chip_lot")
    assert empirical_values(scn) == sorted(scn.spec["fleet"]["values"])
    assert torch.tensor(empirical_values(load_scenario("drifting_fleet"))).numel() == 156

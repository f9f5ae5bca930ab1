"""Scenario evaluation and walking noise against a model whose accuracy is known by hand, and on a
real run: cached rows, the command line, figures."""
import json
import math
import shutil
import subprocess
import sys
from statistics import NormalDist

import numpy as np
import pytest
import torch
from torch import nn

from vant.data import DeviceBatches
from vant.core.inject import inject_noise_
from vant.scenarios.evaluate import evaluate_points, evaluate_run, summarise
from vant.scenarios.spec import scenario_from_dict
from vant.scenarios.sensitivity import log_grid, walking_noise

PHI = NormalDist().cdf
N = 20_000  # test images of the hand model; one point's accuracy then has std <= 0.36 pp


def hand_model(sites):
    """Two classes at x = +1 and x = -1, logits (x, -x). With noise sigma on the input only, an
    image is right with probability Phi(1/sigma); on the logits only, Phi(sqrt(2)/sigma)."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(1, 2, bias=False))
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor([[1.0], [-1.0]]))
    inject_noise_(model, sites)
    y = torch.arange(N) % 2
    x = (1.0 - 2.0 * y.float()).view(N, 1, 1, 1)
    # mean 0 and std 1/255 make the batches' normalisation (x - 255*mean) / (255*std) the identity
    batches = DeviceBatches(x, y, (0.0,), (1 / 255,), 5000, torch.device("cpu"), train=False)
    return model.eval(), batches


def test_scenario_evaluation_matches_the_hand_computed_accuracy():
    model, test = hand_model(["input"])
    scn = scenario_from_dict({"name": "hand", "kind": "fleet_trajectory", "units": {"sigma": "activation_std", "time": "day"},
                              "fleet": {"values": [1.0, 2.0]}, "combine": "scale",
                              "trajectory": {"points": [[0, 0.5], [1, 1.0], [3, 2.0]]}})
    rows = evaluate_points(model, test, scn.sigma.ravel().tolist(), 2, seed=0, chunk=4)
    assert len(rows) == 12 and sorted({r["seed"] for r in rows}) == [0, 1, 100_003, 100_004]  # 2 chunks x 2 repeats
    acc = np.zeros((6, 2))
    for r in rows:
        acc[r["point"], r["repeat"]] = r["accuracy"]
    exact = 100 * np.vectorize(lambda s: PHI(1 / s))(scn.sigma)  # [device, time]
    s = summarise(acc.reshape(2, 3, 2), scn, threshold=65.0, worst_q=0.05)
    w = scn.weights  # devices 1/2 each, times by the trapezoid rule: (0.5, 1.5, 1) / 3
    assert np.allclose(w, [[1 / 12, 1 / 4, 1 / 6]] * 2)
    se = 100 * math.sqrt(np.sum(w**2 * (exact / 100) * (1 - exact / 100)) / (N * 2))
    assert abs(s["expected"] - np.sum(w * exact)) < 4 * se, (s["expected"], np.sum(w * exact), se)
    assert np.allclose(acc.reshape(2, 3, 2).mean(2), exact, atol=1.5)
    # point accuracies are >= 4 pp from 65 %: the share below is exact; the worst 5 % is the worst point
    assert s["below"] == pytest.approx(w[1, 2])  # only device 2 at t=3 (sigma 4: 59.9 %) is below 65 %
    assert s["devices_ever_below"] == 0.5 and s["devices_below"] == 0.0
    assert s["worst"] == pytest.approx(acc.mean(1).min()) and s["worst_mean"] == pytest.approx(acc.mean(1).min())
    spread = math.sqrt(np.sum(w * (exact - np.sum(w * exact)) ** 2))
    assert s["spread"] == pytest.approx(spread, abs=1.0)
    assert s["per_time"]["acc_mean"] == pytest.approx(list(exact.mean(0)), abs=1.5)


def test_walking_noise_finds_each_sites_half_way_sigma():
    model, test = hand_model(["input", "1"])  # the input and the logits
    out = walking_noise(model, test, log_grid(0.3, 30, 16), num_classes=2, repeats=1, seed=0)
    assert out["clean_accuracy"] == 100.0 and out["chance"] == 50.0
    by = {t["site"]: t for t in out["sites"]}
    q = NormalDist().inv_cdf(0.75)  # accuracy 75 % = half-way from 100 to 50
    assert by["input"]["sigma_mid"] == pytest.approx(1 / q, rel=0.05)
    assert by["1"]["sigma_mid"] == pytest.approx(math.sqrt(2) / q, rel=0.05)
    assert by["input"]["rank"] == 1 and by["1"]["rank"] == 2
    # both sites noisy: logit difference 2 + sigma*(2 eps_in + eps1 - eps2) has std sigma*sqrt(6): Phi(2/(sqrt(6) sigma))
    assert by["all sites"]["sigma_mid"] == pytest.approx(2 / math.sqrt(6) / q, rel=0.05)
    again = walking_noise(model, test, log_grid(0.3, 30, 16), num_classes=2, repeats=1, seed=0, rows=out["rows"])
    assert again["rows"] == out["rows"]  # nothing recomputed


@pytest.fixture
def run_copy(tmp_path, trained_run):
    dst = tmp_path / "runs" / trained_run.path.name  # the shared fixture run stays untouched
    shutil.copytree(trained_run.path, dst)
    return dst


SCN = """name: small
units: {sigma: activation_std, time: day}
kind: fleet_trajectory
fleet: {values: [0.8, 1.2]}
trajectory: {points: [[0, 0.3], [1, 0.6], [2, 0.9]]}
"""


def test_run_evaluation_is_cached_and_more_repeats_only_fill_gaps(run_copy, tmp_path):
    from vant.scenarios.spec import load_scenario

    (tmp_path / "s.yaml").write_text(SCN)
    scn = load_scenario(tmp_path / "s.yaml")
    a = evaluate_run(run_copy, scn, repeats=2, threshold=50, progress=False)
    d = run_copy / "scenarios"
    [sdir] = list(d.iterdir())
    for f in ("rows.csv", "scenario.yaml", "summary.json", "scenario.png"):
        assert (sdir / f).is_file(), f
    rows = (sdir / "rows.csv").read_text()
    assert len(rows.splitlines()) == 1 + 6 * 2
    b = evaluate_run(run_copy, scn, repeats=2, threshold=50, progress=False)
    assert (sdir / "rows.csv").read_text() == rows and a["expected"] == b["expected"]
    c = evaluate_run(run_copy, scn, repeats=3, progress=False)
    assert (sdir / "rows.csv").read_text().startswith(rows) and len((sdir / "rows.csv").read_text().splitlines()) == 1 + 6 * 3
    assert json.loads((sdir / "summary.json").read_text())["repeats"] == 3 and c["below"] is None
    # higher sigma, lower accuracy: the scenario really applies each point's sigma
    pt = a["per_time"]["acc_mean"]
    assert pt[0] > pt[2] + 5


def vant(*args):
    return subprocess.run([sys.executable, "-m", "vant.cli", *args], capture_output=True, text=True)


def test_cli_evaluate_compare_and_sensitivity(run_copy, tmp_path):
    (tmp_path / "s.yaml").write_text(SCN)
    other = tmp_path / "runs" / "second"
    shutil.copytree(run_copy, other)
    out = tmp_path / "cmp"
    r = vant("evaluate", str(run_copy), str(other), "--scenario", str(tmp_path / "s.yaml"), "--repeats", "1",
             "--threshold", "50", "-o", str(out), "-q")
    assert r.returncode == 0, r.stderr
    table = [l for l in r.stdout.splitlines() if l.startswith("| ")]
    assert len(table) == 3 and "devices ever below 50%" in table[0]
    assert table[1].split("|")[3:] == table[2].split("|")[3:]  # same model, same seeds: same numbers
    assert (out / "scenario.png").is_file() and (out / "results.md").is_file()
    bad = tmp_path / "bad.yaml"
    bad.write_text(SCN.replace("activation_std", "volts"))
    r = vant("evaluate", str(run_copy), "--scenario", str(bad))
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        "vant: error: bad.yaml: units.sigma: unsupported unit 'volts'; sigma must be given as 'activation_std' (std of "
        "the additive activation noise, in activation units, as train.sigma)"]
    r = vant("sensitivity", str(run_copy), "--min", "0.1", "--max", "10", "--per-decade", "1", "--repeats", "1", "-q")
    assert r.returncode == 0, r.stderr
    summary = json.loads((run_copy / "sensitivity" / "summary.json").read_text())
    assert len(summary["sites"]) == 13 and summary["sigmas"] == [0.1, 1.0, 10.0]  # LeNet-5: 12 sites + all
    assert (run_copy / "sensitivity" / "sensitivity.png").is_file()
    assert sum(l.startswith("| ") for l in r.stdout.splitlines()) == 14
    r = vant("sensitivity", str(run_copy), "--sites", "nope*")
    assert r.returncode == 2 and "match none of the model's sites" in r.stderr
    r = vant("list", "scenarios")
    assert "drifting_fleet" in r.stdout


def test_fixed_scenario_agrees_with_the_fixed_sigma_sweep(run_copy):
    """A fixed-sigma scenario is the plain sweep at that sigma: same distribution of accuracy."""
    from vant.pipeline.evaluate import sweep
    from vant.pipeline.runs import Run, load_trained

    scn = scenario_from_dict({"name": "fixed", "kind": "fixed", "sigma": 0.5, "units": {"sigma": "activation_std"}})
    s = evaluate_run(run_copy, scn, repeats=8, progress=False)
    model, test, _ = load_trained(Run.open(run_copy), "cpu")
    ref = np.array([r["accuracy"] for r in sweep(model, test, [0.5], 8, seed=5000, batched=False)])
    assert s["devices"] == 1 and s["spread"] == 0 and s["worst"] == s["expected"]
    se = math.sqrt(s["expected_std"] ** 2 / 8 + ref.var(ddof=1) / 8)
    assert abs(s["expected"] - ref.mean()) < 4 * se + 0.5, (s["expected"], ref.mean(), se)


def test_a_qat_run_is_evaluated_like_any_other(tmp_path):
    pytest.importorskip("brevitas")
    from tests.helpers import tiny_config
    from vant.pipeline.runs import execute

    run = execute(tiny_config(tmp_path, "model.quant_bits=4", "train.method=nt", "train.epochs=1", "train.test_every=0",
                              "eval.sigmas=[0.5,1.0]", "eval.repeats=1"), progress=False)
    scn = scenario_from_dict({"name": "lot", "kind": "fleet", "units": {"sigma": "activation_std"},
                              "fleet": {"values": [0.3, 0.6]}})
    s = evaluate_run(run, scn, repeats=1, threshold=50, progress=False)
    assert s["devices"] == 2 and 0 <= s["expected"] <= 100 and s["below"] in (0.0, 0.5, 1.0)

"""Every figure vant writes has the values it plots beside it: ``x.png`` -> ``x.csv``.

The report kinds are drawn from a results table made up here (no training); the run, scenario,
sensitivity and ``vant plot`` figures from the session's tiny trained run. Each test then walks its
output and checks that every PNG has its CSV, and checks values against the numbers they came from.
"""
import csv
import json
import shutil

import pytest
import yaml

from vant.experiments.report import make_report
from vant.experiments.table import write_results

SIGMAS = [0.1, 0.3]
KEYS = ["train.sigma", "train.alpha", "train.theta", "model.name", "data.name", "train.method"]


def read(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def pngs_have_their_values(root):
    """Every PNG under ``root`` has a non-empty CSV of the same stem beside it; returns the PNGs."""
    figures = sorted(root.rglob("*.png"))
    for png in figures:
        data = png.with_suffix(".csv")
        assert data.is_file(), f"{png} has no {data.name}"
        assert read(data), f"{data} holds no rows"
    return figures


def row(variant, method, sigma, acc, alpha=0.45, theta=0.0):
    """A finished results row whose curve is ``acc`` over SIGMAS (std 0.5 everywhere)."""
    r = {"variant": variant, "train.sigma": sigma, "train.alpha": alpha, "train.theta": theta, "model.name": "lenet5",
         "data.name": "digits", "train.method": method, "group": "g0", "run": f"{variant}-{sigma}-{alpha}-{theta}",
         "run_dir": f"../runs/{variant}-{sigma}-{alpha}-{theta}", "status": "ok", "error": "", "clean_acc": 90.0,
         "acc_at_sigma_train": acc[SIGMAS.index(sigma)] if sigma in SIGMAS else acc[0], "acc_at_sigma_train_std": 0.5,
         "auc": 0.2 * sum(acc) / 2, "epochs": 1, "final_train_loss": 1.0, "train_seconds": 1.0}
    for s, a in zip(SIGMAS, acc):
        r[f"acc@{s:g}"], r[f"std@{s:g}"] = a, 0.5
    return r


ROWS = ([row("clean", "clean", 0.0, [70.0, 40.0]), row("NT", "nt", 0.1, [85.0, 50.0]), row("NT", "nt", 0.3, [80.0, 60.0])]
        + [row("VANT", "vant", s, [84.0 - 10 * t + a, 55.0 + 10 * t + 3 * a + 5 * s], a, t)
           for s in SIGMAS for a in (0.25, 0.45) for t in (0.05, 0.25)])
REPORTS = {"curves": {"kind": "curves", "panels": {"ladder": ["NT"], "all": ["clean", "NT", "VANT"]}},
           "heatmap": {"kind": "heatmap", "variant": "VANT", "x": "train.alpha", "y": "train.theta", "nt_row": False},
           "table1": {"kind": "table1"}, "bars": {"kind": "bars"}, "compare": {"kind": "compare"}}


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    out = {}
    for kind, report in REPORTS.items():
        d = tmp_path_factory.mktemp(kind)
        variants = {"clean": {"train.method": "clean"}, "NT": {"train.method": "nt"}, "VANT": {"train.method": "vant"}}
        (d / "grid.yaml").write_text(yaml.safe_dump({"name": kind, "variants": variants, "report": report}))
        write_results(d, [dict(r) for r in ROWS], KEYS)
        out[kind] = (d, make_report(d))
    return out


def test_every_report_kind_has_its_values_beside_its_figure(reports):
    for kind, (d, paths) in reports.items():
        assert [p.name for p in paths] == ["report.png", "report.csv", "report.md"], kind
        assert pngs_have_their_values(d) == [d / "report.png"]


def test_report_values_are_the_plotted_numbers(reports):
    from vant.experiments.table import read_results

    results = {k: read_results(d) for k, (d, _) in reports.items()}
    curves = read(reports["curves"][0] / "report.csv")
    nt01 = [r for r in curves if r["panel"] == "ladder" and r["series"] == "NT σ_train=0.1"]
    assert [(float(r["sigma"]), float(r["accuracy"]), float(r["std"])) for r in nt01] == [(0.1, 85.0, 0.5), (0.3, 50.0, 0.5)]
    ub = [r for r in curves if r["panel"] == "ladder" and r["series"].startswith("upper bound")]
    assert [float(r["accuracy"]) for r in ub] == [85.0, 60.0] and all(r["std"] == "" for r in ub)  # the matched diagonal
    assert {r["panel"] for r in curves} == {"ladder", "all"}

    heat = read(reports["heatmap"][0] / "report.csv")
    assert len(heat) == 2 * 2 * 2  # metrics (rauc, pa) x theta x alpha; sigma_train is not an axis here
    by_cell = {(r["metric"], float(r["train.alpha"]), float(r["train.theta"])): r for r in heat}
    vant = [r for r in results["heatmap"] if r["variant"] == "VANT"]
    for metric in ("rauc", "pa"):  # two runs share each (alpha, theta) cell; the figure shows one of them
        for a in (0.25, 0.45):
            for t in (0.05, 0.25):
                cell = by_cell[(metric, a, t)]
                assert float(cell["value"]) in [pytest.approx(r[metric]) for r in vant
                                                if r["train.alpha"] == a and r["train.theta"] == t]
    assert sum(r["selected"] == "True" for r in heat) == 2  # one selected cell, framed in both panels

    t1 = read(reports["table1"][0] / "report.csv")
    assert [float(r["train.sigma"]) for r in t1] == SIGMAS
    nt = {r["train.sigma"]: r["rauc"] for r in results["table1"] if r["variant"] == "NT"}
    assert [float(r["nt_rauc"]) for r in t1] == [pytest.approx(nt[s]) for s in SIGMAS]

    bars = read(reports["bars"][0] / "report.csv")
    assert {r["group"] for r in bars} == {"digits / lenet5"} and len(bars) == 2
    assert all(r["vant_rauc"] != "" and r["pa"] != "" for r in bars)

    compare = read(reports["compare"][0] / "report.csv")
    assert {r["series"] for r in compare} == {"clean", "NT@0.1", "VANT@0.1", "upper bound (NT, matched)"}
    clean = [float(r["accuracy"]) for r in compare if r["series"] == "clean"]
    assert clean == [70.0, 40.0]


SCN = {"name": "small", "units": {"sigma": "activation_std", "time": "day"}, "kind": "fleet_trajectory",
       "fleet": {"values": [0.8, 1.2]}, "trajectory": {"points": [[0, 0.3], [1, 0.6], [2, 0.9]]}}


def test_run_scenario_sensitivity_and_plot_figures_have_their_values(tmp_path, trained_run):
    from vant.cli import main
    from vant.pipeline.runs import Run
    from vant.scenarios.evaluate import compare_on_scenario
    from vant.scenarios.sensitivity import sensitivity
    from vant.scenarios.spec import scenario_from_dict

    run_dir = tmp_path / "runs" / trained_run.path.name
    shutil.copytree(trained_run.path, run_dir)
    run = Run.open(run_dir)
    fixed = scenario_from_dict({"name": "fixed", "kind": "fixed", "sigma": 0.5, "units": {"sigma": "activation_std"}})
    compare_on_scenario([run], scenario_from_dict(SCN), out_dir=tmp_path / "cmp", progress=False, repeats=1)
    compare_on_scenario([run], fixed, out_dir=tmp_path / "cmp-fixed", progress=False, repeats=1)
    sens = sensitivity(run, [0.1, 1.0, 10.0], repeats=1, progress=False)
    assert main(["plot", str(run_dir), "-o", str(tmp_path / "plot" / "curves.png")]) == 0
    figures = pngs_have_their_values(tmp_path)
    assert len(figures) == 2 + 2 + 2 + 1 + 1  # run (2), per-run scenario dirs (2), comparisons (2), sensitivity, plot

    summary = run.summary()
    curve = read(run_dir / "figures" / "accuracy_vs_sigma.csv")
    assert [float(r["sigma"]) for r in curve] == summary["eval"]["sigmas"]
    assert [float(r["accuracy"]) for r in curve] == summary["eval"]["mean"]
    assert [float(r["std"]) for r in curve] == summary["eval"]["std"]
    plotted = read(tmp_path / "plot" / "curves.csv")  # the same curve, labelled by the run's directory
    assert [r["series"] for r in plotted] == [run_dir.name] * len(curve)
    assert [{k: v for k, v in r.items() if k != "series"} for r in plotted] == \
           [{k: v for k, v in r.items() if k != "series"} for r in curve]
    epochs, training = read(run_dir / "epochs.csv"), read(run_dir / "figures" / "training.csv")
    assert [(float(r["train_loss"]), float(r["test_acc"])) for r in training] == \
           [(float(r["train_loss"]), float(r["test_acc"])) for r in epochs]

    result = json.loads((tmp_path / "cmp" / "results.json").read_text())
    per_time = result["rows"][0]["per_time"]
    values = read(tmp_path / "cmp" / "scenario.csv")
    over_time = [r for r in values if r["panel"] == "accuracy over time"]
    assert [float(r["accuracy"]) for r in over_time] == pytest.approx(per_time["acc_mean"], abs=0, rel=1e-12)
    devices = [r for r in values if r["panel"] == "device accuracy histogram" and r["series"] != "bin edges"]
    assert [float(r["accuracy"]) for r in devices] == pytest.approx(result["rows"][0]["per_device"]["acc_mean"])
    fixed_values = read(tmp_path / "cmp-fixed" / "scenario.csv")
    assert len(fixed_values) == 1 and fixed_values[0]["panel"] == "expected accuracy"

    heat = [r for r in read(run_dir / "sensitivity" / "sensitivity.csv") if r["panel"] == "accuracy"]
    site = next(t for t in sens["sites"] if t["index"] == 0)
    assert [float(r["accuracy"]) for r in heat if r["site"] == site["site"]] == pytest.approx(site["accuracy"])

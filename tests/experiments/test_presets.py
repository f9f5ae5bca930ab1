"""The bundled experiment presets that have their own commands: demo, baselines (Fig. 3 on the
digits) and the scenario comparison. Each is a grid spec run by the grid machinery and drawn by a
report kind; here on their smoke profiles, and the selection rule on made-up rows."""
import math

import pytest

from vant.cli import main
from vant.experiments.report import compare_table
from vant.experiments.spec import expand, load_spec
from vant.experiments.table import best_by_auc, read_results


def test_best_by_auc_picks_the_highest_and_the_first_on_ties():
    rows = [dict(run="a", auc=10.0), dict(run="b", auc=30.0), dict(run="c", auc=30.0), dict(run="d", auc=math.nan)]
    assert best_by_auc(rows)["run"] == "b"
    assert best_by_auc([dict(run="x", auc=None), dict(run="y", auc=1.0)])["run"] == "y"


@pytest.mark.parametrize("preset,runs", [("demo", 7), ("baselines", 8), ("scenario_compare", 5)])
def test_command_presets_expand_to_their_runs(preset, runs):
    jobs = expand(load_spec(preset))
    assert len({j.path for j in jobs}) == runs
    assert all(j.config.data.name == "digits" and j.config.device == "cpu" for j in jobs)


def test_scenario_variants_take_their_noise_from_the_scenario():
    from vant.scenarios.fit import empirical_values, fit_vant
    from vant.scenarios.spec import load_scenario

    jobs = {j.variant: j.config.train for j in expand(load_spec("scenario_compare"))}
    scn = load_scenario("drifting_fleet")
    fit = fit_vant(scn.mean(), scn.std())
    assert jobs["NT"].method == "nt" and jobs["NT"].sigma == round(scn.mean(), 2)
    assert jobs["VANT"].alpha == 0.45 and jobs["VANT"].theta == pytest.approx(0.4 * jobs["VANT"].sigma, abs=0.06)
    assert jobs["VANT fitted"].alpha == round(fit["alpha"], 4) and jobs["VANT fitted"].theta == round(fit["theta"], 4)
    assert jobs["empirical"].sigma_values == empirical_values(scn)


@pytest.mark.slow
def test_demo_prints_the_comparison(demo_run):
    out, proc = demo_run  # `vant demo` at 2 epochs and 2 repeats, shared with the reproducibility test
    assert proc.returncode == 0, proc.stderr
    rows = read_results(out)
    table, result = compare_table(rows)
    assert table in proc.stdout and [r["model"] for r in result["rows"]] == ["clean", "NT@0.7", "VANT@0.7"]
    assert "upper bound (NT matched)" in table and (out / "report.png").is_file()
    assert len(list((out / "runs").glob("*/summary.json"))) == 7


@pytest.mark.slow
def test_baselines_smoke_trains_every_method_and_picks_by_auc(tmp_path, capsys):
    pytest.importorskip("brevitas")
    out = tmp_path / "fig3"
    assert main(["baselines", "-q", "-p", "smoke", "--out-dir", str(out)]) == 0
    printed = capsys.readouterr().out
    rows = read_results(out)
    assert sorted(r["variant"] for r in rows) == ["NT", "QAT-4b", "QAT-4b-const", "SAM", "clean"]
    assert all(r["status"] == "ok" for r in rows)
    assert "Best SAM by AUC" in printed and "Best QAT-4b-const by AUC" in printed
    assert (out / "report.png").is_file()


@pytest.mark.slow
def test_scenario_compare_smoke_evaluates_every_variant_on_the_scenario(tmp_path, capsys):
    out = tmp_path / "sc"
    assert main(["scenario-compare", "-q", "-p", "smoke", "--out-dir", str(out)]) == 0
    printed = capsys.readouterr().out
    for label in ("clean", "NT@", "VANT (σ=", "VANT fitted (σ=", "empirical"):
        assert label in printed
    assert "expected acc [%]" in printed and (out / "report.png").is_file()
    assert len(list((out / "runs").glob("*/scenarios/chip_lot-*/rows.csv"))) == 5


@pytest.mark.parametrize("profile", ["full", "smoke"])
def test_every_preset_and_its_report_are_valid_in_every_profile(profile):
    from vant.experiments.report import check_report
    from vant.experiments.spec import list_presets

    for name in list_presets():
        spec = load_spec(name, profile)
        assert expand(spec) and check_report(spec)[0] in ("curves", "heatmap", "table1", "bars", "compare", "scenario")

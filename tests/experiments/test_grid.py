"""Grids: expansion, the selection rule, resuming after SIGKILL, failures, executors, presets end to end."""
import csv
import signal
import subprocess
import sys
import time

import pytest
import yaml

from vant.config import ConfigError
from vant.experiments.grid import run_grid
from vant.experiments.spec import expand, load_spec
from vant.experiments.table import derive, group_key, read_results, select_setting
from vant.experiments.report import format_table1, table1

QUIET = dict(progress=False, log=lambda *a, **k: None)
PRESETS = ["fig2", "fig3", "fig4", "fig5", "fig6", "table1", "fig7"]
#: base of the small grids the tests write: LeNet-5 on the digits, on the CPU
BASE = {"data": {"name": "digits"}, "model": {"name": "lenet5"}, "device": "cpu",
        "eval": {"sigmas": [0.1, 0.3, 0.5], "repeats": 1}, "train": {"epochs": 1, "test_every": 0}}


def write_spec(path, **spec):
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def table(grid_dir):
    """The results table without its timing column (wall-clock time differs from run to run)."""
    with open(grid_dir / "results.csv", newline="") as f:
        return [{k: v for k, v in row.items() if k != "train_seconds"} for row in csv.DictReader(f)]


# ----------------------------------------------------------------------------- selection and metrics

def cell(alpha, theta, pa, rauc):
    return {"train.alpha": alpha, "train.theta": theta, "pa": pa, "rauc": rauc}


def test_two_step_selection_on_made_up_metrics():
    cells = [cell(0.45, 0.05, 0.8, 60.0),
             cell(0.45, 0.25, -0.4, 90.0),   # feasible within the 0.5 pp tolerance: the answer
             cell(0.45, 0.45, -2.0, 97.0),   # the best rAUC, but loses 2 pp at sigma_train
             cell(0.25, 0.25, None, 99.0),   # no PA (its NT partner is missing): never chosen
             cell(0.65, 0.15, 0.0, 85.0)]
    assert select_setting(cells) is cells[1]
    assert select_setting(cells, tolerance=0.0) is cells[4]  # the paper's literal "PA >= 0"
    assert select_setting(cells, tolerance=3.0) is cells[2]
    assert select_setting([cell(0.45, 0.05, -1.0, 50.0)]) is None
    tie = [cell(0.45, 0.05, 0.1, 80.0), cell(0.45, 0.15, 0.3, 80.0)]
    assert select_setting(tie) is tie[1]  # equal rAUC: the higher PA


def _row(variant, method, sigma, theta, curve, acc_at, group="g", **extra):
    row = {"variant": variant, "train.method": method, "train.sigma": sigma, "train.alpha": 0.45,
           "train.theta": theta, "group": group, "run": f"{variant}-{sigma}-{theta}", "status": "ok",
           "acc_at_sigma_train": acc_at}
    row.update({f"acc@{s:g}": a for s, a in curve.items()}, **extra)
    return row


def test_derive_rauc_and_pa_by_hand():
    grid = [0.1, 0.3, 0.5]
    nt = {s: _row("NT", "nt", s, 0.0, dict(zip(grid, acc)), acc[i])
          for i, (s, acc) in enumerate(zip(grid, [[90, 50, 20], [70, 80, 40], [50, 60, 60]]))}
    vant = _row("VANT", "vant", 0.3, 0.25, dict(zip(grid, [85, 78, 50])), 78.0)
    other = _row("VANT", "vant", 0.3, 0.25, dict(zip(grid, [85, 78, 50])), 78.0, group="h")  # no ladder there
    failed = dict(vant, status="failed")
    rows = derive(list(nt.values()) + [vant, other, failed])
    ub_auc = 0.2 * (90 + 80) / 2 + 0.2 * (80 + 60) / 2  # the matched diagonal 90, 80, 60
    v = rows[3]
    assert v["rauc"] == pytest.approx(100 * (0.2 * (85 + 78) / 2 + 0.2 * (78 + 50) / 2) / ub_auc)
    assert v["pa"] == pytest.approx(78.0 - 80.0)
    assert rows[0]["rauc"] == pytest.approx(100 * (0.2 * 140 / 2 + 0.2 * 70 / 2) / ub_auc) and rows[0]["pa"] is None
    assert rows[4]["rauc"] is None and rows[4]["pa"] is None  # a group without its ladder
    assert rows[5]["rauc"] is None  # failed rows get nothing


def test_table1_selects_per_sigma_and_prints_the_paper_layout():
    rows = [_row("NT", "nt", 0.3, 0.0, {}, 0, rauc=48.0), _row("NT", "nt", 0.5, 0.0, {}, 0, rauc=58.0)]
    for theta, pa, r in [(0.05, 0.2, 51.0), (0.25, -0.6, 70.0)]:
        rows.append(_row("VANT", "vant", 0.3, theta, {}, 0, pa=pa, rauc=r))
    for theta, pa, r in [(0.05, 1.0, 60.0), (0.25, 0.0, 86.5), (0.45, -3.0, 95.0)]:
        rows.append(_row("VANT", "vant", 0.5, theta, {}, 0, pa=pa, rauc=r))
    cols = table1(rows)
    assert [c["selected"]["train.theta"] for c in cols] == [0.05, 0.25]
    assert [c["nt_rauc"] for c in cols] == [48.0, 58.0] and [c["feasible"] for c in cols] == [1, 2]
    text = format_table1(cols).splitlines()
    assert text[0] == "| σ_train | 0.3 | 0.5 |"
    assert text[3] == "| θ | 0.05 | 0.25 |" and text[4] == "| Preserved Accuracy (pp) | 0.2 | 0.0 |"
    assert text[5] == "| rAUC NT [%] | 48.0 | 58.0 |" and text[6] == "| rAUC VANT [%] | 51.0 | **86.5** |"


# ----------------------------------------------------------------------------- specs

def test_expansion_variants_profiles_and_overrides(tmp_path):
    spec = write_spec(tmp_path / "g.yaml", base=BASE, grid={"train.seed": [0, 1]},
                      variants={"NT": {"train.method": "nt", "grid": {"train.sigma": [0.1, 0.3]}},
                                "VANT": {"train": {"method": "vant", "sigma": 0.3}},
                                "clean": {"train.method": "clean"}},
                      report={"kind": "curves"},
                      profiles={"small": {"grid": {"train.seed": [5]}, "variants": {"clean": None,
                                                                                     "NT": {"grid": {"train.sigma": [0.5]}}}}})
    jobs = expand(load_spec(spec, None))
    assert len(jobs) == 2 * (2 + 1 + 1)
    assert [j.variant for j in jobs[:2]] == ["NT", "NT"] and jobs[0].point == {"train.seed": 0, "train.sigma": 0.1}
    assert jobs[4].config.train.theta == 0.05  # resolved: Table 1's theta at 0.3
    small = expand(load_spec(spec, "small", ["base.train.epochs=2"]))
    assert [(j.variant, j.config.train.sigma, j.config.train.seed, j.config.train.epochs) for j in small] == \
        [("NT", 0.5, 5, 2), ("VANT", 0.3, 5, 2)]
    # the NT and VANT runs of one setting share an upper bound; another data set does not
    other = expand(load_spec(spec, None, ["base.model.name=lenet5_bn"]))[0].config
    assert group_key(jobs[0].config) == group_key(jobs[4].config) != group_key(other)


@pytest.mark.parametrize("preset,points,runs", [("fig2", 14, 14), ("fig3", 13, 13), ("fig4", 26, 25), ("fig5", 123, 123),
                                                 ("fig6", 146, 146), ("table1", 146, 146), ("fig7", 100, 100)])
def test_full_presets_are_valid_and_share_runs(preset, points, runs):
    jobs = expand(load_spec(preset))  # every config of the paper-scale grid checked, nothing run
    assert len(jobs) == points and len({j.path for j in jobs}) == runs
    if preset in ("fig4", "fig5", "fig6", "table1"):  # the ladder of fig2, shared
        assert {j.path for j in expand(load_spec("fig2"))} <= {j.path for j in jobs}
    if preset == "fig7":  # Table 1's theta per sigma_train, alpha 0.45, the CINIC/Tiny recipe
        vant = [j.config.train for j in jobs if j.variant == "VANT" and j.config.data.name == "tinyimagenet"]
        assert {(t.sigma, t.theta) for t in vant} >= {(0.5, 0.25), (1.7, 0.95), (2.1, 0.85)}
        assert all(t.warmup_epochs == 100 and t.weight_decay == 1e-4 and t.epochs == 400 for t in vant)


@pytest.mark.parametrize("spec,message", [
    (dict(base=BASE, grid={"train.sigmaa": [1]}), "unknown config key 'train.sigmaa'"),
    (dict(base=BASE, grid={"train.sigma": 0.5}), "grid.train.sigma: a grid key needs a non-empty list"),
    (dict(base=BASE, variants={"NT": {"train.method": "nt", "train.sigma": -1}}), "variant 'NT'"),
    (dict(base=BASE, variants={"x": {"model.name": "resnet17"}}), "unknown model 'resnet17'"),
    (dict(base=BASE, grids={}), "unknown config key 'grids'"),
])
def test_bad_specs_fail_before_any_run(tmp_path, spec, message):
    path = write_spec(tmp_path / "bad.yaml", **spec)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        expand(load_spec(path))


@pytest.mark.parametrize("report,message", [
    ({"kind": "curvez"}, "report.kind: unknown kind 'curvez'"),
    ({"kind": "curves", "best": ["SAMM"]}, "report names variants ['SAMM']"),
    ({"kind": "heatmap", "variant": "NT", "colour": "red"}, "unknown config key 'report.colour'"),
    ({"kind": "scenario"}, "needs the spec's `scenario`"),
])
def test_bad_report_fails_before_anything_is_written(tmp_path, report, message):
    path = write_spec(tmp_path / "bad.yaml", base=dict(BASE, out_dir=str(tmp_path / "runs")), report=report,
                      variants={"NT": {"train.method": "nt", "train.sigma": 0.1}})
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("[", r"\[")):
        run_grid(load_spec(path), tmp_path / "grid", **QUIET)
    assert not (tmp_path / "grid").exists() and not (tmp_path / "runs").exists()


@pytest.mark.parametrize("text", ["", "# nothing but a comment\n", "description: no runs here\n"])
def test_an_empty_grid_file_is_refused(tmp_path, text):
    path = tmp_path / "empty.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match="needs at least one of base, grid or variants"):
        load_spec(path)


def test_cli_errors_are_one_line(capsys):
    from vant.cli import main

    for args, message in [(["nosuchpreset"], "no grid spec 'nosuchpreset'"),
                          (["fig2", "-p", "tiny"], "fig2.yaml has no profile 'tiny'"),
                          (["fig2", "train.epochs=3"], "run settings go under base.")]:
        assert main(["grid", *args, "--dry-run"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("vant: error:") and message in err, err


@pytest.mark.parametrize("text", ["", "variant,train.method,train.sigma,group,run,run_dir,status\n",
                                  "variant,train.method,train.sigma,group,run,run_dir,status\nNT,nt,0.1,ab,r1,r1,ok\nNT,n"])
def test_report_on_a_damaged_table_is_one_line(tmp_path, capsys, text):
    from vant.cli import main

    (tmp_path / "grid.yaml").write_text(yaml.safe_dump({"name": "g", "base": BASE, "report": {"kind": "curves"}}))
    (tmp_path / "results.csv").write_text(text)
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "results.csv" in err and "run the grid again" in err, err


def test_one_process_per_grid_directory(tmp_path):
    from vant.pipeline.store import RunBusy, lock as _lock

    spec = write_spec(tmp_path / "g.yaml", base=BASE, variants={"NT": {"train.method": "nt", "train.sigma": 0.1}})
    (tmp_path / "gd").mkdir()
    with _lock(tmp_path / "gd", "grid"), pytest.raises(RunBusy, match="grid .*gd is being worked on"):
        run_grid(load_spec(spec), tmp_path / "gd", **QUIET)


# ----------------------------------------------------------------------------- running grids

def _grid_cmd(spec, out):
    return [sys.executable, "-m", "vant.cli", "grid", str(spec), "-q", "--out-dir", str(out), "--no-report"]


@pytest.mark.slow
def test_sigkill_midway_then_rerun_equals_uninterrupted(tmp_path):
    base = dict(BASE, train={"epochs": 2, "test_every": 0})
    spec = write_spec(tmp_path / "g.yaml", base=base,
                      variants={"NT": {"train.method": "nt", "grid": {"train.sigma": [0.1, 0.3]}}})
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    proc = subprocess.Popen(_grid_cmd(spec, killed), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline, ok = time.time() + 300, False
    while time.time() < deadline and proc.poll() is None:
        results = killed / "grids" / "g" / "results.csv"
        if results.is_file() and results.read_text().count(",ok,") >= 1 and any(
                len(p.read_text().splitlines()) >= 2 for p in killed.glob("*nt0.3*/epochs.csv")):
            ok = True  # one run finished, the next one is halfway
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert ok, "the grid never got halfway"
    before = table(killed / "grids" / "g")
    assert [r["status"] for r in before] == ["ok", "pending"]
    r = subprocess.run(_grid_cmd(spec, killed), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "1 done, 1 to run" in r.stdout
    subprocess.run(_grid_cmd(spec, clean), check=True, capture_output=True)
    resumed, uninterrupted = table(killed / "grids" / "g"), table(clean / "grids" / "g")
    assert len(resumed) == 2 and len({r["run"] for r in resumed}) == 2
    assert all(r["status"] == "ok" for r in resumed)
    assert resumed == uninterrupted


@pytest.mark.slow
def test_failing_run_is_recorded_and_the_others_go_on(tmp_path):
    spec = write_spec(tmp_path / "g.yaml", base=BASE, report={"kind": "curves"},
                      variants={"NT": {"train.method": "nt", "train.sigma": 0.1},
                                "diverges": {"train.method": "nt", "train.sigma": 1e38}})
    r = subprocess.run(_grid_cmd(spec, tmp_path) + ["--workers", "2", "--threads", "1"], capture_output=True, text=True)
    assert r.returncode == 1
    assert "1 of 2 grid points did not finish" in r.stderr and "TrainingDiverged" in r.stderr
    rows = read_results(tmp_path / "grids" / "g")
    assert [x["status"] for x in rows] == ["ok", "failed"]
    assert rows[1]["error"].startswith("TrainingDiverged: loss became") and rows[1]["clean_acc"] is None
    assert rows[0]["clean_acc"] > 0 and rows[0]["rauc"] is None  # no ladder in this grid: no upper bound, no rAUC
    assert "TrainingDiverged" in (tmp_path / "grids" / "g" / "errors.log").read_text()


# ----------------------------------------------------------------------------- presets end to end

@pytest.fixture(scope="session")
def smoke(tmp_path_factory):
    """Every preset's smoke profile, run into one runs directory (presets share their NT ladders)."""
    out = tmp_path_factory.mktemp("smoke")
    results = {p: run_grid(load_spec(p, "smoke", [f"base.out_dir={out}"]), **QUIET) for p in PRESETS}
    return out, results


@pytest.mark.slow
def test_every_preset_smoke_profile_end_to_end(smoke):
    out, results = smoke
    for name, res in results.items():
        assert not res.failures, (name, res.failures)
        assert {p.name for p in res.report} == {"report.png", "report.csv", "report.md"}
        assert all(p.stat().st_size > 0 for p in res.report)
    md = {p: (results[p].grid_dir / "report.md").read_text() for p in PRESETS}
    assert all(f"| NT σ_train={s} | nt | {s} |" in md["fig2"] for s in ("0.1", "0.3"))
    assert "| upper bound (NT matched) |" in md["fig2"]
    assert "| clean | clean |" in md["fig3"] and "| NT σ_train=0.3 | nt | 0.3 |" in md["fig3"]
    assert "| QAT-4b | clean |" in md["fig3"] and "| SAM ρ=0.05 | clean |" in md["fig3"]
    assert "Best SAM by AUC (drawn in the figure): SAM ρ=" in md["fig3"]
    assert all(f"| VANT-theta θ={t} | vant |" in md["fig4"] for t in ("0.05", "0.25"))
    assert all(f"| VANT-alpha α={a} | vant |" in md["fig4"] for a in ("0.25", "0.45"))
    assert md["fig5"].count("\n| 0.05 |") == 2 and md["fig5"].count("\n| 0.25 |") == 2  # a theta row per metric
    assert "- α=" in md["fig5"] or "no feasible setting" in md["fig5"]
    assert md["fig6"].count("\n| NT |") == 2 and "- σ_train=0.1: " in md["fig6"] and "- σ_train=0.3: " in md["fig6"]
    assert "| σ_train | 0.1 | 0.3 |" in md["table1"] and "| rAUC VANT [%] |" in md["table1"]
    assert "| digits / lenet5 | 0.1 |" in md["fig7"] and "| digits / lenet5 | 0.3 |" in md["fig7"]
    ladder = {r["run"] for r in results["fig2"].rows}
    assert ladder <= {r["run"] for r in results["fig6"].rows}  # one ladder, trained once, used by both
    t1 = read_results(results["table1"].grid_dir)
    assert all(r["rauc"] is not None for r in t1) and all(r["pa"] is not None for r in t1 if r["variant"] == "VANT")


@pytest.mark.slow
def test_report_cli_and_estimate(smoke, capsys):
    from vant.cli import main
    from vant.experiments.cost import estimate, format_estimate

    out, results = smoke
    grid_dir = results["table1"].grid_dir
    (grid_dir / "report.md").unlink()
    assert main(["report", str(grid_dir)]) == 0
    assert "| σ_train | 0.1 | 0.3 |" in capsys.readouterr().out and (grid_dir / "report.md").is_file()
    e = estimate(load_spec("fig6", "smoke", [f"base.out_dir={out}"]), steps=1, log=lambda *a: None)
    assert e["runs"] == 6 and e["hours_todo"] == 0 and e["hours"] > 0
    assert "| lenet5 | digits | 32 | 128 | 6 (0) |" in format_estimate(e)


@pytest.mark.slow
def test_ray_executor_gives_the_local_table(smoke, tmp_path):
    """fig2's smoke grid again, as Ray tasks on a local Ray instance: the table of the local executor."""
    ray = pytest.importorskip("ray")
    out, results = smoke
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        res = run_grid(load_spec("fig2", "smoke", [f"base.out_dir={tmp_path}"]), executor="ray", cpus_per_run=2,
                       report=False, **QUIET)
    finally:
        ray.shutdown()
    assert not res.failures and len(res.rows) == 2
    assert table(res.grid_dir) == table(results["fig2"].grid_dir)


def test_grid_and_final_sweep_show_progress_on_stderr(tmp_path, capsys, monkeypatch):
    """Runs done / to do (runs already done not counted), time elapsed and an estimate on stderr after
    each run; on a terminal the final sweep's bar too. With progress=False (-q) there is none."""
    monkeypatch.setenv("VANT_PROGRESS", "bars")  # as on a terminal (a log gets lines: tests/test_progress.py)
    base = dict(BASE, out_dir=str(tmp_path / "runs"))
    one = write_spec(tmp_path / "one.yaml", base=base, variants={"NT": {"train.method": "nt", "train.sigma": 0.1}})
    run_grid(load_spec(one), tmp_path / "gd1", report=False, progress=False, log=lambda *a, **k: None)
    assert capsys.readouterr().err == ""
    spec = write_spec(tmp_path / "g.yaml", base=base,
                      variants={"NT": {"train.method": "nt", "grid": {"train.sigma": [0.1, 0.2, 0.3]}}})
    res = run_grid(load_spec(spec), tmp_path / "gd", report=False, progress=True, log=lambda *a, **k: None)
    assert not res.failures and len(res.rows) == 3
    err = capsys.readouterr().err
    lines = [line for line in err.replace("\r", "\n").splitlines() if line.startswith("grid: ")]
    assert [line.split(",")[0] for line in lines] == ["grid: 1/2 runs", "grid: 2/2 runs"], err
    assert all(" elapsed" in line for line in lines)
    assert ", about " in lines[0] and lines[0].endswith(" left") and "left" not in lines[1]
    assert "sweep 5 (sigma, repeat) points" in err  # the final sweep's bar of sigma 0.2: 0, 0.1, 0.2, 0.3, 0.5


def test_progress_line_estimates_from_the_work_done():
    from vant.experiments.grid import progress_line

    assert progress_line(1, 4, 30.0, 10, 40) == "grid: 1/4 runs, 30 s elapsed, about 1 min 30 s left"
    assert progress_line(2, 3, 4000.0, 5, 30) == "grid: 2/3 runs, 1 h 06 min elapsed, about 5 h 33 min left"
    assert progress_line(3, 3, 59.6, 30, 30) == "grid: 3/3 runs, 1 min 00 s elapsed"

"""`vant collect`: one row per run x sigma x repeat, with config, seeds and metrics, read by pandas as is."""
import pytest
import yaml

from vant.cli import main
from vant.experiments.collect import collect
from vant.experiments.grid import run_grid
from vant.experiments.spec import load_spec
from vant.experiments.table import read_results

SIGMAS = [0.1, 0.3, 0.5]
BASE = {"data": {"name": "digits"}, "model": {"name": "lenet5"}, "device": "cpu",
        "eval": {"sigmas": SIGMAS, "repeats": 2}, "train": {"epochs": 1, "test_every": 0}}


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    """Two NT runs and one that diverges (a failed grid point)."""
    tmp = tmp_path_factory.mktemp("collect")
    spec = tmp / "g.yaml"
    spec.write_text(yaml.safe_dump({"name": "g", "base": dict(BASE, out_dir=str(tmp / "runs")), "variants": {
        "NT": {"train.method": "nt", "grid": {"train.sigma": [0.1, 0.3]}},
        "diverges": {"train.method": "nt", "train.sigma": 1e38}}}))
    result = run_grid(load_spec(spec), tmp / "grid", report=False, progress=False, log=lambda *a: None)
    assert [r["status"] for r in result.rows] == ["ok", "ok", "failed"]
    return tmp


def test_a_grid_gives_runs_x_sigma_x_repeats_rows(grid, capsys):
    pd = pytest.importorskip("pandas")
    assert main(["collect", str(grid / "grid"), "-o", str(grid / "table.csv")]) == 0
    out, err = capsys.readouterr()
    assert "14 rows (2 runs x sigma x repeat)" in out and err.count("skipped") == 1 and "TrainingDiverged" in err
    df = pd.read_csv(grid / "table.csv")
    assert len(df) == 2 * (1 + len(SIGMAS) * 2)  # per run: the clean row, then every sigma x repeat
    assert df["in_summary"].all() and df["variant"].eq("NT").all()
    assert sorted(df.groupby("run").size()) == [7, 7]
    noisy = df[df["sigma"] > 0]
    assert sorted(noisy.groupby(["run", "sigma"])["eval_seed"].apply(sorted).tolist()) == [[1000, 1001]] * 6
    assert (df["accuracy"] - 100 * df["correct"] / df["total"]).abs().max() < 1e-9
    assert {"train.sigma", "train.seed", "model.name", "eval.repeats", "auc", "rauc", "pa", "meta.git_commit"} <= set(df)
    # The mean over the repeats is the curve of the results table, and the summary metrics ride along.
    results = {r["run"]: r for r in read_results(grid / "grid") if r["status"] == "ok"}
    means = noisy.groupby(["run", "sigma"])["accuracy"].mean()
    for (run, sigma), mean in means.items():
        assert mean == pytest.approx(results[run][f"acc@{sigma:g}"], abs=1e-9)
    for run, r in results.items():
        assert df.loc[df["run"] == run, "auc"].eq(r["auc"]).all()
        assert df.loc[df["run"] == run, "train.sigma"].eq(r["train.sigma"]).all()


def test_parquet_matches_the_csv(grid):
    pytest.importorskip("pyarrow")
    pd = pytest.importorskip("pandas")
    assert main(["collect", str(grid / "grid"), "-o", str(grid / "table.parquet")]) == 0
    assert main(["collect", str(grid / "grid"), "-o", str(grid / "again.csv")]) == 0
    a, b = pd.read_parquet(grid / "table.parquet"), pd.read_csv(grid / "again.csv")
    assert list(a.columns) == list(b.columns) and len(a) == len(b) == 14
    for col in ("sigma", "repeat", "eval_seed", "accuracy", "train.sigma", "train.seed", "auc", "rauc"):
        assert a[col].astype(float).equals(b[col].astype(float)), col  # NaN equals NaN here (no NT at 0.5: no rAUC)


def test_a_runs_directory_and_a_new_evaluation_seed(grid, capsys):
    """A runs directory gives the same rows (no grid columns); an unfinished run is skipped; rows of
    an earlier evaluation are kept and marked as outside the run's summary."""
    runs = grid / "runs"
    rows, skipped = collect(runs)
    assert len(rows) == 14 and len(skipped) == 1 and "not finished" in skipped[0]  # the diverged run
    assert "variant" not in rows[0] and "rauc" not in rows[0]
    one = sorted(p for p in runs.iterdir() if (p / "summary.json").is_file())[0]
    assert main(["sweep", str(one), "--seed", "7", "-q"]) == 0
    capsys.readouterr()
    rows, _ = collect(one)
    old = [r for r in rows if r["sigma"] > 0 and r["eval_seed"] in (1000, 1001)]
    new = [r for r in rows if r["sigma"] > 0 and r["eval_seed"] in (7, 8)]
    assert len(old) == len(new) == 6
    assert not any(r["in_summary"] for r in old) and all(r["in_summary"] for r in new)


def test_bad_targets_are_one_line_errors(grid, tmp_path, capsys):
    assert main(["collect", str(grid / "grid"), "-o", str(tmp_path / "t.xlsx")]) == 2
    assert main(["collect", str(tmp_path / "nothing")]) == 2
    (tmp_path / "empty").mkdir()
    assert main(["collect", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 3 and "write .csv or .parquet" in err[0] and "is not a directory" in err[1]
    assert "holds no runs" in err[2]
    assert not (tmp_path / "t.xlsx").exists()

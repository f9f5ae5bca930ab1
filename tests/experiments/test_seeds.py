"""Seeds as an axis (issue 19): intervals by hand, summaries over seeds, pairing by seed, the upper
bound from per-sigma means, and a 2-seed grid whose report prints mean ± interval and VANT − NT."""
import csv
import math

import pytest

from vant.cli import main
from vant.experiments.collect import collect_table, summary_path
from vant.experiments.table import derive, interval, paired, pm, read_results, summarise

# Student-t quantiles t(0.975, df), from tables (not from scipy, which the code uses)
T975 = {1: 12.706205, 2: 4.302653, 3: 3.182446}


def test_interval_against_a_hand_computation():
    mean, sd, hw = interval([70.0, 74.0, 75.0])
    assert mean == pytest.approx(73.0)
    s = math.sqrt(((70 - 73) ** 2 + (74 - 73) ** 2 + (75 - 73) ** 2) / 2)  # sqrt(7)
    assert sd == pytest.approx(s)
    assert hw == pytest.approx(T975[2] * s / math.sqrt(3), rel=1e-5)  # 4.302653 * 2.6458 / 1.7321 = 6.5722
    assert hw == pytest.approx(6.5722, abs=1e-3)
    mean, sd, hw = interval([1.0, 3.0])
    assert hw == pytest.approx(T975[1] * math.sqrt(2) / math.sqrt(2), rel=1e-5)  # s = sqrt(2)
    assert interval([5.0]) == (5.0, None, None)  # one seed: no interval, never a made-up one


def _row(variant, method, sigma, seed, curve, group="g", **extra):
    st = {0.5: 0, 1.0: 1}.get(sigma)
    row = {"variant": variant, "train.method": method, "train.sigma": sigma, "train.alpha": 0.45,
           "train.theta": 0.25 if method == "vant" else 0.0, "train.seed": seed, "group": group,
           "run": f"{variant}-{sigma}-{seed}", "status": "ok", "clean_acc": curve[0] + 5,
           "acc_at_sigma_train": curve[st] if st is not None else None, "auc": sum(curve)}
    row.update({"acc@0.5": curve[0], "acc@1": curve[1], "std@0.5": 0.1, "std@1": 0.2}, **extra)
    return row


def rows_two_seeds():
    """NT at 0.5 and 1.0 over seeds 0 and 1; VANT at 0.5 over seeds 0 and 1; a one-seed clean run."""
    return [
        _row("NT", "nt", 0.5, 0, [80.0, 40.0]), _row("NT", "nt", 0.5, 1, [84.0, 44.0]),
        _row("NT", "nt", 1.0, 0, [60.0, 70.0]), _row("NT", "nt", 1.0, 1, [64.0, 72.0]),
        _row("VANT", "vant", 0.5, 0, [79.0, 60.0]), _row("VANT", "vant", 0.5, 1, [85.0, 66.0]),
        _row("clean", "clean", 0.0, 0, [50.0, 20.0]),
    ]


def test_upper_bound_is_the_mean_over_seeds_and_pa_is_paired_by_seed():
    rows = derive(rows_two_seeds())
    ub = [(80 + 84) / 2, (70 + 72) / 2]  # matched diagonal of the per-sigma means: 82, 71
    ub_auc = 0.5 * (ub[0] + ub[1]) / 2
    v0, v1 = rows[4], rows[5]
    assert v0["rauc"] == pytest.approx(100 * 0.5 * (79 + 60) / 2 / ub_auc)
    assert v1["rauc"] == pytest.approx(100 * 0.5 * (85 + 66) / 2 / ub_auc)
    assert v0["pa"] == pytest.approx(79 - 80) and v1["pa"] == pytest.approx(85 - 84)  # same seed's NT
    lone = derive(rows_two_seeds() + [_row("VANT", "vant", 0.5, 7, [83.0, 50.0])])[-1]
    assert lone["pa"] == pytest.approx(83 - 82)  # no NT of seed 7: against the mean of NT's seeds


def test_summarise_gives_means_and_t_intervals_per_setting():
    out = {(r["variant"], r["train.sigma"]): r for r in summarise(derive(rows_two_seeds()))}
    assert len(out) == 4
    v = out[("VANT", 0.5)]
    assert v["seeds"] == 2 and v["train.seed"] == "0,1" and v["runs"] == "VANT-0.5-0;VANT-0.5-1"
    assert v["acc@0.5"] == pytest.approx(82.0) and v["ci@0.5"] == pytest.approx(T975[1] * 3.0, rel=1e-5)  # s = 3*sqrt(2)/sqrt(2)
    assert v["pa"] == pytest.approx(0.0) and v["pa_ci"] == pytest.approx(T975[1] * 1.0, rel=1e-5)  # PA -1 and +1
    assert v["std@0.5"] is None  # the curve's band over seeds is the interval
    c = out[("clean", 0.0)]
    assert c["seeds"] == 1 and c["auc"] == 70.0 and c["auc_ci"] is None and c["std@0.5"] == 0.1
    assert pm(v, "acc@0.5") == "82.0 ± 38.1" and pm(c, "auc") == "70.0"


def test_paired_differences_are_taken_seed_by_seed():
    rows = derive(rows_two_seeds())
    (p,) = paired(rows, "NT", "VANT")
    assert p["pairs"] == 2 and p["seeds"] == "0,1" and p["train.sigma"] == 0.5
    d0, d1 = rows[4]["rauc"] - rows[0]["rauc"], rows[5]["rauc"] - rows[1]["rauc"]
    assert p["rauc"] == pytest.approx((d0 + d1) / 2)
    assert p["rauc_ci"] == pytest.approx(T975[1] * abs(d0 - d1) / 2, rel=1e-5)  # s of two values = |a-b|/sqrt(2)
    assert p["rauc_excludes_0"] == (abs(p["rauc"]) > p["rauc_ci"])
    assert p["clean_acc"] == pytest.approx(0.0) and p["clean_acc_excludes_0"] is False  # -1 and +1 pp
    # an unpaired VANT seed counts in no pair
    extra = derive(rows_two_seeds() + [_row("VANT", "vant", 0.5, 9, [90.0, 80.0])])
    assert paired(extra, "NT", "VANT")[0]["pairs"] == 2


def test_a_two_seed_grid_prints_intervals_and_the_paired_row(tmp_path, capsys):
    out = tmp_path / "g"
    assert main(["grid", "cifar10-cpu", "-p", "smoke", "--dir", str(out), "--out-dir", str(tmp_path), "-q"]) == 0
    capsys.readouterr()
    assert main(["report", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith((out / "report.md").read_text())
    assert "Seeds per setting: 1, 2" in printed
    assert "## Paired by seed: VANT − NT (same σ_train, same seed)" in printed
    rows = read_results(out)
    summary = {(r["variant"], r["train.sigma"]): r for r in summarise(rows)}
    v = summary[("VANT", 1.1)]
    assert v["seeds"] == 2 and pm(v, "rauc") in printed  # the table is the library's numbers
    line = next(x for x in printed.splitlines() if x.startswith("| 1.1 | 2 |"))
    assert line.count("±") == 3 and ("excludes 0" in line or "includes 0" in line)
    # vant collect writes the same summary beside its long table
    table, _, _ = collect_table(out, tmp_path / "t.csv")
    with open(summary_path(table), newline="") as f:
        by = {(r["variant"], r["train.sigma"]): r for r in csv.DictReader(f)}
    assert float(by[("VANT", "1.1")]["rauc"]) == pytest.approx(v["rauc"])
    assert float(by[("VANT", "1.1")]["rauc_ci"]) == pytest.approx(v["rauc_ci"])


def test_runs_measured_against_another_ladder_do_not_join_it():
    """A fine-tuned NT run (upper_bound: NT) gets rAUC against the ladder, and is not part of its bound."""
    rows = rows_two_seeds() + [_row("NT-ft", "nt", 0.5, 0, [99.0, 99.0], upper_bound="NT")]
    out = derive(rows)
    assert [r["rauc"] for r in out[:4]] == [r["rauc"] for r in derive(rows_two_seeds())[:4]]  # the bound is unchanged
    ub_auc = 0.5 * (82 + 71) / 2
    assert out[-1]["rauc"] == pytest.approx(100 * 0.5 * 99 / ub_auc)


def test_an_override_of_an_unknown_variant_is_refused():
    from vant.config import ConfigError
    from vant.experiments.spec import load_spec

    with pytest.raises(ConfigError, match="the spec has no variant 'NTT'"):
        load_spec("demo", overrides=["variants.NTT.train.sigma=0.1"])
    assert load_spec("demo", overrides=["variants.NT.train.epochs=3"]).variants["NT"]["train"]["epochs"] == 3

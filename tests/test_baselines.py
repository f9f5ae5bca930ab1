"""The hardening comparison (Fig. 3): selection by AUC, and `vant baselines` end to end on the digits."""
import json

import pytest

from vant.baselines import DEFAULT_CONFIG, best_by_auc, load_baselines_config
from vant.config import ConfigError, resolve


def _summary(run, auc):
    return dict(run=run, auc=auc, clean_accuracy=90.0)


def test_best_by_auc_picks_the_highest_and_the_first_on_ties():
    best, rows = best_by_auc({0.05: _summary("a", 10.0), 0.5: _summary("b", 30.0), 2.5: _summary("c", 30.0)})
    assert best == 0.5 and [r["value"] for r in rows] == [0.05, 0.5, 2.5]
    assert best_by_auc({None: _summary("x", 1.0)})[0] is None
    with pytest.raises(ValueError, match="at least one run"):
        best_by_auc({})


def test_shipped_config_loads_and_bad_ones_fail():
    bc = load_baselines_config(DEFAULT_CONFIG)
    assert bc.quant_bits == 4 and bc.run.data.name == "digits" and None in bc.act_scales
    resolve(bc.run)
    with pytest.raises(ConfigError, match="unknown config key 'sam_rho'"):
        load_baselines_config(DEFAULT_CONFIG, ["sam_rho=[0.5]"])


def test_baselines_command_trains_every_method_and_reports(tmp_path, capsys):
    pytest.importorskip("brevitas")
    from vant.cli import main

    out = tmp_path / "fig3"
    assert main(["baselines", "-q", "--out-dir", str(out), "run.train.epochs=1", "run.eval.sigmas=[0.1,0.5]",
                 "run.eval.repeats=1", "act_scales=[null]", "sam_rhos=[0.05]"]) == 0
    printed = capsys.readouterr().out
    result = json.loads((out / "results.json").read_text())
    names = [r["model"] for r in result["rows"]]
    assert names[:3] == ["clean", "NT@1", "QAT-4b (learned scale)"] and names[3].startswith("ASAM rho=")
    assert [r["value"] for r in result["sam_grid"]["rows"]] == [0.05] and result["sam_grid"]["best"] == 0.05
    assert sorted(result["ordering"]) == sorted(names)
    assert (out / "accuracy_vs_sigma.png").is_file() and "AUC ordering:" in (out / "results.md").read_text()
    assert "SAM rho grid (best by AUC" in printed
    assert len(list((out / "runs").glob("*/summary.json"))) == 4  # clean, NT, QAT, SAM

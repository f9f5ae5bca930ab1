"""Typed config: YAML mirror, overrides parsed by type, unknown keys and bad values are errors."""
from pathlib import Path

import pytest

from vant.config import ConfigError, RunConfig, build_config, from_dict, parse_override, resolve, to_dict

CONFIGS = Path(__file__).resolve().parent.parent / "vant" / "configs"


def test_overrides_are_parsed_by_type():
    cfg = build_config(None, ["train.sigma=0.5", "train.epochs=3", "eval.sigmas=0.1,0.3", "train.compile=true",
                              "model.kwargs={width: 16}", "noise.sites=[conv1, fc3]"])
    assert cfg.train.sigma == 0.5 and isinstance(cfg.train.sigma, float)
    assert cfg.eval.sigmas == [0.1, 0.3] and cfg.train.compile is True
    assert cfg.model.kwargs == {"width": 16} and cfg.noise.sites == ["conv1", "fc3"]
    assert parse_override("train.sigma=1") == ("train.sigma", 1)


@pytest.mark.parametrize("override,message", [
    ("train.sigm=0.5", "unknown config key 'train.sigm'"),
    ("trian.sigma=0.5", "unknown config key 'trian'"),
    ("train.epochs=ten", "train.epochs: expected an integer"),
    ("train.epochs=2.5", "train.epochs: expected an integer"),
    ("train.sigma=high", "train.sigma: expected a number"),
    ("train.compile=3", "train.compile: expected true or false"),
    ("eval.sigmas=0.5", "eval.sigmas: expected a list"),
    ("sigma", "not of the form key=value"),
])
def test_bad_overrides_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        build_config(None, [override])


@pytest.mark.parametrize("override,message", [
    ("train.sigma=-0.1", "train.sigma must be >= 0"),
    ("train.theta=-1", "train.theta must be >= 0"),
    ("train.method=sgd", "unknown method 'sgd'"),
    ("eval.sigmas=[0.5,0.1]", "strictly increasing"),
    ("train.epochs=0", "train.epochs must be >= 1"),
    ("train.method=empirical", "needs a list of measured sigma"),
])
def test_bad_values_fail_at_resolution(override, message):
    with pytest.raises(ConfigError, match=message):
        resolve(build_config(None, [override]))


def test_recipe_defaults_follow_the_spec():
    r = resolve(build_config(None, ["model.name=resnet18", "data.name=cifar10", "train.sigma=1.3"]))
    assert (r.train.lr, r.train.weight_decay, r.train.warmup_epochs, r.train.epochs, r.train.theta) == (1e-2, 0.0, 0, 400, 0.65)
    r = resolve(build_config(None, ["model.name=resnet50", "data.name=tinyimagenet", "train.method=nt"]))
    assert (r.train.lr, r.train.weight_decay, r.train.warmup_epochs) == (1e-3, 1e-4, 100)
    r = resolve(build_config(None, ["model.name=lenet5", "data.name=cifar10", "train.sigma=0.4"]))
    assert r.train.lr == 1e-3 and r.train.theta == pytest.approx(0.16)  # not in Table 1: 0.4 * sigma


def test_defaults_round_trip_through_a_dict():
    cfg = RunConfig()
    assert from_dict(RunConfig, to_dict(cfg)) == cfg


def test_default_yaml_mirrors_the_dataclasses():
    import yaml

    mirrored = yaml.safe_load((CONFIGS / "default.yaml").read_text())
    assert mirrored == to_dict(RunConfig())


def test_every_shipped_config_loads(tmp_path):
    for path in CONFIGS.glob("*.yaml"):  # the experiment presets are checked in tests/experiments
        resolve(build_config(path))


def test_malformed_yaml_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: {sigma: [0.5\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        build_config(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        build_config(tmp_path / "missing.yaml")

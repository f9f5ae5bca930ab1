"""Hostile configs (issue 12, "Trust"): every field is checked at ``resolve()``, before anything is
written, with a one-line ConfigError that names the key; valid configs resolve exactly as before."""
import hashlib
import json

import pytest

from vant.config import ConfigError, build_config, config_hash, resolve, to_dict

#: Valid configs with their run hash and a digest of the whole resolved config, both computed with
#: the code *before* the validation of issue 12 was added: validation must not change either.
VALID = [
    ([], "3c931d4cd1", "09c39710f9b67030"),
    (["model.name=lenet5", "train.method=vant", "train.sigma=0.5", "train.epochs=3", "eval.sigmas=[0.1,0.5,1.0]",
      "eval.repeats=2", "device=cpu"], "a2386f6159", "9b9dab4ac29bca5e"),
    (["model.name=resnet18", "data.name=cifar10", "train.sigma=1.3"], "2dbd1e6e5d", "7e0e515b9d4804bf"),
    (["model.name=resnet50", "data.name=tinyimagenet", "train.method=nt"], "dc1a7faf83", "f933e7f12b37578d"),
    (["train.method=clean", "data.name=cinic10"], "d3efcdb06b", "39e9cea9a281de7b"),
    (["train.method=empirical", "train.sigma_values=[0.2,0.4,0.4]", "train.sigma=0.3"], "a297f5a5db", "adffa98fcd0bfc57"),
    (["model.quant_bits=4", "model.quant_act_scale=0.25", "train.method=nt", "train.sigma=0.7"], "602df4646a",
     "75013ebf31e9884f"),
    (["train.optimizer=sam", "train.sam_rho=0.1", "train.sam_adaptive=false", "train.seed=7"], "b8ef41d144",
     "9f8b64a972cbd9ef"),
    (["model.name=tv:resnet18", "name=my-run", "data.image_size=64", "noise.sites=[conv1, fc3]", "noise.kind=mixed",
      "train.sampler=normal_abs", "device=cuda:1", "train.warmup_epochs=5", "train.epochs=10", "train.test_every=0"],
     "ca96e2f85e", "2e5fedb57fdd5136"),
    (["train.sigma=0", "train.alpha=0", "train.theta=0", "train.lr=1e-3", "train.weight_decay=5e-4", "eval.sigmas=[0,2]",
      "noise.sites=all", "noise.kind=mul", "train.sampler=normal_clamp0", "eval.seed=0", "device=cuda"],
     "ef15f9d564", "5f0f46a4d0225a16"),
]


@pytest.mark.parametrize("overrides,run_hash,digest", VALID, ids=[str(i) for i in range(len(VALID))])
def test_valid_configs_resolve_and_hash_as_before(overrides, run_hash, digest):
    r = resolve(build_config(None, overrides))
    assert config_hash(r) == run_hash
    resolved = to_dict(r)
    assert resolved.pop("cpu_threads") == 2  # added after these were pinned; not part of the run's identity
    assert resolved.pop("log") == {"tensorboard": False, "mlflow": None, "experiment": "vant"}  # trackers, likewise
    # added later too; at these values (the feature unused) they leave the run's identity unchanged
    assert [resolved["data"].pop(k) for k in ("subset", "test_subset", "subset_seed")] == [None, None, 0]
    assert [resolved["train"].pop(k) for k in ("init_from", "init_skip", "init_hash")] == [None, [], ""]
    assert hashlib.sha256(json.dumps(resolved, sort_keys=True, default=str).encode()).hexdigest()[:16] == digest


#: (override(s), the key the one-line message must name). Each resolves to a ConfigError.
BAD = [
    # finite for Python, infinite in float32 (issue 22)
    ("train.sigma=1e300", "train.sigma"),
    ("train.lr=1e300", "train.lr"),
    ("train.theta=1e300", "train.theta"),
    ("train.weight_decay=1e39", "train.weight_decay"),
    (["train.method=vant", "train.alpha=1e20", "train.sigma=1e20"], "train.sigma"),
    ("eval.sigmas=[0.1,1e300]", "eval.sigmas"),
    (["train.method=empirical", "train.sigma_values=[0.1,1e300]"], "train.sigma_values"),
    ("train.sigma=nan", "train.sigma"),
    ("train.sigma=.nan", "train.sigma"),
    ("train.sigma=inf", "train.sigma"),
    ("train.sigma=-inf", "train.sigma"),
    (["train.method=clean", "train.sigma=nan"], "train.sigma"),  # overwritten by the recipe, still refused
    ("train.alpha=-1", "train.alpha"),
    ("train.alpha=nan", "train.alpha"),
    ("train.theta=nan", "train.theta"),
    ("train.theta=inf", "train.theta"),
    ("train.lr=inf", "train.lr"),
    ("train.lr=-0.1", "train.lr"),
    ("train.weight_decay=nan", "train.weight_decay"),
    ("train.sam_rho=nan", "train.sam_rho"),
    (["train.optimizer=sam", "train.sam_rho=inf"], "train.sam_rho"),
    (["model.quant_bits=4", "model.quant_act_scale=nan"], "model.quant_act_scale"),
    (["model.quant_bits=4", "model.quant_act_scale=inf"], "model.quant_act_scale"),
    ("train.epochs=0", "train.epochs"),
    ("train.batch_size=0", "train.batch_size"),
    ("train.warmup_epochs=-1", "train.warmup_epochs"),
    (["train.epochs=3", "train.warmup_epochs=4"], "train.warmup_epochs"),
    ("train.test_every=-1", "train.test_every"),
    ("train.seed=-1", "train.seed"),
    (f"train.seed={2 ** 63}", "train.seed"),
    (f"train.seed={2 ** 44}", "train.seed"),  # seed * 1,000,003 would overflow torch's seed
    ("eval.repeats=0", "eval.repeats"),
    ("eval.batch_size=0", "eval.batch_size"),
    ("eval.seed=-1", "eval.seed"),
    (f"eval.seed={2 ** 63}", "eval.seed"),
    ("data.image_size=-4", "data.image_size"),
    ("data.image_size=0", "data.image_size"),
    ("train.method=sgd", "train.method"),
    ("train.sampler=bogus", "train.sampler"),
    ("noise.kind=gauss", "noise.kind"),
    ("noise.sites=[]", "noise.sites"),
    ("noise.sites=''", "noise.sites"),
    ("noise.sites=[conv1, 3]", "noise.sites"),
    ("train.optimizer=sgd", "train.optimizer"),
    ("device=tpu", "device"),
    ("device=cuda:x", "device"),
    ("device=cuda:", "device"),
    ("device=CPU", "device"),
    ("eval.sigmas=[0.1,nan]", "eval.sigmas"),
    ("eval.sigmas=[0.1,inf]", "eval.sigmas"),
    ("eval.sigmas=[-0.1,0.1]", "eval.sigmas"),
    ("eval.sigmas=[]", "eval.sigmas"),
    ("eval.sigmas=[0.5,0.1]", "eval.sigmas"),
    ("eval.sigmas=[0.1,0.1]", "eval.sigmas"),
    ("eval.sigmas=[0.1]", "eval.sigmas"),  # the AUC needs two points
    ("eval.sigmas=0.1,", "eval.sigmas"),
    (["train.method=empirical", "train.sigma_values=[-1]"], "train.sigma_values"),
    (["train.method=empirical", "train.sigma_values=[0.3,nan]"], "train.sigma_values"),
    (["train.method=empirical", "train.sigma_values=[inf]"], "train.sigma_values"),
    (["train.method=empirical", "train.sigma_values=[0.3,high]"], "train.sigma_values"),
    (["train.method=empirical", "train.sigma_values=[]"], "train.sigma_values"),
    ("name=../../x", "name"),
    ("name=/abs", "name"),
    ("name=a/b", "name"),
    ("name=a\\b", "name"),
    ("name=.", "name"),
    ("name=..", "name"),
    ("name='   '", "name"),
    ("name=-rf", "name"),
    ("name=" + "x" * 101, "name"),
    ("name=a\x00b", "name"),
    ('name="a\\nb"', "name"),  # YAML's escape: a newline in the name
    ("model.name=../../etc", "model.name"),
    ("model.name=tv:../x", "model.name"),
    ("data.name=a/b", "data.name"),
    ("out_dir=a\x00b", "out_dir"),
]


def _ids(case):
    ov = case[0] if isinstance(case[0], str) else " ".join(case[0])
    return ov.encode("unicode_escape").decode()[:60]


@pytest.mark.parametrize("overrides,key", BAD, ids=[_ids(c) for c in BAD])
def test_bad_values_are_one_line_errors_naming_the_key(overrides, key):
    overrides = [overrides] if isinstance(overrides, str) else overrides
    with pytest.raises(ConfigError) as err:
        resolve(build_config(None, overrides))
    message = str(err.value)
    assert "\n" not in message and "\r" not in message, message
    assert message.startswith(key + " ") or message.startswith(key + ":") or message.startswith(key + "["), message


def test_out_dir_that_is_a_file_is_refused(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    for out in (f, f / "runs"):
        with pytest.raises(ConfigError, match="^out_dir: .* is not a directory"):
            resolve(build_config(None, [f"out_dir={out}"]))
    dangling = tmp_path / "link"
    dangling.symlink_to(tmp_path / "missing")
    with pytest.raises(ConfigError, match="^out_dir: "):
        resolve(build_config(None, [f"out_dir={dangling}"]))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "link"]  # nothing created
    resolve(build_config(None, [f"out_dir={tmp_path / 'new' / 'runs'}"]))  # not there yet: fine
    resolve(build_config(None, [f"out_dir={tmp_path}"]))


@pytest.mark.parametrize("overrides", [
    ["train.sigma=0"], ["train.lr=0"], ["train.warmup_epochs=30"], ["train.test_every=0"], ["train.seed=0"],
    [f"train.seed={2 ** 44 - 1}"], [f"eval.seed={2 ** 63 - 1}"], ["data.image_size=1"], ["data.image_size=null"],
    ["device=auto"], ["device=cpu"], ["device=cuda"], ["device=cuda:0"], ["device=cuda:12"],
    ["noise.sites=paper"], ["noise.sites=all"], ["noise.sites=conv*"], ["noise.sites=[input, 'fc*']"],
    ["name="], ["name=run 1"], ["name=a.b_c-d"], ["name=" + "x" * 100], ["name=..."],
    ["model.name=tv:resnet18"], ["train.method=empirical", "train.sigma_values=[0, 0.5, 1e-3]"],
    ["train.method=nt", "train.sigma_values=[0.2]"], ["eval.sigmas=[0, 1e-3, 3]"],
])
def test_edge_values_that_are_valid_still_resolve(overrides):
    resolve(build_config(None, overrides))


def test_safe_component():
    from vant.config import safe_component

    for ok in ("run", "my run", "a.b", "...", "tv_resnet18-cifar10-vant1", "x" * 100, "é"):
        assert safe_component(ok, "k") == ok
    for bad in ("", " ", ".", "..", "/", "a/b", "/abs", "a\\b", "a\x00b", "a\tb", "-x", "x" * 101, "C:x", 3, None):
        with pytest.raises(ConfigError, match="^k[ :]"):
            safe_component(bad, "k")


def test_inside(tmp_path):
    from vant.config import inside

    (tmp_path / "runs" / "a").mkdir(parents=True)
    assert inside(tmp_path / "runs", tmp_path / "runs" / "a", "k") == (tmp_path / "runs" / "a").resolve()
    assert inside(tmp_path / "runs", tmp_path / "runs" / "not-yet" / "b", "k").name == "b"
    for bad in (tmp_path, tmp_path / "runs", tmp_path / "runs" / ".." / "x", tmp_path / "runsx", "/etc"):
        with pytest.raises(ConfigError, match="^k: "):
            inside(tmp_path / "runs", bad, "k")
    (tmp_path / "runs" / "escape").symlink_to(tmp_path)  # a link inside that points outside
    with pytest.raises(ConfigError, match="^k: "):
        inside(tmp_path / "runs", tmp_path / "runs" / "escape" / "x", "k")
    (tmp_path / "runs" / "loop").symlink_to(tmp_path / "runs" / "loop")
    for bad in (tmp_path / "runs" / "loop" / "x", tmp_path / "runs" / "a\x00b"):
        with pytest.raises(ConfigError, match="^k: "):
            inside(tmp_path / "runs", bad, "k")


def test_the_names_config_checks_are_those_the_library_accepts():
    import vant
    from vant.config import NOISE_KINDS, SAMPLERS

    for mode in SAMPLERS:
        vant.VantSampler(1.0, 0.4, mode=mode)
    with pytest.raises(ValueError):
        vant.VantSampler(1.0, 0.4, mode="bogus")
    for kind in NOISE_KINDS:
        vant.NoiseSite("x", kind)
    with pytest.raises(ValueError):
        vant.NoiseSite("x", "gauss")


@pytest.mark.parametrize("args,key", [
    (["train.sigma=nan"], "train.sigma"),
    (["device=tpu"], "device"),
    (["name=../../escape"], "name"),
    (["data.image_size=-4"], "data.image_size"),
    (["eval.sigmas=[0.1]"], "eval.sigmas"),
])
def test_cli_rejects_a_hostile_config_in_one_line_and_writes_nothing(tmp_path, capsys, args, key):
    from vant.cli import main

    out = tmp_path / "x"
    assert main(["train", "-q", *args, f"out_dir={out}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"vant: error: {key}"), err
    assert list(tmp_path.iterdir()) == []  # no out_dir, no run directory, nothing escaped either
    assert not (tmp_path.parent / "escape").exists()

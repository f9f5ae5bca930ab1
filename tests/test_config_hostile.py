"""Hostile configs (issue 12, "Trust"): every field is checked at ``resolve()``, before anything is
written, with a one-line ConfigError that names the key; valid configs resolve exactly as before."""
import hashlib
import json

import pytest

from vant.config import build_config, config_hash, resolve, to_dict

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
    assert hashlib.sha256(json.dumps(to_dict(r), sort_keys=True, default=str).encode()).hexdigest()[:16] == digest

"""data.subset / data.test_subset (issue 19): seeded, class-stratified, part of the run's identity."""
import subprocess
import sys

import pytest
import torch

from vant.config import ConfigError, build_config, config_hash, resolve
from vant.data import stratified_subset
from vant.pipeline.runs import run_data


def test_stratified_subset_keeps_every_class_in_proportion():
    y = torch.tensor([0] * 500 + [1] * 300 + [2] * 150 + [3] * 50)
    idx = stratified_subset(y, 100, seed=3)
    assert len(idx) == 100 and len(set(idx.tolist())) == 100
    assert torch.bincount(y[idx]).tolist() == [50, 30, 15, 5]
    odd = stratified_subset(y, 7, seed=0)  # shares 3.5, 2.1, 1.05, 0.35: floors 3, 2, 1, then 1 for the last class
    assert len(odd) == 7 and torch.bincount(y[odd], minlength=4).min() >= 1
    assert torch.equal(stratified_subset(y, 100, seed=3), idx)  # same seed, same images
    assert not torch.equal(stratified_subset(y, 100, seed=4), idx)
    with pytest.raises(ValueError, match="asks for 2000 images, the split has 1000"):
        stratified_subset(y, 2000)
    with pytest.raises(ValueError, match="cannot hold the split's 4 classes"):
        stratified_subset(y, 3)


def test_a_subset_run_trains_on_n_images_and_is_another_run():
    base = ["data.name=digits", "model.name=lenet5", "device=cpu"]
    full = resolve(build_config(None, base))
    sub = resolve(build_config(None, base + ["data.subset=300"]))
    other_seed = resolve(build_config(None, base + ["data.subset=300", "data.subset_seed=1"]))
    assert len({config_hash(full), config_hash(sub), config_hash(other_seed)}) == 3
    # train.seed does not move the subset: the seeds of a study share their images
    reseeded = resolve(build_config(None, base + ["data.subset=300", "train.seed=5"]))
    d, d5, d1, whole = run_data(sub), run_data(reseeded), run_data(other_seed), run_data(full)
    assert len(d.train_x) == 300 and torch.equal(d.train_x, d5.train_x) and not torch.equal(d.train_x, d1.train_x)
    shares = torch.bincount(whole.train_y) / len(whole.train_y)
    assert (torch.bincount(d.train_y) - 300 * shares).abs().max() < 1  # each class within one image of its share
    assert torch.equal(d.test_x, whole.test_x) and d.mean == whole.mean  # test split and input units unchanged
    t = run_data(resolve(build_config(None, base + ["data.test_subset=100"])))
    assert len(t.test_x) == 100 and torch.equal(t.train_x, whole.train_x)


def test_bad_subsets_are_refused_before_anything_is_written(tmp_path):
    with pytest.raises(ConfigError, match="data.subset must be an integer >= 2"):
        resolve(build_config(None, ["data.subset=1"]))
    with pytest.raises(ConfigError, match="data.test_subset"):
        resolve(build_config(None, ["data.test_subset=0"]))
    proc = subprocess.run([sys.executable, "-m", "vant", "train", "data.subset=100000", "model.name=lenet5",
                           "train.epochs=1", f"out_dir={tmp_path}", "device=cpu"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "vant: error: data.subset=100000: asks for 100000 images, the split has 1437 (data set 'digits', train split)"]
    assert not any(tmp_path.iterdir())

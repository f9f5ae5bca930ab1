"""Noisy fine-tuning (issue 20): train.init_from a run, a state_dict or pretrained weights; strict
matching before anything is written; a grid whose variants start from another variant's runs."""
import csv
import subprocess
import sys

import pytest
import torch
import yaml

from vant.config import build_config, resolve
from vant.experiments.grid import run_grid
from vant.experiments.spec import expand, load_spec, waves
from vant.experiments.table import read_results
from vant.models import create_model
from vant.pipeline.runs import execute

BASE = ["model.name=lenet5", "device=cpu", "eval.sigmas=[0.1,0.5]", "eval.repeats=1", "train.test_every=0"]
QUIET = dict(progress=False, log=lambda *a, **k: None)


def epochs(run):
    with open(run.path / "epochs.csv", newline="") as f:
        return [float(r["train_loss"]) for r in csv.DictReader(f)]


def vant_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "vant", *args], capture_output=True, text=True, cwd=cwd)


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A clean LeNet-5 trained 4 epochs on the digits: the model a user already has."""
    out = tmp_path_factory.mktemp("src")
    return execute(build_config(None, BASE + ["train.method=clean", "train.epochs=4", f"out_dir={out}"]), progress=False)


def test_a_fine_tune_starts_where_its_source_ended(source, tmp_path):
    nt = BASE + ["train.method=nt", "train.sigma=0.3", "train.epochs=1", f"out_dir={tmp_path}"]
    ft = execute(build_config(None, nt + [f"train.init_from={source.path}"]), progress=False)
    scratch = execute(build_config(None, nt), progress=False)
    src_last, ft_first, scratch_first = epochs(source)[-1], epochs(ft)[0], epochs(scratch)[0]
    assert ft_first < 1.5 * src_last + 0.2 and ft_first < 0.6 * scratch_first  # 4 epochs of head start
    meta = yaml.safe_load((ft.path / "config.yaml").read_text())["config"]["train"]
    assert meta["init_from"] == str(source.path.resolve())
    assert meta["init_hash"] == "run:" + source.path.name.rsplit("-", 1)[1]
    assert "-nt0.3-ft-" in ft.path.name
    assert ft.path != scratch.path


def test_a_state_dict_file_is_identified_by_its_content(source, tmp_path):
    sd = tmp_path / "weights.pt"
    torch.save(create_model("lenet5", in_channels=1).state_dict(), sd)
    cfg = BASE + ["train.method=nt", "train.sigma=0.3", "train.epochs=1", f"out_dir={tmp_path / 'runs'}",
                  f"train.init_from={sd}"]
    first = execute(build_config(None, cfg), progress=False)
    again = execute(build_config(None, cfg), progress=False)
    assert again.path == first.path  # same bytes: the same run, reused
    torch.save({"state_dict": create_model("lenet5", num_classes=10, in_channels=1).state_dict()}, sd)  # rewritten in place
    second = execute(build_config(None, cfg), progress=False)
    assert second.path != first.path and len(list((tmp_path / "runs").iterdir())) == 2


def test_mismatched_sources_are_one_line_errors_and_write_nothing(source, tmp_path):
    other = tmp_path / "resnet.pt"
    torch.save(create_model("resnet18", width=4, in_channels=1).state_dict(), other)
    head = tmp_path / "head100.pt"
    torch.save(create_model("lenet5", num_classes=100, in_channels=1).state_dict(), head)
    out = tmp_path / "runs"
    args = ["train", "model.name=lenet5", "device=cpu", "train.epochs=1", f"out_dir={out}"]
    p = vant_cli(*args, f"train.init_from={other}")
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1
    assert "does not fit this model" in p.stderr and "another architecture" in p.stderr
    p = vant_cli(*args, f"train.init_from={head}")
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1
    assert "fc3.weight has shape [100, 84]" in p.stderr and "train.init_skip=[fc3]" in p.stderr
    p = vant_cli(*args, f"train.init_from={head}", "train.init_skip=[fc9]")
    assert p.returncode == 2 and "no module 'fc9'" in p.stderr
    p = vant_cli(*args, f"train.init_from={tmp_path / 'missing.pt'}")
    assert p.returncode == 2 and "no such run directory or file" in p.stderr
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    p = vant_cli(*args, f"train.init_from={tmp_path / 'junk.pt'}")
    assert p.returncode == 2 and "unreadable" in p.stderr
    assert not out.exists()
    # the head re-initialised on request: it trains, and every other weight came from the file
    ok = execute(build_config(None, BASE + ["train.method=clean", "train.epochs=1", f"out_dir={out}",
                                            f"train.init_from={head}", "train.init_skip=[fc3]"]), progress=False)
    assert (ok.path / "trained").is_file()


def test_pretrained_reads_torchvision_cache_only(tmp_path, monkeypatch):
    import torchvision

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    cfg = ["model.name=tv:resnet18", "data.image_size=32", "device=cpu", "train.epochs=1",
           f"out_dir={tmp_path / 'runs'}", "train.init_from=pretrained", "train.init_skip=[fc]"]
    p = vant_cli("train", *cfg)
    assert p.returncode == 2 and "vant downloads nothing" in p.stderr and not (tmp_path / "runs").exists()
    # the file torchvision would have cached (made here: tests never download)
    url = torchvision.models.get_model_weights("resnet18").DEFAULT.url
    cache = tmp_path / "torch" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.save(torchvision.models.resnet18().state_dict(), cache / url.rsplit("/", 1)[1])
    from vant.pipeline.init import load_source, with_init_hash

    c = with_init_hash(resolve(build_config(None, cfg)))
    assert c.train.init_hash.startswith("pretrained:resnet18-") and load_source(c)["fc.weight"].shape == (1000, 512)


def write_spec(path, **spec):
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def finetune_spec(tmp_path, **clean_extra):
    base = {"data": {"name": "digits"}, "model": {"name": "lenet5"}, "device": "cpu", "out_dir": str(tmp_path / "runs"),
            "eval": {"sigmas": [0.1, 0.5], "repeats": 1}, "train": {"epochs": 1, "test_every": 0}}
    return write_spec(tmp_path / "ft.yaml", base=base, grid={"train.seed": [0, 1]}, variants={
        "clean": {"train.method": "clean", "train.epochs": 2, **clean_extra},
        "NT-ft": {"train.method": "nt", "init_from_variant": "clean", "grid": {"train.sigma": [0.1, 0.5]}},
        "VANT-ft": {"train.method": "vant", "train.sigma": 0.5, "init_from_variant": "clean"}})


def test_a_grid_fine_tunes_each_seed_from_its_clean_run(tmp_path):
    spec = load_spec(finetune_spec(tmp_path))
    jobs = expand(spec)
    first, then = waves(jobs)
    assert [j.variant for j in first] == ["clean", "clean"] and len(then) == 6
    for j in then:
        assert j.source.config.train.seed == j.config.train.seed and j.config.train.init_from == str(j.source.path)
    res = run_grid(spec, tmp_path / "g", workers=2, threads=1, **QUIET)
    assert not res.failures
    rows = read_results(tmp_path / "g")
    assert len({r["run"] for r in rows}) == 8
    for r in rows:
        if r["variant"] != "clean":
            cfg = yaml.safe_load((tmp_path / "g" / r["run_dir"] / "config.yaml").read_text())["config"]
            assert cfg["train"]["init_hash"].startswith("run:")
    # nothing is trained twice when the grid runs again
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "runs").glob("*/checkpoint.pt")}
    run_grid(load_spec(finetune_spec(tmp_path)), tmp_path / "g", **QUIET)
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "runs").glob("*/checkpoint.pt")} == stamps


def test_a_failed_source_fails_its_dependants_untrained(tmp_path):
    spec = load_spec(finetune_spec(tmp_path, **{"data.subset": 5000}))  # more images than the digits have
    res = run_grid(spec, tmp_path / "g", **QUIET)
    rows = read_results(tmp_path / "g")
    assert all(r["status"] == "failed" for r in rows) and len(res.failures) == 8
    dep = [r for r in rows if r["variant"] != "clean"]
    assert all("its source run lenet5-digits-clean-" in r["error"] and "did not finish" in r["error"] for r in dep)
    assert not any((tmp_path / "runs").glob("*-ft-*"))  # none was trained from scratch instead


def test_bad_fine_tune_specs_fail_at_expansion(tmp_path):
    path = finetune_spec(tmp_path)
    spec = yaml.safe_load(path.read_text())
    spec["variants"]["NT-ft"]["init_from_variant"] = "cleen"
    with pytest.raises(Exception, match="no variant 'cleen'"):
        expand(load_spec(write_spec(tmp_path / "a.yaml", **spec)))
    spec["variants"]["NT-ft"]["init_from_variant"] = "clean"
    spec["grid"] = {}
    spec["variants"]["clean"]["grid"] = {"train.seed": [0, 1]}  # two clean runs, and NT-ft names no seed
    with pytest.raises(Exception, match="matches 2 runs of 'clean'"):
        expand(load_spec(write_spec(tmp_path / "b.yaml", **spec)))


def test_a_safetensors_file_is_read_where_the_package_is_installed(tmp_path):
    st = pytest.importorskip("safetensors.torch")
    path = tmp_path / "w.safetensors"
    st.save_file(create_model("lenet5", in_channels=1).state_dict(), str(path))
    run = execute(build_config(None, BASE + ["train.method=nt", "train.sigma=0.3", "train.epochs=1",
                                             f"out_dir={tmp_path / 'runs'}", f"train.init_from={path}"]), progress=False)
    assert (run.path / "trained").is_file()
    assert yaml.safe_load((run.path / "config.yaml").read_text())["config"]["train"]["init_hash"].startswith("sha256:")


def test_fine_tune_defaults_halve_the_epochs_and_drop_the_warm_up(source):
    scratch = resolve(build_config(None, ["data.name=cinic10", "train.method=vant"]))
    ft = resolve(build_config(None, ["data.name=cinic10", "train.method=vant", f"train.init_from={source.path}"]))
    assert (scratch.train.epochs, scratch.train.warmup_epochs) == (400, 100)
    assert (ft.train.epochs, ft.train.warmup_epochs, ft.train.lr) == (200, 0, scratch.train.lr)
    assert resolve(build_config(None, BASE + [f"train.init_from={source.path}"])).train.epochs == 15  # 30 / 2
    given = resolve(build_config(None, BASE + [f"train.init_from={source.path}", "train.epochs=7", "train.warmup_epochs=2"]))
    assert (given.train.epochs, given.train.warmup_epochs) == (7, 2)  # what the config says wins


def test_pretrained_reads_timm_weights_from_the_hugging_face_cache_only(tmp_path, monkeypatch):
    timm = pytest.importorskip("timm")
    st = pytest.importorskip("safetensors.torch")
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    cfg = ["model.name=timm:resnet18", "data.image_size=32", "device=cpu", "train.epochs=1",
           f"out_dir={tmp_path / 'runs'}", "train.init_from=pretrained", "train.init_skip=[fc,conv1]"]
    from vant.config import ConfigError
    from vant.pipeline.init import load_source, with_init_hash

    with pytest.raises(ConfigError, match="not in the Hugging Face cache and vant downloads nothing"):
        with_init_hash(resolve(build_config(None, cfg)))
    # the layout huggingface_hub caches a file in (made here: tests never download)
    hub_id = timm.models.get_pretrained_cfg("resnet18").hf_hub_id
    repo = tmp_path / "hf" / ("models--" + hub_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123")
    (repo / "snapshots" / "abc123").mkdir(parents=True)
    st.save_file(timm.create_model("resnet18", pretrained=False).state_dict(),
                 str(repo / "snapshots" / "abc123" / "model.safetensors"))
    c = with_init_hash(resolve(build_config(None, cfg)))
    assert c.train.init_hash.startswith(f"pretrained:models--{hub_id.replace('/', '--')}:")
    assert load_source(c)["fc.weight"].shape == (1000, 512)
    run = execute(c, progress=False)  # the 1000-class head and the 3-channel stem re-initialised for the digits
    assert (run.path / "trained").is_file()

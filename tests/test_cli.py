"""The command line: bad input ends with one line, a non-zero exit and no run directory."""
import subprocess
import sys

import pytest

from tests.helpers import TINY, run_demo


def vant(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "vant", *args], capture_output=True, text=True, cwd=cwd)


@pytest.mark.parametrize("args,message", [
    (["model.name=resnet17"], "unknown model 'resnet17'"),
    (["data.name=cifar11"], "unknown data set 'cifar11'"),
    (["train.sigma=-0.5"], "train.sigma must be >= 0"),
    (["data.name=cifar10", "data.root=/nonexistent/data"], "CIFAR-10 not found: looked in /nonexistent/data"),
    (["train.sigmaa=1"], "unknown config key 'train.sigmaa'"),
    (["train.epochs=many"], "train.epochs: expected an integer"),
    (["model.kwargs={depth: 3}"], "model.kwargs"),
])
def test_bad_input_is_one_line_nonzero_and_leaves_nothing(tmp_path, args, message):
    out = tmp_path / "runs"
    r = vant("train", "-q", *TINY, f"out_dir={out}", *args)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vant: error:") and message in lines[0], r.stderr
    assert not out.exists() or not any(out.iterdir())


def test_malformed_config_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  sigma: [1,\n")
    r = vant("train", "-c", str(bad), f"out_dir={tmp_path / 'runs'}")
    assert r.returncode == 2 and "not valid YAML" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_corrupt_checkpoint_via_sweep(tmp_path, trained_run):
    import shutil

    copy = tmp_path / trained_run.path.name
    shutil.copytree(trained_run.path, copy)
    (copy / "checkpoint.pt").write_bytes(b"\x00garbage")
    r = vant("sweep", str(copy), "--repeats", "5", "-q")
    assert r.returncode == 2 and "unreadable" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_train_sweep_plot_list(tmp_path, trained_run):
    import shutil

    copy = tmp_path / "runs" / trained_run.path.name  # the shared fixture run stays untouched
    shutil.copytree(trained_run.path, copy)
    r = vant("sweep", str(copy), "--sigmas", "0.2,0.4", "--repeats", "2", "-q")
    assert r.returncode == 0, r.stderr
    assert "0.2" in r.stdout and "0.4" in r.stdout
    assert {0.2, 0.4} <= {float(l.split(",")[0]) for l in (copy / "sweep.csv").read_text().splitlines()[1:]}
    r = vant("sweep", str(copy), "train.sigma=0.1")
    assert r.returncode == 2 and "only eval" in r.stderr
    png = tmp_path / "c.png"
    assert vant("plot", str(trained_run.path), "-o", str(png)).returncode == 0 and png.is_file()
    r = vant("list", "runs", "--out-dir", str(trained_run.path.parent))
    assert trained_run.path.name in r.stdout
    assert "resnet18" in vant("list", "models").stdout and "tinyimagenet" in vant("list", "datasets").stdout


@pytest.mark.slow
def test_demo_is_reproducible(tmp_path, demo_run):
    """The demo pipeline on shrunken settings, run again in a fresh directory and process: same table."""
    first_dir, a = demo_run
    b = run_demo(tmp_path / "b")
    assert a.returncode == 0 and b.returncode == 0, a.stderr + b.stderr
    table = lambda out: [l for l in out.splitlines() if l.startswith("|")]
    assert table(a.stdout) == table(b.stdout) and len(table(a.stdout)) == 7
    assert (tmp_path / "b" / "report.png").is_file() and (tmp_path / "b" / "report.md").is_file()
    assert (tmp_path / "b" / "results.csv").is_file()  # the demo is a grid: its results table is there


def test_version_and_module_entry_point():
    r = subprocess.run([sys.executable, "-m", "vant", "--version"], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.startswith("vant ")
    r = subprocess.run([sys.executable, "-m", "vant", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "demo" in r.stdout and "grid" in r.stdout


def test_config_show_prints_the_resolved_config(tmp_path):
    import yaml

    from vant.config import build_config, resolve, to_dict

    r = vant("config", "show", "train.sigma=0.7", "model.name=resnet18")
    assert r.returncode == 0, r.stderr
    shown = yaml.safe_load(r.stdout)
    assert shown["train"]["sigma"] == 0.7
    assert shown["train"]["lr"] == 1e-2 and shown["train"]["theta"] == 0.35  # the recipe's, filled in
    assert shown == to_dict(resolve(build_config(None, ["train.sigma=0.7", "model.name=resnet18"])))
    # what it prints is a config file that gives the same run
    f = tmp_path / "shown.yaml"
    f.write_text(r.stdout)
    again = vant("config", "show", "-c", str(f))
    assert again.returncode == 0 and yaml.safe_load(again.stdout) == shown


def test_options_may_stand_among_overrides(tmp_path):
    import yaml

    f = tmp_path / "c.yaml"
    f.write_text("train: {epochs: 3}\n")
    r = vant("config", "show", "train.sigma=0.7", "-c", str(f), "model.name=resnet18")
    assert r.returncode == 0, r.stderr
    shown = yaml.safe_load(r.stdout)
    assert (shown["train"]["sigma"], shown["model"]["name"], shown["train"]["epochs"]) == (0.7, "resnet18", 3)
    r = vant("config", "show", "train.sigma=0.7", "--nonsense", "model.name=resnet18")
    assert r.returncode == 2 and "unrecognized arguments: --nonsense" in r.stderr
    r = vant("list", "presets", "x=1")  # a command without overrides takes none
    assert r.returncode == 2 and "unrecognized arguments: x=1" in r.stderr


@pytest.mark.parametrize("args,message", [
    (["train.sigmaa=1"], "unknown config key 'train.sigmaa'"),
    (["train.sigma=-1"], "train.sigma must be >= 0"),
    (["model.name=resnet17"], "unknown model 'resnet17'"),
    (["data.name=cifar11"], "unknown data set 'cifar11'"),
    (["train.sigma"], "is not of the form key=value"),
])
def test_config_show_bad_override_is_one_line(args, message):
    r = vant("config", "show", *args)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and r.stdout == ""
    assert len(lines) == 1 and lines[0].startswith("vant: error:") and message in lines[0], r.stderr


@pytest.mark.parametrize("what", ["models", "datasets", "presets", "scenarios", "runs", "help", "config show",
                                  "config error"])
def test_light_commands_do_not_load_torch(what, trained_run):
    """`vant --help`, `vant list ...` and `vant config show` (its errors too) answer without torch or
    matplotlib (seconds on a slow disk)."""
    argv = {"help": ["--help"], "config show": ["config", "show", "train.sigma=0.7"],
            "config error": ["config", "show", "train.sigmaa=1"]}.get(
        what, ["list", what, "--out-dir", str(trained_run.path.parent)])
    code = ("import sys\nfrom vant.cli import main\n"
            f"try:\n    main({argv!r})\nexcept SystemExit:\n    pass\n"
            "heavy = sorted(m for m in ('torch', 'torchvision', 'matplotlib') if m in sys.modules)\n"
            "assert not heavy, heavy")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    if what == "runs":  # the run's summary was read, without torch
        assert trained_run.path.name in r.stdout and "clean" in r.stdout


def test_completion_script_names_the_subcommands():
    r = vant("completion", "bash")
    assert r.returncode == 0, r.stderr
    assert "complete" in r.stdout and "_shtab_vant" in r.stdout
    for command in ("train", "sweep", "grid", "list", "config", "demo", "evaluate", "completion"):
        assert command in r.stdout
    assert "show" in r.stdout  # vant config show
    zsh = vant("completion", "zsh")
    assert zsh.returncode == 0 and zsh.stdout.startswith("#compdef vant")


def test_completion_without_shtab_names_the_extra():
    code = "import sys\nsys.modules['shtab'] = None\nfrom vant.cli import main\nsys.exit(main(['completion', 'bash']))"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.strip() == 'vant: error: shell completion needs shtab: pip install "vant[completion]"'

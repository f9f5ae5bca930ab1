"""A user's own model and data by name (package.module:function, torchvision:<Class>): read, checked
before anything is written, trained and swept from the command line and in grids."""
import itertools
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import vant
from vant.cli import main
from vant.config import ConfigError, build_config, config_hash, resolve
from vant.data import DataError, DataNotFound, check_dataset_name, load_dataset
from vant.models import check_model, create_model

_count = itertools.count()

USER_MODULE = '''
import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.utils.data import Dataset, TensorDataset


def build(num_classes, in_channels, width=8):
    """A small CNN of the user's."""
    return nn.Sequential(nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(width, num_classes))


def images(n, c=3, size=12, seed=0):
    """Four classes told apart by brightness: something a tiny model can learn in an epoch."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 4
    x = (torch.rand(n, c, size, size, generator=g) * 0.25 + 0.25 * y.float().view(-1, 1, 1, 1)).clamp(0, 1)
    return x, y


def load(root):
    """Float tensors in [0, 1] as a Dataset for train, uint8 numpy arrays as a pair for test."""
    x, y = images(160)
    return TensorDataset(x[:120], y[:120]), ((x[120:] * 255).round().to(torch.uint8).numpy(), y[120:].numpy())


class PILSet(Dataset):
    classes = ["a", "b", "c", "d", "e"]  # five named classes, of which the data use four

    def __init__(self, n, seed):
        self.x, self.y = images(n, seed=seed)

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        a = (self.x[i] * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
        return Image.fromarray(a, mode="RGB"), int(self.y[i])


def load_pil(root):
    return PILSet(40, 0), PILSet(12, 1)


def load_grey(root):
    x, y = images(60, c=1)
    return (x[:40, 0].numpy(), y[:40].tolist()), (x[40:, 0].numpy(), y[40:].tolist())


def root_seen(root):
    global SEEN
    SEEN = root
    return load(root)


def not_a_model(num_classes, in_channels):
    return 42


def wrong_logits(num_classes, in_channels):
    return nn.Sequential(nn.Flatten(), nn.LazyLinear(num_classes + 1))


def five_channels(num_classes, in_channels):
    return nn.Sequential(nn.Conv2d(5, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, num_classes))


def with_bn(num_classes, in_channels):
    return nn.Sequential(nn.Conv2d(in_channels, 4, 3), nn.BatchNorm2d(4), nn.Dropout(0.5), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(4, num_classes))


def one_split(root):
    return load(root)[0]


def hwc(root):
    x, y = images(40)
    a = x.permute(0, 2, 3, 1).numpy()
    return (a[:30], y[:30].numpy()), (a[30:], y[30:].numpy())


def normalised(root):
    x, y = images(40)
    x = (x - 0.5) / 0.25
    return TensorDataset(x[:30], y[:30]), TensorDataset(x[30:], y[30:])


def float_labels(root):
    x, y = images(40)
    return (x[:30].numpy(), y[:30].float().numpy()), (x[30:].numpy(), y[30:].numpy())


def triples(root):
    x, y = images(40)
    return TensorDataset(x[:30], y[:30], y[:30]), TensorDataset(x[30:], y[30:])


def ragged(root):
    x, y = images(40)
    train = [(x[i] if i else x[i, :, :10, :10], int(y[i])) for i in range(30)]
    return train, TensorDataset(x[30:], y[30:])


def wide(root):
    x, y = images(40)
    x = torch.cat([x, x], dim=3)  # 12 x 24
    return TensorDataset(x[:30], y[:30]), TensorDataset(x[30:], y[30:])


NOT_CALLABLE = 3
'''


@pytest.fixture
def user(tmp_path, monkeypatch):
    """A module of the user's, importable under a fresh name (so each test imports its own copy)."""
    name = f"vant_user_{os.getpid()}_{next(_count)}"
    (tmp_path / f"{name}.py").write_text(USER_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    sys.modules.pop(name, None)


# ----------------------------------------------------------------------------- models


def test_factory_model_gets_the_data_counts_and_kwargs(user):
    model = create_model(f"{user}:build", num_classes=7, in_channels=2, width=5)
    assert model[0].in_channels == 2 and model[0].out_channels == 5 and model[-1].out_features == 7
    assert check_model(f"{user}:build", {"width": 5}).input_size is None


@pytest.mark.parametrize("name,kwargs,message", [
    ("vant_no_such_module_xyz:build", {}, "cannot import module 'vant_no_such_module_xyz'"),
    ("{user}:nope", {}, "has no attribute 'nope'"),
    ("{user}:NOT_CALLABLE", {}, "'NOT_CALLABLE' is a int, not a function"),
    ("{user}:load", {}, "cannot be called as load(num_classes=..., in_channels=...)"),
    ("{user}:build", {"depth": 3}, "unexpected keyword argument 'depth'"),
    ("{user}:build", {"num_classes": 3}, "model.kwargs must not set num_classes"),
    ("{user}:", {}, "unknown model"),
])
def test_bad_factory_names_are_refused_before_building(user, name, kwargs, message):
    with pytest.raises(ValueError) as e:
        check_model(name.format(user=user), kwargs)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_a_factory_must_return_a_module(user):
    with pytest.raises(ValueError, match="returned int, not a torch.nn.Module"):
        create_model(f"{user}:not_a_model")


# ----------------------------------------------------------------------------- data


def test_factory_data_datasets_and_array_pairs(user, tmp_path):
    d = load_dataset(f"{user}:load", tmp_path)
    mod = sys.modules[user]
    x, y = mod.images(160)
    assert d.train_x.dtype == torch.uint8 and d.train_x.shape == (120, 3, 12, 12) and d.test_x.shape == (40, 3, 12, 12)
    assert torch.equal(d.train_x, (x[:120] * 255).round().to(torch.uint8))  # floats in [0, 1] -> pixels
    assert torch.equal(d.test_x, (x[120:] * 255).round().to(torch.uint8))
    assert d.train_y.tolist() == y[:120].tolist() and d.test_y.dtype == torch.int64
    assert d.num_classes == 4 and d.channels == 3 and d.size == 12 and not d.augment
    assert len(d.mean) == 3 and all(0 < m < 1 for m in d.mean)  # normalised with the train set's statistics


def test_factory_data_pil_items_classes_and_resize(user, tmp_path):
    d = load_dataset(f"{user}:load_pil", tmp_path, image_size=16)
    assert d.train_x.shape == (40, 3, 16, 16) and d.num_classes == 5  # the data set names five classes
    native = load_dataset(f"{user}:load_pil", tmp_path)
    x, _ = sys.modules[user].images(12, seed=1)
    assert torch.equal(native.test_x, (x * 255).round().to(torch.uint8))
    grey = load_dataset(f"{user}:load_grey", tmp_path)
    assert grey.train_x.shape == (40, 1, 12, 12) and grey.num_classes == 4


def test_factory_gets_the_expanded_root(user, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    load_dataset(f"{user}:root_seen", "~/data")
    assert sys.modules[user].SEEN == str(tmp_path / "data")


@pytest.mark.parametrize("fn,message", [
    ("one_split", "returned TensorDataset; expected (train, test)"),
    ("hwc", "look like H x W x C (12x12x3); give C x H x W"),
    ("normalised", "expected [0, 1] (give the images unnormalised"),
    ("float_labels", "the labels are torch.float32; expected integer class indices"),
    ("triples", "item 0 is a tuple of 3; expected an (image, label) pair"),
    ("ragged", "item 1 is a 3x12x12 image, item 0 a 3x10x10 one"),
    ("wide", "12x24 train and 12x24 test images; vant needs square images"),
    ("build", "cannot be called as build(root=...)"),
])
def test_bad_data_returns_are_one_line_errors(user, tmp_path, fn, message):
    with pytest.raises(ValueError) as e:
        load_dataset(f"{user}:{fn}", tmp_path)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_non_square_images_with_image_size(user, tmp_path):
    assert load_dataset(f"{user}:wide", tmp_path, image_size=8).train_x.shape == (30, 3, 8, 8)


def _raw_idx(array, path):
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(s).to_bytes(4, "big") for s in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def write_mnist_raw(root, n_train=24, n_test=10):
    """torchvision's MNIST layout (MNIST/raw/, uncompressed IDX files), small."""
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    xtr, xte = rng.integers(0, 256, (n_train, 28, 28)), rng.integers(0, 256, (n_test, 28, 28))
    ytr, yte = np.arange(n_train) % 10, (np.arange(n_test) * 3) % 10
    for name, a in (("train-images-idx3-ubyte", xtr), ("train-labels-idx1-ubyte", ytr),
                    ("t10k-images-idx3-ubyte", xte), ("t10k-labels-idx1-ubyte", yte)):
        _raw_idx(a, raw / name)
    return xtr, ytr, xte, yte


def test_torchvision_class_reads_its_files(tmp_path):
    xtr, ytr, xte, yte = write_mnist_raw(tmp_path)
    d = load_dataset("torchvision:MNIST", tmp_path)
    assert d.train_x.shape == (24, 1, 28, 28) and d.test_x.shape == (10, 1, 28, 28) and d.num_classes == 10
    assert d.train_x[:, 0].numpy().tolist() == xtr.tolist() and d.test_y.tolist() == yte.tolist()
    # the same files through vant's own reader give the same tensors
    own = load_dataset("mnist", tmp_path)
    assert torch.equal(own.train_x, d.train_x) and torch.equal(own.test_y, d.test_y)


@pytest.mark.parametrize("name,error,message", [
    ("torchvision:MNISTT", ValueError, "no data set class 'MNISTT'; did you mean MNIST"),
    ("torchvision:FakeData", ValueError, "FakeData takes no root argument"),
    ("torchvision:Kinetics", ValueError, "needs more than root"),
    ("torchvision:MNIST", DataNotFound, "pass data.download=true"),
])
def test_torchvision_refusals(tmp_path, name, error, message):
    with pytest.raises(error, match=message.replace("(", r"\(").replace(".", r"\.")):
        check_dataset_name(name)
        load_dataset(name, tmp_path)


# ----------------------------------------------------------------------------- runs, CLI, grids


def _cli_args(user, out):
    return [f"model.name={user}:build", f"data.name={user}:load", "train.epochs=2", "train.batch_size=32",
            "train.lr=0.01", "eval.sigmas=[0.1,0.3]", "eval.repeats=1", "device=cpu", f"out_dir={out}"]


def test_identity_includes_the_factory_and_its_kwargs(user):
    base = build_config(None, [f"model.name={user}:build", f"data.name={user}:load"])
    other = build_config(None, [f"model.name={user}:build", f"data.name={user}:load", "model.kwargs={width: 4}"])
    assert config_hash(resolve(base)) != config_hash(resolve(other))
    from vant.pipeline.runs import run_dir

    assert run_dir(resolve(base)).name.startswith(f"{user}_build-{user}_load-vant1")


def test_command_line_trains_and_sweeps_a_user_module(user, tmp_path):
    out = tmp_path / "runs"
    repo = Path(vant.__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), str(repo)]))
    r = subprocess.run([sys.executable, "-m", "vant", "train", "-q", *_cli_args(user, out)], capture_output=True,
                       text=True, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    (run,) = out.iterdir()
    stored = (run / "config.yaml").read_text()
    assert f"name: {user}:build" in stored and f"name: {user}:load" in stored
    r = subprocess.run([sys.executable, "-m", "vant", "sweep", "-q", str(run), "--sigmas", "0.2,0.4", "--repeats", "2"],
                       capture_output=True, text=True, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    rows = (run / "sweep.csv").read_text().splitlines()
    assert sum(line.startswith(("0.2,", "0.4,")) for line in rows) == 4  # 2 sigmas x 2 repeats


@pytest.mark.parametrize("extra,message", [
    (["model.name={user}:wrong_logits"], "returns a tensor of shape [2, 5]"),
    (["data.name={user}:hwc"], "look like H x W x C"),
    (["model.name={user}:five_channels"], "does not run on a [2, 3, 12, 12] batch of '{user}:load' (RuntimeError: "),
    (["model.name={user}:build", "model.kwargs={depth: 2}"], "unexpected keyword argument 'depth'"),
    (["model.name=vant_missing_mod_abc:build"], "cannot import module"),
])
def test_bad_user_code_is_one_line_and_leaves_no_run(user, tmp_path, capsys, extra, message):
    out = tmp_path / "runs"
    args = _cli_args(user, out) + [e.replace("{user}", user) for e in extra]
    assert main(["train", "-q", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message.replace("{user}", user) in err[0], err
    assert not out.exists()


def test_the_forward_probe_changes_nothing(user, tmp_path):
    from vant.pipeline.runs import build_model

    cfg = resolve(build_config(None, [f"model.name={user}:with_bn", f"data.name={user}:load"]))
    data = load_dataset(cfg.data.name, tmp_path)
    model = build_model(cfg, data)  # probed: one forward pass of two images
    torch.manual_seed(cfg.train.seed)
    plain = create_model(cfg.model.name, num_classes=4, in_channels=3)
    after_plain = torch.get_rng_state()
    model = build_model(cfg, data)
    assert torch.equal(torch.get_rng_state(), after_plain)  # the probe drew nothing from the global RNG
    assert model.training
    bn = model[1]
    assert int(bn.num_batches_tracked) == 0 and torch.equal(bn.running_mean, torch.zeros(4))
    assert all(torch.equal(a, b) for a, b in zip(plain.state_dict().values(), model.state_dict().values()))


def test_a_grid_over_a_user_factory_expands_and_runs(user, tmp_path):
    from vant.experiments.grid import run_grid
    from vant.experiments.spec import expand, load_spec

    spec = tmp_path / "mine.yaml"
    spec.write_text(textwrap.dedent(f"""\
        description: my model and data
        base:
          model: {{name: "{user}:build"}}
          data: {{name: "{user}:load"}}
          train: {{method: nt, sigma: 0.3, epochs: 1, batch_size: 32}}
          eval: {{sigmas: [0.1, 0.3], repeats: 1}}
          device: cpu
          out_dir: {tmp_path / 'runs'}
        grid:
          model.kwargs: [{{width: 4}}, {{width: 6}}]
        """))
    jobs = expand(load_spec(spec))
    assert [j.config.model.kwargs for j in jobs] == [{"width": 4}, {"width": 6}]
    assert len({j.path for j in jobs}) == 2
    result = run_grid(load_spec(spec), tmp_path / "grid", progress=False, report=False, log=lambda *a: None)
    assert not result.failures and len(result.rows) == 2
    bad = spec.read_text().replace("{width: 6}", "{depth: 6}")
    spec.write_text(bad)
    with pytest.raises(ConfigError, match=r"point \{'model.kwargs': \{'depth': 6\}\}: .*unexpected keyword argument"):
        expand(load_spec(spec))

"""Data readers on small files in the real on-disk formats, written here by the tests."""
import gzip
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from vant.data import DataNotFound, DeviceBatches, load_dataset, random_crop_flip


def _rng():
    return np.random.default_rng(0)


def write_cifar10(root, n_per_batch=6):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = _rng()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, (n_per_batch, 3072), dtype=np.uint8)
        labels = list(rng.integers(0, 10, n_per_batch))
        with open(folder / name, "wb") as f:
            pickle.dump({"batch_label": name, "labels": labels, "data": data, "filenames": []}, f)
    return folder


def test_cifar10_python_format(tmp_path):
    folder = write_cifar10(tmp_path)
    d = load_dataset("cifar10", tmp_path)
    assert d.train_x.shape == (30, 3, 32, 32) and d.test_x.shape == (6, 3, 32, 32)
    assert d.train_x.dtype == torch.uint8 and d.num_classes == 10 and d.augment and d.flip
    with open(folder / "test_batch", "rb") as f:
        raw = pickle.load(f, encoding="latin1")
    # CIFAR rows are 1024 R, then G, then B values, row-major
    assert torch.equal(d.test_x[2, 1].flatten(), torch.from_numpy(raw["data"][2, 1024:2048]))
    assert d.test_y.tolist() == raw["labels"]


def _idx(array, path):
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(s).to_bytes(4, "big") for s in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


@pytest.mark.parametrize("name,folder", [("mnist", "MNIST"), ("fashionmnist", "FashionMNIST")])
def test_idx_sets(tmp_path, name, folder):
    raw = tmp_path / folder / "raw"
    raw.mkdir(parents=True)
    rng = _rng()
    xtr, xte = rng.integers(0, 256, (12, 28, 28)), rng.integers(0, 256, (5, 28, 28))
    _idx(xtr, raw / "train-images-idx3-ubyte.gz")
    _idx(rng.integers(0, 10, 12), raw / "train-labels-idx1-ubyte.gz")
    _idx(xte, raw / "t10k-images-idx3-ubyte.gz")
    _idx(np.arange(5), raw / "t10k-labels-idx1-ubyte.gz")
    d = load_dataset(name, tmp_path, image_size=32)
    assert d.train_x.shape == (12, 1, 32, 32) and d.test_y.tolist() == [0, 1, 2, 3, 4]
    assert load_dataset(name, tmp_path).test_x[3, 0].numpy().tolist() == xte[3].tolist()


def test_svhn_mat_format(tmp_path):
    from scipy.io import savemat

    rng = _rng()
    for split, n in (("train", 7), ("test", 4)):
        x = rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8)
        y = np.array([[10], [1], [2], [3], [4], [5], [6]][:n], dtype=np.uint8)
        savemat(tmp_path / f"{split}_32x32.mat", {"X": x, "y": y})
    d = load_dataset("svhn", tmp_path)
    assert d.train_x.shape == (7, 3, 32, 32) and d.test_y.tolist() == [0, 1, 2, 3]  # label 10 is digit 0
    assert not d.flip


def _png(path, value, size):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size, size, 3), value, dtype=np.uint8)).save(path)


def test_cinic10_tree_uses_valid_split(tmp_path):
    root = tmp_path / "cinic10"
    for split in ("train", "valid", "test"):
        for ci, cls in enumerate(["airplane", "cat"]):
            for k in range(3):
                _png(root / split / cls / f"{split}_{k}.png", 40 * ci + k, 32)
    d = load_dataset("cinic10", tmp_path)
    assert d.train_x.shape == (6, 3, 32, 32) and d.test_split == "valid" and d.num_classes == 2
    assert d.test_y.tolist() == [0, 0, 0, 1, 1, 1] and int(d.test_x[4, 0, 0, 0]) == 41
    assert (root / ".vant-cache-train-32.npz").is_file()  # decoded once, cached beside the data
    assert torch.equal(load_dataset("cinic10", tmp_path).train_x, d.train_x)


def test_tinyimagenet_official_layout(tmp_path):
    root = tmp_path / "tiny-imagenet-200"
    wnids = ["n01", "n02", "n03"]
    (root).mkdir()
    (root / "wnids.txt").write_text("\n".join(wnids))
    for i, w in enumerate(wnids):
        for k in range(2):
            _png(root / "train" / w / "images" / f"{w}_{k}.JPEG", 10 * i, 64)
    lines = []
    for k, w in enumerate(["n03", "n01", "n02", "n03"]):
        _png(root / "val" / "images" / f"val_{k}.JPEG", 100 + k, 64)
        lines.append(f"val_{k}.JPEG\t{w}\t0\t0\t63\t63")
    (root / "val" / "val_annotations.txt").write_text("\n".join(lines))
    d = load_dataset("tinyimagenet", tmp_path)
    assert d.train_x.shape == (6, 3, 64, 64) and d.num_classes == 3
    assert d.test_y.tolist() == [2, 0, 1, 2]  # regrouped by the annotation file


def test_imagefolder_any_tree(tmp_path):
    for split in ("train", "val"):
        for cls in ("a", "b"):
            _png(tmp_path / split / cls / "x.png", 7, 20)
    d = load_dataset("imagefolder", tmp_path, image_size=16)
    assert d.train_x.shape == (2, 3, 16, 16) and d.test_split == "val"


def test_digits_bundled_and_stratified():
    d = load_dataset("digits", image_size=32)
    assert d.train_x.shape == (1437, 1, 32, 32) and d.test_x.shape == (360, 1, 32, 32)
    assert d.test_y.bincount().min() >= 35  # stratified: every class present in the test split


@pytest.mark.parametrize("name", ["cifar10", "cinic10", "tinyimagenet", "mnist", "svhn"])
def test_missing_data_names_the_path(tmp_path, name):
    with pytest.raises(DataNotFound, match=str(tmp_path)):
        load_dataset(name, tmp_path)


def test_unknown_dataset():
    with pytest.raises(ValueError, match="unknown data set 'cifar11'"):
        load_dataset("cifar11")


def test_random_crop_flip_is_a_shifted_window_of_the_padded_image():
    x = torch.arange(2 * 1 * 6 * 6, dtype=torch.uint8).view(2, 1, 6, 6)
    g = torch.Generator().manual_seed(0)
    out = random_crop_flip(x, pad=2, flip=False, generator=g)
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for b in range(2):
        windows = [padded[b, :, i:i + 6, j:j + 6] for i in range(5) for j in range(5)]
        assert any(torch.equal(out[b], w) for w in windows)
    flipped = random_crop_flip(x, pad=0, flip=True, generator=torch.Generator().manual_seed(3))
    for b in range(2):
        assert torch.equal(flipped[b], x[b]) or torch.equal(flipped[b], x[b].flip(-1))


def test_device_batches_replay_an_epoch_exactly():
    d = load_dataset("digits")
    kw = dict(batch_size=100, device=torch.device("cpu"), train=True, augment=True, flip=True, seed=5)
    a = DeviceBatches(d.train_x, d.train_y, d.mean, d.std, **kw)
    b = DeviceBatches(d.train_x, d.train_y, d.mean, d.std, **kw)
    xa, ya = zip(*a.epoch(3))
    xb, yb = zip(*b.epoch(3))
    assert all(torch.equal(p, q) for p, q in zip(xa, xb)) and all(torch.equal(p, q) for p, q in zip(ya, yb))
    assert not torch.equal(next(a.epoch(4))[1], ya[0])
    assert sum(len(y) for y in ya) == len(d.train_y)

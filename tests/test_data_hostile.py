"""Data readers against changed, damaged, degenerate and crafted files (issue 12, "Trust").

Every tree and file here is written by the test itself; nothing is downloaded.
"""
import gzip
import os
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from vant.data import DataError, DataNotFound, image_list_key, load_dataset

CLASSES = ("a", "b", "c")


def _img(path, value, size=8, fmt=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size, size, 3), value, dtype=np.uint8)).save(path, format=fmt)


def _tree(root, per_class=3, classes=CLASSES, test="test"):
    """root/{train,test}/<class>/<k>.png; pixel value 10 + 40 * class + k (so a pixel names its class)."""
    for split in ("train", test):
        for ci, c in enumerate(classes):
            for k in range(per_class):
                _img(root / split / c / f"{k}.png", 10 + 40 * ci + k)
    return root


def _class_of_pixel(x):
    return ((x[:, 0, 0, 0].long() - 10) // 40).tolist()


def _one_line_error(excinfo, *fragments):
    msg = str(excinfo.value)
    assert "\n" not in msg, msg
    for f in fragments:
        assert str(f) in msg, msg
    return msg


# ----------------------------------------------------------------------------- the decode cache


def test_overwritten_images_miss_the_cache(tmp_path):
    root = _tree(tmp_path)
    first = load_dataset("imagefolder", root)
    assert first.train_x[3:6, 0, 0, 0].tolist() == [50, 51, 52]
    for k in range(3):  # every image of class b, new pixels, same count (and the same file sizes)
        p = root / "train" / "b" / f"{k}.png"
        before = p.stat()
        _img(p, 200 + k)
        # a later write; set explicitly so a coarse file-system clock cannot make this test pass vacuously
        os.utime(p, ns=(before.st_atime_ns, before.st_mtime_ns + 1_000_000_000))
    again = load_dataset("imagefolder", root)
    assert again.train_x[3:6, 0, 0, 0].tolist() == [200, 201, 202]
    assert torch.equal(again.train_x[:3], first.train_x[:3])


def test_moved_image_takes_its_label_along(tmp_path):
    root = _tree(tmp_path)
    first = load_dataset("imagefolder", root)
    assert first.train_y.tolist() == _class_of_pixel(first.train_x)
    os.replace(root / "train" / "a" / "0.png", root / "train" / "b" / "moved.png")  # same count overall
    again = load_dataset("imagefolder", root)
    assert again.train_y.tolist() == [0, 0, 1, 1, 1, 1, 2, 2, 2]
    moved = again.train_x[again.train_y == 1][:, 0, 0, 0].tolist()
    assert sorted(moved) == [10, 50, 51, 52]  # the moved image's pixels went with it into class b


def test_cache_is_keyed_by_the_resize_side(tmp_path):
    root = _tree(tmp_path)
    key8 = image_list_key([root / "train" / "a" / "0.png"], 8, [0], root)
    assert key8 != image_list_key([root / "train" / "a" / "0.png"], 16, [0], root)
    assert key8 != image_list_key([root / "train" / "a" / "0.png"], 8, [1], root)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty", "old_npy"])
def test_corrupt_cache_is_rebuilt(tmp_path, damage):
    root = _tree(tmp_path / "cinic10")
    os.replace(root / "test", root / "valid")
    first = load_dataset("cinic10", tmp_path)
    cache = root / ".vant-cache-train-32.npz"
    raw = cache.read_bytes()
    if damage == "truncate":
        cache.write_bytes(raw[: len(raw) // 2])
    elif damage == "garbage":
        cache.write_bytes(os.urandom(len(raw)))
    elif damage == "empty":
        cache.write_bytes(b"")
    else:  # a bare array, as older versions wrote, under the new name
        np.save(open(cache, "wb"), first.train_x.numpy())
    again = load_dataset("cinic10", tmp_path)
    assert torch.equal(again.train_x, first.train_x) and torch.equal(again.train_y, first.train_y)
    with np.load(cache, allow_pickle=False) as z:  # rewritten whole
        assert np.array_equal(z["x"], first.train_x.numpy())
    assert not [p for p in root.iterdir() if p.name.endswith(".tmp")]  # no temporary file left behind


class _Boom:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_cache_holding_a_pickle_is_never_unpickled(tmp_path):
    root = _tree(tmp_path)
    load_dataset("imagefolder", root)
    cache = root / ".vant-cache-train-None.npz"
    with np.load(cache, allow_pickle=False) as z:
        key = str(z["key"])
    marker = tmp_path / "ran"
    x = np.empty(9, dtype=object)
    x[:] = [_Boom(marker)] * 9
    with open(cache, "wb") as f:  # the right key, and an object array that runs code when unpickled
        np.savez(f, key=np.array(key), x=x)
    d = load_dataset("imagefolder", root)
    assert not marker.exists()
    assert d.train_x.shape == (9, 3, 8, 8) and d.train_y.tolist() == _class_of_pixel(d.train_x)


def test_stale_count_keyed_cache_is_ignored_and_removed(tmp_path):
    root = _tree(tmp_path)
    old = root / ".vant-cache-train-None.npy"
    np.save(old, np.zeros((9, 3, 8, 8), dtype=np.uint8))  # same count, wrong pixels: older versions used it
    d = load_dataset("imagefolder", root)
    assert d.train_y.tolist() == _class_of_pixel(d.train_x) and not old.exists()


# ----------------------------------------------------------------------------- bad image files


@pytest.mark.parametrize("content", [b"", b"this is not a JPEG\n", b"\xff\xd8\xff\xe0" + b"\x00" * 20])
def test_undecodable_image_names_the_file(tmp_path, content):
    root = _tree(tmp_path)
    bad = root / "train" / "b" / "broken.jpg"
    bad.write_bytes(content)
    with pytest.raises(DataError) as e:
        load_dataset("imagefolder", root)
    _one_line_error(e, bad, "cannot be decoded")
    assert isinstance(e.value, ValueError)  # the CLI prints ValueErrors as one line


def test_hidden_files_are_not_part_of_the_tree(tmp_path):
    root = _tree(tmp_path)
    (root / "train" / "a" / "._0.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble")  # macOS metadata
    (root / "train" / ".ipynb_checkpoints").mkdir()
    d = load_dataset("imagefolder", root)
    assert d.num_classes == 3 and len(d.train_x) == 9


def test_annotation_naming_an_unknown_class_names_the_line(tmp_path):
    root = tmp_path / "tiny-imagenet-200"
    for i, w in enumerate(["n01", "n02"]):
        for k in range(2):
            _img(root / "train" / w / "images" / f"{w}_{k}.JPEG", 10 * i, 64, "JPEG")
    _img(root / "val" / "images" / "val_0.JPEG", 5, 64, "JPEG")
    _img(root / "val" / "images" / "val_1.JPEG", 5, 64, "JPEG")
    ann = root / "val" / "val_annotations.txt"
    ann.write_text("val_0.JPEG\tn01\t0\t0\t1\t1\nval_1.JPEG\tn09\t0\t0\t1\t1\n")
    with pytest.raises(DataError) as e:
        load_dataset("tinyimagenet", tmp_path)
    _one_line_error(e, ann, "line 2", "n09")
    ann.write_text("val_0.JPEG\tn01\n../../train/n01/images/n01_0.JPEG\tn02\n")
    with pytest.raises(DataError) as e:
        load_dataset("tinyimagenet", tmp_path)
    _one_line_error(e, ann, "line 2")


# ----------------------------------------------------------------------------- degenerate trees


def test_one_class_tree_is_refused(tmp_path):
    root = _tree(tmp_path, classes=("only",))
    with pytest.raises(DataError) as e:
        load_dataset("imagefolder", root)
    _one_line_error(e, root, "one class")


def test_test_split_smaller_than_the_class_count_is_refused(tmp_path):
    root = _tree(tmp_path)
    for p in (root / "test").glob("*/*.png"):
        if p.parent.name == "c" or p.name != "0.png":
            p.unlink()  # left: a/0.png and b/0.png
    with pytest.raises(DataError) as e:
        load_dataset("imagefolder", root)
    _one_line_error(e, root, "test split has 2 image(s) for 3 classes")


def test_train_and_test_class_lists_must_match(tmp_path):
    root = _tree(tmp_path)
    os.replace(root / "test" / "c", root / "test" / "z")
    with pytest.raises(DataError) as e:
        load_dataset("imagefolder", root)
    _one_line_error(e, root / "test", "'c'", "'z'")


def test_empty_split_is_refused(tmp_path):
    root = _tree(tmp_path)
    for c in CLASSES:
        for p in (root / "test" / c).iterdir():
            p.unlink()
    with pytest.raises(DataNotFound, match=str(root / "test")):
        load_dataset("imagefolder", root)


def test_class_without_training_images_is_refused(tmp_path):
    root = _tree(tmp_path)
    for p in (root / "train" / "c").iterdir():
        p.unlink()
    with pytest.raises(DataError) as e:
        load_dataset("imagefolder", root)
    _one_line_error(e, root, "'c'", "no images under train/")


# ----------------------------------------------------------------------------- CIFAR-10 pickles and IDX files


def _cifar(root, labels=None, protocol=pickle.DEFAULT_PROTOCOL):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        ys = list(rng.integers(0, 10, 4)) if labels is None else list(labels)
        with open(folder / name, "wb") as f:
            pickle.dump({"batch_label": name, "labels": ys, "filenames": [b"x.png", "y.png"],
                         "data": rng.integers(0, 256, (4, 3072), dtype=np.uint8)}, f, protocol=protocol)
    return folder


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_cifar_batches_of_every_pickle_protocol_load(tmp_path, protocol):
    _cifar(tmp_path, labels=[0, 1, 2, 9], protocol=protocol)
    d = load_dataset("cifar10", tmp_path)
    assert d.train_x.shape == (20, 3, 32, 32) and d.test_y.tolist() == [0, 1, 2, 9]


class _Shell:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


def test_cifar_batch_naming_numpy_core_loads(tmp_path):
    """The published batches were pickled by Python 2 and name numpy.core.multiarray, not numpy._core."""
    folder = _cifar(tmp_path, labels=[0, 1, 2, 9], protocol=2)
    for p in folder.iterdir():
        p.write_bytes(p.read_bytes().replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n"))
    assert load_dataset("cifar10", tmp_path).train_y.tolist() == [0, 1, 2, 9] * 5


@pytest.mark.parametrize("payload", [_Boom, _Shell])
def test_crafted_cifar_batch_cannot_run_code(tmp_path, payload):
    folder = _cifar(tmp_path)
    marker = tmp_path / "ran"
    with open(folder / "data_batch_3", "wb") as f:
        pickle.dump({"labels": [0], "data": payload(marker)}, f)
    with pytest.raises(DataError) as e:
        load_dataset("cifar10", tmp_path)
    _one_line_error(e, folder / "data_batch_3", "refusing to load")
    assert not marker.exists()


@pytest.mark.parametrize("damage", ["truncated", "not_a_dict", "wrong_shape", "label_out_of_range", "one_class"])
def test_damaged_cifar_batch_is_one_line(tmp_path, damage):
    folder = _cifar(tmp_path, labels=[3, 3, 3, 3] if damage == "one_class" else None)
    bad = folder / "test_batch"
    if damage == "truncated":
        bad.write_bytes(bad.read_bytes()[:100])
    elif damage == "not_a_dict":
        bad.write_bytes(pickle.dumps([1, 2, 3]))
    elif damage == "wrong_shape":
        bad.write_bytes(pickle.dumps({"data": np.zeros((4, 100), np.uint8), "labels": [0, 1, 2, 3]}))
    elif damage == "label_out_of_range":
        bad.write_bytes(pickle.dumps({"data": np.zeros((2, 3072), np.uint8), "labels": [0, 10]}))
    with pytest.raises(DataError) as e:
        load_dataset("cifar10", tmp_path)
    msg = _one_line_error(e)
    assert str(bad) in msg or "cifar10" in msg


def test_missing_cifar_batch_is_data_not_found(tmp_path):
    folder = _cifar(tmp_path)
    (folder / "data_batch_4").unlink()
    with pytest.raises(DataNotFound, match=str(folder)):
        load_dataset("cifar10", tmp_path)


def test_truncated_idx_file_names_it(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for stem, shape in (("train-images-idx3-ubyte", (4, 28, 28)), ("train-labels-idx1-ubyte", (4,)),
                        ("t10k-images-idx3-ubyte", (2, 28, 28)), ("t10k-labels-idx1-ubyte", (2,))):
        header = bytes([0, 0, 8, len(shape)]) + b"".join(s.to_bytes(4, "big") for s in shape)
        body = bytes(int(np.prod(shape)))
        if stem.startswith("t10k-images"):
            body = body[:-1]
        with gzip.open(raw / f"{stem}.gz", "wb") as f:
            f.write(header + body)
    with pytest.raises(DataError) as e:
        load_dataset("mnist", tmp_path)
    _one_line_error(e, raw / "t10k-images-idx3-ubyte.gz", "truncated")


@pytest.mark.parametrize("damage", ["garbage", "no_X", "label_11"])
def test_damaged_svhn_file_names_it(tmp_path, damage):
    from scipy.io import savemat

    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        y = np.array([[10], [1], [2], [11 if damage == "label_11" and split == "test" else 3]], dtype=np.uint8)
        savemat(tmp_path / f"{split}_32x32.mat", {"X": rng.integers(0, 256, (32, 32, 3, 4), dtype=np.uint8), "y": y})
    bad = tmp_path / "test_32x32.mat"
    if damage == "garbage":
        bad.write_bytes(b"MATLAB 5.0" + os.urandom(200))
    elif damage == "no_X":
        savemat(bad, {"Y": np.zeros(3)})
    with pytest.raises(DataError) as e:
        load_dataset("svhn", tmp_path)
    _one_line_error(e, bad)

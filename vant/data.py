"""Data sets as uint8 tensors, and batches made on the training device.

Every supported set is small enough to sit in memory (Tiny ImageNet is 1.2 GB as uint8), so all
are read once into ``[N, C, H, W]`` uint8 tensors and moved to the training device; random crop,
flip and normalisation run there on whole batches (no CPU loader in the hot loop, as in
cifar10-airbench). Files are read in their public on-disk formats. The readers are our own
because torchvision's classes verify MD5 sums of full files, which rules out the small
real-format files the tests write; torchvision still does the downloading.

Nothing read runs code (CIFAR's pickles go through a data-only unpickler, decode caches are loaded
with ``allow_pickle=False``), a decode cache is keyed by a hash of the files it came from, and a
damaged file or a degenerate split (one class, too few test images) is a one-line DataError.
"""
from __future__ import annotations

import codecs
import gzip
import hashlib
import os
import pickle
import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # torch is imported where the data are read or batched: naming the sets needs none
    import torch
    from torch import Tensor

from .factory import check_call, is_factory_name, load_factory

IMG_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".webp")


class DataNotFound(FileNotFoundError):
    """A data set is missing; the message names the path searched and how to get it."""


class DataError(ValueError):
    """A data set is there but unusable (a file that cannot be read, a degenerate split); the message names it."""


@dataclass
class ArrayData:
    name: str
    train_x: Tensor  # uint8 [N, C, H, W]
    train_y: Tensor  # int64 [N]
    test_x: Tensor
    test_y: Tensor
    num_classes: int
    mean: tuple[float, ...]  # per-channel mean of [0, 1] pixels, for normalisation
    std: tuple[float, ...]
    augment: bool  # default for random crop (pad 4)
    flip: bool  # horizontal flip is part of the augmentation (not for digits or house numbers)
    test_split: str  # which split the test tensors are (CINIC-10 uses 'valid', spec 4)

    @property
    def channels(self) -> int:
        return self.train_x.shape[1]

    @property
    def size(self) -> int:
        return self.train_x.shape[-1]


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    load: Callable[[Path, bool], dict]
    description: str
    downloadable: bool = False


_DATASETS: dict[str, DatasetInfo] = {}


def register_dataset(name: str, description: str, downloadable: bool = False):
    def deco(fn):
        _DATASETS[name] = DatasetInfo(name, fn, description, downloadable)
        return fn
    return deco


def list_datasets() -> dict[str, str]:
    return {n: i.description for n, i in sorted(_DATASETS.items())}


def check_dataset_name(name: str) -> None:
    """A registered name, ``torchvision:<Class>`` or ``package.module:function``; else a one-line error.
    Reads no data (the module of a factory is imported and its signature checked)."""
    _loader(name)


def _loader(name: str) -> Callable[[Path, bool], dict]:
    external = None if name in _DATASETS else _external_loader(name)
    if external is not None:
        return external
    if name not in _DATASETS:
        raise ValueError(f"unknown data set {name!r}; choose one of {sorted(_DATASETS)}, torchvision:<Class> "
                         "or package.module:function")
    return _DATASETS[name].load


def load_dataset(name: str, root: str | os.PathLike = "~/.cache/vant/data", download: bool = False,
                 image_size: int | None = None, augment: bool | None = None, *, subset: int | None = None,
                 test_subset: int | None = None, subset_seed: int = 0) -> ArrayData:
    """Read a data set into uint8 tensors, resized to ``image_size`` when given.

    ``name`` is a registered set, ``torchvision:<Class>`` (the class's train and test split under
    ``root``) or ``package.module:function``, called as ``function(root=root)`` and returning
    ``(train, test)`` (see :data:`EXPECTED_SPLITS`); their images are read once into uint8 tensors.

    ``subset`` / ``test_subset``: keep that many images of the split, class-stratified
    (:func:`stratified_subset`, seeded by ``subset_seed``). The normalisation statistics stay those
    of the whole training split: a subset changes which images train, not the input units."""
    load = _loader(name)
    root = Path(os.path.expanduser(str(root)))
    raw = load(root, download)
    data = ArrayData(name=name, **raw)
    check_splits(data, root)
    if image_size is not None:
        if tuple(data.train_x.shape[-2:]) != (image_size, image_size):
            data.train_x = resize_uint8(data.train_x, image_size)
        if tuple(data.test_x.shape[-2:]) != (image_size, image_size):
            data.test_x = resize_uint8(data.test_x, image_size)
    (h, w), (th, tw) = data.train_x.shape[-2:], data.test_x.shape[-2:]
    if h != w or (h, w) != (th, tw):
        raise DataError(f"data set {name!r} has {h}x{w} train and {th}x{tw} test images; vant needs square images "
                        "of one size: set data.image_size=N to resize them to N x N")
    if data.mean is None:
        data.mean, data.std = channel_stats(data.train_x)
    if augment is not None:
        data.augment = augment
    for key, n, split in (("data.subset", subset, "train"), ("data.test_subset", test_subset, "test")):
        if n is None:
            continue
        x, y = (data.train_x, data.train_y) if split == "train" else (data.test_x, data.test_y)
        try:
            keep = stratified_subset(y, n, subset_seed + (0 if split == "train" else 1))
        except ValueError as e:
            raise DataError(f"{key}={n}: {e} (data set {name!r}, {data.test_split if split == 'test' else split} split)") from None
        if split == "train":
            data.train_x, data.train_y = x[keep], y[keep]
        else:
            data.test_x, data.test_y = x[keep], y[keep]
    return data


def stratified_subset(labels: Tensor, n: int, seed: int = 0) -> Tensor:
    """Indices (sorted) of ``n`` items drawn without replacement, every class in proportion to its share.

    Class ``c`` with ``n_c`` of ``N`` items gets ``floor(n * n_c / N)`` items, and the ``n - sum`` left
    over go to the classes with the largest remainders (ties: the lower class). Within a class the
    items are a seeded random choice, so the same ``(labels, n, seed)`` gives the same subset on every
    machine. Every class present keeps at least one item, which needs ``n`` >= the number of classes.
    """
    import torch

    y = labels.to(torch.int64).cpu()
    total = len(y)
    if not 1 <= n <= total:
        raise ValueError(f"asks for {n} images, the split has {total}")
    classes, counts = torch.unique(y, return_counts=True)
    if n < len(classes):
        raise ValueError(f"{n} images cannot hold the split's {len(classes)} classes (one each at least)")
    if n == total:
        return torch.arange(total)
    exact = [n * int(c) / total for c in counts]
    take = [max(1, int(e)) for e in exact]
    order = sorted(range(len(exact)), key=lambda i: (-(exact[i] - int(exact[i])), i))
    i = 0
    while sum(take) < n:  # the largest remainders first
        k = order[i % len(order)]
        if take[k] < int(counts[k]):
            take[k] += 1
        i += 1
    while sum(take) > n:  # only when the floor of one made a class 1: take back from the largest shares
        k = max((j for j in range(len(take)) if take[j] > 1), key=lambda j: (take[j] - exact[j], take[j]))
        take[k] -= 1
    g = torch.Generator().manual_seed(int(seed))
    picks = []
    for c, k in zip(classes.tolist(), take):
        idx = torch.nonzero(y == c).flatten()
        picks.append(idx[torch.randperm(len(idx), generator=g)[:k]])
    return torch.sort(torch.cat(picks)).values


def check_splits(data: ArrayData, root: Path | None = None) -> None:
    """Refuse data nothing can be learnt or measured on: an empty split, one class only, labels out of range.

    A one-class split trains to 100 % and reports it; a label past the last class fails deep in a
    CUDA kernel. Both are caught here, at load time, with a line naming the data set.
    """
    import torch

    where = f"data set {data.name!r}" + (f" at {root}" if root is not None and data.name != "digits" else "")
    k = data.num_classes
    if k < 2:
        raise DataError(f"{where} has {k} class(es); a classifier needs two or more")
    for split, x, y in (("train", data.train_x, data.train_y), (data.test_split, data.test_x, data.test_y)):
        if x.ndim != 4 or x.dtype != torch.uint8:
            raise DataError(f"{where}: the {split} images are not a uint8 [N, C, H, W] array (got {x.dtype} {tuple(x.shape)})")
        if len(x) != len(y):
            raise DataError(f"{where}: the {split} split has {len(x)} images but {len(y)} labels")
        if len(x) == 0:
            raise DataError(f"{where}: the {split} split is empty")
        lo, hi = int(y.min()), int(y.max())
        if lo < 0 or hi >= k:
            raise DataError(f"{where}: the {split} split has labels {lo}..{hi}, outside 0..{k - 1}")
        if lo == hi:
            why = "training would trivially reach 100 %" if split == "train" else "its accuracy would measure that class only"
            raise DataError(f"{where}: the {split} split has one class only (label {lo}); {why}")


def channel_stats(x: Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and (sample) std of the [0, 1] pixels of uint8 images ``x`` (N, C, H, W), exactly.

    Counted from each channel's 256-bin histogram (integer counts) and summed in float64 in a fixed
    order, so the result does not depend on the thread count or the machine: a float32 ``mean`` over
    the whole set is summed in an order that follows the threads, and its last bit moved every number
    of a run started with OMP_NUM_THREADS=1 instead of 2. A std below 1e-3 is raised to 1e-3."""
    import torch

    if x.dtype != torch.uint8 or x.dim() != 4:
        raise ValueError(f"channel_stats needs uint8 images (N, C, H, W), got {x.dtype} {tuple(x.shape)}")
    levels = np.arange(256, dtype=np.float64) / 255.0
    means, stds = [], []
    for c in range(x.shape[1]):
        counts = torch.bincount(x[:, c].reshape(-1), minlength=256).numpy().astype(np.float64)
        n = counts.sum()
        mean = float((counts * levels).sum() / n)
        var = float((counts * (levels - mean) ** 2).sum() / max(n - 1, 1))
        means.append(mean)
        stds.append(max(var ** 0.5, 1e-3))
    return tuple(means), tuple(stds)


def resize_uint8(x: Tensor, size: int) -> Tensor:
    import torch
    import torch.nn.functional as F

    out = F.interpolate(x.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return out.round_().clamp_(0, 255).to(torch.uint8)


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def _missing(what: str, path: Path, downloadable: bool) -> DataNotFound:
    how = ("pass data.download=true (CLI: --download) to fetch it, or point data.root at a copy"
           if downloadable else "download it yourself and point data.root at its parent directory")
    return DataNotFound(f"{what} not found: looked in {path}; {how}")


# ----------------------------------------------------------------------------- bundled

@register_dataset("digits", "scikit-learn's 1,797 handwritten digits, 8x8 grey, 10 classes; bundled, no download")
def _digits(root: Path, download: bool) -> dict:
    import torch
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    images = np.round(d.images * (255.0 / 16.0)).astype(np.uint8)[:, None]  # 0..16 -> 0..255
    xtr, xte, ytr, yte = train_test_split(images, d.target, test_size=0.2, stratify=d.target, random_state=0)
    return dict(train_x=torch.from_numpy(xtr), train_y=torch.from_numpy(ytr).long(),
                test_x=torch.from_numpy(xte), test_y=torch.from_numpy(yte).long(), num_classes=10,
                mean=None, std=None, augment=False, flip=False, test_split="test (20%, stratified, seed 0)")


# ----------------------------------------------------------------------------- CIFAR-10 (python pickle format)

CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)


CIFAR_FILES = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch",)


def _latin1_encode(text, encoding="utf-8"):
    # What Python 3 pickles bytes as under protocol 2; only the byte-preserving codec is let through.
    if not isinstance(text, str) or codecs.lookup(encoding).name != "iso8859-1":
        raise pickle.UnpicklingError(f"_codecs.encode with {encoding!r} is not allowed")
    return text.encode("latin1")


_NP_CORE = getattr(np, "_core", None) or np.core
#: The only callables a CIFAR batch pickle may name: numpy's own array/scalar/dtype rebuilders, which
#: build data and run nothing. Anything else (os.system, builtins.eval, ...) is refused before it is looked up.
_CIFAR_PICKLE_GLOBALS = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    **{(m, "_reconstruct"): _NP_CORE.multiarray._reconstruct for m in ("numpy.core.multiarray", "numpy._core.multiarray")},
    **{(m, "scalar"): _NP_CORE.multiarray.scalar for m in ("numpy.core.multiarray", "numpy._core.multiarray")},
    **{(m, "_frombuffer"): _NP_CORE.numeric._frombuffer for m in ("numpy.core.numeric", "numpy._core.numeric")},
    ("_codecs", "encode"): _latin1_encode,
}


class _DataUnpickler(pickle.Unpickler):
    """An unpickler for data files: dicts, lists, str, bytes, numbers and numpy arrays, no other objects."""

    def find_class(self, module, name):
        try:
            return _CIFAR_PICKLE_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: a data file holds only arrays, "
                                         "lists and numbers") from None

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("refusing a persistent id: a data file holds only arrays, lists and numbers")


def read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 python batch: images ``[N, 3, 32, 32]`` uint8 and labels ``[N]`` int64.

    The file is a pickle; it is read with an unpickler that builds only plain data (see
    ``_DataUnpickler``), so a crafted batch file cannot run code. Anything malformed is a DataError
    naming the file.
    """
    try:
        with open(path, "rb") as f:
            d = _DataUnpickler(f, encoding="latin1").load()
    except FileNotFoundError:
        raise DataNotFound(f"CIFAR-10 batch file not found: {path}") from None
    except Exception as e:  # UnpicklingError, EOFError, ValueError, ...: all mean "not a CIFAR batch"
        raise DataError(f"{path} is not a readable CIFAR-10 batch: {_one_line(e)}") from None
    if not isinstance(d, dict) or "data" not in d or "labels" not in d:
        raise DataError(f"{path} is not a CIFAR-10 batch (expected a dict with 'data' and 'labels')")
    data = d["data"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise DataError(f"{path}: 'data' is not a uint8 [N, 3072] array")
    try:
        labels = np.asarray(d["labels"])
    except Exception as e:
        raise DataError(f"{path}: 'labels' is not a list of integers ({_one_line(e)})") from None
    if labels.shape != (len(data),) or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"{path}: 'labels' is not {len(data)} integers")
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64)


def read_cifar10(folder: Path) -> dict:
    import torch

    parts = [read_cifar_batch(folder / name) for name in CIFAR_FILES[:-1]]
    xte, yte = read_cifar_batch(folder / CIFAR_FILES[-1])
    return dict(train_x=torch.from_numpy(np.concatenate([p[0] for p in parts])),
                train_y=torch.from_numpy(np.concatenate([p[1] for p in parts])).long(),
                test_x=torch.from_numpy(xte), test_y=torch.from_numpy(yte).long())


@register_dataset("cifar10", "CIFAR-10 (python version, cifar-10-batches-py/), 32x32 RGB, 10 classes", downloadable=True)
def _cifar10(root: Path, download: bool) -> dict:
    folder = root / "cifar-10-batches-py"
    if not all((folder / name).is_file() for name in CIFAR_FILES):
        if not download:
            raise _missing("CIFAR-10", folder, True)
        import torchvision
        torchvision.datasets.CIFAR10(str(root), train=True, download=True)
    return dict(read_cifar10(folder), num_classes=10, mean=CIFAR_MEAN, std=CIFAR_STD, augment=True, flip=True,
                test_split="test")


# ----------------------------------------------------------------------------- MNIST / FashionMNIST (IDX format)

def read_idx(path: Path) -> np.ndarray:
    """An IDX file (MNIST's format), gzipped or not."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:  # a truncated or non-gzip .gz file
        raise DataError(f"{path} cannot be read: {_one_line(e)}") from None
    if len(raw) < 4 or raw[:2] != b"\x00\x00" or raw[2] != 0x08:
        raise DataError(f"{path} is not an unsigned-byte IDX file")
    ndim = raw[3]
    offset = 4 + 4 * ndim
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    if ndim == 0 or len(raw) != offset + int(np.prod(shape, dtype=object)):
        raise DataError(f"{path}: the IDX header gives shape {shape}, which does not match the file's "
                        f"{max(len(raw) - offset, 0)} data bytes (truncated?)")
    return np.frombuffer(raw, dtype=np.uint8, offset=offset).reshape(shape)


def _idx_set(root: Path, download: bool, folder_name: str, tv_class: str, title: str) -> dict:
    import torch

    raw = root / folder_name / "raw"

    def find(stem):
        for cand in (raw / stem, raw / f"{stem}.gz"):
            if cand.is_file():
                return cand
        return None

    stems = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]
    if any(find(s) is None for s in stems):
        if not download:
            raise _missing(title, raw, True)
        import torchvision
        getattr(torchvision.datasets, tv_class)(str(root), train=True, download=True)
    xtr, ytr, xte, yte = (read_idx(find(s)) for s in stems)
    return dict(train_x=torch.from_numpy(xtr.copy())[:, None], train_y=torch.from_numpy(ytr.astype(np.int64)),
                test_x=torch.from_numpy(xte.copy())[:, None], test_y=torch.from_numpy(yte.astype(np.int64)),
                num_classes=10, mean=None, std=None, augment=False, flip=False, test_split="test")


@register_dataset("mnist", "MNIST (torchvision layout MNIST/raw/, IDX files), 28x28 grey", downloadable=True)
def _mnist(root: Path, download: bool) -> dict:
    return _idx_set(root, download, "MNIST", "MNIST", "MNIST")


@register_dataset("fashionmnist", "FashionMNIST (torchvision layout FashionMNIST/raw/), 28x28 grey", downloadable=True)
def _fashion(root: Path, download: bool) -> dict:
    return _idx_set(root, download, "FashionMNIST", "FashionMNIST", "FashionMNIST")


# ----------------------------------------------------------------------------- SVHN (.mat format)

@register_dataset("svhn", "SVHN cropped digits (train_32x32.mat, test_32x32.mat), 32x32 RGB", downloadable=True)
def _svhn(root: Path, download: bool) -> dict:
    import torch
    from scipy.io import loadmat

    folder = root / "svhn" if (root / "svhn").is_dir() else root
    files = [folder / "train_32x32.mat", folder / "test_32x32.mat"]
    if not all(f.is_file() for f in files):
        if not download:
            raise _missing("SVHN", folder, True)
        import torchvision
        for split in ("train", "test"):
            torchvision.datasets.SVHN(str(folder), split=split, download=True)

    def read(f):
        try:  # loadmat builds arrays only (no code runs); a damaged file is one line naming it
            m = loadmat(str(f))
        except Exception as e:
            raise DataError(f"{f} cannot be read as a MATLAB file: {_one_line(e)}") from None
        X, y = m.get("X"), m.get("y")
        if not isinstance(X, np.ndarray) or X.dtype != np.uint8 or X.ndim != 4 or X.shape[2] != 3:
            raise DataError(f"{f}: no uint8 [H, W, 3, N] array 'X' in it")
        if not isinstance(y, np.ndarray) or y.size != X.shape[3] or not np.issubdtype(y.dtype, np.number):
            raise DataError(f"{f}: no array 'y' of {X.shape[3]} labels in it")
        y = y.astype(np.int64).reshape(-1)
        if y.min() < 0 or y.max() > 10:
            raise DataError(f"{f}: labels {y.min()}..{y.max()}, outside SVHN's 0..10")
        x = torch.from_numpy(np.ascontiguousarray(np.transpose(X, (3, 2, 0, 1))))
        y = torch.from_numpy(y % 10)  # label 10 means digit 0
        return x, y

    (xtr, ytr), (xte, yte) = read(files[0]), read(files[1])
    return dict(train_x=xtr, train_y=ytr, test_x=xte, test_y=yte, num_classes=10, mean=None, std=None,
                augment=True, flip=False, test_split="test")


# ----------------------------------------------------------------------------- image trees

def _decode(path: Path, size: int | None) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            if size is not None and im.size != (size, size):
                im = im.resize((size, size), Image.BILINEAR)
            return np.asarray(im, dtype=np.uint8).transpose(2, 0, 1)
    except FileNotFoundError:
        raise DataNotFound(f"image file not found: {path}") from None
    except Exception as e:  # PIL raises many kinds: OSError, SyntaxError, DecompressionBombError, ...
        raise DataError(f"{path} cannot be decoded as an image: {_one_line(e)}") from None


#: Part of every cache key: a change to what a cache file holds or how it is keyed misses old caches.
IMAGE_CACHE_FORMAT = "vant decoded image list, format 2"


def image_list_key(files: list[Path], size: int | None, labels: list[int] | None = None,
                   base: Path | None = None) -> str:
    """sha256 over everything a decoded image list is derived from.

    That is each file in order (the order of the decoded array) with its path relative to ``base``,
    its byte size, its mtime_ns and its label, and the resize side: overwriting an image, moving it
    to another class folder, adding, removing or renaming one all change the key.
    """
    h = hashlib.sha256(f"{IMAGE_CACHE_FORMAT}\0size={size}\0n={len(files)}\0".encode())
    for i, f in enumerate(files):
        try:
            st = os.stat(f)
        except FileNotFoundError:
            raise DataNotFound(f"image file not found: {f}") from None
        except OSError as e:
            raise DataError(f"{f} cannot be read: {_one_line(e)}") from None
        rel = os.path.relpath(f, base) if base is not None else str(f)
        label = "" if labels is None else int(labels[i])
        # '\0' cannot occur in a path, so the fields cannot run into each other
        h.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\0{label}\0".encode("utf-8", "surrogateescape"))
    return h.hexdigest()


def _load_image_cache(cache: Path, key: str, n: int, size: int | None) -> np.ndarray | None:
    """The cached array when ``cache`` holds one under ``key`` of the expected shape, else None."""
    if not cache.is_file():
        return None
    try:
        with np.load(cache, allow_pickle=False) as z:  # arrays only: nothing in a cache file can run code
            stored = z["key"]
            if stored.shape != () or str(stored) != key:
                return None  # the tree changed since: decode again
            arr = z["x"]
    except Exception:  # truncated, garbage, not an .npz: decode again and rewrite it
        return None
    if arr.dtype != np.uint8 or arr.ndim != 4 or len(arr) != n or arr.shape[1] != 3 \
            or (size is not None and arr.shape[2:] != (size, size)):
        return None
    return arr


def _save_image_cache(cache: Path, key: str, arr: np.ndarray) -> None:
    """Write ``arr`` and its key to ``cache`` atomically (a temporary file, then os.replace)."""
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=cache.parent, prefix=cache.name + ".", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            np.savez(f, key=np.array(key), x=arr)
        os.replace(tmp, cache)
    except OSError:  # read-only data directory: no cache, just slower next time
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass


def read_image_list(files: list[Path], size: int | None, cache: Path | None = None,
                    labels: list[int] | None = None) -> Tensor:
    """Decode image files into one uint8 tensor ``[N, 3, size, size]`` (in parallel threads).

    ``size=None`` takes the side from the first image's width. With ``cache`` (an .npz path), the
    decoded array is kept there under ``image_list_key(files, size, labels)``: a changed tree misses
    the cache, a cache that cannot be read is rebuilt, and the file is loaded with
    ``allow_pickle=False``. A file that cannot be decoded is a DataError naming it.
    """
    import torch

    key = None
    if cache is not None:
        key = image_list_key(files, size, labels, cache.parent)
        arr = _load_image_cache(cache, key, len(files), size)
        if arr is not None:
            return torch.from_numpy(arr)
    if not files:
        return torch.zeros(0, 3, size or 1, size or 1, dtype=torch.uint8)
    if size is None:
        size = _decode(files[0], None).shape[-1]
    pool = ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1))
    try:
        arr = np.stack(list(pool.map(lambda p: _decode(p, size), files)))
    finally:  # on a bad file, stop instead of decoding the rest first
        pool.shutdown(wait=True, cancel_futures=True)
    if cache is not None:
        _save_image_cache(cache, key, arr)
    return torch.from_numpy(arr)


def _names(xs: list[str], limit: int = 5) -> str:
    shown = ", ".join(repr(x) for x in xs[:limit])
    return shown + (f" and {len(xs) - limit} more" if len(xs) > limit else "")


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{path} is not UTF-8 text: {_one_line(e)}") from None


def _class_folders(split_dir: Path) -> list[str]:
    return sorted(p.name for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))


def _tree_listing(split_dir: Path, classes: list[str] | None = None,
                  classes_from: str = "train/") -> tuple[list[Path], list[int], list[str]]:
    """Image files under ``split_dir/<class>/`` (any depth), their labels and the class list.

    The classes are the sorted class folders, or ``classes`` when given, and then the folders must be
    exactly those (``classes_from`` says where they came from, for the error). Hidden files and
    folders (a leading '.', e.g. macOS '._x.jpg' or '.ipynb_checkpoints') are not part of the tree.
    """
    folders = _class_folders(split_dir)
    if classes is None:
        classes = folders
    elif set(folders) != set(classes):
        missing, extra = sorted(set(classes) - set(folders)), sorted(set(folders) - set(classes))
        parts = ([f"no folder for {_names(missing)}"] if missing else []) + \
                ([f"folders {_names(extra)} are not classes there"] if extra else [])
        raise DataError(f"the class folders of {split_dir} differ from {classes_from}: " + "; ".join(parts))
    files, labels = [], []
    for i, c in enumerate(classes):
        d = split_dir / c
        for p in sorted(d.rglob("*")):
            if p.suffix.lower() in IMG_EXTS and not any(s.startswith(".") for s in p.relative_to(d).parts) \
                    and p.is_file():
                files.append(p)
                labels.append(i)
    return files, labels, classes


def _check_tree(root: Path, classes: list[str], train_labels: list[int], test: str, test_labels: list[int]) -> None:
    """Refuse an image tree nothing can be learnt or measured on, naming its root."""
    if not train_labels:
        raise DataNotFound(f"no images found under {root / 'train'}")
    if not test_labels:
        raise DataNotFound(f"no images found under {root / test}")
    if len(classes) < 2:
        raise DataError(f"image tree {root} has one class only ({classes[0]!r}) under train/; "
                        "a classifier needs two or more (training would trivially reach 100 %)")
    counts = np.bincount(train_labels, minlength=len(classes))
    empty = [c for c, n in zip(classes, counts) if n == 0]
    if empty:
        raise DataError(f"image tree {root}: class(es) {_names(empty)} have no images under train/")
    if len(test_labels) < len(classes):
        raise DataError(f"image tree {root}: the {test} split has {len(test_labels)} image(s) for "
                        f"{len(classes)} classes; it cannot measure them all")


def _decode_split(root: Path, split: str, files: list[Path], labels: list[int], size: int | None) -> Tensor:
    x = read_image_list(files, size, cache=root / f".vant-cache-{split}-{size}.npz", labels=labels)
    try:  # the cache of older versions, keyed by the image count only: never read, so not kept either
        (root / f".vant-cache-{split}-{size}.npy").unlink(missing_ok=True)
    except OSError:
        pass
    return x


def _read_tree(root: Path, test: str, size: int | None, classes: list[str] | None = None,
               classes_from: str | None = None,
               test_listing: tuple[list[Path], list[int]] | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor, list]:
    """Train and test split of ``root/train/<class>/`` and ``root/<test>/<class>/``, checked, then decoded.

    Both splits are listed and checked before any image is decoded. ``size=None`` decodes train at
    its first image's side and test at train's.
    """
    import torch

    ftr, ltr, classes = _tree_listing(root / "train", classes, classes_from or "train/")
    if test_listing is None:
        fte, lte, _ = _tree_listing(root / test, classes, classes_from or f"those of {root / 'train'}")
    else:
        fte, lte = test_listing
    _check_tree(root, classes, ltr, test, lte)
    xtr = _decode_split(root, "train", ftr, ltr, size)
    xte = _decode_split(root, test, fte, lte, xtr.shape[-1] if size is None else size)
    return xtr, torch.tensor(ltr, dtype=torch.int64), xte, torch.tensor(lte, dtype=torch.int64), classes


CINIC_MEAN, CINIC_STD = (0.47889522, 0.47227842, 0.43047404), (0.24205776, 0.23828046, 0.25874835)


@register_dataset("cinic10", "CINIC-10 (train/ valid/ test/ class folders of PNGs), 32x32 RGB; tested on 'valid'")
def _cinic10(root: Path, download: bool) -> dict:
    folder = next((p for p in (root / "cinic10", root / "CINIC-10", root) if (p / "train").is_dir() and (p / "valid").is_dir()), None)
    if folder is None:
        raise _missing("CINIC-10 (train/ and valid/ folders)", root / "cinic10", False)
    xtr, ytr, xte, yte, classes = _read_tree(folder, "valid", 32)
    return dict(train_x=xtr, train_y=ytr, test_x=xte, test_y=yte, num_classes=len(classes), mean=CINIC_MEAN,
                std=CINIC_STD, augment=True, flip=True, test_split="valid")


IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _tiny_val_annotations(folder: Path, classes: list[str]) -> tuple[list[Path], list[int]]:
    """The official val/ layout: val/images/* and val_annotations.txt naming each image's class."""
    ann = folder / "val" / "val_annotations.txt"
    index = {c: i for i, c in enumerate(classes)}
    files, labels = [], []
    for n, line in enumerate(_read_text(ann).splitlines(), 1):
        if not line.strip():
            continue
        r = line.split("\t")
        if len(r) < 2 or not r[0] or Path(r[0]).name != r[0] or r[0].startswith("."):
            raise DataError(f"{ann} line {n}: expected '<image file name>\\t<class>', got {line[:80]!r}")
        if r[1] not in index:
            raise DataError(f"{ann} line {n}: class {r[1]!r} is not one of the {len(classes)} training classes")
        files.append(folder / "val" / "images" / r[0])
        labels.append(index[r[1]])
    return files, labels


@register_dataset("tinyimagenet", "Tiny ImageNet 200 (tiny-imagenet-200/ with val/ regrouped from val_annotations.txt), 64x64")
def _tiny(root: Path, download: bool) -> dict:
    folder = next((p for p in (root / "tiny-imagenet-200", root) if (p / "train").is_dir() and (p / "val").is_dir()), None)
    if folder is None:
        raise _missing("Tiny ImageNet (tiny-imagenet-200/train and /val)", root / "tiny-imagenet-200", False)
    wnids = folder / "wnids.txt"
    if wnids.is_file():
        classes, classes_from = _read_text(wnids).split(), f"the classes in {wnids}"
        twice = sorted({c for c in classes if classes.count(c) > 1})
        if twice:
            raise DataError(f"{wnids} names class(es) {_names(twice)} more than once")
    else:
        classes, classes_from = None, None
    test_listing = None
    if (folder / "val" / "val_annotations.txt").is_file():  # the official layout
        if classes is None:
            classes = _class_folders(folder / "train")
        test_listing = _tiny_val_annotations(folder, classes)
    # else: already regrouped into val/<wnid>/
    xtr, ytr, xte, yte, classes = _read_tree(folder, "val", 64, classes, classes_from, test_listing)
    return dict(train_x=xtr, train_y=ytr, test_x=xte, test_y=yte, num_classes=len(classes), mean=IMAGENET_MEAN,
                std=IMAGENET_STD, augment=True, flip=True, test_split="val")


@register_dataset("imagefolder", "any tree root/train/<class>/*, root/test/<class>/* (or val/); data.image_size sets the side")
def _imagefolder(root: Path, download: bool) -> dict:
    if not (root / "train").is_dir():
        raise DataNotFound(f"image folder not found: looked for {root / 'train'} (set data.root to the tree)")
    test = next((s for s in ("test", "val", "valid") if (root / s).is_dir()), None)
    if test is None:
        raise DataNotFound(f"image folder {root} has train/ but no test/, val/ or valid/")
    xtr, ytr, xte, yte, classes = _read_tree(root, test, None)
    return dict(train_x=xtr, train_y=ytr, test_x=xte, test_y=yte, num_classes=len(classes), mean=None, std=None,
                augment=True, flip=True, test_split=test)


# ----------------------------------------------------------------------------- a user's data, torchvision's classes

TORCHVISION_PREFIX = "torchvision:"
#: What a data factory (and a torchvision class, per split) must give, for the error messages.
EXPECTED_SPLITS = ("(train, test): two torch.utils.data.Datasets whose items are (image, label) pairs, the image a "
                   "C x H x W tensor (uint8, or float in [0, 1]) or a PIL image, or two (images, labels) array pairs "
                   "with images [N, C, H, W] or [N, H, W]")


def _external_loader(name: str) -> Callable[[Path, bool], dict] | None:
    """The loader of ``torchvision:<Class>`` or ``package.module:function``, checked without reading
    any data (a bad name fails here, before a run writes anything); None for other names."""
    if name.startswith(TORCHVISION_PREFIX):
        cls, split_args, takes_download = _torchvision_class(name)

        def load_tv(root: Path, download: bool) -> dict:
            splits = [_torchvision_split(cls, name, root, download if takes_download else None, a) for a in split_args]
            return _from_splits(name, splits)
        return load_tv
    if is_factory_name(name):
        fn = load_factory(name, "data.name")
        check_call(fn, name, "data.name", root="...")
        return lambda root, download: _from_splits(name, fn(root=str(root)))
    return None


def _torchvision_class(name: str) -> tuple[type, tuple[dict, dict], bool]:
    """A torchvision dataset class, how to ask it for the train and test split, and whether it downloads."""
    import torch

    import inspect

    import torchvision.datasets as tvd

    cls_name = name[len(TORCHVISION_PREFIX):]
    cls = getattr(tvd, cls_name, None)
    if not (isinstance(cls, type) and issubclass(cls, torch.utils.data.Dataset)) or cls_name.startswith("_"):
        import difflib

        close = difflib.get_close_matches(cls_name, [n for n in dir(tvd) if n[:1].isupper()], n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"data.name={name!r}: torchvision.datasets has no data set class {cls_name!r}{hint}")
    params = inspect.signature(cls).parameters
    wrap = "; wrap it in a factory of your own (data.name=package.module:function)"
    if "root" not in params:
        raise ValueError(f"data.name={name!r}: {cls_name} takes no root argument{wrap}")
    if "train" in params:
        split_args = ({"train": True}, {"train": False})
    elif "split" in params:
        split_args = ({"split": "train"}, {"split": "test"})
    else:
        raise ValueError(f"data.name={name!r}: {cls_name} takes neither train= nor split=, so vant cannot ask it "
                         f"for a train and a test split{wrap}")
    try:  # a class that needs more than root, split and download (Kinetics' frames_per_clip, say)
        inspect.signature(cls).bind(root="", **split_args[0], **({"download": False} if "download" in params else {}))
    except TypeError as e:
        raise ValueError(f"data.name={name!r}: {cls_name} needs more than root, {next(iter(split_args[0]))} and "
                         f"download ({e}){wrap}") from None
    return cls, split_args, "download" in params


def _torchvision_split(cls: type, name: str, root: Path, download: bool | None, split: dict):
    kwargs = dict(split, **({} if download is None else {"download": download}))
    try:
        return cls(root=str(root), **kwargs)
    except RuntimeError as e:  # torchvision's "Dataset not found or corrupted. You can use download=True ..."
        how = "" if download is None or download else "; pass data.download=true (CLI: --download) to fetch it"
        raise DataNotFound(f"data.name={name!r} at {root} ({', '.join(f'{k}={v!r}' for k, v in split.items())}): "
                           f"{_one_line(e)}{how}") from e


def _what(obj) -> str:
    if isinstance(obj, (tuple, list)):
        return f"a {type(obj).__name__} of {len(obj)}"
    return type(obj).__name__


def _from_splits(name: str, result) -> dict:
    """``(train, test)`` from a factory as the raw fields of :class:`ArrayData` (uint8 ``[N, C, H, W]``)."""
    where = f"data.name={name!r}"
    if not isinstance(result, (tuple, list)) or len(result) != 2:
        raise DataError(f"{where} returned {_what(result)}; expected {EXPECTED_SPLITS}")
    (xtr, ytr), (xte, yte) = (_split_tensors(part, f"{where}: the {split} split")
                              for split, part in zip(("train", "test"), result))
    if xtr.shape[1] != xte.shape[1]:
        raise DataError(f"{where}: the train images have {xtr.shape[1]} channel(s), the test images {xte.shape[1]}")
    for split, y in (("train", ytr), ("test", yte)):
        if len(y) and int(y.min()) < 0:
            raise DataError(f"{where}: the {split} split has label {int(y.min())}; labels are class indices 0, 1, ...")
    k = int(max(ytr.max(), yte.max())) + 1 if len(ytr) and len(yte) else 0
    classes = getattr(result[0], "classes", None)  # torchvision's and many users' data sets name their classes
    if isinstance(classes, (list, tuple)) and len(classes) >= k:
        k = len(classes)
    return dict(train_x=xtr, train_y=ytr, test_x=xte, test_y=yte, num_classes=k, mean=None, std=None,
                augment=False, flip=False, test_split="test")


def _split_tensors(part, where: str) -> tuple[Tensor, Tensor]:
    """One split (a Dataset of (image, label) items, or an (images, labels) pair) as uint8 images and int64 labels."""
    import torch
    from torch import Tensor

    if isinstance(part, (tuple, list)) and len(part) == 2 and isinstance(part[0], (np.ndarray, Tensor)):
        x = _as_tensor(part[0], f"{where}'s images")
        if x.ndim == 3:
            x = x[:, None]
        if x.ndim != 4:
            raise DataError(f"{where}'s images have shape {list(x.shape)}; expected [N, C, H, W] or [N, H, W]")
        _check_layout(x.shape[1:], f"{where}'s images")
        x = _to_uint8(x, f"{where}'s images")
        y = _labels(part[1], len(x), where)
        return x, y
    if isinstance(part, (str, bytes)) or not (hasattr(part, "__len__") and hasattr(part, "__getitem__")):
        raise DataError(f"{where} is {_what(part)}; expected a torch.utils.data.Dataset of (image, label) items "
                        "(indexable, with a length) or an (images, labels) array pair")
    n = len(part)
    if n == 0:
        raise DataError(f"{where} is empty")
    x = y = None
    for i in range(n):
        item = part[i]
        if not isinstance(item, (tuple, list)) or len(item) != 2:
            raise DataError(f"{where}: item {i} is {_what(item)}; expected an (image, label) pair")
        img = _item_image(item[0], f"{where}: item {i}")
        if x is None:
            x, y = torch.empty((n, *img.shape), dtype=torch.uint8), torch.empty(n, dtype=torch.int64)
        elif img.shape != x.shape[1:]:
            raise DataError(f"{where}: item {i} is a {'x'.join(map(str, img.shape))} image, item 0 a "
                            f"{'x'.join(map(str, x.shape[1:]))} one; give images of one size (a transform in the "
                            "data set can resize them)")
        x[i] = img
        y[i] = _label(item[1], f"{where}: item {i}")
    return x, y


def _as_tensor(a, where: str) -> Tensor:
    import torch
    from torch import Tensor

    if isinstance(a, Tensor):
        return a.detach().cpu()
    try:
        return torch.from_numpy(np.ascontiguousarray(a))
    except TypeError as e:  # an object array, say
        raise DataError(f"{where}: an array of {a.dtype} cannot be read as numbers ({_one_line(e)})") from None


def _check_layout(chw: tuple, where: str) -> None:
    """Refuse what looks like H x W x C where C x H x W is expected (a common numpy layout)."""
    if chw[-1] in (1, 3, 4) and chw[0] not in (1, 3, 4):
        raise DataError(f"{where} look like H x W x C ({'x'.join(map(str, chw))}); give C x H x W "
                        "(for a batch, e.g. images.permute(0, 3, 1, 2) or np.transpose(images, (0, 3, 1, 2)))")


def _to_uint8(x: Tensor, where: str) -> Tensor:
    """uint8 as it is; floats in [0, 1] and integers in 0..255 scaled to uint8 pixels."""
    import torch

    if x.dtype == torch.uint8:
        return x.contiguous()
    if x.dtype == torch.bool or x.is_complex():
        raise DataError(f"{where} are {x.dtype}; expected uint8, or float in [0, 1]")
    if x.numel() == 0:
        return x.to(torch.uint8)
    lo, hi = x.min().item(), x.max().item()
    if x.is_floating_point():
        if not (0.0 <= lo and hi <= 1.0):  # also refuses NaN
            raise DataError(f"{where} are floats in [{lo:.4g}, {hi:.4g}]; expected [0, 1] (give the images "
                            "unnormalised: vant normalises with the training set's mean and std)")
        return x.float().mul(255).round_().to(torch.uint8)
    if not (0 <= lo and hi <= 255):
        raise DataError(f"{where} are {x.dtype} in [{lo}, {hi}]; expected uint8 pixels 0..255, or float in [0, 1]")
    return x.to(torch.uint8)


def _item_image(img, where: str) -> Tensor:
    """One item's image as uint8 ``[C, H, W]``."""
    import torch
    from torch import Tensor

    if isinstance(img, (np.ndarray, Tensor)):
        t = _as_tensor(img, f"{where}'s image")
        if t.ndim == 2:
            t = t[None]
        if t.ndim != 3:
            raise DataError(f"{where}'s image has shape {list(t.shape)}; expected C x H x W or H x W")
        _check_layout(tuple(t.shape), f"{where}'s image")
        return _to_uint8(t, f"{where}'s image")
    if hasattr(img, "getbands") and hasattr(img, "convert"):  # a PIL image
        if img.mode not in ("L", "RGB"):
            img = img.convert("RGB")
        a = np.asarray(img, dtype=np.uint8)
        return torch.from_numpy(a[None].copy() if a.ndim == 2 else np.ascontiguousarray(a.transpose(2, 0, 1)))
    raise DataError(f"{where}'s image is {_what(img)}; expected a C x H x W tensor or array, or a PIL image")


def _label(v, where: str) -> int:
    from torch import Tensor

    if isinstance(v, (Tensor, np.ndarray)):
        if v.ndim != 0 and not (v.ndim == 1 and len(v) == 1):
            raise DataError(f"{where}'s label has shape {list(v.shape)}; expected one integer class index")
        v = v.reshape(()).item()
    if isinstance(v, np.integer):
        v = int(v)
    if isinstance(v, bool) or not isinstance(v, int):
        raise DataError(f"{where}'s label is {type(v).__name__} {v!r}; expected an integer class index")
    return v


def _labels(y, n: int, where: str) -> Tensor:
    import torch
    from torch import Tensor

    t = _as_tensor(y if isinstance(y, (np.ndarray, Tensor)) else np.asarray(y), f"{where}'s labels")
    if t.ndim != 1 or len(t) != n:
        raise DataError(f"{where}: the labels have shape {list(t.shape)}; expected [{n}] (one per image)")
    if t.dtype == torch.bool or t.is_floating_point() or t.is_complex():
        raise DataError(f"{where}: the labels are {t.dtype}; expected integer class indices")
    return t.to(torch.int64)


# ----------------------------------------------------------------------------- batches on the device

class DeviceBatches:
    """Batches from uint8 tensors held on ``device``; crop/flip/normalise done there on whole batches.

    Order and augmentation of epoch ``e`` come from a generator seeded with ``(seed, e)``, so any
    epoch can be replayed exactly (what resuming a killed run needs).
    """

    def __init__(self, x: Tensor, y: Tensor, mean, std, batch_size: int, device: torch.device, *,
                 train: bool, augment: bool = False, flip: bool = False, pad: int = 4, seed: int = 0,
                 channels_last: bool = False):
        import torch

        self.x = x.to(device)
        self.y = y.to(device)
        self.mean = torch.tensor(mean, device=device).view(1, -1, 1, 1) * 255
        self.std = torch.tensor(std, device=device).view(1, -1, 1, 1) * 255
        self.batch_size, self.device, self.train = batch_size, device, train
        self.augment, self.flip, self.pad, self.seed = augment, flip, pad, seed
        self.channels_last = channels_last

    def __len__(self) -> int:
        return -(-len(self.x) // self.batch_size)

    def epoch(self, epoch: int = 0) -> Iterator[tuple[Tensor, Tensor]]:
        import torch

        n = len(self.x)
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        order = torch.randperm(n, generator=g).to(self.device) if self.train else None
        # The whole epoch's crop offsets and flips are drawn up front and copied to the device once:
        # a copy per batch from pageable memory would stall the CUDA stream at every step.
        aug = crop_flip_params(n, self.pad, self.flip, g, self.device) if self.train and self.augment else None
        for start in range(0, n, self.batch_size):
            if order is None:
                xb, yb = self.x[start:start + self.batch_size], self.y[start:start + self.batch_size]
            else:
                idx = order[start:start + self.batch_size]
                xb, yb = self.x[idx], self.y[idx]
            if aug is not None:
                xb = crop_flip(xb, self.pad, *(None if p is None else p[start:start + self.batch_size] for p in aug))
            yield self.normalise(xb), yb

    __iter__ = epoch

    def normalise(self, xb: Tensor) -> Tensor:
        import torch

        out = (xb.float() - self.mean) / self.std
        return out.contiguous(memory_format=torch.channels_last) if self.channels_last else as_nchw(out)


def as_nchw(x: Tensor) -> Tensor:
    """``x`` with the standard NCHW strides (a copy only where its strides differ).

    A batch whose strides also read as channels-last (one channel, the indexing of a [N, H, W]
    set) makes PyTorch run the whole network in channels-last. On the CPU that is not safe with
    torch 2.14.1: oneDNN's backward of a 1x1 stride-2 convolution with fewer than 8 input channels
    in channels-last writes wrong weight gradients (different in every run; at one thread it
    corrupts the heap). vant's batches are therefore plain NCHW unless channels-last was asked for.
    """
    import torch

    if x.dim() != 4:
        return x
    n, c, h, w = x.shape
    if x.stride() == (c * h * w, h * w, w, 1):
        return x
    return x.clone(memory_format=torch.contiguous_format)


def random_crop_flip(x: Tensor, pad: int, flip: bool, generator: torch.Generator) -> Tensor:
    """Per-image random crop from a zero-padded copy, and a random horizontal flip (on x's device)."""
    return crop_flip(x, pad, *crop_flip_params(len(x), pad, flip, generator, x.device))


def crop_flip_params(n: int, pad: int, flip: bool, generator: torch.Generator,
                     device: torch.device) -> tuple[Tensor, Tensor, Tensor | None]:
    """Row offsets, column offsets (each in [0, 2*pad]) and flip flags (None without flips) for n images."""
    import torch

    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    mirror = (torch.rand(n, generator=generator) < 0.5) if flip else None
    return dy.to(device), dx.to(device), None if mirror is None else mirror.to(device)


def crop_flip(x: Tensor, pad: int, dy: Tensor, dx: Tensor, mirror: Tensor | None) -> Tensor:
    """Crop each image of ``x`` at its offsets from a zero-padded copy, mirrored where ``mirror``."""
    import torch
    import torch.nn.functional as F

    b, c, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]
    cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :]
    if mirror is not None:
        cols = torch.where(mirror[:, None, None, None], cols.flip(-1), cols)
    bi = torch.arange(b, device=x.device)[:, None, None, None]
    ci = torch.arange(c, device=x.device)[None, :, None, None]
    return padded[bi, ci, rows, cols]

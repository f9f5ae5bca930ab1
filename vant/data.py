"""Data sets as uint8 tensors, and batches made on the training device.

Every supported set is small enough to sit in memory (Tiny ImageNet is 1.2 GB as uint8), so all
are read once into ``[N, C, H, W]`` uint8 tensors and moved to the training device; random crop,
flip and normalisation run there on whole batches (no CPU loader in the hot loop, as in
cifar10-airbench). Files are read in their public on-disk formats. The readers are our own
because torchvision's classes verify MD5 sums of full files, which rules out the small
real-format files the tests write; torchvision still does the downloading.
"""
from __future__ import annotations

import gzip
import os
import pickle
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

IMG_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".webp")


class DataNotFound(FileNotFoundError):
    """A data set is missing; the message names the path searched and how to get it."""


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
    if name not in _DATASETS:
        raise ValueError(f"unknown data set {name!r}; choose one of {sorted(_DATASETS)}")


def load_dataset(name: str, root: str | os.PathLike = "~/.cache/vant/data", download: bool = False,
                 image_size: int | None = None, augment: bool | None = None) -> ArrayData:
    """Read a data set into uint8 tensors, resized to ``image_size`` when given."""
    check_dataset_name(name)
    root = Path(os.path.expanduser(str(root)))
    raw = _DATASETS[name].load(root, download)
    data = ArrayData(name=name, **raw)
    if image_size is not None and image_size != data.size:
        data.train_x = resize_uint8(data.train_x, image_size)
        data.test_x = resize_uint8(data.test_x, image_size)
    if data.mean is None:
        px = data.train_x.float().div_(255)
        data.mean = tuple(px.mean(dim=(0, 2, 3)).tolist())
        data.std = tuple(px.std(dim=(0, 2, 3)).clamp_min(1e-3).tolist())
    if augment is not None:
        data.augment = augment
    return data


def resize_uint8(x: Tensor, size: int) -> Tensor:
    out = F.interpolate(x.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return out.round_().clamp_(0, 255).to(torch.uint8)


def _missing(what: str, path: Path, downloadable: bool) -> DataNotFound:
    how = ("pass data.download=true (CLI: --download) to fetch it, or point data.root at a copy"
           if downloadable else "download it yourself and point data.root at its parent directory")
    return DataNotFound(f"{what} not found: looked in {path}; {how}")


# ----------------------------------------------------------------------------- bundled

@register_dataset("digits", "scikit-learn's 1,797 handwritten digits, 8x8 grey, 10 classes; bundled, no download")
def _digits(root: Path, download: bool) -> dict:
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


def read_cifar10(folder: Path) -> dict:
    def batch(name):
        with open(folder / name, "rb") as f:
            d = pickle.load(f, encoding="latin1")
        return np.asarray(d["data"], dtype=np.uint8).reshape(-1, 3, 32, 32), np.asarray(d["labels"])

    parts = [batch(f"data_batch_{i}") for i in range(1, 6)]
    xte, yte = batch("test_batch")
    return dict(train_x=torch.from_numpy(np.concatenate([p[0] for p in parts])),
                train_y=torch.from_numpy(np.concatenate([p[1] for p in parts])).long(),
                test_x=torch.from_numpy(xte), test_y=torch.from_numpy(yte).long())


@register_dataset("cifar10", "CIFAR-10 (python version, cifar-10-batches-py/), 32x32 RGB, 10 classes", downloadable=True)
def _cifar10(root: Path, download: bool) -> dict:
    folder = root / "cifar-10-batches-py"
    if not (folder / "test_batch").is_file():
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
    with opener(path, "rb") as f:
        raw = f.read()
    if raw[:2] != b"\x00\x00" or raw[2] != 0x08:
        raise ValueError(f"{path} is not an unsigned-byte IDX file")
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _idx_set(root: Path, download: bool, folder_name: str, tv_class: str, title: str) -> dict:
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
        m = loadmat(str(f))
        x = torch.from_numpy(np.ascontiguousarray(np.transpose(m["X"], (3, 2, 0, 1))))
        y = torch.from_numpy(m["y"].astype(np.int64).reshape(-1) % 10)  # label 10 means digit 0
        return x, y

    (xtr, ytr), (xte, yte) = read(files[0]), read(files[1])
    return dict(train_x=xtr, train_y=ytr, test_x=xte, test_y=yte, num_classes=10, mean=None, std=None,
                augment=True, flip=False, test_split="test")


# ----------------------------------------------------------------------------- image trees

def _decode(path: Path, size: int | None) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert("RGB")
        if size is not None and im.size != (size, size):
            im = im.resize((size, size), Image.BILINEAR)
        return np.asarray(im, dtype=np.uint8).transpose(2, 0, 1)


def read_image_list(files: list[Path], size: int | None, cache: Path | None = None) -> Tensor:
    """Decode image files into one uint8 tensor (in parallel threads), with an optional cache file."""
    if cache is not None and cache.is_file():
        arr = np.load(cache)
        if len(arr) == len(files):
            return torch.from_numpy(arr)
    if not files:
        return torch.zeros(0, 3, size or 1, size or 1, dtype=torch.uint8)
    if size is None:
        size = _decode(files[0], None).shape[-1]
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        arr = np.stack(list(pool.map(lambda p: _decode(p, size), files, chunksize=256)))
    if cache is not None:
        try:
            tmp = cache.with_name(cache.name + ".tmp.npy")
            np.save(tmp, arr)
            os.replace(tmp, cache)
        except OSError:
            pass  # read-only data directory: no cache, just slower next time
    return torch.from_numpy(arr)


def _class_tree(split_dir: Path, classes: list[str] | None = None) -> tuple[list[Path], list[int], list[str]]:
    classes = classes or sorted(p.name for p in split_dir.iterdir() if p.is_dir())
    index = {c: i for i, c in enumerate(classes)}
    files, labels = [], []
    for c in classes:
        d = split_dir / c
        if not d.is_dir():
            continue
        for p in sorted(d.rglob("*")):
            if p.suffix.lower() in IMG_EXTS:
                files.append(p)
                labels.append(index[c])
    return files, labels, classes


def _tree_split(root: Path, split: str, size: int | None, classes=None):
    files, labels, classes = _class_tree(root / split, classes)
    if not files:
        raise DataNotFound(f"no images found under {root / split}")
    x = read_image_list(files, size, cache=root / f".vant-cache-{split}-{size}.npy")
    return x, torch.tensor(labels), classes


CINIC_MEAN, CINIC_STD = (0.47889522, 0.47227842, 0.43047404), (0.24205776, 0.23828046, 0.25874835)


@register_dataset("cinic10", "CINIC-10 (train/ valid/ test/ class folders of PNGs), 32x32 RGB; tested on 'valid'")
def _cinic10(root: Path, download: bool) -> dict:
    folder = next((p for p in (root / "cinic10", root / "CINIC-10", root) if (p / "train").is_dir() and (p / "valid").is_dir()), None)
    if folder is None:
        raise _missing("CINIC-10 (train/ and valid/ folders)", root / "cinic10", False)
    xtr, ytr, classes = _tree_split(folder, "train", 32)
    xte, yte, _ = _tree_split(folder, "valid", 32, classes)
    return dict(train_x=xtr, train_y=ytr, test_x=xte, test_y=yte, num_classes=len(classes), mean=CINIC_MEAN,
                std=CINIC_STD, augment=True, flip=True, test_split="valid")


IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@register_dataset("tinyimagenet", "Tiny ImageNet 200 (tiny-imagenet-200/ with val/ regrouped from val_annotations.txt), 64x64")
def _tiny(root: Path, download: bool) -> dict:
    folder = next((p for p in (root / "tiny-imagenet-200", root) if (p / "train").is_dir() and (p / "val").is_dir()), None)
    if folder is None:
        raise _missing("Tiny ImageNet (tiny-imagenet-200/train and /val)", root / "tiny-imagenet-200", False)
    wnids = folder / "wnids.txt"
    classes = wnids.read_text().split() if wnids.is_file() else sorted(p.name for p in (folder / "train").iterdir() if p.is_dir())
    xtr, ytr, _ = _tree_split(folder, "train", 64, classes)
    ann = folder / "val" / "val_annotations.txt"
    if ann.is_file():  # the official layout: val/images/*.JPEG + a file naming each image's class
        index = {c: i for i, c in enumerate(classes)}
        rows = [line.split("\t") for line in ann.read_text().splitlines() if line.strip()]
        files = [folder / "val" / "images" / r[0] for r in rows]
        xte = read_image_list(files, 64, cache=folder / ".vant-cache-val-64.npy")
        yte = torch.tensor([index[r[1]] for r in rows])
    else:  # already regrouped into val/<wnid>/
        xte, yte, _ = _tree_split(folder, "val", 64, classes)
    return dict(train_x=xtr, train_y=ytr, test_x=xte, test_y=yte, num_classes=len(classes), mean=IMAGENET_MEAN,
                std=IMAGENET_STD, augment=True, flip=True, test_split="val")


@register_dataset("imagefolder", "any tree root/train/<class>/*, root/test/<class>/* (or val/); data.image_size sets the side")
def _imagefolder(root: Path, download: bool) -> dict:
    if not (root / "train").is_dir():
        raise DataNotFound(f"image folder not found: looked for {root / 'train'} (set data.root to the tree)")
    test = next((s for s in ("test", "val", "valid") if (root / s).is_dir()), None)
    if test is None:
        raise DataNotFound(f"image folder {root} has train/ but no test/, val/ or valid/")
    xtr, ytr, classes = _tree_split(root, "train", None)
    xte, yte, _ = _tree_split(root, test, xtr.shape[-1], classes)
    return dict(train_x=xtr, train_y=ytr, test_x=xte, test_y=yte, num_classes=len(classes), mean=None, std=None,
                augment=True, flip=True, test_split=test)


# ----------------------------------------------------------------------------- batches on the device

class DeviceBatches:
    """Batches from uint8 tensors held on ``device``; crop/flip/normalise done there on whole batches.

    Order and augmentation of epoch ``e`` come from a generator seeded with ``(seed, e)``, so any
    epoch can be replayed exactly (what resuming a killed run needs).
    """

    def __init__(self, x: Tensor, y: Tensor, mean, std, batch_size: int, device: torch.device, *,
                 train: bool, augment: bool = False, flip: bool = False, pad: int = 4, seed: int = 0,
                 channels_last: bool = False):
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
        out = (xb.float() - self.mean) / self.std
        return out.contiguous(memory_format=torch.channels_last) if self.channels_last else out


def random_crop_flip(x: Tensor, pad: int, flip: bool, generator: torch.Generator) -> Tensor:
    """Per-image random crop from a zero-padded copy, and a random horizontal flip (on x's device)."""
    return crop_flip(x, pad, *crop_flip_params(len(x), pad, flip, generator, x.device))


def crop_flip_params(n: int, pad: int, flip: bool, generator: torch.Generator,
                     device: torch.device) -> tuple[Tensor, Tensor, Tensor | None]:
    """Row offsets, column offsets (each in [0, 2*pad]) and flip flags (None without flips) for n images."""
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    mirror = (torch.rand(n, generator=generator) < 0.5) if flip else None
    return dy.to(device), dx.to(device), None if mirror is None else mirror.to(device)


def crop_flip(x: Tensor, pad: int, dy: Tensor, dx: Tensor, mirror: Tensor | None) -> Tensor:
    """Crop each image of ``x`` at its offsets from a zero-padded copy, mirrored where ``mirror``."""
    b, c, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]
    cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :]
    if mirror is not None:
        cols = torch.where(mirror[:, None, None, None], cols.flip(-1), cols)
    bi = torch.arange(b, device=x.device)[:, None, None, None]
    ci = torch.arange(c, device=x.device)[None, :, None, None]
    return padded[bi, ci, rows, cols]

"""Typed run configuration, its YAML mirror, command-line overrides, and the paper's recipes.

A field left at ``None`` means "the recipe default for this model and data set" (spec 6); the
*resolved* config (every None filled in) is what a run stores and what its directory is hashed on.
Unknown keys and values of the wrong type are errors that name the key.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, Union

import yaml

#: The 14-point inference grid of the authors' code (spec 4): steps of 0.2 to 2.1, then 0.3.
PAPER_SIGMAS = [0.1, 0.3, 0.5, 0.7, 0.9, 1.1, 1.3, 1.5, 1.7, 1.9, 2.1, 2.4, 2.7, 3.0]
#: Table 1: theta chosen per sigma_train for ResNet-18 / CIFAR-10 at alpha = 0.45 (reused for CINIC/Tiny).
TABLE1_THETA = {0.1: 0.05, 0.3: 0.05, 0.5: 0.25, 0.7: 0.35, 0.9: 0.35, 1.1: 0.45, 1.3: 0.65, 1.5: 0.65,
                1.7: 0.95, 1.9: 0.75, 2.1: 0.85}


#: A fine-tune (train.init_from set) trains this many times fewer epochs than the from-scratch recipe
#: by default (200 for the paper's data sets, 15 otherwise), with the same learning rate and no noise
#: warm-up. Chosen with the finetune-recipe preset (ResNet-18 w16 on 10,000 CIFAR-10 images, 10-epoch
#: from-scratch reference): 5 epochs at lr 1e-2 without warm-up gave the highest rAUC of NT and VANT at
#: sigma_train 0.5, 1.1 and 1.5; 2 epochs, lr 1e-3, or a 1-epoch warm-up each did worse (README, "Noisy
#: fine-tuning"). Measured at that scale only: set train.epochs for your own budget.
FINETUNE_EPOCH_DIVISOR = 2


class ConfigError(ValueError):
    """A config that cannot be used; the message names the key."""


#: Training methods, VANT sampler modes (vant.core.samplers.VANT_MODES) and noise kinds (vant.core.noise.KINDS)
#: a run config may name; kept here so that checking a config imports nothing else of vant.
METHODS = ("clean", "nt", "vant", "empirical")
SAMPLERS = ("half_normal", "normal_abs", "normal_clamp0")
NOISE_KINDS = ("add", "mul", "mixed")
OPTIMIZERS = ("adam", "sam")
#: ``device``: auto, cpu, cuda or cuda:N (only the form is checked; CUDA is looked for when the run starts).
DEVICE_FORM = re.compile(r"auto|cpu|cuda(:[0-9]+)?")
#: train.seed bound: the data order of epoch e is seeded with seed * 1,000,003 + e, which must fit a
#: torch seed (< 2**64); 2**44 * 1,000,003 < 2**64.
TRAIN_SEED_LIMIT = 2 ** 44
#: eval.seed bound: repeat r of the evaluation seeds torch with eval.seed + r.
EVAL_SEED_LIMIT = 2 ** 63
#: The longest run label ``name`` may be (it becomes ``<name>-<hash>``, one directory name).
NAME_MAX = 100


@dataclass
class DataConfig:
    name: str = "digits"  # data set: see `vant list datasets`; 'imagefolder' reads `root` as a tree; torchvision:<Class>; package.module:function
    root: str = "~/.cache/vant/data"  # directory holding the data sets (or the ImageFolder tree itself)
    download: bool = False  # let torchvision download a missing set (CIFAR-10, MNIST, FashionMNIST, SVHN, torchvision:<Class>)
    augment: Union[bool, None] = None  # random crop (pad 4) + flip; None = the data set's default
    image_size: Union[int, None] = None  # resize images to this side; None = the model's need or native size
    subset: Union[int, None] = None  # train on this many training images, class-stratified and seeded; None = all
    test_subset: Union[int, None] = None  # evaluate on this many test images, class-stratified and seeded; None = all
    subset_seed: int = 0  # seed of both subsets' draw (fixed across train.seed, so seeds share their images)


@dataclass
class ModelConfig:
    name: str = "lenet5"  # registered model (`vant list models`), tv:<torchvision model>, timm:<timm model> or package.module:function
    kwargs: dict = field(default_factory=dict)  # extra constructor arguments, e.g. {pool: max}
    quant_bits: Union[int, None] = None  # QAT (Brevitas): weight and activation bit width, 2..16; None = float model
    quant_act_scale: Union[float, None] = None  # QAT activation step: None = learned (stats-initialised), s = constant, max_val = M_b*s


@dataclass
class NoiseConfig:
    sites: Union[str, list] = "paper"  # 'paper', 'all', or fnmatch patterns over module names
    kind: str = "add"  # add | mul | mixed; the paper uses additive noise only


@dataclass
class TrainConfig:
    method: str = "vant"  # clean | nt | vant | empirical: how the training noise level is drawn
    sigma: float = 1.0  # sigma_train, std of the additive noise (units of the activations)
    alpha: float = 0.45  # VANT: the sampler's floor is alpha * sigma_train (paper 5.2)
    theta: Union[float, None] = None  # VANT spread (std-like, absolute); None = Table 1, else 0.4*sigma
    sampler: str = "half_normal"  # VANT sampler: half_normal (authors' code) | normal_abs | normal_clamp0
    sigma_values: list = field(default_factory=list)  # method 'empirical': measured sigma values to draw from
    warmup_epochs: Union[int, None] = None  # linear noise ramp from 0; None = 100 for CINIC/Tiny, else 0 (and 0 for a fine-tune)
    epochs: Union[int, None] = None  # None = 400 (paper), 30 on the bundled digits; half that for a fine-tune (init_from)
    batch_size: int = 128  # training batch (paper 128)
    lr: Union[float, None] = None  # Adam learning rate; None = the paper's per model/data set
    weight_decay: Union[float, None] = None  # Adam L2; None = 1e-4 for CINIC/Tiny, 0 otherwise
    seed: int = 0  # seeds init, data order, augmentation and training noise
    amp: bool = True  # bf16 autocast for the matmuls on CUDA (noise stays fp32); ignored on the CPU
    channels_last: bool = True  # channels-last memory format on CUDA; ignored on the CPU
    compile: bool = False  # compile the noisy model (vant.compile_noisy): noise drawn inside fused kernels; use on CUDA
    test_every: int = 1  # test accuracy at sigma_train every N epochs (0 = never), one pass
    optimizer: str = "adam"  # adam | sam: SAM wraps Adam, two forward/backward passes per step
    sam_rho: float = 0.5  # SAM neighbourhood radius rho (the spec's single-run default for ASAM)
    sam_adaptive: bool = True  # ASAM: perturbation scaled element-wise by |w| (authors' setting)
    # start from trained weights (noisy fine-tuning): a finished vant run directory, a state_dict file
    # (.pt/.pth, .safetensors) or 'pretrained' (a tv:/timm: model's published weights, from their cache); null = random init
    init_from: Union[str, None] = None
    init_skip: list = field(default_factory=list)  # module names not loaded from init_from (re-initialised), e.g. [fc]
    init_hash: str = ""  # identity of init_from's content, filled when the run is set up (run:<hash>, sha256:<hex>)


@dataclass
class EvalConfig:
    sigmas: list = field(default_factory=lambda: list(PAPER_SIGMAS))  # inference noise grid
    repeats: int = 3  # independent noisy passes per sigma (R = 1 is the authors' protocol)
    seed: int = 1000  # base seed of the evaluation noise; every row records its own
    batch_size: int = 1000  # test images per forward pass (before sigma batching)
    batched: bool = True  # evaluate many sigmas in one forward pass (same distribution, faster)


@dataclass
class LogConfig:
    """Experiment trackers, off by default; they record a run, they do not change it (not hashed)."""

    tensorboard: bool = False  # event files in <run>/tensorboard (pip install "vant[tensorboard]")
    mlflow: Union[str, None] = None  # MLflow tracking URI (http://host:5000, sqlite:///mlflow.db, file:/abs/mlruns); null = off
    experiment: str = "vant"  # MLflow experiment the runs are logged to


@dataclass
class RunConfig:
    name: str = ""  # label for the run directory (not part of the hash)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    out_dir: str = "runs"  # where run directories are created (not part of the hash)
    device: str = "auto"  # auto | cpu | cuda | cuda:N (not part of the hash)
    # CPU threads of the run's math on the CPU, fixed so that its numbers do not depend on the machine
    # (oneDNN's weight gradients change with the thread count); null = torch's default, and then they do
    cpu_threads: Union[int, None] = 2
    log: LogConfig = field(default_factory=LogConfig)  # trackers (TensorBoard, MLflow); not part of the hash


#: Keys that change where, how fast or how a run is *evaluated*, never the trained model: excluded
#: from the run's hash. Evaluation rows are cached per (sigma, repeat, seed) inside the run.
NON_SEMANTIC = ("name", "out_dir", "device", "cpu_threads", "eval", "data.root", "data.download", "train.test_every",
                "log", "train.init_from")  # init_from's *content* is in the hash, as train.init_hash


# ----------------------------------------------------------------------------- typed (de)serialisation

def _check_type(value: Any, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _check_type(value, arg, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{key}: bad value {value!r}")
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    if tp is list or origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return list(value)
    if tp is dict or origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, key)
    raise ConfigError(f"{key}: unsupported type {tp}")


def from_dict(cls, data: Any, prefix: str = ""):
    """Build dataclass ``cls`` from a mapping, rejecting unknown keys and wrong types."""
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        full = f"{prefix}.{key}" if prefix else str(key)
        if key not in names:
            raise ConfigError(f"unknown config key {full!r}; known keys here: {sorted(names)}")
        kwargs[key] = _check_type(value, hints[key], full)
    return cls(**kwargs)


def to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)


def load_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {path} is not valid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    return data


def set_dotted(data: dict, key: str, value: Any) -> None:
    """Set ``a.b.c`` in a nested dict, creating the intermediate mappings."""
    parts = key.split(".")
    node = data
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{key}: {p!r} is not a section")
    node[parts[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """``key=value`` with the value read as YAML (so 0.5 is a number, [0.1, 0.3] a list, true a bool);
    a bare comma list ``0.1,0.3`` is a list too. The field's type then checks it."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} is not of the form key=value")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError:
        value = raw
    if isinstance(value, str) and "," in value and not value.startswith(("'", '"')):
        try:
            value = [yaml.safe_load(v) for v in value.split(",")]
        except yaml.YAMLError:
            pass
    return key.strip(), value


def merge(base: dict, update: dict) -> dict:
    out = dict(base)
    for k, v in update.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def build_config(path: str | Path | None = None, overrides: list[str] | None = None, base: dict | None = None) -> RunConfig:
    """Defaults < ``base`` < YAML file < ``key=value`` overrides, checked against the dataclasses."""
    data = dict(base or {})
    if path is not None:
        data = merge(data, load_yaml(path))
    for text in overrides or []:
        key, value = parse_override(text)
        set_dotted(data, key, value)
    return from_dict(RunConfig, data)


# ----------------------------------------------------------------------------- recipes (spec 6)

PAPER_DATASETS = ("cifar10", "cinic10", "tinyimagenet")


def default_lr(model: str, dataset: str) -> float:
    if model.startswith("resnet") and dataset not in ("cinic10", "tinyimagenet"):
        return 1e-2  # ResNet-18 / CIFAR-10: 1e-2 (paper 3); also used for the small sets
    return 1e-3  # LeNet-5 / CIFAR-10, and ResNets on CINIC-10 and Tiny ImageNet


def default_theta(sigma: float) -> float:
    """Table 1's theta when sigma_train is one of its columns, otherwise the rule theta = 0.4*sigma (Fig. 6)."""
    for s, t in TABLE1_THETA.items():
        if abs(s - sigma) < 1e-9:
            return t
    return round(0.4 * sigma, 6)


def resolve(cfg: RunConfig) -> RunConfig:
    """Fill every recipe default (``None``) and validate every field; returns a new config.

    It writes nothing (a run calls it before creating its directory, so a bad config leaves nothing
    behind); every error is a one-line :class:`ConfigError` that names the key."""
    cfg = from_dict(RunConfig, to_dict(cfg))
    t, d = cfg.train, cfg.data.name
    _check_names(cfg)
    if t.method not in METHODS:
        raise ConfigError(f"train.method: unknown method {t.method!r}; choose clean, nt, vant or empirical")
    # The fields as given, before the recipe overwrites any (a clean run's sigma, for one).
    _check_number("train.sigma", t.sigma)
    _check_number("train.alpha", t.alpha)
    for key, value in (("train.theta", t.theta), ("train.lr", t.lr), ("train.weight_decay", t.weight_decay)):
        if value is not None:
            _check_number(key, value)
    for key, value in (("train.epochs", t.epochs), ("train.batch_size", t.batch_size),
                       ("eval.repeats", cfg.eval.repeats), ("eval.batch_size", cfg.eval.batch_size)):
        if value is not None and value < 1:
            raise ConfigError(f"{key} must be >= 1, got {value}")
    if t.test_every < 0:
        raise ConfigError(f"train.test_every must be >= 0 (0 = never), got {t.test_every}")
    if not 0 <= t.seed < TRAIN_SEED_LIMIT:
        raise ConfigError(f"train.seed must be an integer in [0, 2**44), got {t.seed}")
    if not 0 <= cfg.eval.seed < EVAL_SEED_LIMIT:
        raise ConfigError(f"eval.seed must be an integer in [0, 2**63), got {cfg.eval.seed}")
    if cfg.data.image_size is not None and cfg.data.image_size < 1:
        raise ConfigError(f"data.image_size must be an integer >= 1 (or null for the model's need), got {cfg.data.image_size}")
    for key, value in (("data.subset", cfg.data.subset), ("data.test_subset", cfg.data.test_subset)):
        if value is not None and value < 2:
            raise ConfigError(f"{key} must be an integer >= 2 (images; null = the whole split), got {value}")
    if not 0 <= cfg.data.subset_seed < TRAIN_SEED_LIMIT:
        raise ConfigError(f"data.subset_seed must be an integer in [0, 2**44), got {cfg.data.subset_seed}")
    if t.init_from is not None and not t.init_from.strip():
        raise ConfigError("train.init_from must name a run directory, a state_dict file or 'pretrained' (or be null)")
    if not all(isinstance(n, str) and n.strip() for n in t.init_skip):
        raise ConfigError(f"train.init_skip must be a list of module names, e.g. [fc], got {t.init_skip!r}")
    if t.init_from is None and (t.init_skip or t.init_hash):
        raise ConfigError("train.init_skip and train.init_hash go with train.init_from (null here)")
    if t.method == "clean":
        t.sigma, t.theta = 0.0, 0.0
    if t.theta is None:
        t.theta = default_theta(t.sigma) if t.method == "vant" else 0.0
    finetune = t.init_from is not None
    if t.epochs is None:
        t.epochs = (400 if d in PAPER_DATASETS else 30) // (FINETUNE_EPOCH_DIVISOR if finetune else 1)
    if t.lr is None:
        t.lr = default_lr(cfg.model.name, d)
    if t.weight_decay is None:
        t.weight_decay = 1e-4 if d in ("cinic10", "tinyimagenet") else 0.0
    if t.warmup_epochs is None:
        t.warmup_epochs = 100 if d in ("cinic10", "tinyimagenet") and t.method != "clean" and not finetune else 0
    if t.warmup_epochs < 0 or t.warmup_epochs > t.epochs:
        raise ConfigError(f"train.warmup_epochs must lie in [0, train.epochs={t.epochs}], got {t.warmup_epochs}")
    if t.method == "vant" and t.alpha * t.sigma + 8.0 * t.theta > FLOAT32_MAX:  # the sampler's draws, up to |z| = 8
        raise ConfigError(f"train.sigma: VANT's noise levels alpha*sigma + theta*|z| (alpha={t.alpha:g}, sigma={t.sigma:g}, "
                          f"theta={t.theta:g}) pass the largest float32 ({FLOAT32_MAX:.3g})")
    _resolve_baselines(cfg)
    for i, v in enumerate(t.sigma_values):
        _check_number(f"train.sigma_values[{i}]", _number(v))
    if t.method == "empirical" and not t.sigma_values:
        raise ConfigError("train.sigma_values: method 'empirical' needs a list of measured sigma values")
    sig = [_number(v) for v in cfg.eval.sigmas]
    if not sig or any(isinstance(s, bool) or not isinstance(s, (int, float)) for s in sig):
        raise ConfigError(f"eval.sigmas must be a non-empty list of numbers >= 0, got {sig}")
    if not all(math.isfinite(s) for s in sig):
        raise ConfigError(f"eval.sigmas must hold finite numbers, got {sig}")
    if any(s < 0 for s in sig):
        raise ConfigError(f"eval.sigmas must be a non-empty list of numbers >= 0, got {sig}")
    if any(s > FLOAT32_MAX for s in sig):
        raise ConfigError(f"eval.sigmas must hold numbers of at most {FLOAT32_MAX:.3g} (the largest float32), got {sig}")
    if sorted(sig) != list(sig) or len(set(sig)) != len(sig):
        raise ConfigError(f"eval.sigmas must be strictly increasing, got {sig}")
    if len(sig) < 2:  # the summary's AUC over the grid needs two points
        raise ConfigError(f"eval.sigmas must hold at least 2 values (the AUC needs two points), got {sig}")
    cfg.eval.sigmas = [float(s) for s in sig]
    _check_out_dir(cfg.out_dir)
    _check_log(cfg.log)
    return cfg


def _check_log(log: LogConfig) -> None:
    """The trackers' settings, by form (whether their packages are installed is checked where a run starts)."""
    if log.mlflow is not None and (not log.mlflow.strip() or any(ord(c) < 32 for c in log.mlflow)):
        raise ConfigError(f"log.mlflow must be a tracking URI (e.g. http://host:5000 or sqlite:///mlflow.db) or "
                          f"null, got {log.mlflow!r}")
    if not log.experiment.strip() or any(ord(c) < 32 for c in log.experiment):
        raise ConfigError(f"log.experiment must be a non-empty name, got {log.experiment!r}")


#: The largest float32: every number of a run is computed in float32 (or narrower), so a value above
#: it is infinite there however finite it is to Python.
FLOAT32_MAX = 3.4028234663852886e38


def _check_number(key: str, value: Any) -> None:
    """A finite number >= 0 that float32 can hold."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if not math.isfinite(value):
        raise ConfigError(f"{key} must be a finite number, got {value}")
    if value < 0:
        raise ConfigError(f"{key} must be >= 0, got {value}")
    if value > FLOAT32_MAX:
        raise ConfigError(f"{key} must be at most {FLOAT32_MAX:.3g} (the largest float32; runs compute in float32), "
                          f"got {value:g}")


def _check_names(cfg: RunConfig) -> None:
    """The fields that name a choice, and those that end up in the run directory's path."""
    t, n = cfg.train, cfg.noise
    if t.sampler not in SAMPLERS:
        raise ConfigError(f"train.sampler: unknown sampler {t.sampler!r}; choose {', '.join(SAMPLERS)}")
    if n.kind not in NOISE_KINDS:
        raise ConfigError(f"noise.kind: unknown noise kind {n.kind!r}; choose {', '.join(NOISE_KINDS)}")
    sites = n.sites
    if isinstance(sites, str):  # 'paper', 'all' or one fnmatch pattern
        if not sites.strip():
            raise ConfigError(f"noise.sites must be 'paper', 'all' or a non-empty list of module name patterns, got {sites!r}")
    elif not sites or not all(isinstance(p, str) and p.strip() for p in sites):
        raise ConfigError(f"noise.sites must be 'paper', 'all' or a non-empty list of module name patterns, got {sites!r}")
    if not DEVICE_FORM.fullmatch(cfg.device):
        raise ConfigError(f"device: unknown device {cfg.device!r}; choose auto, cpu, cuda or cuda:N")
    if cfg.cpu_threads is not None and (isinstance(cfg.cpu_threads, bool) or not 1 <= cfg.cpu_threads <= 1024):
        raise ConfigError(f"cpu_threads must be an integer in [1, 1024] or null, got {cfg.cpu_threads}")
    if cfg.name != "":
        safe_component(cfg.name, "name")
    # With no name, the run label is built from these (model.name with ':' replaced): no separators.
    for key, value in (("model.name", cfg.model.name), ("data.name", cfg.data.name)):
        if not value or any(c in value for c in "/\\\0"):
            raise ConfigError(f"{key} must be a non-empty name without '/', '\\' or NUL, got {value!r}")


def _check_out_dir(out_dir: str) -> None:
    """out_dir, where it exists (or its nearest existing parent), must be a directory."""
    if "\0" in out_dir:
        raise ConfigError(f"out_dir must not contain a NUL character, got {out_dir!r}")
    path = Path(os.path.expanduser(out_dir))
    for p in (path, *path.parents):
        try:
            found = p.exists() or p.is_symlink()
            is_dir = p.is_dir()
        except OSError:  # e.g. no permission to look: left to the run, which reports it
            return
        if found:
            if not is_dir:
                where = "" if p == path else f" ({str(p)!r} is not a directory)"
                raise ConfigError(f"out_dir: {out_dir!r} is not a directory{where}")
            return


def safe_component(text: str, key: str) -> str:
    """``text`` if it is safe as one path component (a directory name under another), else a
    one-line ConfigError naming ``key``: not blank, no '/', '\\', NUL or other control character,
    not '.' or '..', not absolute or drive-qualified, no leading '-', at most NAME_MAX characters."""
    if not isinstance(text, str):
        raise ConfigError(f"{key}: expected a string, got {text!r}")
    why = None
    if not text.strip():
        why = "must not be blank"
    elif len(text) > NAME_MAX:
        why = f"must be at most {NAME_MAX} characters (it has {len(text)})"
    elif "/" in text or "\\" in text:
        why = "must be a single path component (no '/' or '\\')"
    elif any(ord(c) < 32 or ord(c) == 127 for c in text):
        why = "must not contain NUL or other control characters"
    elif text.strip() in (".", ".."):
        why = "must not be '.' or '..'"
    elif text.startswith("-"):
        why = "must not start with '-'"
    elif PureWindowsPath(text).drive or PurePosixPath(text).is_absolute():
        why = "must not be an absolute path or name a drive"
    if why:
        raise ConfigError(f"{key} {why}; got {text[:120]!r}")
    return text


def inside(parent: Path, child: Path, key: str) -> Path:
    """``child`` resolved (symlinks followed), if it lies strictly inside ``parent`` (also resolved);
    otherwise a one-line ConfigError naming ``key``. Neither path need exist."""
    try:
        p, c = Path(parent).resolve(), Path(child).resolve()
    except (OSError, RuntimeError, ValueError) as e:  # a symlink loop, a NUL byte
        raise ConfigError(f"{key}: cannot resolve {str(child)!r} under {str(parent)!r}: {e}") from None
    if c == p or p not in c.parents:
        raise ConfigError(f"{key}: {str(child)!r} is not inside {str(parent)!r}")
    return c


#: Bit widths QAT accepts; the paper sweeps 4, 8 and 16 (spec 2).
QUANT_BITS = range(2, 17)


def _resolve_baselines(cfg: RunConfig) -> None:
    """Validate the QAT and SAM fields (spec 2); SAM fields of an Adam run are reset so they do not split runs."""
    m, t = cfg.model, cfg.train
    if m.quant_bits is not None and m.quant_bits not in QUANT_BITS:
        raise ConfigError(f"model.quant_bits must be an integer in [2, 16] (or null for a float model), got {m.quant_bits}")
    if m.quant_act_scale is not None:
        if m.quant_bits is None:
            raise ConfigError("model.quant_act_scale is set but model.quant_bits is null; set the bit width too")
        if not 0 < m.quant_act_scale < float("inf"):
            raise ConfigError(f"model.quant_act_scale must be a number > 0 (or null for a learned scale), got {m.quant_act_scale}")
    if t.optimizer not in OPTIMIZERS:
        raise ConfigError(f"train.optimizer: unknown optimizer {t.optimizer!r}; choose adam or sam")
    if t.optimizer == "sam":
        if not 0 < t.sam_rho < float("inf"):
            raise ConfigError(f"train.sam_rho must be a number > 0, got {t.sam_rho}")
    else:  # an Adam run ignores sam_rho, but a NaN or infinite one is still a mistake
        if not math.isfinite(t.sam_rho):
            raise ConfigError(f"train.sam_rho must be a finite number, got {t.sam_rho}")
        defaults = TrainConfig()
        t.sam_rho, t.sam_adaptive = defaults.sam_rho, defaults.sam_adaptive


def _number(v):
    if isinstance(v, str):
        try:
            return float(v)
        except ValueError:
            return v
    return v


#: Fields added after runs were first stored: left out of the hash while they hold the value they had
#: before they existed, so every run stored before keeps its directory (the hash of a config that
#: does not use the feature is unchanged).
HASH_NEUTRAL = {"data.subset": None, "data.test_subset": None, "data.subset_seed": 0, "train.init_skip": [],
                "train.init_hash": ""}


def pop_dotted(data: dict, key: str, unless=None) -> None:
    """Remove ``a.b.c`` from nested ``data`` if it is there (only where its value equals ``unless``,
    when ``unless`` is given as a 1-tuple)."""
    *parents, leaf = key.split(".")
    node = data
    for p in parents:
        node = node.get(p, {}) if isinstance(node, dict) else {}
    if isinstance(node, dict) and leaf in node and (unless is None or node[leaf] == unless[0]):
        node.pop(leaf)


def config_hash(cfg: RunConfig) -> str:
    data = to_dict(cfg)
    for key, neutral in HASH_NEUTRAL.items():
        pop_dotted(data, key, unless=(neutral,))
    if "subset" not in data["data"] and "test_subset" not in data["data"]:
        data["data"].pop("subset_seed", None)  # the seed of a draw that is not made
    for key in NON_SEMANTIC:
        pop_dotted(data, key)
    blob = json.dumps(data, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:10]

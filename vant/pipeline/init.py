"""Starting a run from trained weights (``train.init_from``): noisy fine-tuning of a model you have.

A source is one of
- a finished vant run directory: its final weights (``checkpoint.pt``); its identity is the source
  run's config hash (``run:<hash>``), which is what a run directory is;
- a state_dict file: ``.pt``/``.pth`` read with ``weights_only=True`` (a plain state_dict, or a
  dict holding one under ``state_dict`` or ``model``), or ``.safetensors`` where the ``safetensors``
  package is installed; its identity is the SHA-256 of its bytes (``sha256:<hex>``), so another file,
  or the same path rewritten, is another run;
- ``pretrained``: the weights torchvision publishes for a ``tv:`` model, read from torchvision's own
  cache (``torch.hub.get_dir()/checkpoints``), or timm's default weights of a ``timm:`` model, read
  from the Hugging Face cache where timm keeps them; nothing is downloaded.

Matching is strict: every key of the model and of the source must meet with the same shape, but for
the modules named in ``train.init_skip``, which keep their fresh initialisation (a classifier head of
another number of classes, say). Every failure is a one-line :class:`~vant.config.ConfigError`
raised before the run directory exists.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import yaml

from ..config import ConfigError, RunConfig, config_hash, from_dict, resolve

#: Suffixes read as state_dict files.
STATE_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors")


def _where(cfg_or_source) -> str:
    src = cfg_or_source.train.init_from if isinstance(cfg_or_source, RunConfig) else cfg_or_source
    return f"train.init_from={src}"


def _expand(source: str) -> Path:
    return Path(source).expanduser()


def source_identity(source: str, model_name: str) -> str:
    """What the source's content is, for the run's hash: ``run:<config hash>``, ``sha256:<hex>`` of a
    file, or ``pretrained:<file>:sha256:<hex>``. Reads the source; raises ConfigError if it cannot."""
    if source == "pretrained":
        path = pretrained_file(model_name)
        name = path.parents[2].name if model_name.startswith("timm:") else path.stem  # models--timm--<id> / file
        return f"pretrained:{name}:{_sha256(path)}"
    path = _expand(source)
    if path.is_dir():
        return f"run:{_run_hash(path)}"
    if path.is_file():
        if path.suffix not in STATE_SUFFIXES:
            raise ConfigError(f"{_where(source)}: a state_dict file ends in {', '.join(STATE_SUFFIXES)}; got {path.name!r}")
        return "sha256:" + _sha256(path)
    raise ConfigError(f"{_where(source)}: no such run directory or file")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def _run_hash(path: Path) -> str:
    """The config hash of the vant run directory ``path`` (from its config.yaml)."""
    cfg_file = path / "config.yaml"
    if not cfg_file.is_file():
        raise ConfigError(f"{_where(str(path))}: {path} is a directory but not a vant run (no config.yaml)")
    try:
        data = yaml.safe_load(cfg_file.read_text())
        return config_hash(resolve(from_dict(RunConfig, data["config"])))
    except (yaml.YAMLError, KeyError, TypeError, ConfigError) as e:
        raise ConfigError(f"{_where(str(path))}: {cfg_file} does not parse ({str(e).splitlines()[0]})") from None


def with_init_hash(cfg: RunConfig) -> RunConfig:
    """``cfg`` with ``train.init_hash`` filled from its source (unchanged where it is set or unused)."""
    t = cfg.train
    if t.init_from is None or t.init_hash:
        return cfg
    t.init_hash = source_identity(t.init_from, cfg.model.name)
    if t.init_from != "pretrained":  # recorded as an absolute path: the run can be read from anywhere
        t.init_from = str(_expand(t.init_from).resolve())
    return cfg


def check_source_unchanged(cfg: RunConfig) -> None:
    """Before training: the source still is what the run's identity says (a file rewritten since the
    grid was expanded, or a source run retrained under another config, is refused)."""
    now = source_identity(cfg.train.init_from, cfg.model.name)
    if now != cfg.train.init_hash:
        raise ConfigError(f"{_where(cfg)}: the source changed since this run was set up ({cfg.train.init_hash} then, "
                          f"{now} now); run the same command again to make a run of the new source")


def _timm_pretrained_file(model_name: str) -> Path:
    """The default pretrained weights of ``timm:<name>`` in the Hugging Face cache, where timm keeps them."""
    from ..models import _timm_name

    try:
        timm = _timm_name(model_name)
    except ValueError as e:
        raise ConfigError(f"train.init_from=pretrained: {e}") from None
    cfg = timm.models.get_pretrained_cfg(model_name[5:])
    hub_id = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
    if not hub_id:
        raise ConfigError(f"train.init_from=pretrained: timm names no Hugging Face weights for {model_name[5:]!r}; "
                          "give a state_dict file instead")
    from huggingface_hub import try_to_load_from_cache

    for fname in ("model.safetensors", "pytorch_model.bin"):
        found = try_to_load_from_cache(hub_id, fname)
        if isinstance(found, str):
            return Path(found)
    raise ConfigError(f"train.init_from=pretrained: {hub_id} is not in the Hugging Face cache and vant downloads "
                      f"nothing; fetch it once with timm.create_model('{model_name[5:]}', pretrained=True) on a "
                      "machine with network")


def pretrained_file(model_name: str) -> Path:
    """The cached file of the default published weights of ``tv:<name>`` (torchvision's cache) or
    ``timm:<name>`` (the Hugging Face cache); ConfigError if absent."""
    if model_name.startswith("timm:"):
        return _timm_pretrained_file(model_name)
    if not model_name.startswith("tv:"):
        raise ConfigError(f"train.init_from=pretrained: vant reads the published weights of tv:<name> and "
                          f"timm:<name> models from their caches; for model.name={model_name!r} give a state_dict "
                          "file instead")
    import torch
    import torchvision

    from ..models import _torchvision_builder

    name = _torchvision_builder(model_name[3:])
    try:
        weights = torchvision.models.get_model_weights(name).DEFAULT
    except (ValueError, AttributeError) as e:
        raise ConfigError(f"train.init_from=pretrained: torchvision publishes no weights for {name!r} ({e})") from None
    path = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
    if not path.is_file():
        raise ConfigError(f"train.init_from=pretrained: {path} is not there and vant downloads nothing; fetch it once "
                          f"with torchvision.models.get_model('{name}', weights='DEFAULT') on a machine with network")
    return path


def load_source(cfg: RunConfig) -> dict:
    """The state_dict of ``cfg.train.init_from`` as CPU tensors."""
    import torch

    from .store import CheckpointError, load_checkpoint

    source = cfg.train.init_from
    path = pretrained_file(cfg.model.name) if source == "pretrained" else _expand(source)
    if path.is_dir():
        if not (path / "trained").is_file():
            raise ConfigError(f"{_where(cfg)}: the run {path} has not finished training")
        try:
            return load_checkpoint(path / "checkpoint.pt", "cpu", expect_hash=_run_hash(path),
                                   advice=f"train {path} again")["model"]
        except CheckpointError as e:
            raise ConfigError(f"{_where(cfg)}: {e}") from None
    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError:
            raise ConfigError(f"{_where(cfg)}: reading .safetensors needs the safetensors package "
                              "(pip install safetensors)") from None
        try:
            return load_file(str(path), device="cpu")
        except Exception as e:  # a damaged or foreign file: one line naming it
            raise ConfigError(f"{_where(cfg)}: {path} is not a readable safetensors file ({type(e).__name__})") from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # garbage, truncated, or a pickle naming code: refused alike
        raise ConfigError(f"{_where(cfg)}: {path} is unreadable or holds more than tensors and plain data "
                          f"({type(e).__name__})") from None
    for key in ("state_dict", "model"):  # a training checkpoint holding the state_dict
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError(f"{_where(cfg)}: {path} holds no state_dict (a mapping of names to tensors)")
    return state


def _skipped(key: str, skip: list[str]) -> bool:
    return any(key == s or key.startswith(s + ".") for s in skip)


def apply_init(model, state: dict, skip: list[str], where: str = "train.init_from") -> list[str]:
    """Load ``state`` into ``model`` strictly but for the modules named in ``skip`` (which keep their
    initialisation). Raises ConfigError naming the first mismatch; returns the keys loaded."""
    own = model.state_dict()
    modules = dict(model.named_modules())
    unknown = [s for s in skip if s not in modules]
    if unknown:
        raise ConfigError(f"train.init_skip: the model has no module {unknown[0]!r} (top-level modules: "
                          f"{', '.join(n for n in modules if n and '.' not in n)})")
    missing = [k for k in own if k not in state and not _skipped(k, skip)]
    extra = [k for k in state if k not in own and not _skipped(k, skip)]
    if missing or extra:
        what = (f"the model's {missing[0]!r} is not in the source" if missing
                else f"the source's {extra[0]!r} is not in the model")
        more = len(missing) + len(extra) - 1
        raise ConfigError(f"{where}: does not fit this model: {what}"
                          + (f" ({more} more keys differ)" if more else "") + "; is it another architecture?")
    for k, v in own.items():
        if _skipped(k, skip):
            continue
        if tuple(state[k].shape) != tuple(v.shape):
            module = k.rsplit(".", 1)[0]
            raise ConfigError(f"{where}: {k} has shape {list(state[k].shape)} in the source and {list(v.shape)} in "
                              f"the model; to re-initialise {module!r} instead (a classifier head of another number "
                              f"of classes, say), set train.init_skip=[{module}]")
    loaded = [k for k in own if not _skipped(k, skip)]
    model.load_state_dict({k: state[k].to(own[k].dtype) for k in loaded}, strict=False)
    return loaded


__all__ = ["source_identity", "with_init_hash", "check_source_unchanged", "load_source", "apply_init",
           "pretrained_file"]

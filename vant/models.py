"""Plain PyTorch models of the paper, in a small registry. No noise in here: noise is added from
outside with :func:`vant.inject_noise_`, so these are ordinary modules.

The ResNets follow the authors' small-image form (spec 1.3): a 3x3 stride-1 stem conv with bias,
BN, ReLU and the 3x3/s2 max-pool *kept* (32x32 inputs are 16x16 after the stem); each block calls
one ReLU module at each of its ReLUs. LeNet-5 uses average pooling by default (the VANT code).

Other models come by name: ``tv:<name>`` (torchvision), ``timm:<name>`` (timm, an optional extra)
and ``package.module:function`` (a user's factory, called with the data's class and channel counts).
"""
from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the registry itself needs no torch: `vant list models` answers without it
    from torch import nn

from .factory import check_call, is_factory_name, load_factory, require


@dataclass(frozen=True)
class ModelInfo:
    name: str
    build: Callable[..., nn.Module]
    input_size: int | None  # square input side the model needs (data are resized to it); None = any
    description: str


_REGISTRY: dict[str, ModelInfo] = {}


def register_model(name: str, input_size: int | None = None, description: str = ""):
    def deco(fn):
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is already registered")
        _REGISTRY[name] = ModelInfo(name, fn, input_size, description or (fn.__doc__ or "").strip().splitlines()[0])
        return fn
    return deco


def registered(name: str) -> bool:
    """Whether ``name`` is one of the registry's own models (not tv:, timm: or a factory)."""
    return name in _REGISTRY


def list_models() -> list[str]:
    """Registered names. Any torchvision classification model also works as ``tv:<name>``, any timm
    model as ``timm:<name>`` and any factory function as ``package.module:function``."""
    return sorted(_REGISTRY)


#: Constructor arguments vant sets from the data; model.kwargs may not give them (``in_chans``: timm's name).
RESERVED_KWARGS = ("num_classes", "in_channels")


def model_info(name: str) -> ModelInfo:
    """What is known of a model name before it is built; an unknown name is a ValueError naming it."""
    if name.startswith("tv:"):
        _torchvision_builder(name[3:])  # validates the name
        return ModelInfo(name, lambda **kw: create_model(name, **kw), None, f"torchvision {name[3:]}")
    if name.startswith("timm:"):
        _timm_name(name)
        return ModelInfo(name, lambda **kw: create_model(name, **kw), None, f"timm {name[5:]}")
    if is_factory_name(name):
        fn = load_factory(name, "model.name")
        return ModelInfo(name, lambda **kw: create_model(name, **kw), None, f"factory {name}: {_first_doc_line(fn)}")
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; choose one of {list_models()}, tv:<torchvision name>, "
                         "timm:<timm name> or package.module:function")
    return _REGISTRY[name]


def check_model(name: str, kwargs: dict | None = None) -> ModelInfo:
    """:func:`model_info`, and for a factory whether it takes ``(num_classes=, in_channels=, **kwargs)``;
    all without building the model (what a run or a grid checks before anything is written)."""
    info = model_info(name)
    kwargs = dict(kwargs or {})
    reserved = [k for k in RESERVED_KWARGS + (("in_chans",) if name.startswith("timm:") else ()) if k in kwargs]
    if reserved:
        raise ValueError(f"model.kwargs must not set {', '.join(reserved)}: vant sets the class and channel "
                         "counts from the data")
    if is_factory_name(name) and not name.startswith(("tv:", "timm:")):
        check_call(load_factory(name, "model.name"), name, "model.name", num_classes=10, in_channels=3, **kwargs)
    return info


def _first_doc_line(fn) -> str:
    doc = (getattr(fn, "__doc__", None) or "").strip()
    return doc.splitlines()[0] if doc else "a user factory"


def _torchvision_builder(name: str):
    import torchvision

    names = torchvision.models.list_models(module=torchvision.models)
    if name not in names:
        raise ValueError(f"unknown torchvision classification model {name!r}")
    return name


def _timm_name(name: str):
    """The timm module, once ``timm:<model>`` is known to name one of its models."""
    timm = require("timm", "timm", f"model.name={name!r}")
    model = name[5:]
    if not timm.is_model(model):
        close = difflib.get_close_matches(model, timm.list_models(), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else " (see timm.list_models())"
        raise ValueError(f"unknown timm model {model!r}{hint}")
    return timm


def create_model(name: str, num_classes: int = 10, in_channels: int = 3, **kwargs) -> nn.Module:
    """Build a model, untrained: a registered name, ``tv:<name>`` (torchvision), ``timm:<name>`` (timm's
    ``create_model(name, num_classes=, in_chans=, **kwargs)``) or ``package.module:function``, called as
    ``function(num_classes=, in_channels=, **kwargs)``, which must return an ``nn.Module``."""
    if name.startswith("tv:"):
        import torchvision

        tv_name = _torchvision_builder(name[3:])
        if in_channels != 3:
            raise ValueError(f"torchvision model {tv_name!r} takes 3 input channels, the data have {in_channels}")
        return torchvision.models.get_model(tv_name, weights=None, num_classes=num_classes, **kwargs)
    if name.startswith("timm:"):
        timm = _timm_name(name)
        # pretrained=False unless model.kwargs asks for timm's weights (timm then downloads them)
        return timm.create_model(name[5:], **{"pretrained": False, **kwargs}, num_classes=num_classes,
                                 in_chans=in_channels)
    if is_factory_name(name):
        fn = load_factory(name, "model.name")
        check_call(fn, name, "model.name", num_classes=num_classes, in_channels=in_channels, **kwargs)
        model = fn(num_classes=num_classes, in_channels=in_channels, **kwargs)
        from torch import nn

        if not isinstance(model, nn.Module):
            raise ValueError(f"model.name={name!r} returned {type(model).__name__}, not a torch.nn.Module")
        return model
    return model_info(name).build(num_classes=num_classes, in_channels=in_channels, **kwargs)


@register_model("lenet5", input_size=32)
def lenet5(num_classes=10, in_channels=3, pool="avg"):
    """LeNet-5, average pooling, no BN (the paper's LeNet; 12 noise sites)."""
    from .nets import LeNet5

    return LeNet5(num_classes, in_channels, pool=pool)


@register_model("lenet5_bn", input_size=32)
def lenet5_bn(num_classes=10, in_channels=3, pool="avg"):
    """LeNet-5 with BatchNorm after each hidden conv/linear (Walking-Noise LeNet5-BN; 12 sites, noise before BN)."""
    from .nets import LeNet5

    return LeNet5(num_classes, in_channels, pool=pool, bn=True)


@register_model("resnet18")
def resnet18(num_classes=10, in_channels=3, small_input=True, width=64):
    """ResNet-18, small-image stem with max-pool (the paper's; 33 sites, 41 draws)."""
    from .nets import BasicBlock, ResNet

    return ResNet(BasicBlock, [2, 2, 2, 2], num_classes, in_channels, small_input, width)


@register_model("resnet50")
def resnet50(num_classes=10, in_channels=3, small_input=True, width=64):
    """ResNet-50, small-image stem with max-pool (the paper's; 74 sites, 106 draws)."""
    from .nets import Bottleneck, ResNet

    return ResNet(Bottleneck, [3, 4, 6, 3], num_classes, in_channels, small_input, width)


def __getattr__(name: str):
    """The network classes (``vant.models.ResNet`` ...) live in :mod:`vant.nets`, loaded on first use."""
    if name in ("LeNet5", "BasicBlock", "Bottleneck", "ResNet"):
        from . import nets

        return getattr(nets, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

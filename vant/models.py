"""Plain PyTorch models of the paper, in a small registry. No noise in here: noise is added from
outside with :func:`vant.inject_noise_`, so these are ordinary modules.

The ResNets follow the authors' small-image form (spec 1.3): a 3x3 stride-1 stem conv with bias,
BN, ReLU and the 3x3/s2 max-pool *kept* (32x32 inputs are 16x16 after the stem); each block calls
one ReLU module at each of its ReLUs. LeNet-5 uses average pooling by default (the VANT code).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the registry itself needs no torch: `vant list models` answers without it
    from torch import nn


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


def list_models() -> list[str]:
    """Registered names. Any torchvision classification model also works as ``tv:<name>``."""
    return sorted(_REGISTRY)


def model_info(name: str) -> ModelInfo:
    if name.startswith("tv:"):
        _torchvision_builder(name[3:])  # validates the name
        return ModelInfo(name, lambda **kw: create_model(name, **kw), None, f"torchvision {name[3:]}")
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; choose one of {list_models()} or tv:<torchvision name>")
    return _REGISTRY[name]


def _torchvision_builder(name: str):
    import torchvision

    names = torchvision.models.list_models(module=torchvision.models)
    if name not in names:
        raise ValueError(f"unknown torchvision classification model {name!r}")
    return name


def create_model(name: str, num_classes: int = 10, in_channels: int = 3, **kwargs) -> nn.Module:
    """Build a registered model, or a torchvision classification model by ``tv:<name>`` (untrained)."""
    if name.startswith("tv:"):
        import torchvision

        tv_name = _torchvision_builder(name[3:])
        if in_channels != 3:
            raise ValueError(f"torchvision model {tv_name!r} takes 3 input channels, the data have {in_channels}")
        return torchvision.models.get_model(tv_name, weights=None, num_classes=num_classes, **kwargs)
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

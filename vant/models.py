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

import torch
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
        if not isinstance(model, nn.Module):
            raise ValueError(f"model.name={name!r} returned {type(model).__name__}, not a torch.nn.Module")
        return model
    return model_info(name).build(num_classes=num_classes, in_channels=in_channels, **kwargs)


class LeNet5(nn.Module):
    """LeNet-5 for 32x32 inputs; ``pool`` is "avg" (VANT code) or "max" (WN/QAT code); ``bn`` adds
    BatchNorm after every conv/linear but the last (the Walking-Noise LeNet5-BN)."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3, pool: str = "avg", bn: bool = False):
        super().__init__()
        if pool not in ("avg", "max"):
            raise ValueError(f"LeNet5 pool must be 'avg' or 'max', got {pool!r}")
        Pool = nn.AvgPool2d if pool == "avg" else nn.MaxPool2d
        norm = (lambda c, d: (nn.BatchNorm2d(c) if d == 2 else nn.BatchNorm1d(c))) if bn else (lambda c, d: nn.Identity())
        self.conv1, self.bn1, self.relu1, self.pool1 = nn.Conv2d(in_channels, 6, 5), norm(6, 2), nn.ReLU(), Pool(2)
        self.conv2, self.bn2, self.relu2, self.pool2 = nn.Conv2d(6, 16, 5), norm(16, 2), nn.ReLU(), Pool(2)
        self.fc1, self.bn3, self.relu3 = nn.Linear(400, 120), norm(120, 1), nn.ReLU()
        self.fc2, self.bn4, self.relu4 = nn.Linear(120, 84), norm(84, 1), nn.ReLU()
        self.fc3 = nn.Linear(84, num_classes)

    def forward(self, x):
        x = self.pool1(self.relu1(self.bn1(self.conv1(x))))
        x = self.pool2(self.relu2(self.bn2(self.conv2(x))))
        x = torch.flatten(x, 1)
        x = self.relu3(self.bn3(self.fc1(x)))
        x = self.relu4(self.bn4(self.fc2(x)))
        return self.fc3(x)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        # Bias kept on the 3x3 convs (PyTorch default), as in the authors' model.
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU()  # one module, called twice: each call is its own noise draw
        self.shortcut = _shortcut(in_planes, planes, stride)

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU()  # called three times per block
        self.shortcut = _shortcut(in_planes, planes * 4, stride)

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + self.shortcut(x))


def _shortcut(in_planes: int, out_planes: int, stride: int) -> nn.Module:
    if stride == 1 and in_planes == out_planes:
        return nn.Identity()
    return nn.Sequential(nn.Conv2d(in_planes, out_planes, 1, stride, bias=False), nn.BatchNorm2d(out_planes))


class ResNet(nn.Module):
    """ResNet in the authors' form. ``small_input`` selects the 3x3/s1 stem (inputs under 224 px);
    otherwise the 7x7/s2 ImageNet stem. The max-pool is kept in both. ``width`` is the first
    stage's channel count (64 in the paper; smaller keeps the same sites at a fraction of the cost)."""

    def __init__(self, block, layers, num_classes: int = 10, in_channels: int = 3, small_input: bool = True,
                 width: int = 64):
        super().__init__()
        self.conv1 = (nn.Conv2d(in_channels, width, 3, 1, 1) if small_input
                      else nn.Conv2d(in_channels, width, 7, 2, 3))
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        planes, in_planes, stages = width, width, []
        for i, n in enumerate(layers):
            blocks = []
            for j in range(n):
                stride = 2 if (i > 0 and j == 0) else 1
                blocks.append(block(in_planes, planes, stride))
                in_planes = planes * block.expansion
            stages.append(nn.Sequential(*blocks))
            planes *= 2
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_planes, num_classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


@register_model("lenet5", input_size=32)
def lenet5(num_classes=10, in_channels=3, pool="avg"):
    """LeNet-5, average pooling, no BN (the paper's LeNet; 12 noise sites)."""
    return LeNet5(num_classes, in_channels, pool=pool)


@register_model("lenet5_bn", input_size=32)
def lenet5_bn(num_classes=10, in_channels=3, pool="avg"):
    """LeNet-5 with BatchNorm after each hidden conv/linear (Walking-Noise LeNet5-BN; 12 sites, noise before BN)."""
    return LeNet5(num_classes, in_channels, pool=pool, bn=True)


@register_model("resnet18")
def resnet18(num_classes=10, in_channels=3, small_input=True, width=64):
    """ResNet-18, small-image stem with max-pool (the paper's; 33 sites, 41 draws)."""
    return ResNet(BasicBlock, [2, 2, 2, 2], num_classes, in_channels, small_input, width)


@register_model("resnet50")
def resnet50(num_classes=10, in_channels=3, small_input=True, width=64):
    """ResNet-50, small-image stem with max-pool (the paper's; 74 sites, 106 draws)."""
    return ResNet(Bottleneck, [3, 4, 6, 3], num_classes, in_channels, small_input, width)

"""The networks of the paper as plain PyTorch modules (registered by name in :mod:`vant.models`).

The ResNets follow the authors' small-image form (spec 1.3): a 3x3 stride-1 stem conv with bias,
BN, ReLU and the 3x3/s2 max-pool *kept* (32x32 inputs are 16x16 after the stem); each block calls
one ReLU module at each of its ReLUs. LeNet-5 uses average pooling by default (the VANT code).
Kept apart from the registry so that listing the models does not load torch.
"""
from __future__ import annotations

import torch
from torch import nn


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

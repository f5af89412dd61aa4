"""MobileNetV1 (Howard et al. 2017) and the ODiMO Darkside search space built on it.

In the Darkside variant, the 8 stride-1 blocks whose input and output channel counts are equal
replace their 3x3 depthwise conv with a dense 3x3 conv (Cin = Cout, groups = 1). The Darkside SoC
plugin then splits the output channels of each such conv between the cluster (dense conv) and the
depthwise engine (depthwise conv).
"""

from __future__ import annotations

import torch
from torch import nn

from .resnet import SMALL_INPUT

STEM_CHANNELS = 32
# (output channels, stride) of the 13 depthwise-separable blocks.
BLOCKS = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
          (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1))


def _scaled(channels: int, width: float) -> int:
    return max(1, int(round(channels * width)))


class SeparableBlock(nn.Module):
    """3x3 spatial conv + BN + ReLU, then pointwise 1x1 conv + BN + ReLU.

    The spatial conv is depthwise (``dense=False``) or a dense Cin -> Cin conv (``dense=True``).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, dense: bool) -> None:
        super().__init__()
        groups = 1 if dense else in_channels
        self.spatial = nn.Conv2d(in_channels, in_channels, 3, stride, 1, groups=groups, bias=False)
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.relu1 = nn.ReLU(inplace=True)
        self.pointwise = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu2 = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu1(self.bn1(self.spatial(x)))
        return self.relu2(self.bn2(self.pointwise(x)))


class MobileNetV1(nn.Module):
    """MobileNetV1 with width multiplier ``width``.

    The stem conv has stride 2, or stride 1 for inputs under 64x64. With ``darkside=True`` the
    stride-1 blocks with equal input/output channels use a dense 3x3 conv (see module docstring).
    """

    def __init__(self, num_classes: int, in_channels: int, input_size: tuple[int, int],
                 width: float = 1.0, darkside: bool = False) -> None:
        super().__init__()
        stem_stride = 1 if min(input_size) < SMALL_INPUT else 2
        channels = _scaled(STEM_CHANNELS, width)
        self.stem = nn.Sequential(nn.Conv2d(in_channels, channels, 3, stem_stride, 1, bias=False),
                                  nn.BatchNorm2d(channels), nn.ReLU(inplace=True))
        blocks = []
        for out_channels, stride in BLOCKS:
            out_channels = _scaled(out_channels, width)
            dense = darkside and stride == 1 and channels == out_channels
            blocks.append(SeparableBlock(channels, out_channels, stride, dense))
            channels = out_channels
        self.blocks = nn.Sequential(*blocks)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.stem(x))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def mobilenetv1(num_classes: int, in_channels: int, input_size: tuple[int, int],
                width: float = 1.0) -> nn.Module:
    """Standard MobileNetV1."""
    return MobileNetV1(num_classes, in_channels, input_size, width)


def mobilenetv1_darkside(num_classes: int, in_channels: int, input_size: tuple[int, int],
                         width: float = 1.0) -> nn.Module:
    """MobileNetV1 with dense 3x3 convs in its 8 stride-1, Cin == Cout blocks (Darkside search space)."""
    return MobileNetV1(num_classes, in_channels, input_size, width, darkside=True)

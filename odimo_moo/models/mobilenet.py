"""MobileNetV1 (Howard et al. 2017) and the ODiMO Darkside search spaces built on it.

MobileNetV1 is a 3x3 stem conv followed by 13 depthwise-separable blocks (3x3 depthwise conv + 1x1
pointwise conv). Eight of them have stride 1 and equal input and output channel counts; the Darkside
search spaces change only those eight ("same-shape") positions:

* :func:`mobilenetv1_darkside` -- the ODiMO paper's search space (docs/DESIGN.md 2.4): the WHOLE block
  (depthwise + pointwise) is replaced by ONE dense 3x3 conv Cin -> Cout (+ BN + ReLU), with no
  pointwise conv after it. The Darkside SoC plugin splits its output channels between the cluster
  (dense 3x3) and the depthwise engine (bare 3x3 depthwise). The other 5 blocks keep dw + pw.
  The stem has stride 2 by default (the paper's CIFAR-10 and ImageNet setups); the paper's CIFAR-100
  setup uses ``stem_stride=1``. At a 32x32 input with stride 2 the searched layers run at
  8/4/2/2/2/2/2/1 px.
* :func:`mobilenetv1_darkside_pw` -- an earlier variant kept for comparison: the depthwise conv of
  each same-shape block becomes a dense 3x3 Cin -> Cin conv and the 1x1 pointwise conv is kept
  (fixed, on the cluster). Stem stride 1 below 64x64 inputs, 2 above, like :func:`mobilenetv1`.

The standard network, :func:`mobilenetv1`, keeps depthwise + pointwise everywhere (the paper's
"standard MobileNetV1" baseline: depthwise on the DWE, pointwise on the cluster).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from ..errors import UsageError
from .resnet import SMALL_INPUT, init_weights

STEM_CHANNELS = 32
# (output channels, stride) of the 13 depthwise-separable blocks.
BLOCKS = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
          (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1))

# Builds the block at a stride-1 position whose input and output channel counts are equal.
SameShapeBlock = Callable[[int], nn.Module]


def _scaled(channels: int, width: float) -> int:
    return max(1, int(round(channels * width)))


def default_stem_stride(input_size: tuple[int, int]) -> int:
    """The size rule of :func:`mobilenetv1`: stride 1 for inputs under 64x64, else 2."""
    return 1 if min(input_size) < SMALL_INPUT else 2


class SeparableBlock(nn.Module):
    """3x3 spatial conv + BN + ReLU, then pointwise 1x1 conv + BN + ReLU.

    The spatial conv is depthwise (``dense=False``) or a dense Cin -> Cin conv (``dense=True``).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, dense: bool = False) -> None:
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


class DenseBlock(nn.Module):
    """One dense 3x3 stride-1 conv Cin -> Cout (here Cin == Cout) + BN + ReLU: the searched layer of
    the Darkside search space, standing for a whole depthwise-separable block."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
        self.bn = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.conv(x)))


def _dense_spatial_with_pointwise(channels: int) -> nn.Module:
    return SeparableBlock(channels, channels, 1, dense=True)


class MobileNetV1(nn.Module):
    """MobileNetV1 with width multiplier ``width``.

    Args:
        stem_stride: stride of the 3x3 stem conv (``None``: 1 for inputs under 64x64, else 2).
        same_shape_block: builds the block used at each stride-1 position whose input and output
            channel counts are equal, from that channel count (``None``: the standard depthwise-separable
            block).
    """

    def __init__(self, num_classes: int, in_channels: int, input_size: tuple[int, int],
                 width: float = 1.0, stem_stride: int | None = None,
                 same_shape_block: SameShapeBlock | None = None) -> None:
        super().__init__()
        if stem_stride is None:
            stem_stride = default_stem_stride(input_size)
        if isinstance(stem_stride, bool) or not isinstance(stem_stride, int) or stem_stride < 1:
            raise UsageError(f"stem_stride must be a positive integer, got {stem_stride!r}")
        channels = _scaled(STEM_CHANNELS, width)
        self.stem = nn.Sequential(nn.Conv2d(in_channels, channels, 3, stem_stride, 1, bias=False),
                                  nn.BatchNorm2d(channels), nn.ReLU(inplace=True))
        blocks = []
        for out_channels, stride in BLOCKS:
            out_channels = _scaled(out_channels, width)
            if same_shape_block is not None and stride == 1 and channels == out_channels:
                blocks.append(same_shape_block(channels))
            else:
                blocks.append(SeparableBlock(channels, out_channels, stride))
            channels = out_channels
        self.blocks = nn.Sequential(*blocks)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.stem(x))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def mobilenetv1(num_classes: int, in_channels: int, input_size: tuple[int, int],
                width: float = 1.0, stem_stride: int | None = None) -> nn.Module:
    """Standard MobileNetV1 (dw + pw in all 13 blocks); stem stride 1 below 64x64 inputs unless given."""
    return MobileNetV1(num_classes, in_channels, input_size, width, stem_stride)


def mobilenetv1_darkside(num_classes: int, in_channels: int, input_size: tuple[int, int],
                         width: float = 1.0, stem_stride: int = 2) -> nn.Module:
    """The ODiMO paper's Darkside search space: each of the 8 stride-1 Cin == Cout depthwise-separable
    blocks becomes one dense 3x3 conv + BN + ReLU (no pointwise after it).

    ``stem_stride`` is 2 by default, as the paper's CIFAR-10 (32x32) and ImageNet (224x224) setups;
    pass ``stem_stride=1`` for its CIFAR-100 setup.
    """
    return MobileNetV1(num_classes, in_channels, input_size, width, stem_stride, same_shape_block=DenseBlock)


def mobilenetv1_darkside_pw(num_classes: int, in_channels: int, input_size: tuple[int, int],
                            width: float = 1.0, stem_stride: int | None = None) -> nn.Module:
    """Darkside variant keeping the pointwise conv: in the 8 stride-1 Cin == Cout blocks the depthwise
    conv becomes a dense 3x3 Cin -> Cin conv, followed by the block's 1x1 pointwise conv (fixed).
    Stem stride 1 below 64x64 inputs unless given, like :func:`mobilenetv1`."""
    return MobileNetV1(num_classes, in_channels, input_size, width, stem_stride,
                       same_shape_block=_dense_spatial_with_pointwise)

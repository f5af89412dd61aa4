"""ResNets: the CIFAR-style ResNet-8/20 (He et al. 2016, section 4.2) and an adapted ResNet-18."""

from __future__ import annotations

import torch
from torch import nn

# Below this input side the ImageNet stem (7x7 stride-2 conv + max-pool) discards too much.
SMALL_INPUT = 64


class BasicBlock(nn.Module):
    """Two 3x3 conv + BN layers with a residual connection (1x1 conv + BN shortcut if shapes change)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu2 = nn.ReLU(inplace=True)
        if stride != 1 or in_channels != out_channels:
            self.shortcut: nn.Module = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False), nn.BatchNorm2d(out_channels))
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """3x3 conv (16 channels), three stages of ``blocks_per_stage`` BasicBlocks (16/32/64 channels,
    stride 1/2/2), global average pooling and a Linear classifier: 6n+2 layers."""

    STAGES = ((16, 1), (32, 2), (64, 2))

    def __init__(self, blocks_per_stage: int, num_classes: int, in_channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU(inplace=True)
        stages = []
        channels = 16
        for out_channels, stride in self.STAGES:
            blocks = []
            for index in range(blocks_per_stage):
                blocks.append(BasicBlock(channels, out_channels, stride if index == 0 else 1))
                channels = out_channels
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def init_weights(model: nn.Module) -> None:
    """He-normal convolutions (fan-out, ReLU), BatchNorm scale 1 and shift 0: the CIFAR ResNets' and
    MobileNets' initialisation."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


def resnet8(num_classes: int, in_channels: int, input_size: tuple[int, int]) -> nn.Module:
    """CIFAR-style ResNet-8 (one BasicBlock per stage)."""
    return CifarResNet(1, num_classes, in_channels)


def resnet20(num_classes: int, in_channels: int, input_size: tuple[int, int]) -> nn.Module:
    """CIFAR-style ResNet-20 (three BasicBlocks per stage)."""
    return CifarResNet(3, num_classes, in_channels)


def resnet18(num_classes: int, in_channels: int, input_size: tuple[int, int]) -> nn.Module:
    """torchvision's ResNet-18; inputs under 64x64 get a 3x3 stride-1 stem and no max-pool."""
    from torchvision.models import resnet18 as torchvision_resnet18  # torchvision imports slowly

    model = torchvision_resnet18(num_classes=num_classes)
    if min(input_size) < SMALL_INPUT:
        model.conv1 = nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False)
        model.maxpool = nn.Identity()
    elif in_channels != 3:
        model.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
    nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    return model

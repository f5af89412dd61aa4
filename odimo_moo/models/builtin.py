"""Built-in models, registered through the ``odimo_register_models`` hook like any plugin's."""

from __future__ import annotations

from functools import partial

from odimo_moo.hookspecs import hookimpl
from odimo_moo.models import ModelEntry
from odimo_moo.models.mobilenet import mobilenetv1, mobilenetv1_darkside
from odimo_moo.models.resnet import resnet8, resnet18, resnet20

TINY_WIDTH = 0.25


@hookimpl
def odimo_register_models() -> list[ModelEntry]:
    return [
        ModelEntry("resnet8", resnet8, "CIFAR-style ResNet-8 (16/32/64 channels, 1 block per stage)"),
        ModelEntry("resnet20", resnet20, "CIFAR-style ResNet-20 (16/32/64 channels, 3 blocks per stage)"),
        ModelEntry("resnet18", resnet18,
                   "torchvision ResNet-18; 3x3 stride-1 stem without max-pool below 64x64 inputs"),
        ModelEntry("mobilenetv1", mobilenetv1, "MobileNetV1, width 1.0"),
        ModelEntry("mobilenetv1_tiny", partial(mobilenetv1, width=TINY_WIDTH),
                   f"MobileNetV1, width {TINY_WIDTH}"),
        ModelEntry("mobilenetv1_darkside", mobilenetv1_darkside,
                   "Darkside search space: MobileNetV1 with dense 3x3 convs in its 8 stride-1 "
                   "Cin == Cout blocks, width 1.0"),
        ModelEntry("mobilenetv1_darkside_tiny", partial(mobilenetv1_darkside, width=TINY_WIDTH),
                   f"Darkside search space (see mobilenetv1_darkside), width {TINY_WIDTH}"),
    ]

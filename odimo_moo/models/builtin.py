"""Built-in models, registered through the ``odimo_register_models`` hook like any plugin's.

Their builders are imported (with torch) when a model is built, not when it is registered.
"""

from __future__ import annotations

from typing import Any

from odimo_moo.hookspecs import hookimpl
from odimo_moo.models import LazyBuilder, ModelEntry

TINY_WIDTH = 0.25


def resnet(function: str) -> LazyBuilder:
    """A builder of :mod:`odimo_moo.models.resnet`."""
    return LazyBuilder("odimo_moo.models.resnet", function)


def mobilenet(function: str, **preset: Any) -> LazyBuilder:
    """A builder of :mod:`odimo_moo.models.mobilenet` with keyword options ``preset``."""
    return LazyBuilder("odimo_moo.models.mobilenet", function, preset)


@hookimpl
def odimo_register_models() -> list[ModelEntry]:
    return [
        ModelEntry("resnet8", resnet("resnet8"), "CIFAR-style ResNet-8 (16/32/64 channels, 1 block per stage)"),
        ModelEntry("resnet20", resnet("resnet20"), "CIFAR-style ResNet-20 (16/32/64 channels, 3 blocks per stage)"),
        ModelEntry("resnet18", resnet("resnet18"),
                   "torchvision ResNet-18; 3x3 stride-1 stem without max-pool below 64x64 inputs"),
        ModelEntry("mobilenetv1", mobilenet("mobilenetv1"), "MobileNetV1, width 1.0"),
        ModelEntry("mobilenetv1_tiny", mobilenet("mobilenetv1", width=TINY_WIDTH),
                   f"MobileNetV1, width {TINY_WIDTH}"),
        ModelEntry("mobilenetv1_darkside", mobilenet("mobilenetv1_darkside"),
                   "Darkside search space of the ODiMO paper: MobileNetV1 whose 8 stride-1 Cin == Cout "
                   "depthwise-separable blocks are each one dense 3x3 conv (split cluster / DWE "
                   "depthwise), no pointwise after it; stem stride 2 (paper's CIFAR-10 and ImageNet "
                   "setups), width 1.0"),
        ModelEntry("mobilenetv1_darkside_tiny", mobilenet("mobilenetv1_darkside", width=TINY_WIDTH),
                   f"Darkside search space (see mobilenetv1_darkside), width {TINY_WIDTH}"),
        ModelEntry("mobilenetv1_darkside_stem1", mobilenet("mobilenetv1_darkside", stem_stride=1),
                   "Darkside search space (see mobilenetv1_darkside) with stem stride 1 (the paper's "
                   "CIFAR-100 setup), width 1.0"),
        ModelEntry("mobilenetv1_darkside_pw", mobilenet("mobilenetv1_darkside_pw"),
                   "Darkside variant keeping the pointwise convs: the 8 stride-1 Cin == Cout blocks use a "
                   "dense 3x3 conv (split) followed by their fixed 1x1 pointwise conv; stem stride 1 "
                   "below 64x64 inputs, width 1.0"),
    ]

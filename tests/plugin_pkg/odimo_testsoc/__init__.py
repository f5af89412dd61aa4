"""A user's SoC plugin: three compute units, registered through the ``odimo_moo`` entry-point group.

``big`` runs everything, ``little`` only dense convs, ``vec`` 3x3 depthwise convs (and, for a
searched dense 3x3 conv with as many inputs as outputs, a depthwise conv in its place).
"""

from __future__ import annotations

import torch

from odimo_moo import FormulaUnit, LayerSpec, LayerTable, OpKind, SoC, hookimpl
from odimo_moo.alternative_factories import Depthwise, SameOp
from odimo_moo.cost_primitives import gate, ste_ceil


def big_cycles(layers: LayerTable, n: torch.Tensor) -> torch.Tensor:
    """8 MACs per cycle plus 100 cycles of setup."""
    macs = n * layers.in_channels / layers.groups * layers.kh * layers.kw * layers.ho * layers.wo
    return ste_ceil(macs / 8) + gate(n) * 100


def little_cycles(layers: LayerTable, n: torch.Tensor) -> torch.Tensor:
    """2 MACs per cycle, no setup."""
    return ste_ceil(n * layers.in_channels * layers.kh * layers.kw * layers.ho * layers.wo / 2)


def vec_cycles(layers: LayerTable, n: torch.Tensor) -> torch.Tensor:
    """4 channels at a time, one output pixel per cycle."""
    return ste_ceil(n / 4) * layers.ho * layers.wo


def _little_supports(spec: LayerSpec) -> bool:
    return spec.op is OpKind.CONV2D and spec.groups == 1


def _vec_supports(spec: LayerSpec) -> bool:
    dense_square = spec.groups == 1 and spec.in_channels == spec.out_channels
    return spec.op is OpKind.CONV2D and spec.kernel_size == (3, 3) and (spec.is_depthwise or dense_square)


def build_testsoc() -> SoC:
    units = [
        FormulaUnit("big", big_cycles, lambda spec: True, active_power_mw=50.0, idle_power_mw=2.0),
        FormulaUnit("little", little_cycles, _little_supports, active_power_mw=5.0, idle_power_mw=0.5),
        FormulaUnit("vec", vec_cycles, _vec_supports, active_power_mw=10.0, idle_power_mw=1.0,
                    alternative_for=lambda spec: SameOp() if spec.is_depthwise else Depthwise()),
    ]
    return SoC("testsoc", units, frequency_hz=100e6, default_unit="big",
               description="Test SoC from a third-party plugin: big core, little core, vector unit")


@hookimpl
def odimo_register_socs() -> list[SoC]:
    return [build_testsoc()]

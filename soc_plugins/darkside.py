"""Darkside (65 nm): 8-core RISC-V cluster + DepthWise Engine (DWE), 260 MHz.

The cluster runs standard convolutions, the DWE 3x3 depthwise ones, so depthwise layers outside the
search space sit on the DWE and dense 3x3 layers with Cin == Cout are split between the two.

Formulas and constants: docs/DESIGN.md section 2.4. The cluster's im2col term is gated, so a layer with
no channels on the cluster costs it nothing (the reference charged it anyway).

Both units compute on 8-bit weights (one power-of-two scale per tensor) and 8-bit activations with
power-of-two steps, so every requantization between layers is a shift (docs/EXPORT.md): steps
``clip / 255`` made the integer export's predictions differ from the trained network's on 4-9 % of
digits images: a float bias rounded at export moves values across rounding boundaries, and a bias
kept on the accumulator grid puts them exactly on ties that float summation order decides.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from odimo_moo.alternative_factories import AlternativeFactory, Depthwise, SameOp
from odimo_moo.cost_primitives import gate, ste_ceil
from odimo_moo.data_formats import IntFormat
from odimo_moo.hookspecs import hookimpl
from odimo_moo.layer_spec import LayerSpec, LayerTable, OpKind
from odimo_moo.soc import FormulaUnit, SoC

if TYPE_CHECKING:  # torch is imported where a cost is computed: `odimo plugins` lists SoCs without it
    import torch

FREQUENCY_HZ = 260e6
CLUSTER_MW = 168.0
DWE_MW = 118.0
IDLE_MW = 1.32


def cluster_cycles(layers: LayerTable, n: torch.Tensor) -> torch.Tensor:
    """ceil(Ho/2)*ceil(Wo/8) * (gate(n)*2*k*k*Cin + ceil(n/4)*(14*ceil(k*k*Cin/4) + 15)); Cin per group."""
    import torch

    kernel = layers.kh * layers.kw
    cin = layers.in_channels / layers.groups
    tiles = torch.ceil(layers.ho / 2) * torch.ceil(layers.wo / 8)
    im2col = gate(n) * 2 * kernel * cin
    matmul = ste_ceil(n / 4) * (14 * torch.ceil(kernel * cin / 4) + 15)
    return tiles * (im2col + matmul)


def dwe_cycles(layers: LayerTable, n: torch.Tensor) -> torch.Tensor:
    """ceil(n/16) * (9 + 9*Wo + 4*Ho*Wo) for a 3x3 depthwise conv."""
    return ste_ceil(n / 16) * (9 + 9 * layers.wo + 4 * layers.ho * layers.wo)


def _cluster_supports(spec: LayerSpec) -> bool:
    """The cluster formula models standard (groups=1) convolutions and linear layers."""
    return spec.groups == 1


def _dwe_supports(spec: LayerSpec) -> bool:
    square_3x3 = spec.op is OpKind.CONV2D and spec.kernel_size == (3, 3)
    return square_3x3 and (spec.is_depthwise or (spec.groups == 1 and spec.in_channels == spec.out_channels))


def _dwe_alternative(spec: LayerSpec) -> AlternativeFactory:
    return SameOp() if spec.is_depthwise else Depthwise()


#: 8-bit weights and activations, activation steps ``clip / 256`` (powers of two): requantization is a shift.
DATA_FORMAT = IntFormat(weight_bits=8, activation_bits=8, power_of_two_step=True)


def build_darkside() -> SoC:
    units = [
        FormulaUnit("cluster", cluster_cycles, _cluster_supports, CLUSTER_MW, IDLE_MW, DATA_FORMAT),
        FormulaUnit("dwe", dwe_cycles, _dwe_supports, DWE_MW, IDLE_MW, DATA_FORMAT,
                    alternative_for=_dwe_alternative),
    ]
    return SoC("darkside", units, FREQUENCY_HZ, default_unit="cluster",
                       description="Darkside: 8-core RISC-V cluster + 3x3 depthwise engine")


@hookimpl
def odimo_register_socs() -> list[SoC]:
    return [build_darkside()]

"""DIANA (22 nm): 16x16-PE 8-bit digital accelerator + 1152x512 ternary AIMC array, 260 MHz.

Formulas and constants: docs/DESIGN.md section 2.4. Checked against the reference numbers
(16->16 3x3 conv at 32x32: 13,312 cycles digital, 5,811.2 analog) in tests/test_soc_costs.py.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from odimo_moo.cost_primitives import gate, ste_ceil
from odimo_moo.data_formats import IntFormat, TernaryFormat
from odimo_moo.hookspecs import hookimpl
from odimo_moo.layer_spec import LayerSpec, LayerTable, OpKind
from odimo_moo.manual_mapping import ManualMapping, SearchedLayer
from odimo_moo.soc import FormulaUnit, SoC

if TYPE_CHECKING:  # torch is imported where a cost is computed: `odimo plugins` lists SoCs without it
    import torch

FREQUENCY_HZ = 260e6
DIGITAL_MW = 24.96
ANALOG_MW = 28.74
BOTH_MW = 42.39
ANALOG_ROWS = 1152
ANALOG_COLUMNS = 512
ANALOG_STEP_CYCLES = 70 * 0.26  # 70 ns per analog compute step at 260 MHz


def digital_cycles(layers: LayerTable, n: torch.Tensor) -> torch.Tensor:
    """ceil((n/groups)/16) * Cin * ceil(Wo/16) * Ho * kx*ky + gate(n) * Ho*Wo*(n + Cin)/8."""
    import torch

    compute = (ste_ceil(n / layers.groups / 16) * layers.in_channels * torch.ceil(layers.wo / 16)
               * layers.ho * layers.kh * layers.kw)
    transfer = gate(n) * layers.ho * layers.wo * (n + layers.in_channels) / 8
    return compute + transfer


def analog_unroll(layers: LayerTable, n: torch.Tensor) -> torch.Tensor:
    """Largest u in {1, 2, 4, 8} with u*n <= 512 and (u + kx - 1) * max(64, Cin) * ky <= 1152, else 1."""
    import torch

    rows_per_column = torch.clamp(layers.in_channels, min=64) * layers.kh
    unroll = torch.ones_like(layers.in_channels)
    for candidate in (2.0, 4.0, 8.0):
        fits = (candidate * n.detach() <= ANALOG_COLUMNS) & (
            (candidate + layers.kw - 1) * rows_per_column <= ANALOG_ROWS)
        unroll = torch.where(fits, torch.full_like(unroll, candidate), unroll)
    return unroll


def analog_cycles(layers: LayerTable, n: torch.Tensor) -> torch.Tensor:
    """gate(n) * 8*Cin*kx*ky + ceil(n/512) * ceil(Cin/128) * Ho*Wo/u * 70 * 0.26."""
    import torch

    weight_load = gate(n) * 8 * layers.in_channels * layers.kh * layers.kw
    steps = (ste_ceil(n / ANALOG_COLUMNS) * torch.ceil(layers.in_channels / 128) * layers.ho * layers.wo
             / analog_unroll(layers, n))
    return weight_load + steps * ANALOG_STEP_CYCLES


def _digital_supports(spec: LayerSpec) -> bool:
    return True


def _analog_supports(spec: LayerSpec) -> bool:
    return spec.op is OpKind.LINEAR or spec.groups == 1


class DianaSoC(SoC):
    """DIANA's power is not additive per unit: both units active draw 42.39 mW, not 24.96 + 28.74."""

    def energy(self, unit_cycles: torch.Tensor, latency: torch.Tensor) -> torch.Tensor:
        import torch

        digital, analog = unit_cycles[0], unit_cycles[1]
        overlap = torch.minimum(digital, analog)
        return BOTH_MW * overlap + ANALOG_MW * (analog - overlap) + DIGITAL_MW * (digital - overlap)


def build_diana() -> DianaSoC:
    units = [
        FormulaUnit("digital", digital_cycles, _digital_supports, DIGITAL_MW, 0.0,
                    IntFormat(weight_bits=8, activation_bits=7, power_of_two_step=True)),
        FormulaUnit("analog", analog_cycles, _analog_supports, ANALOG_MW, 0.0,
                    TernaryFormat(activation_bits=7, power_of_two_step=True)),
    ]
    return DianaSoC("diana", units, FREQUENCY_HZ, default_unit="digital",
                    description="DIANA: 8-bit digital accelerator + ternary analog in-memory array")


@hookimpl
def odimo_register_socs() -> list[SoC]:
    return [build_diana()]


def first_last_digital(layers: list[SearchedLayer]) -> dict[str, dict[str, int]]:
    """The paper's manual mapping: first and last searched layers digital, the rest analog."""
    ends = {layers[0].name, layers[-1].name} if layers else set()
    return {layer.name: {"digital" if layer.name in ends or "analog" not in layer.units else "analog":
                         layer.spec.out_channels} for layer in layers}


@hookimpl
def odimo_register_heuristics() -> list[ManualMapping]:
    return [ManualMapping("first_last_digital", "diana", "first and last searched layers digital, the rest "
                          "analog (the DIANA paper's manual mapping)", first_last_digital)]

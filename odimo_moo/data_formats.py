"""The data formats of a compute unit (float, integer, ternary), which build its quantizer modules.

A SoC plugin names a format per unit; the searchable layer asks the format for quantizer modules.
This module does not import torch: the quantizers (:mod:`odimo_moo.quantizers`,
:mod:`odimo_moo.weight_quantizers`) are imported when a format first builds one, so listing the
registered SoCs (``odimo plugins``) does not wait seconds for torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import nn


@dataclass(frozen=True)
class FloatFormat:
    """No quantization (float32)."""

    activation_bits: None = None

    def weight_quantizer(self, out_channels: int) -> nn.Module:
        from torch import nn

        return nn.Identity()

    def activation_quantizer(self, signed: bool) -> nn.Module:
        from torch import nn

        return nn.Identity()


def activation_quantizer(bits: int, signed: bool, power_of_two_step: bool) -> nn.Module:
    """A format's activation quantizer: steps ``clip / levels``, or powers of two (``clip / 2^bits``)."""
    from .quantizers import ActivationQuantizer, PowerOfTwoActivationQuantizer

    kind = PowerOfTwoActivationQuantizer if power_of_two_step else ActivationQuantizer
    return kind(bits, signed)


@dataclass(frozen=True)
class IntFormat:
    """Integer weights (power-of-two scale) and/or activations of the given bit widths.

    ``power_of_two_step``: activation steps are powers of two (``clip / 2^bits``), so requantizing
    onto them is a shift (DIANA); otherwise ``clip / (2^bits - 1)``.
    """

    weight_bits: int = 8
    activation_bits: int = 8
    power_of_two_step: bool = False

    def weight_quantizer(self, out_channels: int) -> nn.Module:
        from .weight_quantizers import IntWeightQuantizer

        return IntWeightQuantizer(self.weight_bits)

    def activation_quantizer(self, signed: bool) -> nn.Module:
        return activation_quantizer(self.activation_bits, signed, self.power_of_two_step)


@dataclass(frozen=True)
class TernaryFormat:
    """Ternary weights with a learned per-channel scale; integer activations.

    ``power_of_two_step``: activation steps as :class:`IntFormat`'s, and each channel's weight scale
    a power of two too, so requantizing the accumulator is a per-channel shift (DIANA's analog unit).
    """

    activation_bits: int = 7
    power_of_two_step: bool = False

    def weight_quantizer(self, out_channels: int) -> nn.Module:
        from .weight_quantizers import TernaryWeightQuantizer

        return TernaryWeightQuantizer(out_channels, power_of_two=self.power_of_two_step)

    def activation_quantizer(self, signed: bool) -> nn.Module:
        return activation_quantizer(self.activation_bits, signed, self.power_of_two_step)


DataFormat = FloatFormat | IntFormat | TernaryFormat

FLOAT = FloatFormat()

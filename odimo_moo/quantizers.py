"""Fake quantizers (straight-through) and the data formats that build them.

A compute unit names its data formats; the searchable layer asks the format for quantizer modules.
Every quantizer's forward produces values on its grid, its backward is straight-through.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn


def ste_round(x: torch.Tensor) -> torch.Tensor:
    """``round(x)`` forward, identity gradient."""
    return x + (torch.round(x) - x).detach()


def _pow2_ceil(x: torch.Tensor) -> torch.Tensor:
    """Smallest power of two >= x (x > 0), straight-through."""
    exact = torch.exp2(torch.ceil(torch.log2(x)))
    return x + (exact - x).detach()


class IntWeightQuantizer(nn.Module):
    """Symmetric signed ``bits``-bit weights with one power-of-two scale per tensor."""

    def __init__(self, bits: int) -> None:
        super().__init__()
        self.bits = bits

    def scale(self, weight: torch.Tensor) -> torch.Tensor:
        qmax = 2 ** (self.bits - 1) - 1
        return _pow2_ceil(weight.detach().abs().max().clamp_min(1e-12) / qmax)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        scale = self.scale(weight)
        low, high = -(2 ** (self.bits - 1)), 2 ** (self.bits - 1) - 1
        return ste_round(weight / scale).clamp(low, high) * scale


class TernaryWeightQuantizer(nn.Module):
    """Weights in ``{-1, 0, +1}`` times a learned per-output-channel scale.

    A weight is zero when its magnitude is under ``threshold`` times its channel's mean magnitude
    (the ternary-weight-network rule). The scale starts at the mean magnitude of the kept weights on
    the first call and is trained afterwards.
    """

    def __init__(self, out_channels: int, threshold: float = 0.7) -> None:
        super().__init__()
        self.threshold = threshold
        self.log_scale = nn.Parameter(torch.zeros(out_channels))
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))

    def levels(self, weight: torch.Tensor) -> torch.Tensor:
        """The ternary values of ``weight`` (no scale), straight-through to ``weight``."""
        flat = weight.flatten(1)
        delta = self.threshold * flat.detach().abs().mean(dim=1, keepdim=True)
        hard = torch.sign(flat) * (flat.detach().abs() > delta)
        normalized = flat / flat.detach().abs().amax(dim=1, keepdim=True).clamp_min(1e-12)
        return (normalized + (hard - normalized).detach()).view_as(weight)

    @torch.no_grad()
    def _initialize(self, weight: torch.Tensor) -> None:
        flat = weight.flatten(1).abs()
        delta = self.threshold * flat.mean(dim=1, keepdim=True)
        kept = (flat > delta).to(flat.dtype)
        mean_kept = (flat * kept).sum(1) / kept.sum(1).clamp_min(1.0)
        self.log_scale.copy_(mean_kept.clamp_min(1e-8).log())
        self.initialized.fill_(True)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        if not bool(self.initialized):
            self._initialize(weight)
        shape = (-1,) + (1,) * (weight.dim() - 1)
        return self.levels(weight) * self.log_scale.exp().view(shape)


class ActivationQuantizer(nn.Module):
    """``bits``-bit activations clipped at a learned power of two (PACT-style clip).

    Unsigned quantizers clamp at 0 (on DIANA the clamp is the ReLU); signed ones are symmetric.
    """

    def __init__(self, bits: int, signed: bool, init_clip: float = 4.0) -> None:
        super().__init__()
        self.bits = bits
        self.signed = signed
        self.log2_clip = nn.Parameter(torch.tensor(math.log2(init_clip)))

    def clip(self) -> torch.Tensor:
        return torch.exp2(self.log2_clip + (torch.round(self.log2_clip) - self.log2_clip).detach())

    @property
    def levels(self) -> int:
        return 2 ** (self.bits - 1) - 1 if self.signed else 2 ** self.bits - 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        clip = self.clip()
        low = -clip if self.signed else torch.zeros_like(clip)
        clamped = torch.minimum(torch.maximum(x, low), clip)
        step = clip / self.levels
        return ste_round(clamped / step) * step

    @torch.no_grad()
    def frozen(self) -> "FixedActivationQuantizer":
        """The same grid with the clip baked in (for export: plain clamp, divide, round, multiply)."""
        clip = float(self.clip())
        return FixedActivationQuantizer(-clip if self.signed else 0.0, clip, clip / self.levels)


class FixedActivationQuantizer(nn.Module):
    """Activation quantizer with a constant grid: ``round(clamp(x, low, high) / step) * step``."""

    def __init__(self, low: float, high: float, step: float) -> None:
        super().__init__()
        self.low, self.high, self.step = low, high, step

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.round(torch.clamp(x, self.low, self.high) / self.step) * self.step

    def extra_repr(self) -> str:
        return f"low={self.low:g}, high={self.high:g}, step={self.step:g}"


def freeze(quantizer: nn.Module) -> nn.Module:
    """An export-ready copy of an activation quantizer (constants instead of parameters)."""
    if isinstance(quantizer, ActivationQuantizer):
        return quantizer.frozen()
    return quantizer


@dataclass(frozen=True)
class FloatFormat:
    """No quantization (float32)."""

    activation_bits: None = None

    def weight_quantizer(self, out_channels: int) -> nn.Module:
        return nn.Identity()

    def activation_quantizer(self, signed: bool) -> nn.Module:
        return nn.Identity()


@dataclass(frozen=True)
class IntFormat:
    """Integer weights (power-of-two scale) and/or activations of the given bit widths."""

    weight_bits: int = 8
    activation_bits: int = 8

    def weight_quantizer(self, out_channels: int) -> nn.Module:
        return IntWeightQuantizer(self.weight_bits)

    def activation_quantizer(self, signed: bool) -> nn.Module:
        return ActivationQuantizer(self.activation_bits, signed)


@dataclass(frozen=True)
class TernaryFormat:
    """Ternary weights with a learned per-channel scale; integer activations."""

    activation_bits: int = 7

    def weight_quantizer(self, out_channels: int) -> nn.Module:
        return TernaryWeightQuantizer(out_channels)

    def activation_quantizer(self, signed: bool) -> nn.Module:
        return ActivationQuantizer(self.activation_bits, signed)


DataFormat = FloatFormat | IntFormat | TernaryFormat

FLOAT = FloatFormat()

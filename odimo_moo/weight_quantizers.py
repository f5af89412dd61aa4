"""Fake weight quantizers (straight-through) and their weights as integers.

``IntWeightQuantizer``: symmetric ``bits``-bit levels with a power-of-two scale (digital units);
``TernaryWeightQuantizer``: levels ``{-1, 0, +1}`` with a learned per-channel scale, optionally
rounded to a power of two (DIANA's analog unit). :class:`IntegerWeight` is what the integer export
reads back.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from . import native_kernels


def ste_round(x: torch.Tensor) -> torch.Tensor:
    """``round(x)`` forward, identity gradient."""
    return x + (torch.round(x) - x).detach()


def power_of_two_ceil(x: torch.Tensor) -> torch.Tensor:
    """The smallest power of two >= ``x`` (``x > 0``), exactly (from the binary exponent, not a rounded
    logarithm)."""
    mantissa, exponent = torch.frexp(x)
    return torch.ldexp(torch.ones_like(x), exponent - (mantissa == 0.5).to(exponent.dtype))


def int_level_range(bits: int) -> tuple[int, int]:
    """The lowest and highest level of symmetric signed ``bits``-bit weights: ``-2^(bits-1)``, ``2^(bits-1) - 1``."""
    return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1


def int_weight_scale(weight: torch.Tensor, bits: int) -> torch.Tensor:
    """The scale of :class:`IntWeightQuantizer`: the smallest power of two >= ``max|w| / (2^(bits-1) - 1)``
    (``max|w|`` at least 1e-12), a 0-d tensor without gradient."""
    with torch.no_grad():
        return power_of_two_ceil(weight.abs().amax().clamp_min(1e-12) / int_level_range(bits)[1])


class IntWeightQuantizer(nn.Module):
    """Symmetric signed ``bits``-bit weights with one power-of-two scale per tensor (:func:`int_weight_scale`)."""

    def __init__(self, bits: int) -> None:
        super().__init__()
        self.bits = bits

    def scale(self, weight: torch.Tensor) -> torch.Tensor:
        return int_weight_scale(weight, self.bits)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return _FakeQuantizeInt.apply(weight, self.bits)

    def reference_forward(self, weight: torch.Tensor) -> torch.Tensor:
        """:meth:`forward` as plain differentiable ops (its specification; equal values and gradients)."""
        scale = self.scale(weight)
        low, high = int_level_range(self.bits)
        return ste_round(weight / scale).clamp(low, high) * scale

    @torch.no_grad()
    def integer_weight(self, weight: torch.Tensor) -> "IntegerWeight":
        """:meth:`forward`'s values as integer levels times one power-of-two scale (exactly)."""
        scale = self.scale(weight)
        levels = torch.div(weight, scale).round_().clamp_(*int_level_range(self.bits))
        return IntegerWeight(levels.to(integer_dtype(self.bits)), scale, self.bits, "int")


class _FakeQuantizeInt(torch.autograd.Function):
    """``clamp(round(w / scale), low, high) * scale`` (``scale``: :func:`int_weight_scale`) with a
    straight-through (identity) gradient.

    The scale is a power of two >= ``max|w| / high``, so the clamp never bites and the op-by-op
    gradient ``g * scale / scale`` is exactly ``g``. (The op-by-op form can lose the gradient of a
    weight rounding to the top level: its straight-through sum ``v + (round(v) - v)`` may round a hair
    above the clamp bound. This node does not.)
    """

    @staticmethod
    def forward(ctx, weight: torch.Tensor, bits: int) -> torch.Tensor:  # type: ignore[override]
        low, high = int_level_range(bits)
        if native_kernels.applies(weight):
            return native_kernels.quantize_int_weight(weight, low, high)  # the scale in the same call
        scale = int_weight_scale(weight, bits)
        return torch.div(weight, scale).round_().clamp_(low, high).mul_(scale)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        return grad, None


def channel_scale_of(log_scale: torch.Tensor, power_of_two: bool) -> torch.Tensor:
    """:meth:`TernaryWeightQuantizer.channel_scale` of a ``log_scale``."""
    if not power_of_two:
        return log_scale.exp()
    exponent = log_scale / math.log(2.0)
    if not (torch.is_grad_enabled() and log_scale.requires_grad):
        return torch.exp2(exponent.round_())  # the same value, no straight-through terms to record
    return torch.exp2(exponent.detach().round() + (exponent - exponent.detach()))  # exactly 2^round


def ternary_threshold(magnitude: torch.Tensor, threshold: float) -> torch.Tensor:
    """Per output channel of ``magnitude`` ``[C, n]`` (``|w|``), the magnitude under which a ternary
    weight is zero: ``threshold`` times the channel's mean (the ternary-weight-network rule), ``[C, 1]``."""
    return threshold * magnitude.mean(dim=1, keepdim=True)


class TernaryWeightQuantizer(nn.Module):
    """Weights in ``{-1, 0, +1}`` times a learned per-output-channel scale.

    A weight is zero when its magnitude is under ``threshold`` times its channel's mean magnitude
    (the ternary-weight-network rule). The scale starts at the mean magnitude of the kept weights on
    the first call and is trained afterwards. With ``power_of_two`` the scale in use is the learned
    one's nearest power of two (:meth:`channel_scale`), so requantizing a channel's accumulator onto
    a power-of-two step is a shift.
    """

    def __init__(self, out_channels: int, threshold: float = 0.7, power_of_two: bool = False) -> None:
        super().__init__()
        self.threshold = threshold
        self.power_of_two = power_of_two
        self.log_scale = nn.Parameter(torch.zeros(out_channels))
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))
        self._known_initialized = False  # host-side copy of ``initialized``: no device sync per forward

    def _load_from_state_dict(self, *args: object, **kwargs: object) -> None:
        super()._load_from_state_dict(*args, **kwargs)  # type: ignore[arg-type]
        self._known_initialized = False

    def levels(self, weight: torch.Tensor) -> torch.Tensor:
        """The ternary values of ``weight`` (no scale), straight-through to ``weight``."""
        flat = weight.flatten(1)
        delta = ternary_threshold(flat.detach().abs(), self.threshold)
        hard = torch.sign(flat) * (flat.detach().abs() > delta)
        normalized = flat / flat.detach().abs().amax(dim=1, keepdim=True).clamp_min(1e-12)
        return (normalized + (hard - normalized).detach()).view_as(weight)

    @torch.no_grad()
    def _initialize(self, weight: torch.Tensor) -> None:
        flat = weight.flatten(1).abs()
        delta = ternary_threshold(flat, self.threshold)
        kept = (flat > delta).to(flat.dtype)
        mean_kept = (flat * kept).sum(1) / kept.sum(1).clamp_min(1.0)
        self.log_scale.copy_(mean_kept.clamp_min(1e-8).log())
        self.initialized.fill_(True)

    def ensure_initialized(self, weight: torch.Tensor) -> None:
        """Initialize the scale from ``weight`` unless done (the first forward does it)."""
        if not self._known_initialized:
            if not bool(self.initialized):
                self._initialize(weight)
            self._known_initialized = True

    def channel_scale(self) -> torch.Tensor:
        """The per-output-channel scale in use ``[C]``: ``exp(log_scale)``, or with ``power_of_two``
        ``2^round(log2(exp(log_scale)))``, its exponent rounded straight-through (so it still trains)."""
        return channel_scale_of(self.log_scale, self.power_of_two)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        self.ensure_initialized(weight)
        return _FakeQuantizeTernary.apply(weight, self.log_scale, self.threshold, self.power_of_two)

    def reference_forward(self, weight: torch.Tensor) -> torch.Tensor:
        """:meth:`forward` as plain differentiable ops (its specification).

        Same gradients; the values agree up to the last bit of the straight-through sum (the fused
        forward gives exactly ``{-1, 0, +1} * scale``).
        """
        self.ensure_initialized(weight)
        shape = (-1,) + (1,) * (weight.dim() - 1)
        return self.levels(weight) * self.channel_scale().view(shape)

    @torch.no_grad()
    def integer_weight(self, weight: torch.Tensor) -> "IntegerWeight":
        """:meth:`forward`'s values as levels in ``{-1, 0, +1}`` times the per-output-channel scale (exactly)."""
        self.ensure_initialized(weight)
        flat = weight.reshape(weight.shape[0], -1)
        magnitude = flat.abs()
        hard = torch.sign(flat).mul_(magnitude > ternary_threshold(magnitude, self.threshold))
        scale = self.channel_scale().to(weight.dtype)
        return IntegerWeight(hard.view(weight.shape).to(torch.int8), scale, 2, "ternary")


def ternary_levels(weight: torch.Tensor, log_scale: torch.Tensor, threshold: float, power_of_two: bool,
                   values: bool) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The ternary quantizer's compiled forward (no gradient; contiguous float32 CPU weight, see
    :func:`native_kernels.applies`): ``(levels * scale as [C, n] (None unless values), levels as int8
    [C, n], max(max |w|, 1e-12) per channel [C, 1], the channel scale in use [C])``."""
    with torch.no_grad():
        scale = channel_scale_of(log_scale, power_of_two)
        flat = weight.reshape(weight.shape[0], -1)
        delta = ternary_threshold(flat.abs(), threshold)
        return (*native_kernels.quantize_ternary(flat, delta, scale, values=values), scale)


class _FakeQuantizeTernary(torch.autograd.Function):
    """``levels(w) * scale`` per output channel in one autograd node, ``scale`` the channel scale in
    use (:meth:`TernaryWeightQuantizer.channel_scale`) of ``log_scale``.

    Gradients as :meth:`TernaryWeightQuantizer.levels` and :meth:`~TernaryWeightQuantizer.channel_scale`
    define them: to ``w`` through the straight-through ``w / max|w|`` of its channel, to ``log_scale``
    ``[C]`` through the exact product times ``d scale / d log_scale = scale`` (``exp``, and the
    straight-through power of two alike).
    """

    @staticmethod
    def forward(ctx, weight: torch.Tensor, log_scale: torch.Tensor, threshold: float,  # type: ignore[override]
                power_of_two: bool) -> torch.Tensor:
        ctx.shape = weight.shape
        if native_kernels.applies(weight):
            # One compiled pass (the ternary levels kept as int8); the same values.
            out, hard, largest, scale = ternary_levels(weight, log_scale, threshold, power_of_two, values=True)
            ctx.save_for_backward(hard, largest, scale)
            return out.view(weight.shape)
        scale = channel_scale_of(log_scale, power_of_two)
        flat = weight.reshape(weight.shape[0], -1)
        magnitude = flat.abs()
        delta = ternary_threshold(magnitude, threshold)
        hard = torch.sign(flat).mul_(magnitude > delta)
        largest = magnitude.amax(dim=1, keepdim=True).clamp_min_(1e-12)
        ctx.save_for_backward(hard, largest, scale)
        return (hard * scale.unsqueeze(1)).view(weight.shape)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        hard, largest, scale = ctx.saved_tensors
        flat = grad.reshape(hard.shape)
        need_weight, need_log_scale = ctx.needs_input_grad[:2]
        if hard.dtype == torch.int8 and native_kernels.applies(flat):
            # The weight mix's backward of an encoded term under a mask of ones: this node's gradients.
            ones = torch.ones(hard.shape[0], 1, dtype=torch.float32)
            grad_weight, grad_scale = native_kernels.levels_backward(flat, hard, scale, largest, ones, 0, False,
                                                                     need_weight, None, need_log_scale)
        else:
            grad_weight = (flat * scale.unsqueeze(1)).div_(largest) if need_weight else None
            grad_scale = (flat * hard).sum(dim=1) if need_log_scale else None
        return (None if grad_weight is None else grad_weight.view(ctx.shape),
                None if grad_scale is None else grad_scale.mul_(scale), None, None)


def same_quantization(first: nn.Module, second: nn.Module) -> bool:
    """Whether two weight quantizers give the same output for any weight, always: both keep floats
    (``nn.Identity``), or both are :class:`IntWeightQuantizer` of the same width (its scale comes from
    the weight alone). A quantizer with learned state is only ever the same as itself."""
    if first is second:
        return True
    if type(first) is type(second) is nn.Identity:
        return True
    return type(first) is type(second) is IntWeightQuantizer and first.bits == second.bits


@dataclass(frozen=True)
class IntegerWeight:
    """A fake-quantized weight as integers: the weight equals ``levels * scale`` exactly.

    ``scale`` is a 0-d tensor (one scale for the tensor) or ``[C]`` (one per output channel,
    broadcast over dimension 0). ``kind`` is ``"int"`` (symmetric ``bits``-bit, power-of-two scale)
    or ``"ternary"`` (levels in ``{-1, 0, +1}``, ``bits`` 2; per-channel scales, powers of two where
    the quantizer rounds them).
    """

    levels: torch.Tensor
    scale: torch.Tensor
    bits: int
    kind: str

    @property
    def per_channel(self) -> bool:
        return self.scale.dim() == 1

    def channels(self, channels: torch.Tensor) -> "IntegerWeight":
        """The output channels ``channels`` (in that order) of this weight."""
        scale = self.scale[channels] if self.per_channel else self.scale
        return IntegerWeight(self.levels[channels], scale, self.bits, self.kind)

    def dequantize(self) -> torch.Tensor:
        """``levels * scale``: the fake-quantized weight."""
        shape = (-1,) + (1,) * (self.levels.dim() - 1) if self.per_channel else ()
        return self.levels.to(self.scale.dtype) * self.scale.view(shape)


def integer_dtype(bits: int) -> torch.dtype:
    """The smallest signed integer dtype holding symmetric ``bits``-bit levels."""
    for dtype in (torch.int8, torch.int16, torch.int32):
        if bits <= torch.iinfo(dtype).bits:
            return dtype
    raise ValueError(f"no integer dtype holds {bits}-bit levels")


def integer_weight(quantizer: nn.Module, weight: torch.Tensor) -> IntegerWeight | None:
    """``quantizer(weight)`` as integer levels and scale, or None when the quantizer keeps floats."""
    reader: Callable[[torch.Tensor], IntegerWeight] | None = getattr(quantizer, "integer_weight", None)
    return None if reader is None else reader(weight)


@torch.no_grad()
def scale_weight_channels(quantizer: nn.Module, scale: torch.Tensor) -> None:
    """Adapt a weight quantizer to its weight's output channels being multiplied by ``scale`` ``[C]``
    (BatchNorm folded into the layer): a learned per-channel scale (ternary) follows ``|scale|``;
    quantizers whose scale comes from the weight itself need nothing. A power-of-two scale is
    multiplied from the scale in use, so the new one is the power of two nearest to what the layer
    computed (off by at most a factor sqrt(2)), not the one nearest to the learned scale times
    ``|scale|`` (off by up to 2)."""
    if isinstance(quantizer, TernaryWeightQuantizer) and bool(quantizer.initialized):
        if quantizer.power_of_two:
            quantizer.log_scale.copy_(quantizer.channel_scale().log())
        quantizer.log_scale.add_(scale.abs().clamp_min(1e-12).log().to(quantizer.log_scale.dtype))

"""Fake activation quantizers (straight-through; weights: :mod:`odimo_moo.weight_quantizers`).

A compute unit names its data formats (:mod:`odimo_moo.data_formats`); the
searchable layer asks the format for quantizer modules. Every quantizer's forward produces values on
its grid, its backward is straight-through.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.autograd.function import once_differentiable

from . import native_kernels
from .weight_quantizers import ste_round


def host_bounds(x: torch.Tensor) -> bool:
    """Whether the fused activation ops read the clip on the host and use constant-bound kernels
    (CPU: far fewer passes; accelerators: tensor bounds, no host synchronisation)."""
    return x.device.type == "cpu"


def activation_grid(log2_clip: torch.Tensor, levels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(clip, step)`` of an activation quantizer: ``clip = 2^round(log2_clip)``, ``step = clip / levels``."""
    clip = torch.exp2(torch.round(log2_clip))  # the value of ActivationQuantizer.clip()
    return clip, clip / levels


def power_of_two_grid(log2_clip: torch.Tensor, levels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(high, step)`` of a power-of-two-step quantizer: ``step = 2^round(log2_clip) / (levels + 1)``
    (a power of two: ``levels + 1`` is one) and ``high = levels * step``, the grid's largest value.

    ``high`` takes the place of ``clip`` in the helpers below (their bound and saturation point).
    """
    step = torch.exp2(torch.round(log2_clip)) / (levels + 1)
    return step * levels, step


def activation_levels(x: torch.Tensor, clip: torch.Tensor, step: torch.Tensor, levels: int,
                      signed: bool) -> torch.Tensor:
    """``round(clamp(x, low, clip) / step)`` as a new float tensor (integral values in ``[-levels or 0, levels]``)."""
    if host_bounds(x):
        # Scaling first lets the clamp use constant bounds (much cheaper on CPU). Same values:
        # division is monotonic and round(clip / step) == levels.
        return torch.div(x, step).clamp_(-levels if signed else 0, levels).round_()
    return torch.clamp(x, _lower_bound(clip, signed), clip).div_(step).round_()


def _lower_bound(clip: torch.Tensor, signed: bool) -> torch.Tensor:
    """The low end of the clip range as a tensor (no host synchronisation on accelerators)."""
    return -clip if signed else torch.zeros_like(clip)


def _constant_bounds(clip: torch.Tensor, signed: bool) -> tuple[float, float]:
    """``(low, high)`` of the clip range read on the host, for constant-bound CPU kernels."""
    high = float(clip)
    return (-high if signed else 0.0), high


def _masked_direction(x: torch.Tensor, inside: torch.Tensor, quantized: torch.Tensor,
                      scale: torch.Tensor | float) -> torch.Tensor:
    """``x * inside - quantized * scale`` (see :func:`clip_descent_direction`), tensor-bound path."""
    return torch.where(inside, x, x.new_zeros(())).sub_(quantized.to(x.dtype) * scale)


def _inside(x: torch.Tensor, clip: torch.Tensor, signed: bool) -> torch.Tensor:
    return (x > _lower_bound(clip, signed)) & (x < clip)


def clip_descent_direction(x: torch.Tensor, quantized: torch.Tensor, scale: torch.Tensor | float,
                           clip: torch.Tensor, signed: bool) -> torch.Tensor:
    """``x * [low < x < clip] - y`` per element, with ``y = quantized * scale`` the fake-quantized ``x``.

    Minus the derivative of ``y`` by ``log2_clip`` divided by ``ln 2``: the clip gradient is
    ``-ln 2 * sum(grad_y * direction)``. ``quantized`` should be a float tensor: mixing float and
    integer tensors in one elementwise op takes a slow type-promoting path on CPU.
    """
    if not host_bounds(x):
        return _masked_direction(x, _inside(x, clip, signed), quantized, scale)
    low, high = _constant_bounds(clip, signed)
    return torch.ops.aten.hardtanh_backward(x, x, low, high).sub_(quantized, alpha=float(scale))


def clip_gradient(grad: torch.Tensor, direction: torch.Tensor, clip: torch.Tensor) -> torch.Tensor:
    """The gradient of ``log2_clip``: ``-ln 2 * sum(grad * direction)`` with ``direction`` from
    :func:`clip_descent_direction` and ``grad`` the gradient of the fake-quantized ``x`` (or, for a
    linear op after the quantizer, the op's output gradient and the op applied to the direction).

    d clip / d log2_clip = clip * ln 2 (2^round(.) is straight-through): the 1 / clip of d y / d clip cancels.
    """
    return (-math.log(2.0) * torch.dot(grad.reshape(-1), direction.reshape(-1))).to(clip.dtype)


def activation_gradients(grad: torch.Tensor, x: torch.Tensor, quantized: torch.Tensor,
                         scale: torch.Tensor | float, clip: torch.Tensor, signed: bool, need_x: bool, need_clip: bool,
                         grad_is_scratch: bool = False) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Gradients of ``x`` and ``log2_clip`` from ``grad``, the gradient of ``y = quantized * scale``.

    ``y`` is the fake-quantized ``x`` (``scale`` is 1 when ``quantized`` is ``y`` itself, the step
    when it holds the integer levels as floats). See :class:`_FakeQuantizeActivation` for the
    formulas. ``grad_is_scratch``: ``grad`` belongs to the caller and may be overwritten (saves an
    allocation).
    """
    grad_x = grad_log2_clip = None
    if not host_bounds(x):  # elementwise passes are cheap on accelerators; host synchronisation is not
        inside = _inside(x, clip, signed)
        if need_clip:
            grad_log2_clip = clip_gradient(grad, _masked_direction(x, inside, quantized, scale), clip)
        if need_x:
            grad_x = torch.where(inside, grad, grad.new_zeros(()))
        return grad_x, grad_log2_clip
    direction = None
    if need_clip:
        direction = clip_descent_direction(x, quantized, scale, clip, signed)
        grad_log2_clip = clip_gradient(grad, direction, clip)
    if need_x:
        # Constant bounds: one fused kernel, written over ``grad`` or the spent direction buffer.
        low, high = _constant_bounds(clip, signed)
        target = grad if grad_is_scratch else direction
        grad_x = (torch.ops.aten.hardtanh_backward(grad, x, low, high) if target is None else
                  torch.ops.aten.hardtanh_backward.grad_input(grad, x, low, high, grad_input=target))
    return grad_x, grad_log2_clip


def level_code_dtype(levels: int) -> torch.dtype:
    """A compact dtype holding the integers ``[-levels, levels]`` exactly, quick to convert to and from
    float: int8 up to 127 levels (7-bit unsigned, 8-bit signed), float16 up to 2048 (8-bit unsigned;
    CPUs convert float to uint8 several times slower), else float32."""
    if levels <= 127:
        return torch.int8
    return torch.float16 if levels <= 2048 else torch.float32


def coded_levels(x: torch.Tensor, clip: torch.Tensor, step: torch.Tensor, levels: int,
                 signed: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """``(activation_levels(...) * step, the levels as a compact code)``: the fake-quantized ``x`` and
    what a backward needs of it. One compiled pass where :mod:`~odimo_moo.native_kernels` applies
    (1-byte codes: int8, or uint8 for 8-bit unsigned), else the eager ops (:func:`level_code_dtype`)."""
    code_dtype = native_kernels.activation_code_dtype(levels, signed)
    if code_dtype is not None and native_kernels.applies(x, step):
        return native_kernels.quantize_activation(x, float(step), -levels if signed else 0.0, levels, code_dtype)
    integers = activation_levels(x, clip, step, levels, signed)
    code = integers.to(level_code_dtype(levels))
    return integers.mul_(step), code


def coded_activation_gradients(grad: torch.Tensor, x: torch.Tensor, code: torch.Tensor, integers: torch.Tensor,
                               step: torch.Tensor, clip: torch.Tensor, signed: bool, need_x: bool,
                               need_clip: bool) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """:func:`activation_gradients` of ``y = integers * step`` with ``integers`` the float form of
    ``code`` (from :func:`coded_levels`); ``grad`` is scratch. With both gradients needed and the
    compiled kernels applicable: one pass, the input's gradient bit for bit eager's, the clip
    gradient its sum in another order."""
    if need_x and need_clip and native_kernels.takes_code(code) and native_kernels.applies(grad, x, step):
        low, high = _constant_bounds(clip, signed)
        total = native_kernels.activation_backward(grad, x, code, float(step), low, high)
        return grad, torch.tensor(-math.log(2.0) * total, dtype=clip.dtype)
    return activation_gradients(grad, x, integers, step, clip, signed, need_x, need_clip, grad_is_scratch=True)


def _quantize_on_grid(ctx, x: torch.Tensor, bound: torch.Tensor, step: torch.Tensor, levels: int,
                      signed: bool) -> torch.Tensor:
    """The forward of the fake activation quantizers: ``x`` on the grid ``step`` up to ``bound``,
    saving what their backward reads."""
    out = activation_levels(x, bound, step, levels, signed).mul_(step)
    ctx.save_for_backward(x, out, bound)
    ctx.signed = signed
    return out


class _FakeQuantizeActivation(torch.autograd.Function):
    """``round(clamp(x, low, clip) / step) * step`` with ``step = clip / levels``, straight-through.

    One autograd node instead of eight elementwise ones: the forward makes one activation-sized
    tensor (its output) and saves ``x`` and the output, which the surrounding layers keep alive
    anyway (the producing ReLU and the consuming conv), so it adds no saved memory. The gradients
    are the op-by-op composition's (PACT clip + LSQ-style step gradient), with ``y`` the output:

    * ``x``: ``g`` where ``low < x < clip``, else 0;
    * ``clip = 2^round(log2_clip)``: ``sum(g * (y - x * [low < x < clip])) / clip``, i.e.
      ``sum(g * (round(q) - q)) / levels`` inside the range plus ``+g`` above ``clip`` (and ``-g``
      below ``-clip`` when signed), with ``q = x / step``.

    Inputs exactly on a bound get the gradient of the side outside the range (the min/max
    composition gives them half of each); for unsigned inputs fed by a ReLU the bound 0 receives no
    gradient either way.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, log2_clip: torch.Tensor, levels: int, signed: bool) -> torch.Tensor:  # type: ignore[override]
        return _quantize_on_grid(ctx, x, *activation_grid(log2_clip, levels), levels, signed)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        x, out, clip = ctx.saved_tensors
        grad_x, grad_log2_clip = activation_gradients(grad, x, out, 1.0, clip, ctx.signed,
                                                      ctx.needs_input_grad[0], ctx.needs_input_grad[1])
        return grad_x, grad_log2_clip, None, None


class ActivationQuantizer(nn.Module):
    """``bits``-bit activations clipped at a learned power of two (PACT-style clip).

    Unsigned quantizers clamp at 0 (on DIANA the clamp is the ReLU); signed ones are symmetric.
    """

    #: ``(log2_clip, levels) -> (high, step)``: the grid (fused layers read it from here).
    grid = staticmethod(activation_grid)

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
        return _FakeQuantizeActivation.apply(x, self.log2_clip, self.levels, self.signed)

    def reference_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The same fake quantization written as plain differentiable ops (slower, more memory).

        Kept as the specification of :meth:`forward`: equal values, and equal gradients except for
        inputs exactly on a clip bound (there the elementwise min/max halves the gradient).
        """
        clip = self.clip()
        low = _lower_bound(clip, self.signed)
        clamped = torch.minimum(torch.maximum(x, low), clip)
        step = clip / self.levels
        return ste_round(clamped / step) * step

    @torch.no_grad()
    def frozen(self) -> "FixedActivationQuantizer":
        """The same grid with the clip baked in (for export: plain clamp, divide, round, multiply)."""
        clip = float(self.clip())
        return FixedActivationQuantizer(-clip if self.signed else 0.0, clip, clip / self.levels)


class _FakeQuantizePowerOfTwoActivation(_FakeQuantizeActivation):
    """:class:`_FakeQuantizeActivation` on :func:`power_of_two_grid`: the same gradients with the grid's
    top ``high = levels * step`` as the bound (a saturated output ``high`` scales with
    ``2^round(log2_clip)`` as ``clip`` does, so the clip gradient keeps its form)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, log2_clip: torch.Tensor, levels: int, signed: bool) -> torch.Tensor:  # type: ignore[override]
        return _quantize_on_grid(ctx, x, *power_of_two_grid(log2_clip, levels), levels, signed)


class PowerOfTwoActivationQuantizer(ActivationQuantizer):
    """:class:`ActivationQuantizer` with a power-of-two step: ``clip / 2^bits`` (unsigned) or
    ``clip / 2^(bits-1)`` (signed), codes ``[0 or -levels, levels]``, so the grid stops one step below
    the learned power-of-two ``clip``. Every scale of an int unit is then a power of two and
    requantizing an accumulator onto this grid is a shift."""

    grid = staticmethod(power_of_two_grid)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _FakeQuantizePowerOfTwoActivation.apply(x, self.log2_clip, self.levels, self.signed)

    def reference_forward(self, x: torch.Tensor) -> torch.Tensor:
        """:meth:`forward` as plain differentiable ops (its specification)."""
        step = self.clip() / (self.levels + 1)
        high = step * self.levels
        clamped = torch.minimum(torch.maximum(x, -high if self.signed else torch.zeros_like(high)), high)
        return ste_round(clamped / step) * step

    @torch.no_grad()
    def frozen(self) -> "FixedActivationQuantizer":
        high, step = (float(v) for v in power_of_two_grid(self.log2_clip, self.levels))
        return FixedActivationQuantizer(-high if self.signed else 0.0, high, step)


class FixedActivationQuantizer(nn.Module):
    """Activation quantizer with a constant grid: ``round(clamp(x, low, high) / step) * step``."""

    def __init__(self, low: float, high: float, step: float) -> None:
        super().__init__()
        self.low, self.high, self.step = low, high, step

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.round(torch.clamp(x, self.low, self.high) / self.step) * self.step

    @property
    def levels(self) -> int:
        """The largest integer level: ``high / step`` (127 for 7-bit unsigned and 8-bit signed)."""
        return round(self.high / self.step)

    @property
    def signed(self) -> bool:
        return self.low < 0

    @property
    def bits(self) -> int:
        """Bits of the integer levels: 7 for ``[0, 127]``, 8 for ``[-127, 127]`` or ``[0, 255]``."""
        return self.levels.bit_length() + int(self.signed)

    def extra_repr(self) -> str:
        return f"low={self.low:g}, high={self.high:g}, step={self.step:g}"


def freeze(quantizer: nn.Module) -> nn.Module:
    """An export-ready copy of an activation quantizer (constants instead of parameters)."""
    if isinstance(quantizer, ActivationQuantizer):
        return quantizer.frozen()
    return quantizer

"""The op a compute unit runs for a searched layer.

During the search every alternative produces all C output channels; the split layer mixes them
per channel. Each alternative can express itself as a weight in the searched layer's own shape
(``dense_weight``), so a layer whose units read the same input format runs ONE convolution over the
per-channel mixture of weights. At export, an alternative builds a plain sub-layer that computes
just its channels. The factories a unit returns to name its alternative (``SameOp``, ``Depthwise``)
are defined without torch in :mod:`odimo_moo.alternative_factories`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from .quantizers import (ActivationQuantizer, PowerOfTwoActivationQuantizer, clip_descent_direction, clip_gradient,
                         coded_activation_gradients, coded_levels)
from .weight_mix import MixState, WeightMixture, WeightTerm, encoded_term, mix_backward, mix_forward, mixed_weight
from .weight_quantizers import IntegerWeight, integer_weight, same_quantization, scale_weight_channels

#: The fused layer's inputs before its weight tensors (x, log2_clip, bias, source, levels, signed, grid, mixing).
_LEADING_INPUTS = 8
#: Activation quantizers whose fake quantization the fused layer reproduces (through their ``grid``).
_FUSABLE_QUANTIZERS = (ActivationQuantizer, PowerOfTwoActivationQuantizer)


class Alternative(nn.Module, ABC):
    """One unit's version of a searched Conv2d/Linear layer."""

    def __init__(self, weight_quantizer: nn.Module) -> None:
        super().__init__()
        self.weight_quantizer = weight_quantizer

    @abstractmethod
    def dense_weight(self, shared_weight: torch.Tensor) -> torch.Tensor:
        """This alternative's quantized weight, in the shape of the searched layer's weight."""

    def weight_term(self, shared_weight: torch.Tensor) -> WeightTerm:
        """This alternative's weight for the folded forward (default: :meth:`dense_weight`).

        Alternatives whose dense weight is mostly zeros override it with a compact form, and those the
        mix can quantize itself hand over an encoded term (:mod:`odimo_moo.weight_mix`).
        """
        return WeightTerm("dense", self.dense_weight(shared_weight))

    def shares_term_with(self, other: "Alternative") -> bool:
        """Whether ``other``'s :meth:`weight_term` always equals this one's (default: never), so that a
        split layer computes it once for both units."""
        return False

    @abstractmethod
    def export(self, source: nn.Module, shared_weight: torch.Tensor, bias: torch.Tensor | None,
               channels: torch.Tensor) -> nn.Module:
        """A plain module mapping the layer's full input to output ``channels`` (in that order)."""

    def export_integer_weight(self, shared_weight: torch.Tensor, channels: torch.Tensor) -> IntegerWeight | None:
        """The weight of :meth:`export`'s sub-layer as integer levels and scale; None when this
        alternative cannot say (the default). An alternative whose weight quantizer is not
        ``nn.Identity`` overrides it, or the integer (QDQ) export refuses its layer."""
        return None

    def scale_output_channels(self, scale: torch.Tensor) -> None:
        """Output channel ``c`` of the layer is multiplied by ``scale[c]`` (BatchNorm folded into the
        shared weight): scale what this alternative owns besides it (default: its weight quantizer's
        learned scales)."""
        scale_weight_channels(self.weight_quantizer, scale)


def _conv_like(source: nn.Module, weight: torch.Tensor, bias: torch.Tensor | None,
               channels: torch.Tensor) -> nn.Module:
    """A Conv2d/Linear configured like ``source`` computing output ``channels`` with ``weight``/``bias``.

    Depthwise sources also select their input channels; other grouped convs are never searched.
    """
    count = int(channels.numel())
    if isinstance(source, nn.Linear):
        layer: nn.Module = nn.Linear(source.in_features, count, bias=bias is not None)
    else:
        depthwise = source.groups > 1
        layer = nn.Conv2d(count if depthwise else source.in_channels, count, source.kernel_size,
                          source.stride, source.padding, source.dilation, groups=count if depthwise else 1,
                          bias=bias is not None, padding_mode=source.padding_mode)
    layer.weight.data.copy_(weight)
    if bias is not None:
        layer.bias.data.copy_(bias)
    if isinstance(source, nn.Conv2d) and source.groups > 1:
        return nn.Sequential(ChannelSelect(channels), layer)
    return layer


class SameOpAlternative(Alternative):
    def dense_weight(self, shared_weight: torch.Tensor) -> torch.Tensor:
        return self.weight_quantizer(shared_weight)

    def weight_term(self, shared_weight: torch.Tensor) -> WeightTerm:
        # On the compiled path the mix quantizes the shared weight itself (no quantized copy in between),
        # unless a subclass changed what the dense weight is.
        if type(self).dense_weight is SameOpAlternative.dense_weight:
            encoded = encoded_term(self.weight_quantizer, shared_weight)
            if encoded is not None:
                return encoded
        return super().weight_term(shared_weight)

    def shares_term_with(self, other: Alternative) -> bool:
        # Two units running the layer's own op in the same weight format (e.g. an int8 CPU and an int8 NPU).
        return (type(self) is type(other) is SameOpAlternative
                and same_quantization(self.weight_quantizer, other.weight_quantizer))

    @torch.no_grad()
    def export(self, source: nn.Module, shared_weight: torch.Tensor, bias: torch.Tensor | None,
               channels: torch.Tensor) -> nn.Module:
        weight = self.dense_weight(shared_weight)[channels]
        sub_bias = None if bias is None else bias[channels]
        return _conv_like(source, weight, sub_bias, channels)

    @torch.no_grad()
    def export_integer_weight(self, shared_weight: torch.Tensor, channels: torch.Tensor) -> IntegerWeight | None:
        whole = integer_weight(self.weight_quantizer, shared_weight)
        return None if whole is None else whole.channels(channels)


class DepthwiseAlternative(Alternative):
    """Own per-channel kernels, initialised from the diagonal of the searched conv's weight."""

    def __init__(self, source: nn.Conv2d, weight_quantizer: nn.Module) -> None:
        super().__init__(weight_quantizer)
        channels = source.out_channels
        diagonal = source.weight.detach()[torch.arange(channels), torch.arange(channels)]
        self.weight = nn.Parameter(diagonal.unsqueeze(1).clone())
        self.register_buffer("diagonal_index", torch.arange(channels), persistent=False)

    def dense_weight(self, shared_weight: torch.Tensor) -> torch.Tensor:
        dense = shared_weight.new_zeros(shared_weight.shape)
        dense[self.diagonal_index, self.diagonal_index] = self.weight_quantizer(self.weight)[:, 0]
        return dense

    def weight_term(self, shared_weight: torch.Tensor) -> WeightTerm:
        # Only the diagonal [c, c] of the dense form is non-zero: hand over just the kernels (encoded
        # where the compiled mix quantizes them itself).
        return (encoded_term(self.weight_quantizer, self.weight, diagonal=True)
                or WeightTerm("diagonal", self.weight_quantizer(self.weight)[:, 0]))

    @torch.no_grad()
    def export(self, source: nn.Module, shared_weight: torch.Tensor, bias: torch.Tensor | None,
               channels: torch.Tensor) -> nn.Module:
        count = int(channels.numel())
        conv = nn.Conv2d(count, count, source.kernel_size, source.stride, source.padding, source.dilation,
                         groups=count, bias=bias is not None, padding_mode=source.padding_mode)
        conv.weight.copy_(self.weight_quantizer(self.weight)[channels])
        if bias is not None:
            conv.bias.copy_(bias[channels])
        return nn.Sequential(ChannelSelect(channels), conv)

    @torch.no_grad()
    def export_integer_weight(self, shared_weight: torch.Tensor, channels: torch.Tensor) -> IntegerWeight | None:
        whole = integer_weight(self.weight_quantizer, self.weight)
        return None if whole is None else whole.channels(channels)

    @torch.no_grad()
    def scale_output_channels(self, scale: torch.Tensor) -> None:
        self.weight.mul_(scale.view(-1, 1, 1, 1).to(self.weight.dtype))
        super().scale_output_channels(scale)


class ChannelSelect(nn.Module):
    """Keeps input channels ``channels`` (dimension 1), in that order."""

    def __init__(self, channels: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("channels", channels.clone().long())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.index_select(1, self.channels)


def run_dense(source: nn.Module, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """Apply ``source``'s op (Conv2d or Linear configuration) with another weight and bias."""
    if isinstance(source, nn.Linear):
        return F.linear(x, weight, bias)
    if source.padding_mode != "zeros":
        x = F.pad(x, source._reversed_padding_repeated_twice, mode=source.padding_mode)
        return F.conv2d(x, weight, bias, source.stride, 0, source.dilation, source.groups)
    return F.conv2d(x, weight, bias, source.stride, source.padding, source.dilation, source.groups)


def run_dense_quantized(source: nn.Module, x: torch.Tensor, quantizer: nn.Module,
                        weight: torch.Tensor | WeightMixture, bias: torch.Tensor | None) -> torch.Tensor:
    """``run_dense(source, quantizer(x), weight, bias)``, fused when ``quantizer`` is an
    :class:`ActivationQuantizer` and ``source`` a Linear or a zero-padded Conv2d.

    The fused node computes the same values and gradients but keeps the quantized input for the
    backward as integer levels (1 byte per element for up to 8 bits) instead of a float copy: the
    searchable layer then saves about a quarter activation more than the plain layer, not a whole one.
    A :class:`WeightMixture` (a split layer's folded weight) is mixed inside the same node, whose
    backward then hands the op's weight gradient to the mix's backward to overwrite.
    """
    if type(quantizer) not in _FUSABLE_QUANTIZERS or not _fusable(source):
        if isinstance(weight, WeightMixture):
            weight = mixed_weight(weight)
        return run_dense(source, quantizer(x), weight, bias)
    if isinstance(weight, WeightMixture):
        return _QuantizedInputLayer.apply(x, quantizer.log2_clip, bias, source, quantizer.levels, quantizer.signed,
                                          quantizer.grid, (weight.plan, weight.shape), weight.mask, *weight.inputs)
    return _QuantizedInputLayer.apply(x, quantizer.log2_clip, bias, source, quantizer.levels, quantizer.signed,
                                      quantizer.grid, None, weight)


def _fusable(source: nn.Module) -> bool:
    if isinstance(source, nn.Linear):
        return True
    return (isinstance(source, nn.Conv2d) and source.padding_mode == "zeros"
            and not isinstance(source.padding, str))


def _op_backward(source: nn.Module, grad: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, need_x: bool,
                 need_weight: bool, need_bias: bool) -> tuple[torch.Tensor | None, ...]:
    """Gradients of input, weight and bias of ``run_dense(source, x, weight, bias)`` (a Linear or a
    zero-padded Conv2d) from its output gradient ``grad``; None where not needed."""
    if not isinstance(source, nn.Linear):
        bias_sizes = [weight.shape[0]] if need_bias else None
        return torch.ops.aten.convolution_backward(
            grad, x, weight, bias_sizes, list(source.stride), list(source.padding), list(source.dilation), False,
            [0, 0], source.groups, [need_x, need_weight, need_bias])
    flat_grad = grad.reshape(-1, grad.shape[-1])
    return (grad.matmul(weight) if need_x else None,
            flat_grad.t().matmul(x.reshape(-1, x.shape[-1])) if need_weight else None,
            flat_grad.sum(dim=0) if need_bias else None)


class _QuantizedInputLayer(torch.autograd.Function):
    """Fake-quantize the input (see ``odimo_moo.quantizers._FakeQuantizeActivation``), then run the
    layer's op over it, in one autograd node; with ``mixing`` (a :class:`WeightMixture`'s plan and
    shape; ``weights`` its mask and inputs) the weight is mixed in the node too, else ``weights`` is
    the weight alone.

    Saves ``x`` (kept alive by its producer anyway), the input's integer levels (compact), the
    weight and the grid. The backward runs the op's backward with the integer levels as input (the
    weight gradient comes out divided by the step, which the small weight gradient then gets back),
    then the quantizer's backward.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, log2_clip: torch.Tensor, bias: torch.Tensor | None,  # type: ignore[override]
                source: nn.Module, levels: int, signed: bool,
                grid: Callable[[torch.Tensor, int], tuple[torch.Tensor, torch.Tensor]], mixing: tuple | None,
                *weights: torch.Tensor) -> torch.Tensor:
        clip, step = grid(log2_clip, levels)  # clip: the grid's top
        quantized, code = coded_levels(x, clip, step, levels, signed)
        if mixing is None:
            weight, mix_saved, ctx.has_largest = weights[0], [], []
        else:
            weight, mix_saved, ctx.has_largest = mix_forward(WeightMixture(weights[0], *mixing, weights[1:]))
        output = run_dense(source, quantized, weight, bias)
        ctx.save_for_backward(x, code, weight, clip, step, *(weights if mixing else ()), *mix_saved)
        ctx.source, ctx.signed, ctx.has_bias, ctx.weight_dtype = source, signed, bias is not None, weight.dtype
        ctx.mixing, ctx.weights = mixing, len(weights)
        return output

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        x, code, weight, clip, step, *mix_saved = ctx.saved_tensors
        need_x, need_clip, need_bias = ctx.needs_input_grad[:3]
        need_weights = ctx.needs_input_grad[_LEADING_INPUTS:]
        integers = code.to(grad.dtype)
        weight = weight.to(grad.dtype)
        source = ctx.source
        grad_input, grad_weight, grad_bias = _op_backward(source, grad, integers, weight, need_x, any(need_weights),
                                                          need_bias and ctx.has_bias)
        if ctx.mixing is None:
            grad_weights = [None if grad_weight is None else
                            grad_weight.mul_(step.to(grad_weight.dtype)).to(ctx.weight_dtype)]
        elif grad_weight is None:
            grad_weights = [None] * ctx.weights
        else:
            # The op's weight gradient is this node's own: the mix's backward may write over it.
            state = MixState.unpack(mix_saved, ctx.mixing[0], ctx.weights - 1, ctx.has_largest)
            grad_mask, grads = mix_backward(grad_weight.to(ctx.weight_dtype), state, need_weights[0],
                                            need_weights[1:], factor=step.to(ctx.weight_dtype), owned=True)
            grad_weights = [grad_mask, *grads]
        if grad_bias is not None:
            grad_bias = grad_bias.to(ctx.weight_dtype)
        grad_x = grad_log2_clip = None
        # The quantizer's backward reads the levels as float (``integers``): elementwise ops mixing
        # float and integer tensors take a slow type-promoting path on CPU.
        if need_x:
            # ``grad_input`` is ours: it becomes the gradient of x in place.
            grad_x, grad_log2_clip = coded_activation_gradients(grad_input, x, code, integers, step, clip, ctx.signed,
                                                                need_x, need_clip)
        elif need_clip:
            # Only the clip needs the input's gradient (the network's first layer): the op is linear
            # in its input and in its weight, so sum(grad_input * d) == sum(weight * G(d)) with G(d)
            # the op's weight gradient for input d -- one weight-gradient pass over the input-sized
            # direction d, cheaper than the transposed op and than the op itself over d (few input
            # channels, strided stems: 0.7x to 0.2x of the op's time on CPU).
            direction = clip_descent_direction(x, integers, step, clip, ctx.signed)
            _, direction_weight, _ = _op_backward(source, grad, direction, weight, False, True, False)
            grad_log2_clip = clip_gradient(weight, direction_weight, clip)
        return (grad_x, grad_log2_clip, grad_bias) + (None,) * (_LEADING_INPUTS - 3) + tuple(grad_weights)

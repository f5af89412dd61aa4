"""A split layer's folded weight: every unit's weight term mixed per output channel under the mask.

``mix_weights(mask, terms, shape)`` computes ``sum_k mask[c, k] * W_k[c]`` in one autograd node. A
term is what an alternative hands over (:class:`WeightTerm`): its quantized weight as a tensor
(``dense``), the per-channel kernels of a depthwise conv written as a dense one (``diagonal``), or,
on the compiled path, the shared weight itself with the quantizer to apply (``int``, ``ternary``:
*encoded* terms, dense or, for a depthwise alternative's own kernels, on the diagonal). An encoded
term is quantized inside the node into 1-byte levels and a scale and
mixed from them; its backward gives the mask column, the shared weight's gradient and the scale's in
one pass per term, with the values and gradients of quantizing first and mixing after (the mask and
scale gradients are sums, accumulated in the kernels' order).
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import torch
from torch import nn
from torch.autograd.function import once_differentiable

from . import native_kernels
from .weight_quantizers import IntWeightQuantizer, TernaryWeightQuantizer, int_level_range, ternary_levels

#: Term kinds quantized inside the mix (compiled path only).
ENCODED_KINDS = ("int", "ternary")


class WeightTerm(NamedTuple):
    """An alternative's share of the folded weight, before the per-channel mask.

    ``dense``: ``tensor`` in the searched layer's weight shape. ``diagonal``: per-channel kernels
    ``[C, kh, kw]`` that sit at ``[c, c]`` of a ``[C, C, kh, kw]`` weight, zeros elsewhere. ``int`` /
    ``ternary``: the term is ``tensor`` (the shared weight, or with ``diagonal`` a depthwise
    alternative's ``[C, 1, kh, kw]`` kernels) through an :class:`IntWeightQuantizer` (``options``
    ``(bits,)``) or a :class:`TernaryWeightQuantizer` (``scale_parameter`` its ``log_scale``,
    ``options`` ``(threshold, power_of_two)``); see :func:`encoded_term`.
    """

    kind: str
    tensor: torch.Tensor
    scale_parameter: torch.Tensor | None = None
    options: tuple = ()
    diagonal: bool = False


def encoded_term(quantizer: nn.Module, weight: torch.Tensor, diagonal: bool = False) -> WeightTerm | None:
    """``quantizer(weight)`` as an encoded term (``diagonal``: a depthwise alternative's kernels), where
    the compiled mix can quantize it itself (an 8-bit-or-narrower :class:`IntWeightQuantizer` or a
    :class:`TernaryWeightQuantizer`, on a weight the kernels take); None otherwise."""
    if not native_kernels.applies(weight):
        return None
    if type(quantizer) is IntWeightQuantizer and quantizer.bits <= 8:
        return WeightTerm("int", weight, None, (quantizer.bits,), diagonal)
    if type(quantizer) is TernaryWeightQuantizer:
        quantizer.ensure_initialized(weight)
        return WeightTerm("ternary", weight, quantizer.log_scale, (quantizer.threshold, quantizer.power_of_two),
                          diagonal)
    return None


def mix_weights(mask: torch.Tensor, terms: Sequence[WeightTerm], shape: torch.Size) -> torch.Tensor:
    """The folded weight ``sum_k mask[c, k] * W_k[c]`` of a layer whose weight has ``shape``.

    Equals stacking every unit's dense weight and summing them under the mask, in one autograd node
    (no stack, no dense zeros for diagonal terms, a handful of ops forward and backward). Tensors that
    several terms share (the layer's weight under two encoded terms) are inputs once: their gradients
    add up inside the node.
    """
    inputs: list[torch.Tensor] = []

    def slot(tensor: torch.Tensor | None) -> int | None:
        if tensor is None:
            return None
        for index, known in enumerate(inputs):
            if known is tensor:
                return index
        inputs.append(tensor)
        return len(inputs) - 1

    plan = tuple((t.kind, slot(t.tensor), slot(t.scale_parameter), t.options, t.diagonal) for t in terms)
    return _MixWeights.apply(mask, plan, shape, *inputs)


def _per_channel(channel_mask: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``channel_mask`` ``[C]`` shaped to broadcast over a weight ``[C, ...]``."""
    return channel_mask.view((-1,) + (1,) * (weight.dim() - 1))


def _diagonal_view(weight: torch.Tensor) -> torch.Tensor:
    """The ``[c, c]`` entries of a ``[C, C, kh, kw]`` weight as a ``[C, kh, kw]`` view."""
    return weight.diagonal(dim1=0, dim2=1).permute(2, 0, 1)


def _encode(kind: str, weight: torch.Tensor, scale_parameter: torch.Tensor | None,
            options: tuple) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """An encoded term's ``(int8 levels in the weight's shape, scale [C] or [1], largest [C, 1] or None)``."""
    if kind == "int":
        (bits,) = options
        levels, scale = native_kernels.int_weight_levels(weight, *int_level_range(bits))
        return levels, torch.tensor([scale], dtype=torch.float32), None
    threshold, power_of_two = options
    _, levels, largest, scale = ternary_levels(weight, scale_parameter, threshold, power_of_two, values=False)
    return levels.view(weight.shape), scale, largest


class _MixWeights(torch.autograd.Function):
    @staticmethod
    def forward(ctx, mask: torch.Tensor, plan: tuple, shape: torch.Size,  # type: ignore[override]
                *inputs: torch.Tensor) -> torch.Tensor:
        mixed = None
        native = mask.dtype == torch.float32 and native_kernels.applies(*inputs)
        encodings = []
        for k, (kind, index, scale_index, options, diagonal) in enumerate(plan):
            tensor = inputs[index]
            if kind in ENCODED_KINDS:
                if not native:
                    raise ValueError(f"a {kind!r} weight term needs the compiled kernels and a float32 mask")
                levels, scale, largest = _encode(kind, tensor, None if scale_index is None else inputs[scale_index],
                                                 options)
                mixed = native_kernels.mix_levels_forward(levels, scale, mask, k, mixed, shape, diagonal)
                encodings.append((levels, scale, largest))
            elif kind == "dense" and native:
                mixed = native_kernels.mix_dense_forward(tensor, mask, k, mixed)
            elif kind == "dense":
                scale = _per_channel(mask[:, k], tensor)
                mixed = tensor * scale if mixed is None else mixed.addcmul_(tensor, scale)
            elif kind == "diagonal":
                if mixed is None:
                    mixed = tensor.new_zeros(shape)
                _diagonal_view(mixed).add_(tensor * _per_channel(mask[:, k], tensor))
            else:
                raise ValueError(f"unknown weight term kind {kind!r}")
        saved = [t for encoding in encodings for t in encoding if t is not None]
        ctx.save_for_backward(mask, *inputs, *saved)
        ctx.plan, ctx.inputs = plan, len(inputs)
        ctx.has_largest = [largest is not None for _, _, largest in encodings]
        return mixed

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        mask, *rest = ctx.saved_tensors
        inputs, saved = rest[:ctx.inputs], iter(rest[ctx.inputs:])
        need_mask = ctx.needs_input_grad[0]
        need = ctx.needs_input_grad[3:]
        grad_mask = torch.empty_like(mask) if need_mask else None
        grads: list[torch.Tensor | None] = [None] * len(inputs)
        channels = mask.shape[0]
        if ctx.has_largest:  # encoded terms: their kernels read the gradient as a contiguous float32 tensor
            grad = grad.contiguous()
        native = mask.dtype == torch.float32 and native_kernels.applies(grad)
        encoded = iter(ctx.has_largest)
        for k, (kind, index, scale_index, _, diagonal) in enumerate(ctx.plan):
            tensor = inputs[index]
            if kind in ENCODED_KINDS:
                levels, scale = next(saved), next(saved)
                largest = next(saved) if next(encoded) else None
                need_scale = scale_index is not None and need[scale_index]
                grads[index], grad_scale = native_kernels.levels_backward(
                    grad, levels, scale, largest, mask, k, diagonal, grads[index], need[index], grad_mask,
                    need_scale)
                if need_scale:
                    grads[scale_index] = _added(grads[scale_index], grad_scale.mul_(scale))
                continue
            if kind == "dense" and native and native_kernels.applies(tensor):
                # One pass: the term's gradient and its mask column (compiled kernel).
                term_grad = native_kernels.mix_dense_backward(grad, tensor, mask, k, need[index], grad_mask)
            else:
                g = grad if kind == "dense" else _diagonal_view(grad)
                term_grad = g * _per_channel(mask[:, k], tensor) if need[index] else None
                if need_mask:
                    grad_mask[:, k] = torch.linalg.vecdot(g.reshape(channels, -1), tensor.reshape(channels, -1))
            grads[index] = _added(grads[index], term_grad)
        return (grad_mask, None, None, *grads)


def _added(total: torch.Tensor | None, term: torch.Tensor | None) -> torch.Tensor | None:
    """``total + term``, either may be None (in place into ``total``: the node's own tensor)."""
    if total is None or term is None:
        return term if total is None else total
    return total.add_(term)

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


class WeightMixture(NamedTuple):
    """A folded weight before it is computed: ``mix_weights``'s arguments as one autograd node takes them
    (``inputs``: every tensor the terms read, each once; ``plan``: per term its kind, the index of its
    tensor and of its scale parameter in ``inputs``, its options and ``diagonal``)."""

    mask: torch.Tensor
    plan: tuple
    shape: torch.Size
    inputs: tuple[torch.Tensor, ...]


def weight_mixture(mask: torch.Tensor, terms: Sequence[WeightTerm], shape: torch.Size) -> WeightMixture:
    """The mixture ``sum_k mask[c, k] * W_k[c]`` of ``terms`` into a weight of ``shape``, not yet computed
    (:func:`mix_weights` computes it; the fused quantized layer computes it inside its own node)."""
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
    return WeightMixture(mask, plan, shape, tuple(inputs))


def mix_weights(mask: torch.Tensor, terms: Sequence[WeightTerm], shape: torch.Size) -> torch.Tensor:
    """The folded weight ``sum_k mask[c, k] * W_k[c]`` of a layer whose weight has ``shape``.

    Equals stacking every unit's dense weight and summing them under the mask, in one autograd node
    (no stack, no dense zeros for diagonal terms, a handful of ops forward and backward). Tensors that
    several terms share (the layer's weight under two encoded terms) are inputs once: their gradients
    add up inside the node.
    """
    return mixed_weight(weight_mixture(mask, terms, shape))


def mixed_weight(mixture: WeightMixture) -> torch.Tensor:
    """The weight ``mixture`` describes, in one autograd node (:func:`mix_weights`)."""
    return _MixWeights.apply(mixture.mask, mixture.plan, mixture.shape, *mixture.inputs)


def _per_channel(channel_mask: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``channel_mask`` ``[C]`` shaped to broadcast over a weight ``[C, ...]``."""
    return channel_mask.view((-1,) + (1,) * (weight.dim() - 1))


def _diagonal_view(weight: torch.Tensor) -> torch.Tensor:
    """The ``[c, c]`` entries of a ``[C, C, kh, kw]`` weight as a ``[C, kh, kw]`` view."""
    return weight.diagonal(dim1=0, dim2=1).permute(2, 0, 1)


def _mix_encoded(kind: str, weight: torch.Tensor, scale_parameter: torch.Tensor | None, options: tuple,
                 mask: torch.Tensor, column: int, mixed: torch.Tensor | None, shape: torch.Size,
                 diagonal: bool) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]]:
    """``mixed`` plus an encoded term's share, and the term's ``(int8 levels in the weight's shape, scale
    [C] or [1], largest [C, 1] or None)``."""
    if kind == "int":
        (bits,) = options
        mixed, levels, scale = native_kernels.mix_int_forward(weight, *int_level_range(bits), mask, column, mixed,
                                                              shape, diagonal)
        return mixed, (levels, scale, None)
    threshold, power_of_two = options
    _, levels, largest, scale = ternary_levels(weight, scale_parameter, threshold, power_of_two, values=False)
    levels = levels.view(weight.shape)
    return native_kernels.mix_levels_forward(levels, scale, mask, column, mixed, shape, diagonal), (levels, scale,
                                                                                                   largest)


class MixState(NamedTuple):
    """What :func:`mix_backward` needs of a forward: its inputs and the encoded terms' tensors, in the
    order :func:`mix_forward` hands them out (``saved``), and which encoded terms kept a ``largest``."""

    mask: torch.Tensor
    plan: tuple
    inputs: Sequence[torch.Tensor]
    saved: Sequence[torch.Tensor]
    has_largest: Sequence[bool]

    @classmethod
    def unpack(cls, tensors: Sequence[torch.Tensor], plan: tuple, inputs: int,
               has_largest: Sequence[bool]) -> "MixState":
        """The state a node saved as ``(mask, *inputs, *saved)`` (``inputs`` of them; see :func:`mix_forward`)."""
        return cls(tensors[0], plan, tensors[1:1 + inputs], tensors[1 + inputs:], has_largest)


def mix_forward(mixture: WeightMixture) -> tuple[torch.Tensor, list[torch.Tensor], list[bool]]:
    """The mixed weight of ``mixture``, the tensors its backward needs beyond the mixture's own (the
    encoded terms' levels, scales and largest magnitudes) and which encoded terms have a largest."""
    mask, plan, shape, inputs = mixture
    mixed = None
    native = mask.dtype == torch.float32 and native_kernels.applies(*inputs)
    encodings = []
    for k, (kind, index, scale_index, options, diagonal) in enumerate(plan):
        tensor = inputs[index]
        if kind in ENCODED_KINDS:
            if not native:
                raise ValueError(f"a {kind!r} weight term needs the compiled kernels and a float32 mask")
            mixed, encoding = _mix_encoded(kind, tensor, None if scale_index is None else inputs[scale_index], options,
                                           mask, k, mixed, shape, diagonal)
            encodings.append(encoding)
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
    return mixed, saved, [largest is not None for _, _, largest in encodings]


def mix_backward(grad: torch.Tensor, state: MixState, need_mask: bool, need: Sequence[bool],
                 factor: torch.Tensor | None = None,
                 owned: bool = False) -> tuple[torch.Tensor | None, list[torch.Tensor | None]]:
    """The mask's and the inputs' gradients (None where not needed) of the mixed weight whose gradient
    is ``factor * grad`` (``factor``: a 0-d tensor; None: ``grad``).

    ``owned``: ``grad`` is the caller's to overwrite (a gradient it computed and hands on nowhere
    else). With the compiled kernels and only encoded terms, ``factor`` then goes into the kernels'
    pass and the last term in the layer's weight shape writes its weight's gradient over ``grad``
    (one weight-sized buffer and pass fewer); the values are those of scaling ``grad`` first.
    """
    mask, plan, inputs = state.mask, state.plan, state.inputs
    grad_mask = torch.empty_like(mask) if need_mask else None
    grads: list[torch.Tensor | None] = [None] * len(inputs)
    if state.has_largest:  # encoded terms: their kernels read the gradient as a contiguous float32 tensor
        grad = grad.contiguous()
    native = mask.dtype == torch.float32 and native_kernels.applies(grad)
    in_kernels = native and all(kind in ENCODED_KINDS for kind, *_ in plan)
    scale_factor = 1.0
    if factor is not None and in_kernels and owned:
        scale_factor = float(factor)
    elif factor is not None:
        grad = grad.mul_(factor) if owned else grad * factor
    in_place = _overwriting_term(plan, need) if in_kernels and owned else None
    saved = iter(state.saved)
    encodings = []
    for kind, *_ in plan:
        if kind in ENCODED_KINDS:
            levels, scale = next(saved), next(saved)
            encodings.append((levels, scale, next(saved) if state.has_largest[len(encodings)] else None))
        else:
            encodings.append(None)
    order = [k for k in range(len(plan)) if k != in_place] + ([] if in_place is None else [in_place])
    for k in order:
        kind, index, scale_index, _, diagonal = plan[k]
        tensor = inputs[index]
        if kind in ENCODED_KINDS:
            levels, scale, largest = encodings[k]
            need_scale = scale_index is not None and need[scale_index]
            total = grads[index]
            grads[index], grad_scale = native_kernels.levels_backward(
                grad, levels, scale, largest, mask, k, diagonal, need[index], grad_mask, need_scale, added=total,
                out=grad if k == in_place else total, factor=scale_factor)
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
                grad_mask[:, k] = torch.linalg.vecdot(g.reshape(mask.shape[0], -1), tensor.reshape(mask.shape[0], -1))
        grads[index] = _added(grads[index], term_grad)
    return grad_mask, grads


def _overwriting_term(plan: tuple, need: Sequence[bool]) -> int | None:
    """The term whose weight gradient may be written over the incoming gradient: the last one in the
    weight's shape (not diagonal) whose gradient is needed and whose tensor no later term reads (its
    gradient's sum then keeps the plan's order); it runs last. None when there is none."""
    for k in range(len(plan) - 1, -1, -1):
        _, index, _, _, diagonal = plan[k]
        if not diagonal and need[index]:
            later = any(plan[j][1] == index for j in range(k + 1, len(plan)))
            return None if later else k
    return None


class _MixWeights(torch.autograd.Function):
    @staticmethod
    def forward(ctx, mask: torch.Tensor, plan: tuple, shape: torch.Size,  # type: ignore[override]
                *inputs: torch.Tensor) -> torch.Tensor:
        mixed, saved, has_largest = mix_forward(WeightMixture(mask, plan, shape, inputs))
        ctx.save_for_backward(mask, *inputs, *saved)
        ctx.plan, ctx.inputs, ctx.has_largest = plan, len(inputs), has_largest
        return mixed

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        state = MixState.unpack(ctx.saved_tensors, ctx.plan, ctx.inputs, ctx.has_largest)
        grad_mask, grads = mix_backward(grad, state, ctx.needs_input_grad[0], ctx.needs_input_grad[3:])
        return (grad_mask, None, None, *grads)


def _added(total: torch.Tensor | None, term: torch.Tensor | None) -> torch.Tensor | None:
    """``total + term``, either may be None (in place into ``total``: the node's own tensor)."""
    if total is None or term is None:
        return term if total is None else total
    return total.add_(term)

"""Training as deployed: layers that are not searched run in their unit's data format, and BatchNorm
is folded into the layer before it, so the trained network computes what its integer export does.

:class:`FixedQuantizedLayer` wraps a fixed Conv2d/Linear with its unit's weight and input
quantizers and exports as a one-unit :class:`~odimo_moo.split_layer.ExportedSplit` (tagged and
integer in the QDQ model like a searched layer's sub-layers). :func:`fold_batchnorm` folds, with
the running statistics, every BatchNorm that reads only a searched or fixed layer's output.
"""

from __future__ import annotations

from functools import partial
from typing import Callable, Mapping

import torch
import torch.fx as fx
from torch import nn
from torch.nn.utils import parametrize

from .alternatives import run_dense_quantized
from .graph_patterns import batchnorms_after
from .data_formats import DataFormat
from .quantizers import PowerOfTwoActivationQuantizer, freeze
from .split_layer import ExportedBranch, ExportedSplit, SplitLayer
from .weight_quantizers import integer_weight, scale_weight_channels


class FixedQuantizedLayer(nn.Module):
    """A layer that is not searched, in its unit's data format: ``layer(q_in(x))`` with the weight
    through the unit's weight quantizer (the layer keeps its float weight, as a searched one does)."""

    def __init__(self, layer: nn.Module, unit_index: int, data_format: DataFormat, non_negative: bool) -> None:
        super().__init__()
        self.layer = layer
        self.unit_index = unit_index
        self.weight_quantizer = data_format.weight_quantizer(layer.weight.shape[0])
        self.input_quantizer = data_format.activation_quantizer(signed=not non_negative)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight_quantizer(self.layer.weight)
        return run_dense_quantized(self.layer, x, self.input_quantizer, weight, self.layer.bias)

    @torch.no_grad()
    def scale_output_channels(self, scale: torch.Tensor) -> None:
        """See :meth:`odimo_moo.alternatives.Alternative.scale_output_channels` (the layer's own
        weight is scaled by the caller)."""
        scale_weight_channels(self.weight_quantizer, scale)

    @torch.no_grad()
    def accumulator_scales(self) -> torch.Tensor:
        """Per output channel, input step x weight scale (NaN: no integer bias, see :func:`_input_step`)."""
        weight = self.layer.weight
        step, integer = _input_step(self.input_quantizer), integer_weight(self.weight_quantizer, weight)
        if step is None or integer is None:
            return torch.full((weight.shape[0],), float("nan"), dtype=weight.dtype, device=weight.device)
        return (integer.scale.to(weight.dtype) * step).expand(weight.shape[0])

    @torch.no_grad()
    def export(self) -> ExportedSplit:
        """The layer as one unit's sub-layer producing every channel (quantized weight, frozen input grid)."""
        sub = _plain_copy(self.layer)
        sub.weight.copy_(self.weight_quantizer(self.layer.weight))
        weight = integer_weight(self.weight_quantizer, self.layer.weight)
        channels = torch.arange(sub.weight.shape[0], device=sub.weight.device)
        branch = ExportedBranch(self.unit_index, freeze(self.input_quantizer), sub, channels,
                                "float" if weight is None else weight.kind, weight)
        return ExportedSplit([branch], channels)


def _plain_copy(layer: nn.Module) -> nn.Module:
    """A Conv2d/Linear like ``layer`` holding its current weight and bias (a rounded bias: its value),
    without parametrizations. (A deep copy of a parametrized module shares its class with the
    original, and removing the copy's parametrization would remove the original's too.)"""
    bias = layer.bias is not None
    if isinstance(layer, nn.Linear):
        plain: nn.Module = nn.Linear(layer.in_features, layer.out_features, bias=bias)
    else:
        plain = nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride, layer.padding,
                          layer.dilation, layer.groups, bias=bias, padding_mode=layer.padding_mode)
    plain = plain.to(device=layer.weight.device, dtype=layer.weight.dtype)
    plain.weight.copy_(layer.weight)
    if bias:
        plain.bias.copy_(layer.bias)
    return plain


def _input_step(quantizer: nn.Module) -> torch.Tensor | None:
    """The step of a power-of-two activation grid (None: another input format).

    Only there is a bias on the accumulator grid safe to train with: elsewhere (``clip / levels``
    steps) the accumulator grid is a power of two times the next layer's step, so many values would
    sit exactly on a rounding tie that float rounding (summation order) decides differently in each
    runtime; the float bias avoids the ties and rounds by at most half an accumulator unit at export.
    """
    if not isinstance(quantizer, PowerOfTwoActivationQuantizer):
        return None
    return quantizer.grid(quantizer.log2_clip.detach(), quantizer.levels)[1]


@torch.no_grad()
def split_accumulator_scales(split: SplitLayer) -> torch.Tensor:
    """Per output channel of a searched layer, its unit's accumulator scale under the current hard
    mapping: input step x weight scale (NaN: no integer bias, see :func:`_input_step`)."""
    weight = split.layer.weight
    units = split.units_of_channels()
    everything = torch.arange(split.channels, device=weight.device)
    scales = torch.full((split.channels,), float("nan"), dtype=weight.dtype, device=weight.device)
    for k, alternative in enumerate(split.alternatives):
        step = _input_step(split.input_quantizers[0 if split.fold else k])
        integer = alternative.export_integer_weight(weight, everything)
        if step is not None and integer is not None:
            unit_scales = (integer.scale.to(weight.dtype) * step).expand(split.channels)
            scales = torch.where(units == k, unit_scales, scales)
    return scales


class IntegerBias(nn.Module):
    """Parametrization of a layer's bias: each output channel rounded (straight-through) to its
    accumulator grid ``scales()`` (NaN: left float), the int32 bias the integer export stores."""

    def __init__(self, scales: Callable[[], torch.Tensor]) -> None:
        super().__init__()
        self.scales = scales

    def forward(self, bias: torch.Tensor) -> torch.Tensor:
        scales = self.scales().to(bias.dtype)
        rounded = torch.where(torch.isnan(scales), bias, torch.round(bias / scales) * scales)
        return bias + (rounded - bias).detach()


def _integer_bias_scales(module: nn.Module) -> Callable[[], torch.Tensor] | None:
    """The accumulator scales of a searched or fixed layer with an integer unit (None otherwise)."""
    if isinstance(module, SplitLayer):
        scales: Callable[[], torch.Tensor] = partial(split_accumulator_scales, module)
    elif isinstance(module, FixedQuantizedLayer):
        scales = module.accumulator_scales
    else:
        return None
    return scales if bool(torch.isfinite(scales()).any()) else None


def round_biases(layers: Mapping[str, nn.Module]) -> list[str]:
    """Keep the bias of every layer (searched or fixed) with an integer unit reading a power-of-two
    grid on its accumulator grid from now on (:class:`IntegerBias`), as the integer export stores it.
    Returns those layers."""
    rounded = []
    for name, module in layers.items():
        layer, scales = _weighted_layer(module), _integer_bias_scales(module)
        if scales is not None and layer.bias is not None and not parametrize.is_parametrized(layer, "bias"):
            parametrize.register_parametrization(layer, "bias", IntegerBias(scales))
            rounded.append(name)
    return rounded


def _weighted_layer(module: nn.Module) -> nn.Module:
    """The Conv2d/Linear holding the weight and bias a BatchNorm after ``module`` folds into."""
    return module.layer if isinstance(module, (SplitLayer, FixedQuantizedLayer)) else module


@torch.no_grad()
def _quantized_weight(module: nn.Module) -> torch.Tensor:
    """The weight ``module`` computes with: per output channel its unit's quantized weight under the
    current hard mapping (searched layer), its unit's quantized weight (fixed layer), or its weight."""
    if isinstance(module, FixedQuantizedLayer):
        return module.weight_quantizer(module.layer.weight)
    if not isinstance(module, SplitLayer):
        return module.weight
    weight, units = module.layer.weight, module.units_of_channels()
    effective = torch.zeros_like(weight)
    for k, alternative in enumerate(module.alternatives):
        chosen = units == k
        if bool(chosen.any()):
            effective[chosen] = alternative.dense_weight(weight)[chosen]
    return effective


def _channel_gain(intended: torch.Tensor, realized: torch.Tensor) -> torch.Tensor:
    """Per output channel, the factor ``g`` that makes ``g * intended`` closest to ``realized`` (least
    squares; 1 for a channel of zeros)."""
    intended, realized = intended.flatten(1), realized.flatten(1)
    energy = intended.square().sum(1)
    return torch.where(energy > 0, (intended * realized).sum(1) / energy.clamp_min(torch.finfo(energy.dtype).tiny),
                       torch.ones_like(energy))


@torch.no_grad()
def _fold_into(module: nn.Module, norm: nn.modules.batchnorm._BatchNorm) -> None:
    """Move ``norm`` (eval mode: ``y -> (y - mean) * scale + beta`` per channel) into ``module``'s
    weight and bias.

    A unit's format may not represent the folded weight exactly (a ternary channel's scale is
    rounded to a power of two): the folded channel then computes ``gain * scale * (y - mean) + beta``,
    its gain measured on the quantized weights (:func:`_channel_gain`). The bias keeps ``beta``
    where BatchNorm put its output's mean, rather than adding ``(gain - 1) * scale * mean`` to it.
    """
    layer = _weighted_layer(module)
    weight = layer.weight
    scale = torch.rsqrt(norm.running_var + norm.eps)
    if norm.weight is not None:
        scale = scale * norm.weight
    per_channel = scale.view((-1,) + (1,) * (weight.dim() - 1)).to(weight.dtype)
    intended = _quantized_weight(module) * per_channel
    weight.mul_(per_channel)
    if isinstance(module, SplitLayer):
        for alternative in module.alternatives:
            alternative.scale_output_channels(scale)
    elif isinstance(module, FixedQuantizedLayer):
        module.scale_output_channels(scale)
    gain = _channel_gain(intended, _quantized_weight(module)).to(scale.dtype)
    centred = -norm.running_mean if layer.bias is None else layer.bias.to(scale.dtype) - norm.running_mean
    shift = centred * scale * gain
    if norm.bias is not None:
        shift = shift + norm.bias
    if layer.bias is None:
        layer.bias = nn.Parameter(shift.to(weight.dtype).clone())
    else:
        layer.bias.copy_(shift.to(weight.dtype))


@torch.no_grad()
def fold_batchnorm(graph_module: fx.GraphModule, layers: Mapping[str, nn.Module]) -> list[str]:
    """Fold every BatchNorm that reads only the output of one of ``layers`` (name -> module of
    ``graph_module``) into that layer, with its running statistics, and remove it from the graph.

    The network computes the same function in eval mode (up to float rounding) wherever the units'
    formats hold the folded weights; where one rounds them (a ternary channel's power-of-two scale)
    the folded channel keeps BatchNorm's output mean and its gain moves by the rounding (see
    :func:`_fold_into`). BatchNorm no longer normalizes by batch statistics in training. Returns the
    folded BatchNorms' names.
    """
    folded = []
    for name, node in list(batchnorms_after(graph_module, set(layers))):
        _fold_into(layers[name], graph_module.get_submodule(str(node.target)))
        node.replace_all_uses_with(node.args[0])
        graph_module.graph.erase_node(node)
        graph_module.delete_submodule(str(node.target))
        folded.append(str(node.target))
    graph_module.recompile()
    return folded

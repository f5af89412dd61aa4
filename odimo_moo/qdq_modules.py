"""The QDQ form of an exported network, in PyTorch.

:func:`qdq_network` turns the exported network's searched layers into QuantizeLinear /
DequantizeLinear form: each unit's sub-layer (:class:`QDQBranch`) reads its input through a
Quantize/Dequantize pair on the unit's activation grid (:class:`QDQActivation`) and its weight (int8
levels, ternary as int8 in ``{-1, 0, +1}``) and bias (int32 levels at the input scale times the weight
scale) through DequantizeLinear. Each piece exports to ONNX as those operators
(:func:`odimo_moo.export_formats.qdq_onnx_model`).
"""

from __future__ import annotations

import copy
import json
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .alternatives import ChannelSelect
from .errors import UsageError
from .quantizers import FixedActivationQuantizer
from .split_layer import ExportedBranch, ExportedSplit, exported_branches

METADATA_PREFIX = "odimo."
INT32_MAX = 2 ** 31 - 1


def _constant(g: Any, value: torch.Tensor) -> Any:
    return g.op("Constant", value_t=value)


class _QuantizeDequantize(torch.autograd.Function):
    """``round(clamp(x, low, high) / step) * step``; ONNX: [Clip ->] QuantizeLinear -> DequantizeLinear."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, low: float, high: float, step: float, clip: bool,  # type: ignore[override]
                unsigned: bool) -> torch.Tensor:
        return torch.round(torch.clamp(x, low, high) / step) * step

    @staticmethod
    def symbolic(g: Any, x: Any, low: float, high: float, step: float, clip: bool, unsigned: bool) -> Any:
        if clip:
            x = g.op("Clip", x, _constant(g, torch.tensor(low, dtype=torch.float32)),
                     _constant(g, torch.tensor(high, dtype=torch.float32)))
        scale = _constant(g, torch.tensor(step, dtype=torch.float32))
        zero = _constant(g, torch.tensor(0, dtype=torch.uint8 if unsigned else torch.int8))
        return g.op("DequantizeLinear", g.op("QuantizeLinear", x, scale, zero), scale, zero)


class _Dequantize(torch.autograd.Function):
    """``levels * scale`` (``scale`` 0-d, or ``[C]`` along dimension 0); ONNX: DequantizeLinear."""

    @staticmethod
    def forward(ctx: Any, levels: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        shape = (-1,) + (1,) * (levels.dim() - 1) if scale.dim() == 1 else ()
        return levels.to(scale.dtype) * scale.view(shape)

    @staticmethod
    def symbolic(g: Any, levels: Any, scale: Any) -> Any:
        scale_type, levels_type = scale.type(), levels.type()
        per_channel = scale_type.dim() == 1
        zero = torch.zeros(scale_type.sizes() if per_channel else (), dtype=levels_type.dtype())
        if per_channel:
            return g.op("DequantizeLinear", levels, scale, _constant(g, zero), axis_i=0)
        return g.op("DequantizeLinear", levels, scale, _constant(g, zero))


class _KeepName(torch.autograd.Function):
    """Identity; in ONNX an Identity node, so the exporter cannot fold a BatchNorm into this float
    weight (which would rename it and hide the sub-layer it belongs to)."""

    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return tensor.clone()

    @staticmethod
    def symbolic(g: Any, tensor: Any) -> Any:
        return g.op("Identity", tensor)


class QDQActivation(nn.Module):
    """A unit's input grid ``round(clamp(x, low, high) / step) * step`` as a Quantize/Dequantize pair.

    Zero point 0, scale ``step``. 8-bit unsigned grids use uint8, all others int8. The pair saturates at
    the integer type's range, so a grid narrower than it gets a Clip in front -- except 7-bit
    unsigned grids (``[0, 127]``, DIANA): an unsigned grid is only used where the input comes out of a
    ReLU (:func:`odimo_moo.graph_patterns.input_is_non_negative`), so int8's upper bound 127 is the clip.
    """

    def __init__(self, quantizer: FixedActivationQuantizer) -> None:
        super().__init__()
        levels, signed = quantizer.levels, quantizer.signed
        if quantizer.bits > 8:
            raise UsageError(f"the integer export holds activations of at most 8 bits; this network has "
                             f"{quantizer.bits}-bit activations: export it as onnx-float instead")
        self.low, self.high, self.step = quantizer.low, quantizer.high, quantizer.step
        self.bits, self.signed = quantizer.bits, signed
        self.unsigned_type = not signed and levels == 255
        self.clip = not (self.unsigned_type or (not signed and levels == 127))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _QuantizeDequantize.apply(x, self.low, self.high, self.step, self.clip, self.unsigned_type)

    def extra_repr(self) -> str:
        return f"bits={self.bits}, signed={self.signed}, step={self.step:g}, clip={self.clip}"


class QDQBranch(nn.Module):
    """An :class:`~odimo_moo.split_layer.ExportedBranch` in QDQ form (same output up to bias rounding).

    Buffers: ``weight_levels`` (int8) and ``weight_scale``; ``bias_levels`` (int32) and ``bias_scale``
    = input step x weight scale; or, for a float unit, ``weight`` and ``bias``.
    """

    def __init__(self, branch: ExportedBranch, layer_name: str) -> None:
        super().__init__()
        select, layer = _split_select(branch.layer)
        self.select: nn.Module | None = select
        _check_layer(layer, layer_name)
        weight_format = _recorded_weight_format(branch, layer_name)
        quantizer = branch.input_quantizer
        self.layer_name, self.unit_index = layer_name, branch.unit_index
        self.weight_format, self.weight_bits = weight_format, branch.weight_bits
        self.output_channels = [int(c) for c in branch.output_channels]
        self.is_linear = isinstance(layer, nn.Linear)
        if not self.is_linear:
            self.conv_options = {"stride": layer.stride, "padding": layer.padding, "dilation": layer.dilation,
                                 "groups": layer.groups}
        weight = layer.weight.detach()
        bias = None if layer.bias is None else layer.bias.detach()
        self.activation, self.activation_bits = _input_activation(quantizer, layer_name)
        self.integer = weight_format != "float" and self.activation_bits is not None
        if self.integer:
            self._register_levels(branch, weight, bias, quantizer)
        else:
            self.register_buffer("weight", weight.clone())
            self.register_buffer("bias", None if bias is None else bias.clone())

    def _register_levels(self, branch: ExportedBranch, weight: torch.Tensor, bias: torch.Tensor | None,
                         quantizer: FixedActivationQuantizer) -> None:
        """The integer buffers: weight levels and scale, bias levels at input step x weight scale."""
        if self.weight_bits > 8:
            raise UsageError(f"layer {self.layer_name}: the integer export holds weights of at most 8 bits, "
                             f"not {self.weight_bits}; export it as onnx-float instead")
        scale = branch.weight_scale.detach()
        levels = _exact_levels(weight, scale, self.layer_name)
        self.register_buffer("weight_levels", levels.to(torch.int8))
        self.register_buffer("weight_scale", scale.clone())
        if bias is None:
            self.register_buffer("bias_levels", None)
            self.register_buffer("bias_scale", None)
        else:
            bias_scale = scale * torch.tensor(quantizer.step, dtype=scale.dtype)
            self.register_buffer("bias_levels",
                                 torch.round(bias / bias_scale).clamp(-INT32_MAX, INT32_MAX).to(torch.int32))
            self.register_buffer("bias_scale", bias_scale)

    def weight_and_bias(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The float weight and bias the sub-layer computes with (dequantized when integer)."""
        if not self.integer:
            return _KeepName.apply(self.weight), self.bias
        bias = None if self.bias_levels is None else _Dequantize.apply(self.bias_levels, self.bias_scale)
        return _Dequantize.apply(self.weight_levels, self.weight_scale), bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.select is not None:
            x = self.select(x)
        x = self.activation(x)
        weight, bias = self.weight_and_bias()
        if self.is_linear:
            return F.linear(x, weight, bias)
        return F.conv2d(x, weight, bias, **self.conv_options)

    def description(self, unit_names: Sequence[str]) -> dict[str, str]:
        """This branch's node metadata (``odimo.*`` keys, string values)."""
        unit = unit_names[self.unit_index] if self.unit_index < len(unit_names) else f"unit{self.unit_index}"
        info = {"layer": self.layer_name, "unit": unit, "unit_index": str(self.unit_index),
                "weight_format": self.weight_format if self.integer else "float",
                "weight_bits": str(self.weight_bits) if self.integer else "32",
                "activation_bits": str(self.activation_bits) if self.integer else "32",
                "activation_signed": str(bool(getattr(self.activation, "signed", True))).lower(),
                "output_channels": json.dumps(self.output_channels)}
        return {METADATA_PREFIX + key: value for key, value in info.items()}


def _split_select(layer: nn.Module) -> tuple[ChannelSelect | None, nn.Module]:
    """A sub-layer's leading channel selection (a fresh copy, or None) and the layer after it."""
    if isinstance(layer, nn.Sequential) and len(layer) == 2 and isinstance(layer[0], ChannelSelect):
        return ChannelSelect(layer[0].channels), layer[1]
    return None, layer


def _check_layer(layer: nn.Module, layer_name: str) -> None:
    """Refuse a sub-layer the integer export has no QDQ form for."""
    if not isinstance(layer, (nn.Conv2d, nn.Linear)):
        raise UsageError(f"layer {layer_name}: the integer export handles Conv2d and Linear sub-layers, "
                         f"not {type(layer).__name__}; export it as onnx-float instead")
    if isinstance(layer, nn.Conv2d) and (layer.padding_mode != "zeros" or isinstance(layer.padding, str)):
        raise UsageError(f"layer {layer_name}: the integer export handles zero-padded convolutions with "
                         f"numeric padding only; export it as onnx-float instead")


def _recorded_weight_format(branch: ExportedBranch, layer_name: str) -> str:
    """The branch's recorded weight format, refusing a branch that records none."""
    weight_format = getattr(branch, "weight_format", "unknown")
    if weight_format == "unknown":
        raise UsageError(f"layer {layer_name}: its exported sub-layers do not record their weight format "
                         f"(an exported.pt written before integer export, or a plugin alternative without "
                         f"export_integer_weight); re-run the search to export it, or use onnx-float")
    return weight_format


def _input_activation(quantizer: nn.Module, layer_name: str) -> tuple[nn.Module, int | None]:
    """The QDQ module of a sub-layer's input quantizer and its bits (None: float input)."""
    if isinstance(quantizer, FixedActivationQuantizer):
        return QDQActivation(quantizer), quantizer.bits
    if isinstance(quantizer, nn.Identity):
        return nn.Identity(), None
    raise UsageError(f"layer {layer_name}: the integer export does not know the input quantizer "
                     f"{type(quantizer).__name__}; export it as onnx-float instead")


def _exact_levels(weight: torch.Tensor, scale: torch.Tensor, layer_name: str) -> torch.Tensor:
    """``weight / scale`` as integers, refusing a weight that is not on its grid."""
    shape = (-1,) + (1,) * (weight.dim() - 1) if scale.dim() == 1 else ()
    levels = torch.round(weight / scale.view(shape))
    on_grid = torch.equal(levels.to(scale.dtype) * scale.view(shape), weight)
    if not on_grid or levels.numel() and (levels.min() < -128 or levels.max() > 127):
        raise UsageError(f"layer {layer_name}: the exported weight is not integer levels times its recorded "
                         f"scale; re-run the search to export it again")
    return levels


def has_integer_units(exported: nn.Module) -> bool:
    """Whether some unit sub-layer of an exported network has integer weights and inputs."""
    return any(getattr(branch, "weight_format", "unknown") in ("int", "ternary")
               and isinstance(branch.input_quantizer, FixedActivationQuantizer)
               for _, _, branch in exported_branches(exported))


def qdq_network(exported: nn.Module) -> nn.Module:
    """A copy of ``exported`` whose searched layers' unit sub-layers are :class:`QDQBranch` es."""
    network = copy.deepcopy(exported).cpu().eval()
    converted = []
    for name, index, branch in list(exported_branches(network)):
        converted.append(QDQBranch(branch, name))
        network.get_submodule(name).branches[index] = converted[-1]
    if not any(branch.integer for branch in converted):
        raise UsageError("the network has no searched layer with an integer unit (was it searched with "
                         "quantize=False?); export it as onnx-float instead")
    return network


def qdq_branches(network: nn.Module) -> dict[tuple[str, int], QDQBranch]:
    """The :class:`QDQBranch` es of a :func:`qdq_network` by (layer name, branch index)."""
    result = {}
    for name, module in network.named_modules():
        if isinstance(module, ExportedSplit):
            for index, branch in enumerate(module.branches):
                if isinstance(branch, QDQBranch):
                    result[(name, index)] = branch
    return result

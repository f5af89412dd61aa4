"""Integer reference of a QDQ export's searched layers, read from the ONNX file alone.

Every unit sub-layer of a searched layer is, in integers (the pattern a deployment compiler matches):

    acc[n, o] = sum_k codes[n, k] * weight[o, k] + bias[o]       int8 x int8 -> int32, int32 bias
    real[n, o] = acc[n, o] * input_step * weight_scale[o]          the accumulator scale

and, where the output feeds the next quantizer directly (BatchNorm folded, see docs/EXPORT.md), the
next input codes follow by a (per-channel) power-of-two shift: ``clip(round_half_even(acc / 2^shift))``
(:func:`requantize`), because on a ``power_of_two_step`` format the accumulator scale over the next
step is a power of two (steps are powers of two, and so are the weight scales: an int unit's one per
tensor, a ternary unit's one per output channel).

:func:`integer_sub_layers` reads the sub-layers (weights, bias, scales, convolution attributes) from
a QDQ ``onnx.ModelProto``; :func:`compare_with_onnx` runs the model with onnxruntime, feeds every
sub-layer's integer input codes to its integer reference and checks that the model's float output,
divided by the accumulator scale, rounds to the integer accumulator.
:func:`odimo_moo.integer_requantization.compare_requantization` checks the requantization between
layers (through ReLU, residual adds and pooling) against the codes onnxruntime feeds the next layer.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .errors import UsageError
from .export_formats import onnx_session
from .qdq_modules import INT32_MAX
from .qdq_onnx_tags import node_tags


@dataclass(frozen=True)
class IntegerSubLayer:
    """One unit's sub-layer of a searched layer in integers.

    ``weight``: int8 levels ``[Cout, Cin / groups, kh, kw]`` (conv) or ``[Cout, Cin]`` (linear);
    ``bias``: int32 levels at the accumulator scale, or None; ``weight_scale``: ``[Cout]``;
    ``input_node`` / ``output_node``: the ONNX tensors of its input codes and its float output.
    """

    layer: str
    unit: str
    input_node: str
    output_node: str
    weight: torch.Tensor
    bias: torch.Tensor | None
    input_step: float
    weight_scale: torch.Tensor
    linear: bool
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int, int, int] = (0, 0, 0, 0)  # top, left, bottom, right
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1
    output_channels: tuple[int, ...] = ()  # the layer's output channels this sub-layer produces, in order

    @property
    def accumulator_scale(self) -> torch.Tensor:
        """``input_step * weight_scale`` per output channel (float64): the real value of one accumulator unit."""
        return self.weight_scale.to(torch.float64) * self.input_step

    def accumulate(self, codes: torch.Tensor) -> torch.Tensor:
        """The int32 accumulators of integer input ``codes`` (``[N, Cin, H, W]`` or ``[N, Cin]``)."""
        x = codes.to(torch.int32)
        weight = self.weight.to(torch.int32)
        if self.linear:
            acc = x @ weight.t()
        else:
            acc = self._convolve(x, weight)
        if self.bias is not None:
            acc = acc + self.bias.to(torch.int32).view((1, -1) + (1,) * (acc.dim() - 2))
        return acc

    def _convolve(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        top, left, bottom, right = self.padding
        x = F.pad(x, (left, right, top, bottom))  # zero point 0: padding with code 0 is padding with 0.0
        count, channels, height, width = x.shape
        out_channels, group_channels, kh, kw = weight.shape
        (sh, sw), (dh, dw) = self.stride, self.dilation
        ho = (height - dh * (kh - 1) - 1) // sh + 1
        wo = (width - dw * (kw - 1) - 1) // sw + 1
        taps = [x[:, :, i * dh: i * dh + sh * (ho - 1) + 1: sh, j * dw: j * dw + sw * (wo - 1) + 1: sw]
                for i in range(kh) for j in range(kw)]
        patches = torch.stack(taps, dim=2)  # [N, Cin, kh*kw, Ho, Wo]
        patches = patches.reshape(count, self.groups, group_channels * kh * kw, ho * wo)
        kernels = weight.reshape(self.groups, out_channels // self.groups, group_channels * kh * kw)
        acc = torch.einsum("ngkp,gok->ngop", patches, kernels)
        return acc.reshape(count, out_channels, ho, wo)

    def check_range(self, input_bits: int = 8) -> None:
        """Refuse a sub-layer whose int32 accumulator could overflow on ``input_bits``-bit inputs."""
        bound = self.weight.to(torch.int64).abs().flatten(1).sum(1) * 2 ** input_bits
        if self.bias is not None:
            bound = bound + self.bias.to(torch.int64).abs()
        if int(bound.max()) > INT32_MAX:
            raise UsageError(f"layer {self.layer} ({self.unit}): its int32 accumulator can overflow; "
                             f"this sub-layer needs a wider accumulator than the integer reference uses")


def power_of_two_exponent(value: float) -> int | None:
    """``k`` where ``value`` is exactly ``2 ** k``, else None (a requantization by a shift needs one)."""
    mantissa, exponent = math.frexp(value)
    return exponent - 1 if mantissa == 0.5 else None


def requantization_shift(accumulator_scale: float, output_step: float) -> int:
    """The shift of :func:`requantize` from an accumulator scale onto the next input step.

    Raises UsageError unless their ratio is a power of two (true on a ``power_of_two_step`` format,
    whose weight scales are powers of two; a ternary scale learned off powers of two, or a
    ``clip / levels`` step, needs a multiplier instead).
    """
    exponent = power_of_two_exponent(output_step / accumulator_scale)
    if exponent is None:
        raise UsageError(f"the output step {output_step:g} over the accumulator scale {accumulator_scale:g} is "
                         f"not a power of two: requantize with a fixed-point multiplier instead of a shift")
    return exponent


def requantize(acc: torch.Tensor, shift: int, low: int, high: int) -> torch.Tensor:
    """``clamp(round_half_even(acc / 2^shift), low, high)`` in integer arithmetic (QuantizeLinear's
    rounding); a negative ``shift`` multiplies."""
    acc = acc.to(torch.int64)
    if shift <= 0:
        return (acc << -shift).clamp(low, high)
    floor = acc >> shift
    remainder = acc - (floor << shift)
    half = 1 << (shift - 1)
    up = (remainder > half) | ((remainder == half) & (floor % 2 == 1))
    return (floor + up.to(torch.int64)).clamp(low, high)


class GraphConstants:
    """Constant tensors of an ONNX graph by name: initializers, Constant nodes, and Identity copies
    of them (the exporter deduplicates equal initializers through Identity nodes)."""

    def __init__(self, model: Any) -> None:
        from onnx import numpy_helper

        self._numpy_helper = numpy_helper
        self.values = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
        self.nodes = {output: node for node in model.graph.node for output in node.output}

    def __getitem__(self, name: str) -> np.ndarray:
        if name in self.values:
            return self.values[name]
        node = self.nodes.get(name)
        if node is not None and node.op_type == "Identity":
            return self[node.input[0]]
        if node is not None and node.op_type == "Constant":
            return self._numpy_helper.to_array(node.attribute[0].t)
        raise UsageError(f"the ONNX tensor {name!r} is not a constant; is this a QDQ export of odimo-moo?")


def node_attributes(node: Any) -> dict[str, Any]:
    """An ONNX node's attributes by name, as Python values."""
    from onnx import helper

    return {attribute.name: helper.get_attribute_value(attribute) for attribute in node.attribute}


def integer_sub_layers(model: Any) -> list[IntegerSubLayer]:
    """Every unit sub-layer of a QDQ ``onnx.ModelProto`` (written by
    :func:`odimo_moo.export_formats.qdq_onnx_model`) in integer form."""
    constants = GraphConstants(model)
    producers = constants.nodes
    layers = []
    for node in model.graph.node:
        tags = node_tags(node)
        if node.op_type not in ("Conv", "Gemm") or "unit" not in tags:
            continue
        if tags["weight_format"] == "float":
            continue
        weight_dq, activation_dq = producers[node.input[1]], producers[node.input[0]]
        quantize = producers[activation_dq.input[0]]
        if weight_dq.op_type != "DequantizeLinear" or quantize.op_type != "QuantizeLinear":
            raise UsageError(f"layer {tags['layer']} ({tags['unit']}): not a DequantizeLinear -> "
                             f"{node.op_type} pattern; is this a QDQ export of odimo-moo?")
        out_channels = len(constants[weight_dq.input[0]])
        weight_scale = np.broadcast_to(constants[weight_dq.input[1]].astype(np.float32), (out_channels,)).copy()
        bias = None
        if len(node.input) > 2 and node.input[2]:
            bias = torch.from_numpy(constants[producers[node.input[2]].input[0]].astype(np.int32))
        attributes = node_attributes(node)
        options: dict[str, Any] = {}
        if node.op_type == "Gemm":
            if attributes.get("transB") != 1 or attributes.get("transA", 0) or attributes.get("alpha", 1.0) != 1.0 \
                    or attributes.get("beta", 1.0) != 1.0:
                raise UsageError(f"layer {tags['layer']}: a Gemm other than x @ W^T + b")
        else:
            pads = list(attributes.get("pads", [0, 0, 0, 0]))
            options = {"stride": tuple(attributes.get("strides", (1, 1))), "padding": tuple(pads),
                       "dilation": tuple(attributes.get("dilations", (1, 1))),
                       "groups": int(attributes.get("group", 1))}
        layers.append(IntegerSubLayer(
            layer=tags["layer"], unit=tags["unit"], input_node=quantize.output[0], output_node=node.output[0],
            weight=torch.from_numpy(constants[weight_dq.input[0]].astype(np.int8)), bias=bias,
            input_step=float(constants[quantize.input[1]]), weight_scale=torch.from_numpy(weight_scale),
            linear=node.op_type == "Gemm", output_channels=tuple(json.loads(tags["output_channels"])), **options))
    if not layers:
        raise UsageError("the ONNX model has no tagged integer sub-layer; pass a QDQ export of odimo-moo "
                         "(exported_qdq.onnx)")
    return layers


def onnx_values(model: Any, inputs: torch.Tensor, names: list[str]) -> dict[str, np.ndarray]:
    """The tensors ``names`` of an ONNX model run by onnxruntime on ``inputs``."""
    import onnx

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    for name in names:
        probe.graph.output.append(onnx.ValueInfoProto(name=name))
    return dict(zip(names, onnx_session(probe).run(names, {"input": inputs.cpu().numpy()})))


@torch.no_grad()
def compare_with_onnx(model: Any, inputs: torch.Tensor) -> dict[tuple[str, str], dict[str, float]]:
    """Run the QDQ model with onnxruntime on ``inputs`` and each integer sub-layer on the input codes
    onnxruntime quantized; per (layer, unit): the share of accumulators that the model's float output
    (divided by the accumulator scale, rounded) equals, and the largest distance between that
    output and the accumulator, in accumulator units."""
    layers = integer_sub_layers(model)
    values = onnx_values(model, inputs, [name for layer in layers for name in (layer.input_node, layer.output_node)])
    report = {}
    for layer in layers:
        layer.check_range()
        acc = layer.accumulate(torch.from_numpy(np.asarray(values[layer.input_node])))
        scale = layer.accumulator_scale.view((1, -1) + (1,) * (acc.dim() - 2))
        real = torch.from_numpy(np.asarray(values[layer.output_node])).to(torch.float64) / scale
        report[(layer.layer, layer.unit)] = {
            "elements": acc.numel(),
            "equal": float((torch.round(real) == acc.to(torch.float64)).to(torch.float64).mean()),
            "max_distance": float((real - acc.to(torch.float64)).abs().max()),
        }
    return report

"""Requantization between the integer sub-layers of a QDQ export, in integers, read from the ONNX file.

Between two layers the QDQ model computes in float: a sub-layer's output ``acc * 2^e`` (its int32
accumulator times its scale, per channel a power of two on a unit of a ``power_of_two_step`` format,
int or ternary), then the ops that lead to the next sub-layer's QuantizeLinear.
:func:`compare_requantization` evaluates that path in integers, per output channel
``values * 2^exponent``, and requantizes with a shift:

* ``Relu``: ``max(values, 0)``;
* ``Concat`` of a layer's sub-layers, ``Gather`` (its channel permutation, a depthwise unit's channel
  selection) and ``Flatten`` move channels;
* ``Add`` (a residual connection): both terms shifted to the smaller exponent and added;
* ``GlobalAveragePool`` over ``2^k`` positions: the sum, exponent minus ``k``;
* ``[Clip ->] QuantizeLinear`` onto step ``2^s``: ``clip(round_half_even(values / 2^(s - exponent)))``
  (:func:`odimo_moo.integer_reference.requantize`).

Channels whose scale is not a power of two (a ternary scale learned off powers of two, a
``clip / levels`` step) have no such form and are left out, as are paths through any other op or
from the network input.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch

from .integer_reference import (GraphConstants, IntegerSubLayer, integer_sub_layers, node_attributes, onnx_values,
                                power_of_two_exponent, requantize)
from .qdq_onnx_tags import node_tags


class _NotInteger(Exception):
    """A path with no integer form (another op, the network input)."""


@dataclass(frozen=True)
class ScaledInteger:
    """A tensor of the QDQ graph as integers: ``values[:, c] * 2^exponent[c]`` (channels: dimension 1).

    ``exact[c]`` is False where channel ``c`` has no such form (its scale is not a power of two)."""

    values: torch.Tensor
    exponent: torch.Tensor
    exact: torch.Tensor

    def channel_view(self, per_channel: torch.Tensor) -> torch.Tensor:
        """``per_channel`` ``[C]`` shaped to broadcast over :attr:`values`."""
        return per_channel.view((1, -1) + (1,) * (self.values.dim() - 2))

    def select(self, channels: torch.Tensor) -> "ScaledInteger":
        """The channels ``channels`` (indices, in that order)."""
        return ScaledInteger(self.values.index_select(1, channels), self.exponent[channels], self.exact[channels])


def accumulator_values(layer: IntegerSubLayer, codes: torch.Tensor) -> ScaledInteger:
    """A sub-layer's output from its input ``codes``: its accumulators at their scale's exponent."""
    mantissa, exponent = torch.frexp(layer.accumulator_scale)
    return ScaledInteger(layer.accumulate(codes).to(torch.int64), (exponent - 1).to(torch.int64), mantissa == 0.5)


def _relu(x: ScaledInteger) -> ScaledInteger:
    return ScaledInteger(x.values.clamp(min=0), x.exponent, x.exact)


def _gather(x: ScaledInteger, indices: np.ndarray, axis: int) -> ScaledInteger:
    if axis != 1 or indices.ndim != 1:
        raise _NotInteger
    return x.select(torch.from_numpy(indices.astype(np.int64)))


def _concat(parts: list[ScaledInteger], axis: int) -> ScaledInteger:
    if axis != 1:
        raise _NotInteger
    return ScaledInteger(torch.cat([p.values for p in parts], 1), torch.cat([p.exponent for p in parts]),
                         torch.cat([p.exact for p in parts]))


def _add(a: ScaledInteger, b: ScaledInteger) -> ScaledInteger:
    exponent = torch.minimum(a.exponent, b.exponent)
    values = (a.values << a.channel_view(a.exponent - exponent)) + (b.values << b.channel_view(b.exponent - exponent))
    return ScaledInteger(values, exponent, a.exact & b.exact)


def _global_average(x: ScaledInteger) -> ScaledInteger:
    positions = math.prod(x.values.shape[2:])
    shift = power_of_two_exponent(positions)
    exact = x.exact if shift is not None else torch.zeros_like(x.exact)
    return ScaledInteger(x.values.sum(dim=tuple(range(2, x.values.dim())), keepdim=True),
                         x.exponent - (shift or 0), exact)


def _flatten(x: ScaledInteger, axis: int) -> ScaledInteger:
    if axis != 1 or math.prod(x.values.shape[2:]) != 1:
        raise _NotInteger
    return ScaledInteger(x.values.flatten(1), x.exponent, x.exact)


class _IntegerGraph:
    """The QDQ graph's tensors in integers, evaluated backward from a tensor and remembered."""

    def __init__(self, constants: GraphConstants, layers: list[IntegerSubLayer],
                 values: dict[str, np.ndarray]) -> None:
        self.constants = constants
        self.sub_layers = {layer.output_node: layer for layer in layers}
        self.values = values
        self.known: dict[str, ScaledInteger | None] = {}
        self.operations = self._operations()

    def evaluate(self, tensor: str) -> ScaledInteger | None:
        """``tensor`` in integers, or None where it has no integer form."""
        if tensor not in self.known:
            try:
                self.known[tensor] = self._compute(tensor)
            except _NotInteger:
                self.known[tensor] = None
        return self.known[tensor]

    def _input(self, tensor: str) -> ScaledInteger:
        value = self.evaluate(tensor)
        if value is None:
            raise _NotInteger
        return value

    def _compute(self, tensor: str) -> ScaledInteger:
        if tensor in self.sub_layers:
            layer = self.sub_layers[tensor]
            return accumulator_values(layer, torch.from_numpy(np.asarray(self.values[layer.input_node])))
        node = self.constants.nodes.get(tensor)
        operation = None if node is None else self.operations.get(node.op_type)
        if operation is None:
            raise _NotInteger
        return operation(node)

    def _operations(self) -> dict[str, Callable[[Any], ScaledInteger]]:
        """Per op type, its integer form (the module docstring's list)."""
        def axis(node: Any, default: int) -> int:
            return int(node_attributes(node).get("axis", default))

        return {
            "Relu": lambda node: _relu(self._input(node.input[0])),
            "Concat": lambda node: _concat([self._input(name) for name in node.input], axis(node, 1)),
            "Gather": lambda node: _gather(self._input(node.input[0]), self.constants[node.input[1]], axis(node, 0)),
            "Add": lambda node: _add(self._input(node.input[0]), self._input(node.input[1])),
            "GlobalAveragePool": lambda node: _global_average(self._input(node.input[0])),
            "Flatten": lambda node: _flatten(self._input(node.input[0]), axis(node, 1)),
        }


def _quantizers(model: Any, constants: GraphConstants) -> list[tuple[Any, str, tuple[float, float] | None]]:
    """Every tagged QuantizeLinear with the tensor it quantizes and the bounds of a Clip in front."""
    found = []
    for node in model.graph.node:
        if node.op_type != "QuantizeLinear" or "unit" not in node_tags(node):
            continue
        source, bounds = node.input[0], None
        clip = constants.nodes.get(source)
        if clip is not None and clip.op_type == "Clip":
            source, bounds = clip.input[0], (float(constants[clip.input[1]]), float(constants[clip.input[2]]))
        found.append((node, source, bounds))
    return found


def _expected_codes(x: ScaledInteger, step_exponent: int, low: int, high: int) -> torch.Tensor:
    """``x`` requantized onto the step ``2 ** step_exponent`` per channel: clip(round_half_even(x / step))."""
    codes = torch.zeros_like(x.values)
    shifts = step_exponent - x.exponent
    for shift in torch.unique(shifts).tolist():
        channels = torch.nonzero(shifts == shift).flatten()
        codes[:, channels] = requantize(x.values[:, channels], int(shift), low, high)
    return codes


@torch.no_grad()
def compare_requantization(model: Any, inputs: torch.Tensor) -> dict[tuple[str, str], dict[str, Any]]:
    """For every sub-layer whose input codes follow from other sub-layers' outputs by an integer path
    (module docstring), requantize in integers and compare with the codes onnxruntime computes.

    Per consuming (layer, unit): ``elements`` compared (the channels with an integer form),
    ``equal`` (the share of equal codes) and ``path`` (the op types between the producing sub-layers
    and the QuantizeLinear, nearest first). Steps that are not powers of two are left out.
    """
    layers, constants = integer_sub_layers(model), GraphConstants(model)
    quantizers = _quantizers(model, constants)
    wanted = sorted({layer.input_node for layer in layers} | {node.output[0] for node, _, _ in quantizers})
    values = onnx_values(model, inputs, wanted)
    graph = _IntegerGraph(constants, layers, values)
    report = {}
    for node, source, bounds in quantizers:
        x, step = graph.evaluate(source), float(constants[node.input[1]])
        step_exponent = power_of_two_exponent(step)
        if x is None or not bool(x.exact.any()) or step_exponent is None:
            continue
        top = 255 if constants[node.input[2]].dtype == np.uint8 else 127
        low, high = (0 if top == 255 else -128, top) if bounds is None else (round(bounds[0] / step),
                                                                               round(bounds[1] / step))
        expected = _expected_codes(x, step_exponent, low, high)[:, x.exact]
        codes = torch.from_numpy(np.asarray(values[node.output[0]]).astype(np.int64))[:, x.exact]
        tags = node_tags(node)
        report[(tags["layer"], tags["unit"])] = {
            "elements": expected.numel(), "equal": float((codes == expected).to(torch.float64).mean()),
            "path": _path(constants, source)}
    return report


def _path(constants: GraphConstants, tensor: str) -> str:
    """The op types from ``tensor`` back to the nearest sub-layer output along each op's first input,
    e.g. ``Relu<Add<Concat``."""
    ops = []
    node = constants.nodes.get(tensor)
    while node is not None and node.op_type not in ("Conv", "Gemm"):
        ops.append(node.op_type)
        node = constants.nodes.get(node.input[0])
    return "<".join(ops)

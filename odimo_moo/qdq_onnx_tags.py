"""The ``odimo.*`` node metadata of a QDQ ONNX graph: tagging a searched layer's nodes, reading it back.

A unit sub-layer's nodes are its weight and bias DequantizeLinear, its Conv/Gemm, and the Clip,
Quantize / DequantizeLinear and channel Gather in front of it; they are found from the initializer
names, which the exporter keeps (``<layer>.branches.<i>.weight_levels``). Each gets the branch's
:meth:`~odimo_moo.qdq_modules.QDQBranch.description` and the name ``<layer>/<unit>/<op>``; the Concat
and the permuting Gather of the layer get ``odimo.layer``.
"""

from __future__ import annotations

import json
import re
from typing import Any, Mapping, Sequence

from .errors import UsageError
from .qdq_modules import METADATA_PREFIX, QDQBranch

_BRANCH_TENSOR = re.compile(r"^(?P<layer>.+)\.branches\.(?P<index>\d+)\.(?P<kind>weight_levels|bias_levels|weight)$")
# Ops that may stand between a unit's input and its Conv/Gemm (the channel Gather is checked by name).
_INPUT_OPS = ("DequantizeLinear", "QuantizeLinear", "Clip")


class _TaggedGraph:
    """An ONNX graph's nodes by the tensors they produce and read, and its node names kept unique."""

    def __init__(self, graph: Any) -> None:
        self.producers = {output: node for node in graph.node for output in node.output}
        self.consumers: dict[str, list[Any]] = {}
        for node in graph.node:
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)
        self.names = {node.name for node in graph.node}

    def tag(self, node: Any, info: Mapping[str, str], prefix: str) -> None:
        """Give an untagged node ``info`` (metadata and doc string) and a unique name under ``prefix``."""
        if node.metadata_props:
            return
        for key, value in info.items():
            node.metadata_props.add(key=key, value=value)
        node.doc_string = json.dumps({key[len(METADATA_PREFIX):]: value for key, value in info.items()})
        name, suffix = f"{prefix}/{node.op_type}", 1
        while name in self.names:
            suffix += 1
            name = f"{prefix}/{node.op_type}_{suffix}"
        self.names.discard(node.name)
        self.names.add(name)
        node.name = name

    def branch_tensor(self, node: Any) -> tuple[re.Match[str], list[Any]] | None:
        """The branch initializer a DequantizeLinear (levels) or a float Conv/Gemm (weight) reads, and
        the Identity nodes between that weight and the Conv/Gemm; None for any other node."""
        if node.op_type == "DequantizeLinear":
            match = _BRANCH_TENSOR.match(node.input[0])
            if match is None or match.group("kind") == "weight":
                return None
            return match, []
        if node.op_type in ("Conv", "Gemm"):
            match, chain = self._float_weight(node.input[1])
            if match is None or match.group("kind") != "weight":
                return None
            return match, chain
        return None

    def _float_weight(self, name: str) -> tuple[re.Match[str] | None, list[Any]]:
        """A float branch's weight reached from ``name`` through Identity nodes, and those nodes."""
        chain = []
        while not _BRANCH_TENSOR.match(name):
            producer = self.producers.get(name)
            if producer is None or producer.op_type != "Identity":
                return None, []
            chain.append(producer)
            name = producer.input[0]
        return _BRANCH_TENSOR.match(name), chain

    def tag_sub_layer(self, weight_node: Any, info: Mapping[str, str], prefix: str, layer: str, index: int) -> None:
        """Tag the Conv/Gemm computing with ``weight_node``'s output, its input chain and the layer's
        Concat and permuting Gather after it."""
        if weight_node.op_type == "DequantizeLinear":
            ops = self.consumers.get(weight_node.output[0], [])
        else:
            ops = [weight_node]
        for op in ops:
            self.tag(op, info, prefix)
            self._tag_input_chain(op, info, prefix, f"{layer}.branches.{index}.select.channels")
            self._tag_layer_outputs(op, layer)

    def _tag_input_chain(self, op: Any, info: Mapping[str, str], prefix: str, select: str) -> None:
        source = self.producers.get(op.input[0])
        while source is not None and (source.op_type in _INPUT_OPS
                                      or (source.op_type == "Gather" and source.input[1] == select)):
            self.tag(source, info, prefix)
            source = self.producers.get(source.input[0])

    def _tag_layer_outputs(self, op: Any, layer: str) -> None:
        layer_info = {METADATA_PREFIX + "layer": layer}
        for concat in self.consumers.get(op.output[0], []):
            if concat.op_type != "Concat":
                continue
            self.tag(concat, layer_info, layer)
            for gather in self.consumers.get(concat.output[0], []):
                if gather.op_type == "Gather" and gather.input[1] == f"{layer}.inverse_permutation":
                    self.tag(gather, layer_info, layer)


def tag_qdq_nodes(model: Any, branches: Mapping[tuple[str, int], QDQBranch], unit_names: Sequence[str]) -> None:
    """Tag and name every node of a searched layer's unit sub-layers in ``model`` (an
    ``onnx.ModelProto``) with that branch's metadata; refuse a model in which a branch is lost."""
    graph = _TaggedGraph(model.graph)
    tagged = set()
    for node in list(model.graph.node):
        found = graph.branch_tensor(node)
        if found is None:
            continue
        match, chain = found
        layer, index = match.group("layer"), int(match.group("index"))
        if (layer, index) not in branches:
            continue
        info = branches[(layer, index)].description(unit_names)
        prefix = f"{layer}/{info[METADATA_PREFIX + 'unit']}"
        for member in [node] + chain:
            graph.tag(member, info, prefix)
        tagged.add((layer, index))
        if match.group("kind") != "bias_levels":
            graph.tag_sub_layer(node, info, prefix, layer, index)
    missing = set(branches) - tagged
    if missing:
        raise UsageError(f"the ONNX export lost the unit sub-layers {sorted(missing)}; this is a bug, please "
                         f"report it")


def node_tags(node: Any) -> dict[str, str]:
    """A node's ``odimo.*`` metadata without the prefix (empty for an untagged node)."""
    return {entry.key[len(METADATA_PREFIX):]: entry.value for entry in node.metadata_props
            if entry.key.startswith(METADATA_PREFIX)}

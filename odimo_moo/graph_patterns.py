"""Patterns in a traced (torch.fx) network that the searchable model and its deployable form need:
whether a layer's input comes out of a ReLU (unsigned activations), a layer's output size, and the
BatchNorm that directly follows a layer (folded into it for deployment)."""

from __future__ import annotations

from typing import Iterator, Mapping

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

_RELU_MODULES = (nn.ReLU, nn.ReLU6)
_RELU_FUNCTIONS = (F.relu, torch.relu, F.relu6)
_SIGN_PRESERVING_MODULES = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.Flatten, nn.Identity,
                            nn.Dropout)
_SIGN_PRESERVING_FUNCTIONS = (torch.flatten, F.adaptive_avg_pool2d, F.avg_pool2d, F.max_pool2d)
_BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d)


def input_is_non_negative(node: fx.Node, modules: Mapping[str, nn.Module]) -> bool:
    """Whether the tensor feeding ``node`` comes out of a ReLU (possibly through pooling/flatten)."""
    source = node.args[0] if node.args else None
    while isinstance(source, fx.Node):
        if source.op == "call_module":
            module = modules[str(source.target)]
            if isinstance(module, _RELU_MODULES):
                return True
            if not isinstance(module, _SIGN_PRESERVING_MODULES):
                return False
        elif source.op == "call_function":
            if source.target in _RELU_FUNCTIONS:
                return True
            if source.target not in _SIGN_PRESERVING_FUNCTIONS:
                return False
        elif source.op == "call_method":
            if source.target in ("relu", "relu_"):
                return True
            if source.target not in ("flatten", "view", "reshape"):
                return False
        else:
            return False
        source = source.args[0] if source.args else None
    return False


def output_size(node: fx.Node) -> tuple[int, int]:
    """``(H, W)`` of a shape-propagated node's output (``(1, 1)`` for a 2-d output)."""
    shape = node.meta["tensor_meta"].shape
    return (int(shape[2]), int(shape[3])) if len(shape) == 4 else (1, 1)


def batchnorms_after(graph_module: fx.GraphModule, layers: set[str]) -> Iterator[tuple[str, fx.Node]]:
    """``(layer name, BatchNorm node)`` for every BatchNorm (with running statistics) that reads the
    output of one of ``layers`` (module names) and nothing else reads: the foldable pairs."""
    modules = dict(graph_module.named_modules())
    for node in list(graph_module.graph.nodes):
        if node.op != "call_module" or not isinstance(modules[str(node.target)], _BATCHNORMS):
            continue
        norm = modules[str(node.target)]
        source = node.args[0] if node.args else None
        if (isinstance(source, fx.Node) and source.op == "call_module" and str(source.target) in layers
                and len(source.users) == 1 and norm.running_mean is not None):
            yield str(source.target), node

"""Deployable forms of an exported network: plain-torch files and an integer (QDQ) ONNX model.

* :func:`save_state_dict` and :func:`save_torch_export` write files that load with plain ``torch``
  (no odimo-moo classes in them): the exported network's ``state_dict`` and a ``torch.export``
  program (``.pt2``) whose module takes that ``state_dict``.
* :func:`qdq_network` turns the exported network's searched layers into QuantizeLinear /
  DequantizeLinear form: each unit's sub-layer reads its input through a Quantize/Dequantize pair
  on the unit's activation grid and its weight (int8 levels, ternary as int8 in ``{-1, 0, +1}``) and
  bias (int32 levels at the input scale times the weight scale) through DequantizeLinear.
  :func:`export_qdq_onnx` writes it as ONNX, every searched node tagged with its layer, unit, bit
  widths and output channels, the model tagged with the SoC, mapping and cost.
* :func:`compare_onnx` runs an ONNX file with onnxruntime against the PyTorch export.

Layers that are not searched are quantized too where the network was trained as deployed (they
export as one-unit splits, :class:`odimo_moo.deploy.FixedQuantizedLayer`); otherwise they and
BatchNorm stay float, as the training computed them.
"""

from __future__ import annotations

import copy
import io
import json
import re
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .alternatives import ChannelSelect
from .checkpoint import atomic_torch_save, atomic_write_bytes
from .errors import UsageError
from .quantizers import FixedActivationQuantizer
from .split_layer import ExportedBranch, ExportedSplit

ONNX_OPSET = 17
# Node metadata_props exist from ONNX IR version 10 on.
NODE_METADATA_IR_VERSION = 10
METADATA_PREFIX = "odimo."
INT32_MAX = 2 ** 31 - 1
_BRANCH_TENSOR = re.compile(r"^(?P<layer>.+)\.branches\.(?P<index>\d+)\.(?P<kind>weight_levels|bias_levels|weight)$")


# ----------------------------------------------------------------------------------- plain torch

def save_state_dict(exported: nn.Module, path: Path) -> None:
    """Write ``exported.state_dict()`` (tensors only: ``torch.load(path, weights_only=True)`` reads it)."""
    atomic_torch_save(path, {name: tensor.detach().cpu() for name, tensor in exported.state_dict().items()})


def torch_export_program(exported: nn.Module, sample: torch.Tensor) -> torch.export.ExportedProgram:
    """``torch.export`` of the exported network with a dynamic batch dimension.

    ``sample`` needs a batch of at least 2 (torch.export specializes a batch of 1).
    """
    if sample.shape[0] < 2:
        raise UsageError(f"torch.export needs a sample batch of at least 2 inputs, got {sample.shape[0]}; "
                         f"pass more inputs")
    exported = exported.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.export.export(exported, (sample,), dynamic_shapes=({0: torch.export.Dim("batch")},),
                                   strict=False)


def save_torch_export(exported: nn.Module, sample: torch.Tensor, path: Path) -> None:
    """Write :func:`torch_export_program` with ``torch.export.save`` (load: ``torch.export.load``)."""
    program = torch_export_program(exported, sample)
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    atomic_write_bytes(path, buffer.getvalue())


# ----------------------------------------------------------------------------------- float ONNX

def _onnx_bytes(module: nn.Module, sample: torch.Tensor) -> bytes:
    """Legacy (TorchScript) ONNX export of ``module``: input ``input``, output ``logits``, dynamic batch."""
    try:
        import onnx  # noqa: F401  (the exporter needs it)
    except ImportError as exc:
        raise UsageError("ONNX export needs the onnx package: pip install 'odimo-moo[onnx]'") from exc
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (sample,), buffer, dynamo=False, opset_version=ONNX_OPSET,
                          input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    return buffer.getvalue()


def export_float_onnx(exported: nn.Module, sample: torch.Tensor, path: Path) -> None:
    """The exported network as float ONNX (activation grids as Clip/Div/Round/Mul, float weights)."""
    atomic_write_bytes(path, _onnx_bytes(exported.eval(), sample))


# ----------------------------------------------------------------------------------- QDQ modules

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
        layer = branch.layer
        self.select: nn.Module | None = None
        if isinstance(layer, nn.Sequential) and len(layer) == 2 and isinstance(layer[0], ChannelSelect):
            self.select = ChannelSelect(layer[0].channels)
            layer = layer[1]
        if not isinstance(layer, (nn.Conv2d, nn.Linear)):
            raise UsageError(f"layer {layer_name}: the integer export handles Conv2d and Linear sub-layers, "
                             f"not {type(layer).__name__}; export it as onnx-float instead")
        if isinstance(layer, nn.Conv2d) and (layer.padding_mode != "zeros" or isinstance(layer.padding, str)):
            raise UsageError(f"layer {layer_name}: the integer export handles zero-padded convolutions with "
                             f"numeric padding only; export it as onnx-float instead")
        weight_format = getattr(branch, "weight_format", "unknown")
        if weight_format == "unknown":
            raise UsageError(f"layer {layer_name}: its exported sub-layers do not record their weight format "
                             f"(an exported.pt written before integer export, or a plugin alternative without "
                             f"export_integer_weight); re-run the search to export it, or use onnx-float")
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
        if isinstance(quantizer, FixedActivationQuantizer):
            self.activation: nn.Module = QDQActivation(quantizer)
            self.activation_bits: int | None = quantizer.bits
        elif isinstance(quantizer, nn.Identity):
            self.activation, self.activation_bits = nn.Identity(), None
        else:
            raise UsageError(f"layer {layer_name}: the integer export does not know the input quantizer "
                             f"{type(quantizer).__name__}; export it as onnx-float instead")
        self.integer = weight_format != "float" and self.activation_bits is not None
        if not self.integer:
            self.register_buffer("weight", weight.clone())
            self.register_buffer("bias", None if bias is None else bias.clone())
            return
        if self.weight_bits > 8:
            raise UsageError(f"layer {layer_name}: the integer export holds weights of at most 8 bits, not "
                             f"{self.weight_bits}; export it as onnx-float instead")
        scale = branch.weight_scale.detach()
        levels = _exact_levels(weight, scale, layer_name)
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


def _exact_levels(weight: torch.Tensor, scale: torch.Tensor, layer_name: str) -> torch.Tensor:
    """``weight / scale`` as integers, refusing a weight that is not on its grid."""
    shape = (-1,) + (1,) * (weight.dim() - 1) if scale.dim() == 1 else ()
    levels = torch.round(weight / scale.view(shape))
    on_grid = torch.equal(levels.to(scale.dtype) * scale.view(shape), weight)
    if not on_grid or levels.numel() and (levels.min() < -128 or levels.max() > 127):
        raise UsageError(f"layer {layer_name}: the exported weight is not integer levels times its recorded "
                         f"scale; re-run the search to export it again")
    return levels


def exported_branches(network: nn.Module) -> Iterator[tuple[str, int, ExportedBranch]]:
    """(searched layer name, branch index, branch) of every unit sub-layer of an exported network."""
    for name, module in network.named_modules():
        if isinstance(module, ExportedSplit):
            for index, branch in enumerate(module.branches):
                yield name, index, branch


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


# ----------------------------------------------------------------------------------- QDQ ONNX

def _tag_nodes(model: Any, branches: Mapping[tuple[str, int], QDQBranch], unit_names: Sequence[str]) -> None:
    """Tag and name every node of a searched layer's unit sub-layers with that branch's metadata.

    A branch's nodes: its weight and bias DequantizeLinear, its Conv/Gemm, and the Clip, Quantize /
    DequantizeLinear and channel Gather in front of it; found from the initializer names (which the
    exporter keeps: ``<layer>.branches.<i>.weight_levels``). The Concat and the permuting Gather of
    the layer get ``odimo.layer``.
    """
    from onnx import StringStringEntryProto

    producers = {output: node for node in model.graph.node for output in node.output}
    consumers: dict[str, list[Any]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    names = {node.name for node in model.graph.node}

    def tag(node: Any, info: Mapping[str, str], prefix: str) -> None:
        present = {entry.key for entry in node.metadata_props}
        if present:
            return
        for key, value in info.items():
            node.metadata_props.append(StringStringEntryProto(key=key, value=value))
        node.doc_string = json.dumps({key[len(METADATA_PREFIX):]: value for key, value in info.items()})
        name, suffix = f"{prefix}/{node.op_type}", 1
        while name in names:
            suffix += 1
            name = f"{prefix}/{node.op_type}_{suffix}"
        names.discard(node.name)
        names.add(name)
        node.name = name

    def float_weight(name: str) -> tuple[re.Match[str] | None, list[Any]]:
        """A float branch's weight reached from ``name`` through Identity nodes, and those nodes."""
        chain = []
        while not _BRANCH_TENSOR.match(name):
            producer = producers.get(name)
            if producer is None or producer.op_type != "Identity":
                return None, []
            chain.append(producer)
            name = producer.input[0]
        return _BRANCH_TENSOR.match(name), chain

    tagged = set()
    for node in list(model.graph.node):
        chain: list[Any] = []
        if node.op_type == "DequantizeLinear":
            match = _BRANCH_TENSOR.match(node.input[0])
            if match is None or match.group("kind") == "weight":
                continue
        elif node.op_type in ("Conv", "Gemm"):
            match, chain = float_weight(node.input[1])
            if match is None or match.group("kind") != "weight":
                continue
        else:
            continue
        layer, index = match.group("layer"), int(match.group("index"))
        if (layer, index) not in branches:
            continue
        info = branches[(layer, index)].description(unit_names)
        prefix = f"{layer}/{info[METADATA_PREFIX + 'unit']}"
        for member in [node] + chain:
            tag(member, info, prefix)
        tagged.add((layer, index))
        if match.group("kind") == "bias_levels":
            continue
        ops = consumers.get(node.output[0], []) if node.op_type == "DequantizeLinear" else [node]
        for op in ops:
            tag(op, info, prefix)
            source = producers.get(op.input[0])
            while source is not None and (
                    source.op_type in ("DequantizeLinear", "QuantizeLinear", "Clip")
                    or (source.op_type == "Gather" and source.input[1] == f"{layer}.branches.{index}.select.channels")):
                tag(source, info, prefix)
                source = producers.get(source.input[0])
            for concat in consumers.get(op.output[0], []):
                if concat.op_type != "Concat":
                    continue
                tag(concat, {METADATA_PREFIX + "layer": layer}, layer)
                for gather in consumers.get(concat.output[0], []):
                    if gather.op_type == "Gather" and gather.input[1] == f"{layer}.inverse_permutation":
                        tag(gather, {METADATA_PREFIX + "layer": layer}, layer)
    missing = set(branches) - tagged
    if missing:
        raise UsageError(f"the ONNX export lost the unit sub-layers {sorted(missing)}; this is a bug, please "
                         f"report it")


def qdq_onnx_model(exported: nn.Module, sample: torch.Tensor, unit_names: Sequence[str],
                   metadata: Mapping[str, Any] | None = None) -> Any:
    """The QDQ ONNX model (an ``onnx.ModelProto``) of ``exported``.

    ``unit_names``: the SoC's unit names in its order (an exported branch knows its unit's index).
    ``metadata``: model-level ``odimo.*`` metadata (values are written as JSON unless strings).
    """
    import onnx

    network = qdq_network(exported)
    model = onnx.load_from_string(_onnx_bytes(network, sample.cpu()))
    _tag_nodes(model, qdq_branches(network), unit_names)
    model.ir_version = max(model.ir_version, NODE_METADATA_IR_VERSION)
    entries = {"format": "qdq"}
    entries.update({key: value if isinstance(value, str) else json.dumps(value, sort_keys=True)
                    for key, value in (metadata or {}).items()})
    for key, value in entries.items():
        model.metadata_props.append(onnx.StringStringEntryProto(key=METADATA_PREFIX + key, value=value))
    onnx.checker.check_model(model)
    return model


def export_qdq_onnx(exported: nn.Module, sample: torch.Tensor, path: Path, unit_names: Sequence[str],
                    metadata: Mapping[str, Any] | None = None) -> None:
    """Write :func:`qdq_onnx_model` to ``path``."""
    atomic_write_bytes(path, qdq_onnx_model(exported, sample, unit_names, metadata).SerializeToString())


def onnx_metadata(path: Path) -> dict[str, str]:
    """The model-level metadata of an ONNX file."""
    import onnx

    return {entry.key: entry.value for entry in onnx.load(str(path), load_external_data=False).metadata_props}


# ----------------------------------------------------------------------------------- checks

def onnx_session(model: Any) -> Any:
    """An onnxruntime CPU session of an ONNX file path, bytes or ``ModelProto``."""
    try:
        import onnxruntime
    except ImportError as exc:
        raise UsageError("checking an ONNX export needs onnxruntime: pip install onnxruntime") from exc
    if isinstance(model, Path):
        model = str(model)
    elif not isinstance(model, (str, bytes)):
        model = model.SerializeToString()
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return onnxruntime.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def node_tags(node: Any) -> dict[str, str]:
    """A node's ``odimo.*`` metadata without the prefix (empty for an untagged node)."""
    return {entry.key[len(METADATA_PREFIX):]: entry.value for entry in node.metadata_props
            if entry.key.startswith(METADATA_PREFIX)}


def quantized_codes(model: Any, inputs: torch.Tensor) -> dict[tuple[str, str], np.ndarray]:
    """The integer input codes of every unit sub-layer of a QDQ ``onnx.ModelProto``, run by
    onnxruntime on ``inputs``: the QuantizeLinear outputs, by (layer, unit)."""
    import onnx

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    names = {}
    for node in probe.graph.node:
        tags = node_tags(node)
        if node.op_type == "QuantizeLinear" and "unit" in tags:
            names[node.output[0]] = (tags["layer"], tags["unit"])
            probe.graph.output.append(onnx.ValueInfoProto(name=node.output[0]))
    session = onnx_session(probe)
    outputs = session.run(list(names), {"input": inputs.cpu().numpy()})
    return {names[name]: np.asarray(value) for name, value in zip(names, outputs)}


def run_onnx(session: Any, inputs: torch.Tensor) -> torch.Tensor:
    """Logits of an onnxruntime session on ``inputs``."""
    return torch.from_numpy(np.asarray(session.run(["logits"], {"input": inputs.cpu().numpy()})[0]))


@torch.no_grad()
def compare_outputs(reference: nn.Module, run: Callable[[torch.Tensor], torch.Tensor],
                    batches: Iterable[torch.Tensor]) -> dict[str, Any]:
    """Run ``reference`` and ``run`` on the same inputs: the images, the share of top-1 predictions
    that agree, and the largest absolute and relative (to the largest logit magnitude) logit difference."""
    reference = reference.cpu().eval()
    images = agree = 0
    largest_difference = largest_logit = 0.0
    for inputs in batches:
        inputs = inputs.cpu()
        expected, logits = reference(inputs), run(inputs)
        images += int(inputs.shape[0])
        agree += int((expected.argmax(1) == logits.argmax(1)).sum())
        largest_difference = max(largest_difference, float((expected - logits).abs().max()))
        largest_logit = max(largest_logit, float(expected.abs().max()))
    if images == 0:
        raise UsageError("no inputs to compare the export on: give a non-empty data set")
    return {"images": images, "prediction_agreement": agree / images,
            "max_abs_logit_difference": largest_difference,
            "max_relative_logit_difference": largest_difference / max(largest_logit, 1e-12)}


def compare_onnx(exported: nn.Module, session: Any, batches: Iterable[torch.Tensor]) -> dict[str, Any]:
    """:func:`compare_outputs` of the PyTorch export and an onnxruntime session."""
    return compare_outputs(exported, lambda inputs: run_onnx(session, inputs), batches)

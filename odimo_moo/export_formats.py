"""Deployable files of an exported network and their checks.

* :func:`save_state_dict` and :func:`save_torch_export` write files that load with plain ``torch``
  (no odimo-moo classes in them): the exported network's ``state_dict`` and a ``torch.export``
  program (``.pt2``) whose module takes that ``state_dict``.
* :func:`export_float_onnx` writes the network as float ONNX.
* :func:`export_qdq_onnx` writes its QDQ form (:func:`odimo_moo.qdq_modules.qdq_network`) as ONNX,
  every searched node tagged with its layer, unit, bit widths and output channels
  (:mod:`odimo_moo.qdq_onnx_tags`), the model tagged with the SoC, mapping and cost.
* :func:`compare_onnx` runs an ONNX file with onnxruntime against the PyTorch export.

Layers that are not searched are quantized too where the network was trained as deployed (they
export as one-unit splits, :class:`odimo_moo.deploy.FixedQuantizedLayer`); otherwise they and
BatchNorm stay float, as the training computed them.
"""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from .checkpoint import atomic_torch_save, atomic_write_bytes
from .errors import UsageError
from .qdq_modules import METADATA_PREFIX, qdq_branches, qdq_network
from .qdq_onnx_tags import node_tags, tag_qdq_nodes

ONNX_OPSET = 17
# Node metadata_props exist from ONNX IR version 10 on.
NODE_METADATA_IR_VERSION = 10


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


# ----------------------------------------------------------------------------------- QDQ ONNX

def qdq_onnx_model(exported: nn.Module, sample: torch.Tensor, unit_names: Sequence[str],
                   metadata: Mapping[str, Any] | None = None) -> Any:
    """The QDQ ONNX model (an ``onnx.ModelProto``) of ``exported``.

    ``unit_names``: the SoC's unit names in its order (an exported branch knows its unit's index).
    ``metadata``: model-level ``odimo.*`` metadata (values are written as JSON unless strings).
    """
    import onnx

    network = qdq_network(exported)
    model = onnx.load_from_string(_onnx_bytes(network, sample.cpu()))
    tag_qdq_nodes(model, qdq_branches(network), unit_names)
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

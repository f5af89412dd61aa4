"""Files written for every trained network: result, mapping, metrics, exported model (PyTorch, ONNX)."""

from __future__ import annotations

import csv
import io
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from .checkpoint import atomic_torch_save, atomic_write_bytes, atomic_write_json
from .errors import RunFailure
from .searchable import ODiMO

EXPORT_TOLERANCE = 1e-4


def mapping_document(model: ODiMO) -> dict[str, Any]:
    """Per split layer, per unit: channel indices, channel count and cycles; plus network totals."""
    costs = model.cost_report()
    layers = {}
    for name, per_unit in model.mapping().items():
        layer_cost = costs["layers"][name]
        layers[name] = {
            "spec": model.split_layer(name).spec.describe(),
            "latency_cycles": layer_cost["latency_cycles"],
            "energy_uj": layer_cost["energy_uj"],
            "units": {unit: {"channels": channels, "count": len(channels),
                             "cycles": layer_cost["unit_cycles"][unit]}
                      for unit, channels in per_unit.items()},
        }
    fixed = [{"name": f.name, "spec": f.spec.describe(), "unit": model.soc.units[f.unit].name}
             for f in model.fixed_layers]
    return {"soc": model.soc.name, "metric": model.metric, "latency_cycles": costs["latency_cycles"],
            "energy_uj": costs["energy_uj"], "searched_latency_cycles": costs["searched_latency_cycles"],
            "searched_energy_uj": costs["searched_energy_uj"], "layers": layers, "fixed_layers": fixed}


def _metrics_csv(history: list[dict[str, Any]]) -> bytes:
    columns: list[str] = []
    for row in history:
        columns += [key for key in row if key not in columns]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    writer.writerows(history)
    return buffer.getvalue().encode()


@torch.no_grad()
def check_export(model: ODiMO, exported: nn.Module, inputs: torch.Tensor) -> float:
    """Largest absolute output difference between the frozen supernet and its export."""
    model.eval()
    exported.eval()
    difference = float((model(inputs) - exported(inputs)).abs().max())
    if difference > EXPORT_TOLERANCE:
        raise RunFailure(f"exported network differs from the supernet by {difference:g} "
                         f"(> {EXPORT_TOLERANCE}); this is a bug, please report it")
    return difference


def export_onnx(exported: nn.Module, sample: torch.Tensor, path: Path) -> bool:
    """Write ONNX when the ``onnx`` package is installed; returns whether it was written."""
    try:
        import onnx  # noqa: F401  (the exporter needs it)
    except ImportError:
        return False
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(exported, (sample,), buffer, dynamo=False, input_names=["input"],
                          output_names=["logits"], dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    atomic_write_bytes(path, buffer.getvalue())
    return True


def write_artifacts(model: ODiMO, workdir: Path, history: list[dict[str, Any]], loader: DataLoader,
                    device: torch.device) -> dict[str, str]:
    """Write mapping.json, metrics.{json,csv}, exported.pt (+ exported.onnx); return their paths."""
    workdir.mkdir(parents=True, exist_ok=True)
    paths = {"mapping": workdir / "mapping.json", "metrics_json": workdir / "metrics.json",
             "metrics_csv": workdir / "metrics.csv", "exported_model": workdir / "exported.pt"}
    atomic_write_json(paths["mapping"], mapping_document(model))
    atomic_write_json(paths["metrics_json"], history)
    atomic_write_bytes(paths["metrics_csv"], _metrics_csv(history))
    exported = model.export().eval()
    inputs, _ = next(iter(loader))
    inputs = inputs.to(device)
    difference = check_export(model, exported, inputs)
    atomic_torch_save(paths["exported_model"], exported.cpu())
    onnx_path = workdir / "exported.onnx"
    if export_onnx(exported, inputs[:1].cpu(), onnx_path):
        paths["exported_onnx"] = onnx_path
    atomic_write_json(workdir / "export_check.json", {"max_abs_difference": difference,
                                                      "tolerance": EXPORT_TOLERANCE,
                                                      "batch": int(inputs.shape[0]),
                                                      "input_shape": list(inputs.shape[1:])})
    return {key: str(value) for key, value in paths.items()}

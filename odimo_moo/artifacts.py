"""Files written for every trained network: result, mapping, metrics, exported model (PyTorch pickle,
plain-torch state_dict and ``torch.export`` program, float ONNX, integer QDQ ONNX)."""

from __future__ import annotations

import copy
import csv
import dataclasses
import io
import warnings
from pathlib import Path
from typing import Any, Collection, Iterable

import torch
from torch import nn
from torch.utils.data import DataLoader

from .checkpoint import atomic_torch_save, atomic_write_bytes, atomic_write_json
from .errors import RunFailure, UsageError
from .export_formats import (compare_onnx, compare_outputs, export_float_onnx, export_qdq_onnx, onnx_session,
                             save_state_dict, save_torch_export)
from .export_table import EXPORT_FORMATS
from .qdq_modules import has_integer_units
from .searchable import ODiMO
from .result_files import channel_split_of, input_shape_of, read_json_file
from .soc import SoC

EXPORT_TOLERANCE = 1e-4
# mapping.json versions: 1 (unversioned): layers with per-unit channels, count and cycles, network
# totals, fixed layers. 2: adds "schema", the SoC's "units" (order, data formats, powers),
# "frequency_hz" and per-unit "energy_uj" of every searched layer.
MAPPING_SCHEMA = 2


def describe_format(data_format: Any) -> dict[str, Any]:
    """A unit's data format as JSON: its class name and fields (``{"type": "IntFormat", "weight_bits": 8, ...}``)."""
    fields = dataclasses.asdict(data_format) if dataclasses.is_dataclass(data_format) else {}
    return {"type": type(data_format).__name__, **fields}


def unit_documents(soc: SoC) -> list[dict[str, Any]]:
    """The SoC's units in its order (an exported sub-layer records its unit by this index)."""
    return [{"index": index, "name": unit.name, "default": unit.name == soc.default_unit,
             "data_format": describe_format(unit.data_format), "active_power_mw": unit.active_power_mw,
             "idle_power_mw": unit.idle_power_mw} for index, unit in enumerate(soc.units)]


def _energy_alone_uj(soc: SoC, unit_cycles: dict[str, float]) -> dict[str, float]:
    """Per unit: the SoC's energy model of the layer with only that unit's cycles (the others idle)."""
    result = {}
    for index, unit in enumerate(soc.units):
        cycles = torch.zeros(len(soc.units), 1, dtype=torch.float64)
        cycles[index, 0] = unit_cycles[unit.name]
        result[unit.name] = float(soc.layer_costs(cycles)["energy"][0])
    return result


def mapping_document(model: ODiMO) -> dict[str, Any]:
    """Per split layer, per unit: channel indices, channel count, cycles and energy; the SoC's units;
    network totals (schema :data:`MAPPING_SCHEMA`).

    A unit's ``energy_uj`` is the SoC's energy model applied to that unit's cycles alone; the layer's
    ``energy_uj`` applies it to all units together and is not their sum where the model is not
    additive (DIANA: both units active draw less than the sum of their powers).
    """
    costs = model.cost_report()
    layers = {}
    for name, per_unit in model.mapping().items():
        layer_cost = costs["layers"][name]
        energy = _energy_alone_uj(model.soc, layer_cost["unit_cycles"])
        layers[name] = {
            "spec": model.split_layer(name).spec.describe(),
            "latency_cycles": layer_cost["latency_cycles"],
            "energy_uj": layer_cost["energy_uj"],
            "units": {unit: {"channels": channels, "count": len(channels),
                             "cycles": layer_cost["unit_cycles"][unit], "energy_uj": energy[unit]}
                      for unit, channels in per_unit.items()},
        }
    fixed = [{"name": f.name, "spec": f.spec.describe(), "unit": model.soc.units[f.unit].name}
             for f in model.fixed_layers]
    return {"schema": MAPPING_SCHEMA, "soc": model.soc.name, "metric": model.metric,
            "frequency_hz": model.soc.frequency_hz, "units": unit_documents(model.soc),
            "latency_cycles": costs["latency_cycles"],
            "energy_uj": costs["energy_uj"], "searched_latency_cycles": costs["searched_latency_cycles"],
            "searched_energy_uj": costs["searched_energy_uj"], "layers": layers, "fixed_layers": fixed}


def mapping_unit_names(mapping: dict[str, Any]) -> list[str]:
    """The SoC's unit names in its order, from a mapping document.

    Schema 1 documents do not list the units: their names come in the order the layers list them
    (the SoC's order for every layer that all units can run).
    """
    if "units" in mapping:
        return [unit["name"] for unit in sorted(mapping["units"], key=lambda unit: unit["index"])]
    names: list[str] = []
    for info in mapping.get("layers", {}).values():
        names += [unit for unit in info["units"] if unit not in names]
    return names


def onnx_metadata_of(mapping: dict[str, Any]) -> dict[str, Any]:
    """Model-level metadata of an integer ONNX export: the SoC, the metric, the cost and the mapping."""
    cost_keys = ("latency_cycles", "energy_uj", "searched_latency_cycles", "searched_energy_uj")
    return {"soc": mapping.get("soc", ""), "metric": mapping.get("metric", ""),
            "cost": {key: mapping[key] for key in cost_keys if key in mapping}, "mapping": mapping}


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


def _installed(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


def export_onnx(exported: nn.Module, sample: torch.Tensor, path: Path) -> bool:
    """Write float ONNX when the ``onnx`` package is installed; returns whether it was written."""
    if not _installed("onnx"):
        return False
    export_float_onnx(exported, sample, path)
    return True


def _export_sample(sample: torch.Tensor) -> torch.Tensor:
    """At least two CPU inputs (torch.export specializes a batch of 1)."""
    sample = sample.detach().cpu()
    return sample[:2] if sample.shape[0] >= 2 else sample[:1].repeat(2, *([1] * (sample.dim() - 1)))


def write_format(exported: nn.Module, fmt: str, sample: torch.Tensor, path: Path,
                 mapping: dict[str, Any]) -> None:
    """Write ``exported`` in format ``fmt`` (a key of :data:`EXPORT_FORMATS`) to ``path``.

    ``mapping``: the run's mapping document (names the units and is the QDQ model's metadata).
    """
    if fmt not in EXPORT_FORMATS:
        raise UsageError(f"unknown export format {fmt!r}; choose one of {', '.join(EXPORT_FORMATS)}")
    needs = EXPORT_FORMATS[fmt].needs
    if needs is not None and not _installed(needs):
        raise UsageError(f"the {fmt} export needs the {needs} package: pip install 'odimo-moo[onnx]'")
    exported = exported.cpu().eval()
    sample = _export_sample(sample)
    if fmt == "state-dict":
        save_state_dict(exported, path)
    elif fmt == "torch-export":
        save_torch_export(exported, sample, path)
    elif fmt == "onnx-float":
        export_float_onnx(exported, sample, path)
    else:
        export_qdq_onnx(exported, sample, path, mapping_unit_names(mapping), onnx_metadata_of(mapping))


@torch.no_grad()
def check_format(exported: nn.Module, fmt: str, path: Path, batches: Iterable[torch.Tensor]) -> dict[str, Any]:
    """Run the file ``path`` of format ``fmt`` (ONNX with onnxruntime, the others with torch) and
    ``exported`` on ``batches``: images, prediction agreement, largest logit difference."""
    if fmt in ("onnx-float", "onnx-qdq"):
        return compare_onnx(exported, onnx_session(path), batches)
    if fmt == "torch-export":
        other = torch.export.load(str(path)).module()
    elif fmt == "state-dict":
        other = copy.deepcopy(exported)
        other.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    else:
        raise UsageError(f"unknown export format {fmt!r}; choose one of {', '.join(EXPORT_FORMATS)}")
    return compare_outputs(exported, other, batches)


def write_exports(exported: nn.Module, sample: torch.Tensor, workdir: Path, mapping: dict[str, Any],
                  check_inputs: torch.Tensor | None = None,
                  formats: Collection[str] = tuple(EXPORT_FORMATS)) -> tuple[dict[str, Path], dict[str, Any]]:
    """Write exported.pt (the pickle) and ``formats`` (:data:`EXPORT_FORMATS`; the ONNX ones only
    when ``onnx`` is installed, onnx-qdq only for a network with integer units) into ``workdir``;
    with ``check_inputs`` and onnxruntime installed, compare the QDQ model run by onnxruntime with
    the network on them.

    Returns the paths written, by artifact key, and the checks for export_check.json (keyed
    ``onnx_qdq`` etc.). A format that cannot be written is recorded there as skipped, with the
    reason, and warned about: a trained run must not fail on one of its deployable copies.
    """
    exported = exported.cpu().eval()
    paths = {"exported_model": workdir / "exported.pt"}
    atomic_torch_save(paths["exported_model"], exported)
    checks: dict[str, Any] = {}
    for fmt in formats:
        spec = EXPORT_FORMATS[fmt]
        if spec.needs is not None and not _installed(spec.needs):
            continue
        if fmt == "onnx-qdq" and not has_integer_units(exported):
            continue
        key = fmt.replace("-", "_")
        try:
            write_format(exported, fmt, sample, workdir / spec.file, mapping)
        except Exception as exc:  # noqa: BLE001 -- any exporter failure: keep the run, say why
            message = str(exc).strip().splitlines()
            reason = f"{type(exc).__name__}: {message[0] if message else ''}"
            checks[key] = {"skipped": reason}
            warnings.warn(f"{workdir / spec.file} not written ({reason})", RuntimeWarning, stacklevel=2)
            continue
        paths[spec.key] = workdir / spec.file
        if fmt == "onnx-qdq" and check_inputs is not None and _installed("onnxruntime"):
            checks[key] = check_format(exported, fmt, paths[spec.key], [check_inputs.cpu()])
    return paths, checks


def write_artifacts(model: ODiMO, workdir: Path, history: list[dict[str, Any]], loader: DataLoader,
                    device: torch.device) -> dict[str, str]:
    """Write mapping.json, metrics.{json,csv}, the exported network (:func:`write_exports`) and
    export_check.json; return the paths written."""
    workdir.mkdir(parents=True, exist_ok=True)
    paths = {"mapping": workdir / "mapping.json", "metrics_json": workdir / "metrics.json",
             "metrics_csv": workdir / "metrics.csv"}
    mapping = mapping_document(model)
    atomic_write_json(paths["mapping"], mapping)
    atomic_write_json(paths["metrics_json"], history)
    atomic_write_bytes(paths["metrics_csv"], _metrics_csv(history))
    exported = model.export().eval()
    inputs, _ = next(iter(loader))
    inputs = inputs.to(device)
    difference = check_export(model, exported, inputs)
    written, qdq_check = write_exports(exported, inputs, workdir, mapping, inputs.cpu())
    paths.update(written)
    atomic_write_json(workdir / "export_check.json", {"max_abs_difference": difference,
                                                      "tolerance": EXPORT_TOLERANCE,
                                                      "batch": int(inputs.shape[0]),
                                                      "input_shape": list(inputs.shape[1:]), **qdq_check})
    return {key: str(value) for key, value in paths.items()}


def read_result_folder(folder: Path) -> tuple[nn.Module, dict[str, Any], list[int]]:
    """The exported network, the mapping document and the input shape (no batch) of a result folder,
    each file checked (:mod:`.result_files`) before anything is written from them."""
    model_path, mapping_path, check_path = folder / "exported.pt", folder / "mapping.json", folder / "export_check.json"
    if not model_path.is_file() or not mapping_path.is_file():
        raise UsageError(f"{folder} is not a result folder: expected exported.pt and mapping.json in it")
    try:
        exported = torch.load(model_path, map_location="cpu", weights_only=False).eval()
    except Exception as exc:
        raise RunFailure(f"cannot read {folder}: {type(exc).__name__}: {exc}") from exc
    mapping = read_json_file(mapping_path)
    channel_split_of(mapping, mapping_path)
    if not check_path.is_file():
        raise UsageError(f"{check_path} is missing; re-run the search to regenerate it")
    return exported, mapping, input_shape_of(read_json_file(check_path), check_path)


def dataset_batches(dataset: str, input_shape: list[int], data_root: str | Path | None = None,
                    limit: int | None = None, batch_size: int = 256) -> list[torch.Tensor]:
    """Test-split inputs of ``dataset`` shaped like ``input_shape`` (at most ``limit``), in batches."""
    from .data import load_dataset

    bundle = load_dataset(dataset, data_root, limit=limit)
    if list(bundle.test[0][0].shape) != list(input_shape):
        try:
            bundle = load_dataset(dataset, data_root, limit=limit, image_size=input_shape[-1])
        except UsageError:
            bundle = None
        if bundle is None or list(bundle.test[0][0].shape) != list(input_shape):
            raise UsageError(f"{dataset} images do not have the network's input shape {input_shape}; "
                             f"check with the data set the network was trained on")
    loader = DataLoader(bundle.test, batch_size, shuffle=False)
    return [inputs for inputs, _ in loader]


def export_result_folder(folder: Path, fmt: str, target: Path | None = None, check_dataset: str | None = None,
                         data_root: str | Path | None = None, check_limit: int | None = None) -> dict[str, Any]:
    """Write a result folder's exported network in format ``fmt`` (default file: the run's own name for
    it, in the folder) and, with ``check_dataset``, compare it with the network on that data set's
    test split. Returns the format, the file, the channel split and the comparison (``check``, when
    asked for)."""
    exported, mapping, shape = read_result_folder(folder)
    if fmt not in EXPORT_FORMATS:
        raise UsageError(f"unknown export format {fmt!r}; choose one of {', '.join(EXPORT_FORMATS)}")
    path = target if target is not None else folder / EXPORT_FORMATS[fmt].file
    if fmt == "torch-export" and path.suffix != ".pt2":
        raise UsageError(f"a torch.export program is read back only from a file ending in .pt2, not {path}; "
                         f"name the output file *.pt2")
    write_format(exported, fmt, torch.zeros([2] + shape), path, mapping)
    result: dict[str, Any] = {"format": fmt, "path": str(path),
                              "channel_split": channel_split_of(mapping, folder / "mapping.json")}
    if check_dataset is not None:
        batches = dataset_batches(check_dataset, shape, data_root, check_limit)
        result["check"] = check_format(exported, fmt, path, batches)
    return result

"""Shared helpers of the benchmarks: machine facts, models, one search-phase training step, timing.

Not a test and never run by CI. Every benchmark is one command (``python benchmarks/<name>.py``)
writing ``benchmarks/results/<name>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

RESULTS = Path(__file__).resolve().parent / "results"

#: The model of each SoC in the per-SoC benchmarks (cost_share, memory; step_time's first two cases),
#: at 3x32x32 inputs and 10 classes.
CASES = {"diana": "resnet20", "darkside": "mobilenetv1_darkside_tiny"}
INPUT_SHAPE = (3, 32, 32)
NUM_CLASSES = 10

#: The benchmarks' own YAML SoC: example_npu's three units plus a fourth (4-bit weights), "four_unit".
FOUR_UNIT_SOC = Path(__file__).resolve().parent / "four_unit_soc.yaml"


@dataclass(frozen=True)
class Case:
    """One (SoC, model) pair of a benchmark, named ``soc/model``."""

    soc: str
    model: str

    @property
    def name(self) -> str:
        return f"{self.soc}/{self.model}"


#: The step-time cases: the per-SoC ones of CASES, then a smaller model (ResNet-8 on DIANA) and SoCs
#: with 3 and 4 units (up to 3 and 4 units searched per layer).
STEP_CASES = tuple(Case(soc, model) for soc, model in CASES.items()) + (
    Case("diana", "resnet8"), Case("example_npu", "resnet20"), Case("four_unit", "resnet20"))
#: Cases timed only when asked for (``--cases``): the full-width Darkside network (a step ~10x the tiny one's).
EXTRA_STEP_CASES = (Case("darkside", "mobilenetv1_darkside"),)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {
        "cpu_model": cpu_model(),
        "cpu_cores": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": str(device),
        "load_average_at_start": list(os.getloadavg()),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def base_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads (default 1: on a shared machine several threads wait "
                             "on each other at every op, which makes timings meaningless)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--output", type=Path, default=None, help="where to write the JSON result")
    return parser


def add_step_options(parser: argparse.ArgumentParser, socs: bool = True) -> None:
    """The options every benchmark of a search step shares: batch size, lambda, SoCs (``socs=False``:
    no ``--socs``, for a benchmark that picks its cases otherwise)."""
    from odimo_moo.recipe import Recipe

    default_batch = Recipe().batch_size
    parser.add_argument("--batch-size", type=int, default=default_batch,
                        help=f"default {default_batch}: the recipe's batch size, as a search runs")
    parser.add_argument("--lambda", dest="lambda_", metavar="LAMBDA", type=float, default=1e-6,
                        help="lambda (any value > 0 times the same)")
    if socs:
        parser.add_argument("--socs", nargs="*", default=list(CASES), choices=list(CASES))


def setup(args: argparse.Namespace) -> torch.device:
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda asked for, but CUDA is not available")
    return device


def write_result(name: str, payload: Mapping[str, Any], output: Path | None = None) -> Path:
    path = output or RESULTS / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    data = dict(payload)
    data.setdefault("machine", {})["load_average_at_end"] = list(os.getloadavg())
    path.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    print(f"wrote {path}")
    return path


# ----------------------------------------------------------------------------- models
def registry():
    """The installed plugins (SoCs diana, darkside, example_npu, ...) and the benchmarks' FOUR_UNIT_SOC."""
    from odimo_moo.registry import PluginRegistry

    return PluginRegistry.load((str(FOUR_UNIT_SOC),))


def soc_and_model(soc_name: str, model_name: str, seed: int = 0):
    """The SoC object and a freshly initialised (seeded) plain model."""
    from odimo_moo.models import build_model
    from odimo_moo.registry import pick

    plugins = registry()
    soc = pick(plugins.socs(), soc_name, "SoC")
    torch.manual_seed(seed)
    plain = build_model(plugins.models(), model_name, NUM_CLASSES, INPUT_SHAPE[0], INPUT_SHAPE[1:])
    return soc, plain


def searchable(plain: nn.Module, soc, **options: Any) -> nn.Module:
    """The searchable model as the ``odimo`` strategy builds it (default recipe: balanced thermometric)."""
    from odimo_moo.recipe import Recipe
    from odimo_moo.searchable import ODiMO

    recipe = Recipe()
    kwargs: dict[str, Any] = {"parametrization": recipe.parametrization, "init": recipe.init,
                              "quantize": recipe.quantize}
    kwargs.update(options)
    return ODiMO(plain, soc, INPUT_SHAPE, **kwargs)


class QuantizedLayer(nn.Module):
    """A Conv2d/Linear with fake-quantized input and weights, through the searchable layers' fused op."""

    def __init__(self, layer: nn.Module, weight_quantizer: nn.Module, input_quantizer: nn.Module) -> None:
        super().__init__()
        self.layer, self.weight_quantizer, self.input_quantizer = layer, weight_quantizer, input_quantizer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from odimo_moo.alternatives import run_dense_quantized

        return run_dense_quantized(self.layer, x, self.input_quantizer, self.weight_quantizer(self.layer.weight),
                                   self.layer.bias)


def quantized_plain(plain: nn.Module, searchable_model: nn.Module, soc) -> nn.Module:
    """``plain`` trained quantization-aware on one unit: every layer the searchable model splits gets the
    SoC default unit's weight and input formats (same quantizers, same fused op), and nothing is split."""
    import copy

    model = copy.deepcopy(plain)
    data_format = next(u for u in soc.units if u.name == soc.default_unit).data_format
    for name, split in searchable_model.split_layers():
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        layer = parent.get_submodule(child)
        setattr(parent, child, QuantizedLayer(layer, data_format.weight_quantizer(split.spec.out_channels),
                                              data_format.activation_quantizer(split.input_quantizers[0].signed)))
    return model


def batch(batch_size: int, device: torch.device, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn((batch_size,) + INPUT_SHAPE, generator=generator)
    y = torch.randint(0, NUM_CLASSES, (batch_size,), generator=generator)
    return x.to(device), y.to(device)


def training_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, lambda_: float) -> Callable[[], None]:
    """One search-phase step as ``odimo_moo.training.run_epoch`` does it, with the ``odimo`` strategy's
    optimizers (weights: the recipe's optimizer; assignment: Adam without weight decay), both built by
    ``odimo_moo.training`` as the strategy builds them.

    For a model that is not an ``ODiMO`` (the plain baseline) only the task loss is trained.
    """
    from odimo_moo.recipe import Recipe
    from odimo_moo.searchable import ODiMO
    from odimo_moo.training import assignment_optimizer, weights_optimizer

    recipe = Recipe()
    model.train()
    optimizers = [weights_optimizer(model, recipe)]
    if isinstance(model, ODiMO):
        optimizers.append(assignment_optimizer(model, recipe))
    searching = isinstance(model, ODiMO) and lambda_ > 0

    def step() -> None:
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        objective = loss + lambda_ * model.cost.to(loss.dtype) if searching else loss
        for optimizer in optimizers:
            optimizer.zero_grad(set_to_none=True)
        objective.backward()
        for optimizer in optimizers:
            optimizer.step()
        float(objective.detach())  # run_epoch reads the loss every step (a device sync on CUDA)

    return step


# ----------------------------------------------------------------------------- timing
def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def with_kernels(step: Callable[[], None], enabled: bool) -> Callable[[], None]:
    """``step`` with the compiled kernels (:mod:`odimo_moo.native_kernels`) switched on or off for its
    duration."""
    from odimo_moo import native_kernels

    def run() -> None:
        native_kernels.set_enabled(enabled)
        try:
            step()
        finally:
            native_kernels.set_enabled(None)

    return run


@dataclass
class Timing:
    wall: list[float]
    cpu: list[float]

    def summary(self) -> dict[str, float]:
        return {"wall_median_s": statistics.median(self.wall), "wall_min_s": min(self.wall),
                "cpu_median_s": statistics.median(self.cpu), "cpu_min_s": min(self.cpu),
                "repetitions": len(self.wall)}


def interleaved(functions: Mapping[str, Callable[[], None]], repetitions: int, device: torch.device,
                warmup: int = 2, calls: int = 1) -> dict[str, Timing]:
    """Time each function ``repetitions`` times, interleaved A/B/C/A/B/C..., the order rotated every round
    so that no variant always follows the same one. Each sample is ``calls`` consecutive calls (divided).

    Records wall time and process CPU time: on a shared machine the CPU time of a single-threaded
    process is far less disturbed by other processes than its wall time.
    """
    names = list(functions)
    for name in names:
        for _ in range(warmup):
            functions[name]()
    synchronize(device)
    timings = {name: Timing([], []) for name in names}
    for round_index in range(repetitions):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            synchronize(device)
            wall, cpu = time.perf_counter(), time.process_time()
            for _ in range(calls):
                functions[name]()
            synchronize(device)
            timings[name].wall.append((time.perf_counter() - wall) / calls)
            timings[name].cpu.append((time.process_time() - cpu) / calls)
    return timings


def ratios(timings: Mapping[str, Timing], baseline: str) -> dict[str, dict[str, float]]:
    """Per variant, its time over the baseline's: ratio of medians, and median of the per-round ratios
    (each round's samples were taken back to back, so slow phases of the machine cancel)."""
    result = {}
    base = timings[baseline]
    for name, timing in timings.items():
        if name == baseline:
            continue
        result[name] = {
            "cpu_ratio_of_medians": statistics.median(timing.cpu) / statistics.median(base.cpu),
            "cpu_median_of_paired_ratios": statistics.median(a / b for a, b in zip(timing.cpu, base.cpu)),
            "wall_ratio_of_medians": statistics.median(timing.wall) / statistics.median(base.wall),
            "wall_median_of_paired_ratios": statistics.median(a / b for a, b in zip(timing.wall, base.wall)),
            "cpu_ratio_of_minima": min(timing.cpu) / min(base.cpu),
        }
    return result


def headline(values: Sequence[float]) -> str:
    return " ".join(f"{v:.3f}" for v in values)


def time_once(argv: list[str]) -> tuple[float, float]:
    """Wall and CPU seconds (user + system of the child) of one run of ``argv``; it must exit 0."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    result = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode != 0:
        sys.exit(f"{' '.join(argv)} exited {result.returncode}: {result.stderr.strip()}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)

"""Peak training memory of the searchable model vs the same plain model, per SoC.

Three measures of one search-phase training step (after two warm-up steps, so that gradients and
optimizer states exist, as they do during training):

* ``torch_peak_bytes``: the peak of live bytes allocated by torch during the step (the profiler's
  memory events replayed; on CUDA, ``torch.cuda.max_memory_allocated``), plus what stays allocated
  between steps (parameters, buffers, gradients, optimizer states): the training memory proper.
* ``saved_for_backward_bytes``: the distinct storages autograd saves for the backward (activations).
* ``rss_high_water_delta_bytes``: the process's resident-set high-water mark (``getrusage``) after
  the steps minus before them, measured in a fresh subprocess per model (CPU only; includes the
  allocator's slack, so it is the coarsest of the three).

    python benchmarks/memory.py               # -> benchmarks/results/memory.json
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

import _common as common

VARIANTS = ("plain", "searchable", "searchable_float", "branches")


def build(variant: str, soc_name: str, device: torch.device):
    soc, plain = common.soc_and_model(soc_name, common.CASES[soc_name])
    options = {"searchable": {}, "searchable_float": {"quantize": False}, "branches": {"fold": False}}
    model = plain if variant == "plain" else common.searchable(plain, soc, **options[variant])
    return model.to(device)


def resident_bytes(model: torch.nn.Module) -> int:
    """Bytes that stay allocated between steps: parameters, buffers, gradients, optimizer states."""
    seen: set[int] = set()
    total = 0
    tensors = list(model.parameters()) + list(model.buffers()) + [p.grad for p in model.parameters()
                                                                  if p.grad is not None]
    for tensor in tensors:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in seen:
            seen.add(storage.data_ptr())
            total += storage.nbytes()
    return total


def optimizer_bytes(step) -> int:
    total = 0
    for cell in step.__closure__ or ():
        value = cell.cell_contents
        if isinstance(value, list) and value and isinstance(value[0], torch.optim.Optimizer):
            for optimizer in value:
                for state in optimizer.state.values():
                    total += sum(t.untyped_storage().nbytes() for t in state.values() if torch.is_tensor(t))
    return total


def peak_during(step, device: torch.device) -> int:
    """Peak increase of torch-allocated bytes during one call of ``step``."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        step()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - base
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    events = [e for e in prof.profiler.kineto_results.events()
              if e.name() == "[memory]" and e.device_type() == torch.autograd.DeviceType.CPU]
    live = peak = 0
    for event in sorted(events, key=lambda e: e.start_ns()):
        live += event.nbytes()  # allocations positive, frees negative
        peak = max(peak, live)
    return peak


def saved_bytes(model, x, y, lambda_: float) -> int:
    """Distinct storages saved for backward by one forward (+ cost) of ``model``."""
    import torch.nn.functional as F
    from odimo_moo.searchable import ODiMO

    storages: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = F.cross_entropy(model(x), y)
        if isinstance(model, ODiMO) and lambda_ > 0:
            loss = loss + lambda_ * model.cost.to(loss.dtype)
    del loss
    return sum(storages.values())


def measure(variant: str, soc_name: str, device: torch.device, batch_size: int, lambda_: float) -> dict:
    model = build(variant, soc_name, device)
    x, y = common.batch(batch_size, device)
    step = common.training_step(model, x, y, lambda_)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    for _ in range(2):
        step()
    peak = peak_during(step, device)
    rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    resident = resident_bytes(model) + optimizer_bytes(step)
    return {"torch_peak_bytes": resident + peak, "resident_bytes": resident, "step_peak_increase_bytes": peak,
            "saved_for_backward_bytes": saved_bytes(model, x, y, lambda_),
            "rss_high_water_delta_bytes": rss_after - rss_before}


def main() -> None:
    parser = common.base_parser(__doc__.splitlines()[0])
    common.add_step_options(parser)
    parser.add_argument("--parallel", type=int, default=2, help="measuring processes run at the same time")
    parser.add_argument("--child", nargs=2, metavar=("VARIANT", "SOC"), help=argparse_hidden())
    args = parser.parse_args()
    device = common.setup(args)
    if args.child:
        print(json.dumps(measure(args.child[0], args.child[1], device, args.batch_size, args.lambda_)))
        return
    result = {"benchmark": "memory", "machine": common.machine_info(device),
              "settings": {"batch_size": args.batch_size, "input_shape": list(common.INPUT_SHAPE),
                           "fresh_process_per_model": True}, "socs": {}}
    jobs = [(soc_name, variant) for soc_name in args.socs for variant in VARIANTS]

    def run_child(job: tuple[str, str]) -> dict:
        soc_name, variant = job
        command = [sys.executable, str(Path(__file__).resolve()), "--child", variant, soc_name,
                   "--device", args.device, "--threads", str(args.threads),
                   "--batch-size", str(args.batch_size), "--lambda", str(args.lambda_)]
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        return json.loads(output.strip().splitlines()[-1])

    # One fresh process per (SoC, model variant): RSS high-water marks are per process. Two at a time.
    with ThreadPoolExecutor(max_workers=args.parallel) as pool:
        measured = dict(zip(jobs, pool.map(run_child, jobs)))
    for soc_name in args.socs:
        entry: dict = {"model": common.CASES[soc_name]}
        for variant in VARIANTS:
            entry[variant] = measured[(soc_name, variant)]
        plain = entry["plain"]
        entry["ratio_vs_plain"] = {
            variant: {key: entry[variant][key] / plain[key] for key in
                      ("torch_peak_bytes", "saved_for_backward_bytes", "rss_high_water_delta_bytes")
                      if plain[key] > 0}
            for variant in VARIANTS[1:]}
        result["socs"][soc_name] = entry
        r = entry["ratio_vs_plain"]["searchable"]
        print(f"{soc_name} {entry['model']}: searchable/plain peak {r['torch_peak_bytes']:.3f}, "
              f"saved activations {r['saved_for_backward_bytes']:.3f}, RSS {r.get('rss_high_water_delta_bytes', 0):.3f} "
              f"(branches: peak {entry['ratio_vs_plain']['branches']['torch_peak_bytes']:.3f})")
    common.write_result("memory", result, args.output)


def argparse_hidden() -> str:
    import argparse

    return argparse.SUPPRESS


if __name__ == "__main__":
    main()

"""Search-phase training-step time of the searchable model vs the same plain model, per SoC.

One process, every variant timed interleaved (A/B/C/D, A/B/C/D, ...), medians over the rounds:

* ``plain``: the float model, task loss only (the baseline);
* ``searchable``: ``ODiMO(...)`` as the ``odimo`` strategy builds it (quantized, folded forward:
  ONE conv over the per-channel mixture of the units' weights), task loss + lambda * cost;
* ``searchable_float``: the same with ``quantize=False``: what the split-layer machinery alone costs;
* ``branches``: the reference-style path, ``fold=False``: every unit's branch runs fully, then the
  outputs are mixed per channel;
* ``plain_quantized``: the plain model trained quantization-aware on the SoC's default unit alone
  (its weight and input quantizers on every searched layer, same fused op, nothing split):
  ``searchable / plain_quantized`` is what searching adds over quantization-aware training.

Every variant but ``plain`` runs twice, side by side in the same rounds: with the compiled kernels
of :mod:`odimo_moo.native_kernels` (``<variant>_native``, the default where a C compiler works) and
with the eager torch ops (``<variant>``, ``ODIMO_NATIVE_KERNELS=0``). ``plain`` uses neither.

    python benchmarks/step_time.py            # -> benchmarks/results/step_time.json
"""

from __future__ import annotations

from typing import Any, Callable

import _common as common
from odimo_moo import native_kernels

#: The variants whose step is timed with the compiled kernels too.
KERNEL_VARIANTS = ("searchable", "searchable_float", "branches", "plain_quantized")


def with_kernels(step: Callable[[], None], enabled: bool) -> Callable[[], None]:
    """``step`` with the compiled kernels switched on or off for its duration."""

    def run() -> None:
        native_kernels.set_enabled(enabled)
        try:
            step()
        finally:
            native_kernels.set_enabled(None)

    return run


def soc_entry(soc_name: str, args: Any, device: Any, native: bool) -> dict[str, Any]:
    """Time every variant of one SoC's case; its entry of the result."""
    model_name = common.CASES[soc_name]
    soc, plain = common.soc_and_model(soc_name, model_name)
    models = {
        "plain": plain,
        "searchable": common.searchable(plain, soc),
        "searchable_float": common.searchable(plain, soc, quantize=False),
        "branches": common.searchable(plain, soc, fold=False),
    }
    models["plain_quantized"] = common.quantized_plain(plain, models["searchable"], soc)
    x, y = common.batch(args.batch_size, device)
    steps = {}
    for name, model in models.items():
        step = common.training_step(model.to(device), x, y, args.lambda_)
        steps[name] = with_kernels(step, False)
        if native and name in KERNEL_VARIANTS:
            steps[f"{name}_native"] = with_kernels(step, True)
    timings = common.interleaved(steps, args.repetitions, device)
    entry: dict[str, Any] = {
        "model": model_name,
        "split_layers": len(models["searchable"].split_names),
        "folded_layers": sum(layer.fold for _, layer in models["searchable"].split_layers()),
        "times": {name: t.summary() for name, t in timings.items()},
        "ratio_vs_plain": common.ratios(timings, "plain"),
    }
    for suffix in ("", "_native") if native else ("",):
        folded, branches = timings["searchable" + suffix], timings["branches" + suffix]
        entry["branches_over_searchable_cpu" + suffix] = common.ratios({"s": folded, "b": branches}, "s")["b"]
        entry["searchable_over_plain_quantized" + suffix] = common.ratios(
            {"q": timings["plain_quantized" + suffix], "s": folded}, "q")["s"]
    if native:
        entry["native_over_eager"] = {name: common.ratios({"e": timings[name], "n": timings[f"{name}_native"]},
                                                          "e")["n"] for name in KERNEL_VARIANTS}
    return entry


def summary_line(soc_name: str, entry: dict[str, Any], suffix: str) -> str:
    def cpu(ratio: dict[str, float]) -> str:
        return f"{ratio['cpu_median_of_paired_ratios']:.3f}"

    r = entry["ratio_vs_plain"]
    return (f"{soc_name} {entry['model']} ({suffix.strip('_') or 'eager'}): searchable/plain cpu "
            f"{cpu(r['searchable' + suffix])} wall {r['searchable' + suffix]['wall_median_of_paired_ratios']:.3f}; "
            f"float {cpu(r['searchable_float' + suffix])}; branches {cpu(r['branches' + suffix])}; "
            f"quantization-aware plain {cpu(r['plain_quantized' + suffix])} (searchable / it "
            f"{cpu(entry['searchable_over_plain_quantized' + suffix])})")


def main() -> None:
    parser = common.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--repetitions", type=int, default=16)
    common.add_step_options(parser)
    args = parser.parse_args()
    device = common.setup(args)
    native = device.type == "cpu" and native_kernels.library() is not None
    result = {"benchmark": "step_time", "machine": common.machine_info(device),
              "settings": {"batch_size": args.batch_size, "input_shape": list(common.INPUT_SHAPE),
                           "repetitions": args.repetitions, "lambda": args.lambda_,
                           "step": "forward + task loss + lambda * model.cost + backward + both optimizers' "
                                   "steps (odimo strategy recipe defaults)",
                           "native_kernels": native_kernels.load_error() or native},
              "socs": {}}
    for soc_name in args.socs:
        entry = soc_entry(soc_name, args, device, native)
        result["socs"][soc_name] = entry
        for suffix in ("", "_native") if native else ("",):
            print(summary_line(soc_name, entry, suffix))
    common.write_result("step_time", result, args.output)


if __name__ == "__main__":
    main()

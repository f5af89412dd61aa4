"""Search-phase training-step time of the searchable model vs the same plain model, per (SoC, model) case.

The cases (``--cases``, default all): ``diana/resnet20`` and ``darkside/mobilenetv1_darkside_tiny``
(2 units per searched layer), ``diana/resnet8`` (a smaller model), ``example_npu/resnet20`` (a SoC of
3 units: 2 or 3 searched per layer) and ``four_unit/resnet20`` (``benchmarks/four_unit_soc.yaml``: 2,
3 or 4 per layer). All at 3x32x32 inputs and 10 classes.

One process; per case, every variant timed interleaved (A/B/C/D, A/B/C/D, ...), medians over the rounds:

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

The summary ends with each case's searchable / plain ratio (compiled kernels where they work) next
to DIANA ResNet-20's, and whether it is within 0.1 of it.

    python benchmarks/step_time.py            # -> benchmarks/results/step_time.json
    python benchmarks/step_time.py --cases diana/resnet20 four_unit/resnet20 --repetitions 6
"""

from __future__ import annotations

import argparse
from collections import Counter
from typing import Any

import _common as common
from odimo_moo import native_kernels

#: The variants whose step is timed with the compiled kernels too.
KERNEL_VARIANTS = ("searchable", "searchable_float", "branches", "plain_quantized")
#: The case every other case's searchable / plain ratio is compared with.
REFERENCE_CASE = "diana/resnet20"
#: How far a case's searchable / plain ratio may be from the reference case's.
TOLERANCE = 0.1
CASES = {case.name: case for case in common.STEP_CASES + common.EXTRA_STEP_CASES}


def case_entry(case: common.Case, args: Any, device: Any, native: bool) -> dict[str, Any]:
    """Time every variant of one case; its entry of the result."""
    soc, plain = common.soc_and_model(case.soc, case.model)
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
        steps[name] = common.with_kernels(step, False)
        if native and name in KERNEL_VARIANTS:
            steps[f"{name}_native"] = common.with_kernels(step, True)
    timings = common.interleaved(steps, args.repetitions, device)
    units = Counter(len(layer.unit_indices) for _, layer in models["searchable"].split_layers())
    entry: dict[str, Any] = {
        "soc": case.soc,
        "model": case.model,
        "soc_units": [unit.name for unit in soc.units],
        "split_layers": len(models["searchable"].split_names),
        "units_per_split_layer": {str(k): units[k] for k in sorted(units)},
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


def summary_line(case_name: str, entry: dict[str, Any], suffix: str) -> str:
    def cpu(ratio: dict[str, float]) -> str:
        return f"{ratio['cpu_median_of_paired_ratios']:.3f}"

    r = entry["ratio_vs_plain"]
    units = ", ".join(f"{n}: {count}" for n, count in entry["units_per_split_layer"].items())
    return (f"{case_name} ({suffix.strip('_') or 'eager'}; units per split layer {units}): searchable/plain cpu "
            f"{cpu(r['searchable' + suffix])} wall {r['searchable' + suffix]['wall_median_of_paired_ratios']:.3f}; "
            f"float {cpu(r['searchable_float' + suffix])}; branches {cpu(r['branches' + suffix])}; "
            f"quantization-aware plain {cpu(r['plain_quantized' + suffix])} (searchable / it "
            f"{cpu(entry['searchable_over_plain_quantized' + suffix])})")


def comparison(entries: dict[str, dict[str, Any]], suffix: str) -> dict[str, dict[str, Any]]:
    """Each case's searchable / plain CPU ratio (median of paired ratios) against REFERENCE_CASE's."""
    if REFERENCE_CASE not in entries:
        return {}

    def ratio(entry: dict[str, Any]) -> float:
        return entry["ratio_vs_plain"]["searchable" + suffix]["cpu_median_of_paired_ratios"]

    reference = ratio(entries[REFERENCE_CASE])
    return {name: {"searchable_over_plain": ratio(entry), "difference": ratio(entry) - reference,
                   "within_tolerance": abs(ratio(entry) - reference) <= TOLERANCE}
            for name, entry in entries.items() if name != REFERENCE_CASE}


def comparison_line(compared: dict[str, dict[str, Any]], reference: float, suffix: str) -> str:
    parts = [f"{name} {c['searchable_over_plain']:.3f} ({c['difference']:+.3f}, "
             f"{'within' if c['within_tolerance'] else 'NOT within'} {TOLERANCE})" for name, c in compared.items()]
    return (f"searchable/plain ({suffix.strip('_') or 'eager'}) vs {REFERENCE_CASE}'s {reference:.3f}: "
            + ("; ".join(parts) or "no other case"))


def selected_cases(args: argparse.Namespace) -> list[common.Case]:
    """``--cases``, plus ``--socs``' (each SoC's model of ``common.CASES``); all cases when neither is given."""
    names = dict.fromkeys([*(args.cases or []), *(f"{soc}/{common.CASES[soc]}" for soc in args.socs or [])])
    return [CASES[name] for name in names] if names else list(common.STEP_CASES)


def main() -> None:
    parser = common.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--repetitions", type=int, default=16)
    common.add_step_options(parser, socs=False)
    parser.add_argument("--cases", nargs="+", choices=list(CASES), metavar="SOC/MODEL",
                        help=f"the cases to time (default: all but the last): {', '.join(CASES)}")
    parser.add_argument("--socs", nargs="+", choices=list(common.CASES),
                        help="as before --cases: time SOC's case of common.CASES (diana: resnet20, darkside: "
                             "mobilenetv1_darkside_tiny), together with --cases' ones")
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
    suffixes = ("", "_native") if native else ("",)
    for case in selected_cases(args):
        entry = case_entry(case, args, device, native)
        result["socs"][case.name] = entry
        for suffix in suffixes:
            print(summary_line(case.name, entry, suffix))
    suffix = suffixes[-1]
    compared = comparison(result["socs"], suffix)
    if REFERENCE_CASE in result["socs"]:
        reference = result["socs"][REFERENCE_CASE]["ratio_vs_plain"]["searchable" + suffix]
        result["vs_reference"] = {"reference": REFERENCE_CASE, "variant": "searchable" + suffix,
                                  "ratio": "cpu_median_of_paired_ratios", "tolerance": TOLERANCE,
                                  "reference_searchable_over_plain": reference["cpu_median_of_paired_ratios"],
                                  "cases": compared}
        print(comparison_line(compared, reference["cpu_median_of_paired_ratios"], suffix))
    else:
        print(f"no comparison with {REFERENCE_CASE}: not among the cases timed")
    common.write_result("step_time", result, args.output)


if __name__ == "__main__":
    main()

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

    python benchmarks/step_time.py            # -> benchmarks/results/step_time.json
"""

from __future__ import annotations

import _common as common


def main() -> None:
    parser = common.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--repetitions", type=int, default=16)
    common.add_step_options(parser)
    args = parser.parse_args()
    device = common.setup(args)
    result = {"benchmark": "step_time", "machine": common.machine_info(device),
              "settings": {"batch_size": args.batch_size, "input_shape": list(common.INPUT_SHAPE),
                           "repetitions": args.repetitions, "lambda": args.lambda_,
                           "step": "forward + task loss + lambda * model.cost + backward + both optimizers' "
                                   "steps (odimo strategy recipe defaults)"},
              "socs": {}}
    for soc_name in args.socs:
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
        steps = {name: common.training_step(model.to(device), x, y, args.lambda_)
                 for name, model in models.items()}
        timings = common.interleaved(steps, args.repetitions, device)
        entry = {
            "model": model_name,
            "split_layers": len(models["searchable"].split_names),
            "folded_layers": sum(layer.fold for _, layer in models["searchable"].split_layers()),
            "times": {name: t.summary() for name, t in timings.items()},
            "ratio_vs_plain": common.ratios(timings, "plain"),
        }
        folded, branches = timings["searchable"], timings["branches"]
        entry["branches_over_searchable_cpu"] = common.ratios({"s": folded, "b": branches}, "s")["b"]
        entry["searchable_over_plain_quantized"] = common.ratios(
            {"q": timings["plain_quantized"], "s": folded}, "q")["s"]
        result["socs"][soc_name] = entry
        r = entry["ratio_vs_plain"]
        print(f"{soc_name} {model_name}: searchable/plain cpu {r['searchable']['cpu_median_of_paired_ratios']:.3f} "
              f"wall {r['searchable']['wall_median_of_paired_ratios']:.3f}; "
              f"float {r['searchable_float']['cpu_median_of_paired_ratios']:.3f}; "
              f"branches {r['branches']['cpu_median_of_paired_ratios']:.3f}; quantization-aware plain "
              f"{r['plain_quantized']['cpu_median_of_paired_ratios']:.3f} (searchable / it "
              f"{entry['searchable_over_plain_quantized']['cpu_median_of_paired_ratios']:.3f})")
    common.write_result("step_time", result, args.output)


if __name__ == "__main__":
    main()

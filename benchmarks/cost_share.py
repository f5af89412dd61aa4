"""The cost model's share of a search step: ``model.cost`` forward + backward vs the whole step.

Per SoC (same models as ``step_time``), timed interleaved with the full search step:

* ``cost_marginal``: what the cost adds to a training step: the search step (task loss + lambda *
  ``model.cost``) minus the same step without the cost term (task loss only, on the same model with
  optimizers of its own), the median and quartiles of the per-round differences. Everything the cost
  brings is in it, but it is the difference of two whole steps: where the cost is a small share of a
  long step, the quartiles straddle zero and only ``cost_after_forward`` bounds it.
* ``cost_after_forward``: ``model.cost`` right after the forward, then ``cost.backward()`` all the
  way to the assignment parameters (includes every mask's backward, which a step runs anyway);
* ``cost_recomputed``: ``model.cost`` + backward with no forward before it (every layer's mask
  is evaluated again: the fallback path);
* ``step``: the whole search-phase step (forward, task loss + lambda * cost, backward, optimizers).

    python benchmarks/cost_share.py           # -> benchmarks/results/cost_share.json
"""

from __future__ import annotations

import statistics
import time

import torch

import _common as common


def main() -> None:
    parser = common.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--repetitions", type=int, default=10)
    common.add_step_options(parser)
    args = parser.parse_args()
    device = common.setup(args)
    result = {"benchmark": "cost_share", "machine": common.machine_info(device),
              "settings": {"batch_size": args.batch_size, "input_shape": list(common.INPUT_SHAPE),
                           "repetitions": args.repetitions}, "socs": {}}
    for soc_name in args.socs:
        model_name = common.CASES[soc_name]
        soc, plain = common.soc_and_model(soc_name, model_name)
        model = common.searchable(plain, soc).to(device)
        x, y = common.batch(args.batch_size, device)
        step = common.training_step(model, x, y, args.lambda_)
        # The same model (same tensors, same allocations), its own optimizers: only the cost term differs.
        step_without_cost = common.training_step(model, x, y, 0.0)
        cost_times: dict[str, list[float]] = {"cost_after_forward": [], "cost_recomputed": []}

        def cost_after_forward() -> None:
            model(x)  # not timed: leaves each layer's forward counts behind
            common.synchronize(device)
            start = time.process_time()
            model.cost.backward()
            common.synchronize(device)
            cost_times["cost_after_forward"].append(time.process_time() - start)

        def cost_recomputed() -> None:
            start = time.process_time()
            model.cost.backward()
            common.synchronize(device)
            cost_times["cost_recomputed"].append(time.process_time() - start)

        timings = common.interleaved({"step": step, "step_without_cost": step_without_cost,
                                      "cost_after_forward": cost_after_forward,
                                      "cost_recomputed": cost_recomputed}, args.repetitions, device)
        for values in cost_times.values():
            del values[:-args.repetitions]  # drop the warm-up calls
        cost_times["cost_marginal"] = [with_cost - without for with_cost, without in
                                       zip(timings["step"].cpu, timings["step_without_cost"].cpu)]
        step_cpu = statistics.median(timings["step"].cpu)
        entry = {"model": model_name, "split_layers": len(model.split_names),
                 "step_cpu_median_s": step_cpu,
                 "step_wall_median_s": statistics.median(timings["step"].wall)}
        for name, values in cost_times.items():
            entry[f"{name}_cpu_median_s"] = statistics.median(values)
            entry[f"{name}_cpu_quartiles_s"] = statistics.quantiles(values, n=4)
            entry[f"{name}_share_of_step"] = statistics.median(values) / step_cpu
        low, _, high = entry["cost_marginal_cpu_quartiles_s"]
        result["socs"][soc_name] = entry
        print(f"{soc_name} {model_name}: the cost down to the alphas "
              f"{entry['cost_after_forward_share_of_step']:.2%} (recomputed masks: "
              f"{entry['cost_recomputed_share_of_step']:.2%}) of a {step_cpu * 1000:.0f} ms CPU step; "
              f"step with minus without the cost {entry['cost_marginal_share_of_step']:.2%} "
              f"(quartiles {low * 1000:.2f} to {high * 1000:.2f} ms)")
    common.write_result("cost_share", result, args.output)


if __name__ == "__main__":
    main()

"""Latency-only search vs the exact integer optimum and the ideal balanced lower bound (docs/DESIGN.md 2.4).

For every searched layer of each (SoC, model), summed over the searched layers (they run one after
another):

* ``bound``: the continuous relaxation where all units finish together
  (``layer_splits.ideal_latency_bound``);
* ``exact``: the integer split with the lowest hard-max latency (``layer_splits.min_latency_split``);
  ``layers_split_over_several_units`` counts the layers where it uses more than one unit;
* ``searched``: what the differentiable search finds when latency is all that matters -- the
  searchable model as the ``odimo`` strategy builds it, its assignment parameters trained by the
  strategy's assignment optimizer (Adam, the recipe's ``nas_lr``) on the latency of the searched layers
  alone (the loss's cost term, whose gradient is the exact discrete difference of
  ``odimo_moo.discrete_cost``), for each parametrization and each init (``first``, ``balanced``,
  ``random``); its hard-max latency after ``--steps`` steps over the exact optimum (``ratio``) and over
  the bound (``bound_ratio``), and the trajectory.

    python benchmarks/mapping_bound.py        # -> benchmarks/results/mapping_bound.json
"""

from __future__ import annotations

import time

import torch

import _common as common

#: (SoC, model, input shape): the paper's networks at CIFAR and ImageNet sizes, and the embedded default.
PAIRS = (
    ("diana", "resnet8", (1, 8, 8)),
    ("diana", "resnet8", (1, 16, 16)),
    ("diana", "resnet8", (1, 32, 32)),
    ("diana", "resnet20", (3, 32, 32)),
    ("diana", "resnet18", (3, 32, 32)),
    ("darkside", "mobilenetv1_darkside", (3, 32, 32)),
    ("darkside", "mobilenetv1_darkside_tiny", (3, 32, 32)),
    # The shipped YAML example (CPU + roofline NPU + depthwise unit), where splits do pay off.
    ("example_npu", "resnet20", (3, 32, 32)),
    ("example_npu", "mobilenetv1_darkside_tiny", (3, 32, 32)),
)


INITS = ("first", "balanced", "random")


def latency_only_search(model, steps: int, recipe) -> dict:
    """Train ``model``'s assignment with the strategy's assignment optimizer on its searched layers'
    latency; hard latencies along the way."""
    from odimo_moo.training import assignment_optimizer

    optimizer = assignment_optimizer(model, recipe)
    checkpoints = {0, steps} | {round(steps * f) for f in (0.1, 0.25, 0.5)}
    trajectory = []
    for step in range(steps + 1):
        if step in checkpoints:
            trajectory.append({"step": step, "latency_cycles": model.cost_report()["searched_latency_cycles"]})
        if step == steps:
            break
        optimizer.zero_grad(set_to_none=True)
        model.cost_of("latency", include_fixed=False).backward()
        optimizer.step()
    return {"latency_cycles": trajectory[-1]["latency_cycles"], "trajectory": trajectory}


def main() -> None:
    parser = common.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000, help="assignment optimizer steps of the searched mapping")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random init")
    parser.add_argument("--pairs", default=None, help="comma-separated SOC:MODEL:SIZE subset, e.g. diana:resnet8:16")
    args = parser.parse_args()
    device = common.setup(args)
    from odimo_moo.layer_splits import ideal_latency_bound, min_latency_split, split_costs
    from odimo_moo.models import build_model
    from odimo_moo.recipe import Recipe
    from odimo_moo.registry import pick
    from odimo_moo.searchable import ODiMO

    recipe = Recipe()

    plugins = common.registry()
    result = {"benchmark": "mapping_bound", "machine": common.machine_info(device), "pairs": []}
    chosen = PAIRS if args.pairs is None else [
        p for p in PAIRS if f"{p[0]}:{p[1]}:{p[2][1]}" in args.pairs.split(",")]
    for soc_name, model_name, shape in chosen:
        started = time.perf_counter()
        soc = pick(plugins.socs(), soc_name, "SoC")
        network = build_model(plugins.models(), model_name, 10, shape[0], shape[1:])
        model = ODiMO(network, soc, shape, quantize=False)
        layers = []
        for name, layer in model.split_layers():
            units = layer.unit_indices.tolist()
            split = min_latency_split(soc, layer.spec, units)
            latency = float(split_costs(soc, layer.spec, units, torch.tensor([split])).latency_cycles[0])
            bound = ideal_latency_bound(soc, layer.spec, units)
            layers.append({"layer": name, "spec": layer.spec.describe(),
                           "split": {soc.units[u].name: n for u, n in zip(units, split)},
                           "latency_cycles": latency, "bound_cycles": bound,
                           "ratio": latency / bound if bound > 0 else None})
        total_latency = sum(entry["latency_cycles"] for entry in layers)
        total_bound = sum(entry["bound_cycles"] for entry in layers)
        ratios = [entry["ratio"] for entry in layers if entry["ratio"] is not None]
        pair = {"soc": soc_name, "model": model_name, "input_shape": list(shape),
                "searched_layers": len(layers), "latency_cycles": total_latency, "bound_cycles": total_bound,
                "network_ratio": total_latency / total_bound, "max_layer_ratio": max(ratios),
                "median_layer_ratio": sorted(ratios)[len(ratios) // 2], "layers": layers}
        pair["layers_split_over_several_units"] = sum(
            sum(1 for n in entry["split"].values() if n > 0) > 1 for entry in layers)
        pair["searched"] = {}
        for parametrization in ("thermometric", "softmax"):
            for init in INITS:
                searchable = ODiMO(network, soc, shape, parametrization=parametrization, init=init,
                                   quantize=False, seed=args.seed)
                searched = latency_only_search(searchable, args.steps, recipe)
                searched["ratio"] = searched["latency_cycles"] / total_latency
                searched["bound_ratio"] = searched["latency_cycles"] / total_bound
                pair["searched"][f"{parametrization}/{init}"] = searched
        pair["seconds"] = time.perf_counter() - started
        result["pairs"].append(pair)
        ratios = "; ".join(f"{key} {value['ratio']:.4f}" for key, value in pair["searched"].items())
        print(f"{soc_name} {model_name} {shape}: exact optimum / bound {pair['network_ratio']:.4f} "
              f"({pair['layers_split_over_several_units']} of {len(layers)} layers split); searched / exact: "
              f"{ratios}", flush=True)
    common.write_result("mapping_bound", result, args.output)
    print(markdown_table(result))


def markdown_table(result: dict) -> str:
    """The table of benchmarks/README.md: searched / exact optimum per (SoC, model, input), worst init."""
    keys = [f"{p}/{i}" for p in ("thermometric", "softmax") for i in INITS]
    lines = ["| SoC / model / input | searched layers | exact optimum [cycles] | exact / bound | "
             + " | ".join(keys) + " |", "|---|---:|---:|---:|" + "---:|" * len(keys)]
    for pair in result["pairs"]:
        shape = "x".join(str(d) for d in pair["input_shape"][1:])
        ratios = " | ".join(f"{pair['searched'][k]['ratio']:.4f}" for k in keys)
        lines.append(f"| {pair['soc']} / {pair['model']} / {shape} | {pair['searched_layers']} | "
                     f"{pair['latency_cycles']:,.0f} | {pair['network_ratio']:.4f} | {ratios} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()

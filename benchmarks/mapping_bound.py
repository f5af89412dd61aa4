"""Latency of the latency-only optimal mapping vs the ideal balanced lower bound (DESIGN 2.4).

For every searched layer of each (SoC, model): the integer split with the lowest hard-max latency
(``odimo_moo.mapping_search.min_latency_split``) against the continuous relaxation where all units
finish together (``ideal_latency_bound``); reported per layer and summed over the searched layers
(layers run one after another). A ratio of 1.0 is the bound; channel granularity (ceil terms,
fixed overheads) makes real splits slightly slower.

    python benchmarks/mapping_bound.py        # -> benchmarks/results/mapping_bound.json
"""

from __future__ import annotations

import time

import torch

import _common as common

#: (SoC, model, input shape): the paper's networks at CIFAR and ImageNet sizes, and the embedded default.
PAIRS = (
    ("diana", "resnet20", (3, 32, 32)),
    ("diana", "resnet18", (3, 32, 32)),
    ("diana", "resnet8", (1, 8, 8)),
    ("diana", "resnet18", (3, 224, 224)),
    ("darkside", "mobilenetv1_darkside", (3, 32, 32)),
    ("darkside", "mobilenetv1_darkside_tiny", (3, 32, 32)),
    ("darkside", "mobilenetv1_darkside", (3, 224, 224)),
)


def main() -> None:
    parser = common.base_parser(__doc__.splitlines()[0])
    args = parser.parse_args()
    device = common.setup(args)
    from odimo_moo.mapping_search import ideal_latency_bound, min_latency_split, split_costs
    from odimo_moo.models import build_model
    from odimo_moo.registry import pick
    from odimo_moo.searchable import ODiMO

    plugins = common.registry()
    result = {"benchmark": "mapping_bound", "machine": common.machine_info(device), "pairs": []}
    for soc_name, model_name, shape in PAIRS:
        started = time.perf_counter()
        soc = pick(plugins.socs(), soc_name, "SoC")
        model = ODiMO(build_model(plugins.models(), model_name, 10, shape[0], shape[1:]), soc, shape)
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
                "median_layer_ratio": sorted(ratios)[len(ratios) // 2],
                "seconds": time.perf_counter() - started, "layers": layers}
        result["pairs"].append(pair)
        worst = max(layers, key=lambda entry: entry["ratio"] or 0)
        print(f"{soc_name} {model_name} {shape}: latency-only mapping / ideal bound = {pair['network_ratio']:.4f} "
              f"over {len(layers)} layers (worst layer {worst['layer']}: {worst['ratio']:.4f})")
    common.write_result("mapping_bound", result, args.output)


if __name__ == "__main__":
    main()

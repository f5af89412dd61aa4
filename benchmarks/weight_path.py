"""The weight path of the search step: every split layer's mask, weight terms and weight mix,
forward and backward, with the compiled kernels and with the eager ops (interleaved, one process).

This is the work a searchable layer adds on the weight side (the activations' quantization is
timed by ``quantizer_kernels.py``): per case, the milliseconds per step for all split layers, and
per split layer. It times each layer's own mask and the mix's own node (``SplitLayer.folded_weight``);
a training step computes all masks in one node and mixes inside the quantized op's node, which writes
the shared weight's gradient over the op's (one weight-sized buffer fewer than timed here).

    python benchmarks/weight_path.py            # -> benchmarks/results/weight_path.json
"""

from __future__ import annotations

from typing import Any, Callable

import torch

import _common as common
from odimo_moo import native_kernels


def weight_path(model: Any) -> Callable[[], None]:
    """One step's weight path of ``model``: every split layer's folded weight under its mask, then a
    backward from a fixed random upstream gradient."""
    layers = [layer for _, layer in model.split_layers()]
    generator = torch.Generator().manual_seed(0)
    upstream = [torch.randn(layer.layer.weight.shape, generator=generator) for layer in layers]

    def run() -> None:
        mixed = [layer.folded_weight(layer.mask()) for layer in layers]
        torch.autograd.backward(mixed, upstream)

    return run


def main() -> None:
    parser = common.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--repetitions", type=int, default=30)
    parser.add_argument("--cases", nargs="*", default=[case.name for case in common.STEP_CASES],
                        choices=[case.name for case in common.STEP_CASES], metavar="SOC/MODEL")
    args = parser.parse_args()
    device = common.setup(args)
    result: dict[str, Any] = {"benchmark": "weight_path", "machine": common.machine_info(device),
                              "settings": {"repetitions": args.repetitions, "input_shape": list(common.INPUT_SHAPE),
                                           "native_kernels": native_kernels.load_error() or True},
                              "cases": {}}
    for name in args.cases:
        soc_name, model_name = name.split("/")
        soc, plain = common.soc_and_model(soc_name, model_name)
        model = common.searchable(plain, soc).to(device)
        model.train()
        model(common.batch(2, device)[0])  # data-dependent quantizer initialization, as training does
        step = weight_path(model)
        variants = {"eager": common.with_kernels(step, False), "native": common.with_kernels(step, True)}
        timings = common.interleaved(variants, args.repetitions, device, calls=5)
        layers = len(model.split_names)
        entry = {"split_layers": layers}
        for variant, timing in timings.items():
            cpu = timing.summary()["cpu_median_s"] * 1e3
            entry[variant] = {"cpu_ms_per_step": cpu, "cpu_us_per_split_layer": cpu * 1e3 / layers}
        result["cases"][name] = entry
        print(f"{name}: weight path {entry['eager']['cpu_ms_per_step']:.2f} ms eager, "
              f"{entry['native']['cpu_ms_per_step']:.2f} ms with the kernels per step "
              f"({entry['native']['cpu_us_per_split_layer']:.0f} us per split layer, {layers} layers)")
    common.write_result("weight_path", result, args.output)


if __name__ == "__main__":
    main()

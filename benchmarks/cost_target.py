"""Searching to a cost target: where one training lands, relative to the target.

For each (SoC, model) and each of three targets (fractions of the all-on-the-default-unit cost),
one ``odimo`` search with ``cost_target`` set (warmup, search with the adaptive multiplier, the
landing of :mod:`odimo_moo.target_landing`, fine-tune), on Fashion-MNIST when
``../shared/data/fashion-mnist`` is there (else the embedded ``digits``). Reported per run: the
searched mapping's cost over the target (where the multiplier alone left it), the landed cost over
the target (what the run reports), test accuracy, and seconds.

    python benchmarks/cost_target.py        # -> benchmarks/results/cost_target.json
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import _common as common

#: (SoC, model, image size); the targets are fractions of each model's reference cost.
CASES = (("diana", "resnet8", 16), ("darkside", "mobilenetv1_darkside_tiny", 32))
FRACTIONS = (0.6, 0.75, 0.9)
FASHION = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "fashion-mnist"


def main() -> None:
    parser = common.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--data-limit", type=int, default=1000)
    parser.add_argument("--fashion-mnist", type=Path, default=FASHION, help="Fashion-MNIST folder (default: %(default)s)")
    parser.add_argument("--epochs", type=int, nargs=3, default=(2, 4, 2), metavar=("WARMUP", "SEARCH", "FINETUNE"))
    args = parser.parse_args()
    device = common.setup(args)
    from odimo_moo.recipe import Recipe
    from odimo_moo.registry import pick
    from odimo_moo.workbench import Setup, Workbench

    found = args.fashion_mnist.is_dir()
    dataset, root = ("fashion_mnist", str(args.fashion_mnist)) if found else ("digits", None)
    runs = []
    with tempfile.TemporaryDirectory() as scratch:
        for soc, model, size in CASES:
            bench = Workbench(Setup(soc=soc, model=model, dataset=dataset, data_root=root, image_size=size,
                                    data_limit=args.data_limit, device=args.device, progress=False),
                              cache_dir=Path(scratch) / "cache")
            strategy = pick(bench.registry.strategies(), "odimo", "strategy")
            reference = bench.supernet(Recipe()).reference_cost()
            for fraction in FRACTIONS:
                params = {"warmup_epochs": args.epochs[0], "search_epochs": args.epochs[1],
                          "finetune_epochs": args.epochs[2], "cost_target": fraction * reference}
                workdir = Path(scratch) / f"{soc}-{fraction}"
                start = time.perf_counter()
                outcome = strategy.run(bench, params, workdir)[0]
                landing = json.loads((workdir / "target_landing.json").read_text())
                runs.append({"soc": soc, "model": model, "image_size": size, "fraction": fraction,
                             "target": params["cost_target"], "searched_over_target": landing["searched_cost"]
                             / landing["target"], "landed_over_target": landing["landed_over_target"],
                             "reported_cost": outcome.latency_cycles, "accuracy": outcome.accuracy,
                             "seconds": time.perf_counter() - start})
                print(json.dumps(runs[-1]), flush=True)
    common.write_result("cost_target", {"machine": common.machine_info(device), "dataset": dataset,
                                        "data_limit": args.data_limit, "epochs": list(args.epochs),
                                        "runs": runs}, args.output)


if __name__ == "__main__":
    main()

"""Share of a CIFAR-10 training epoch spent in the data loader, with images decoded once into memory.

The JPEG copy of CIFAR-10 (``../shared/data/cifar10-jpeg``, the ``imagefolder`` dataset) is loaded as
``odimo search --dataset imagefolder --data-limit N`` loads it: each selected image decoded once into a
uint8 tensor, every batch gathered, cropped, flipped and normalised from memory. Then, on the same
batches (a fresh training loader with the same seed every time):

* ``loader alone``: the training loader iterated with nothing else to do;
* per model (``plain`` ResNet-20, and the ``searchable`` one as the ``odimo`` strategy builds it for
  DIANA), training epochs through ``odimo_moo.training.run_epoch`` with the strategy's optimizers,
  the time spent inside the loader's ``next()`` added up during the epoch.

Reports the loader's share of an epoch both ways (inside the epoch, and the standalone pass over the
epoch), wall and process CPU time. Skips with a message when the data folder is absent.

    python benchmarks/data_loading.py          # -> benchmarks/results/data_loading.json
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any, Iterable, Iterator

import _common as common

DEFAULT_ROOT = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-jpeg"
#: The loader's share of an epoch this benchmark checks for.
GOAL_SHARE = 0.05


class TimedLoader:
    """Iterates ``loader``, adding up the wall and CPU seconds spent producing its batches."""

    def __init__(self, loader: Iterable[Any]) -> None:
        self.loader = loader
        self.wall = 0.0
        self.cpu = 0.0
        self.batches = 0

    def __len__(self) -> int:
        return len(self.loader)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[Any]:
        iterator = None
        while True:
            wall, cpu = time.perf_counter(), time.process_time()
            try:
                if iterator is None:
                    iterator = iter(self.loader)
                batch = next(iterator)
            except StopIteration:
                return
            finally:
                self.wall += time.perf_counter() - wall
                self.cpu += time.process_time() - cpu
            self.batches += 1
            yield batch


def summary(values: list[float]) -> dict[str, float]:
    return {"median_s": statistics.median(values), "min_s": min(values)}


def main() -> None:
    parser = common.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--data-root", type=Path, default=DEFAULT_ROOT,
                        help=f"CIFAR-10 as train/<class>/*.jpg and test/<class>/*.jpg (default {DEFAULT_ROOT})")
    parser.add_argument("--data-limit", type=int, default=2000, help="samples per split (default 2000)")
    parser.add_argument("--batch-size", type=int, default=64, help="default 64, the recipe's")
    parser.add_argument("--epochs", type=int, default=2, help="timed training epochs per model (default 2)")
    parser.add_argument("--loader-passes", type=int, default=5, help="timed passes of the loader alone (default 5)")
    parser.add_argument("--lambda", dest="lambda_", metavar="LAMBDA", type=float, default=1.0,
                        help="lambda of the searchable model (default 1)")
    args = parser.parse_args()
    root = args.data_root.expanduser()
    if not (root / "train").is_dir() or not (root / "test").is_dir():
        print(f"data_loading: skipped: no CIFAR-10 image folder at {root} (expected train/<class>/*.jpg and "
              f"test/<class>/*.jpg); pass --data-root DIR")
        return
    device = common.setup(args)
    machine = common.machine_info(device)

    import torch

    from odimo_moo.data import load_dataset, make_loaders
    from odimo_moo.recipe import Recipe
    from odimo_moo.training import assignment_optimizer, run_epoch, weights_optimizer

    wall, cpu = time.perf_counter(), time.process_time()
    bundle = load_dataset("imagefolder", root, seed=0, limit=args.data_limit)
    decode = {"wall_s": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu}
    if (bundle.num_classes, bundle.in_channels, tuple(bundle.input_size)) != (
            common.NUM_CLASSES, common.INPUT_SHAPE[0], common.INPUT_SHAPE[1:]):
        raise SystemExit(f"{root} is not CIFAR-10 shaped: {bundle.description}")

    def train_loader() -> Any:
        return make_loaders(bundle, args.batch_size, seed=0)[0]

    alone: dict[str, list[float]] = {"wall": [], "cpu": []}
    for _ in range(args.loader_passes + 1):  # the first pass is untimed (allocator and caches warm)
        timed = TimedLoader(train_loader())
        for _batch in timed:
            pass
        alone["wall"].append(timed.wall)
        alone["cpu"].append(timed.cpu)
    alone = {key: values[1:] for key, values in alone.items()}

    recipe = Recipe()
    soc, plain = common.soc_and_model("diana", "resnet20")
    models = {"plain": plain, "searchable": common.searchable(plain, soc)}
    variants: dict[str, Any] = {}
    for name, model in models.items():
        model.to(device)
        optimizers = [weights_optimizer(model, recipe)]
        if name == "searchable":
            optimizers.append(assignment_optimizer(model, recipe))
        rows = []
        for _ in range(args.epochs):
            timed = TimedLoader(train_loader())
            wall, cpu = time.perf_counter(), time.process_time()
            run_epoch(model, timed, device, optimizers, args.lambda_ if name == "searchable" else 0.0)
            common.synchronize(device)
            rows.append({"epoch_wall_s": time.perf_counter() - wall, "epoch_cpu_s": time.process_time() - cpu,
                         "loader_wall_s": timed.wall, "loader_cpu_s": timed.cpu, "batches": timed.batches})
        epoch_wall = statistics.median(r["epoch_wall_s"] for r in rows)
        epoch_cpu = statistics.median(r["epoch_cpu_s"] for r in rows)
        variants[name] = {
            "epochs": rows,
            "epoch_wall": summary([r["epoch_wall_s"] for r in rows]),
            "loader_in_epoch_wall": summary([r["loader_wall_s"] for r in rows]),
            "loader_share_in_epoch_wall": statistics.median(r["loader_wall_s"] / r["epoch_wall_s"] for r in rows),
            "loader_share_in_epoch_cpu": statistics.median(r["loader_cpu_s"] / r["epoch_cpu_s"] for r in rows),
            "loader_alone_over_epoch_wall": statistics.median(alone["wall"]) / epoch_wall,
            "loader_alone_over_epoch_cpu": statistics.median(alone["cpu"]) / epoch_cpu,
        }
        shares = variants[name]
        shares["goal_met"] = max(shares["loader_share_in_epoch_wall"], shares["loader_share_in_epoch_cpu"],
                                 shares["loader_alone_over_epoch_cpu"]) < GOAL_SHARE
        print(f"{name:<10} epoch {epoch_wall:.1f} s wall ({len(train_loader())} batches of {args.batch_size}); "
              f"loader {100 * shares['loader_share_in_epoch_wall']:.2f} % of it (CPU "
              f"{100 * shares['loader_share_in_epoch_cpu']:.2f} %; alone {statistics.median(alone['wall']):.3f} s "
              f"= {100 * shares['loader_alone_over_epoch_wall']:.2f} %); goal < {100 * GOAL_SHARE:g} %")
    result = {
        "benchmark": "data_loading",
        "machine": machine,
        "settings": {"data_root": str(root), "dataset": bundle.description, "data_limit": args.data_limit,
                     "train_samples": len(bundle.train), "batch_size": args.batch_size, "epochs": args.epochs,
                     "loader_passes": args.loader_passes, "lambda": args.lambda_, "soc": "diana",
                     "model": "resnet20", "torch": torch.__version__, "goal_share": GOAL_SHARE},
        "decode_once": decode,
        "loader_alone": {"wall": summary(alone["wall"]), "cpu": summary(alone["cpu"]), "wall_s": alone["wall"],
                         "cpu_s": alone["cpu"]},
        "variants": variants,
    }
    common.write_result("data_loading", result, args.output)


if __name__ == "__main__":
    main()

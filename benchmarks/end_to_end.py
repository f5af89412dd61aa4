"""End-to-end wall time of one lambda on the embedded default, as ``odimo search`` runs it.

``Workbench(Setup(soc="diana", model="resnet8", dataset="digits"))`` and the ``odimo`` strategy with
its default recipe (warmup, search, fine-tune, export, artifacts), from an empty warmup cache so the
warmup is paid too. Reports wall and CPU seconds, per phase and in total, and the resulting point.

    python benchmarks/end_to_end.py           # -> benchmarks/results/end_to_end.json
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import _common as common


def main() -> None:
    parser = common.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--lambda", dest="lambda_", metavar="LAMBDA", type=float, default=1e-4, help="lambda")
    args = parser.parse_args()
    device = common.setup(args)
    from odimo_moo.recipe import Recipe
    from odimo_moo.registry import pick
    from odimo_moo.workbench import Setup, Workbench

    marks: list[dict] = []
    started_wall, started_cpu = time.perf_counter(), time.process_time()

    def on_epoch_end(phase: str, epoch: int, metrics: dict) -> None:
        marks.append({"phase": phase, "epoch": epoch, "wall_s": time.perf_counter() - started_wall,
                      "cpu_s": time.process_time() - started_cpu})

    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        bench = Workbench(Setup(soc="diana", model="resnet8", dataset="digits", device=args.device, progress=False),
                          on_epoch_end=on_epoch_end, cache_dir=root / "warmup-cache")
        strategy = pick(bench.registry.strategies(), "odimo", "strategy")
        params = {"lambda": args.lambda_}
        outcome = strategy.run(bench, params, root / "run")[0]
    total_wall, total_cpu = time.perf_counter() - started_wall, time.process_time() - started_cpu
    phases: dict[str, dict] = {}
    previous = {"wall_s": 0.0, "cpu_s": 0.0}
    for mark in marks:
        phase = phases.setdefault(mark["phase"], {"epochs": 0, "wall_s": 0.0, "cpu_s": 0.0, "epoch_wall_s": []})
        phase["epochs"] += 1
        phase["wall_s"] += mark["wall_s"] - previous["wall_s"]
        phase["cpu_s"] += mark["cpu_s"] - previous["cpu_s"]
        phase["epoch_wall_s"].append(mark["wall_s"] - previous["wall_s"])  # the first includes loading the data
        previous = mark
    result = {"benchmark": "end_to_end", "machine": common.machine_info(device),
              "setup": {"soc": "diana", "model": "resnet8", "dataset": "digits", "lambda": args.lambda_,
                        "recipe": Recipe.from_params(params).as_dict()},
              "total_wall_s": total_wall, "total_cpu_s": total_cpu,
              "phases": phases,
              "after_last_epoch_wall_s": total_wall - previous["wall_s"],  # evaluation, export, artifacts
              "outcome": {"accuracy": outcome.accuracy, "latency_cycles": outcome.latency_cycles,
                          "energy_uj": outcome.energy_uj, "strategy_wall_time_s": outcome.wall_time_s}}
    per_phase = ", ".join(f"{name} {phase['wall_s']:.1f} s" for name, phase in phases.items())
    print(f"one lambda on diana/resnet8/digits: {total_wall:.1f} s wall, {total_cpu:.1f} s CPU ({per_phase}); "
          f"accuracy {outcome.accuracy:.3f}, latency {outcome.latency_cycles:.0f} cycles")
    common.write_result("end_to_end", result, args.output)


if __name__ == "__main__":
    main()

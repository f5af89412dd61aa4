"""Start-up time of the ``odimo`` command: each command a fresh process, as a user runs it.

    python benchmarks/startup.py [--repetitions 10]

Runs ``odimo --help``, ``odimo --version``, ``odimo plugins``, ``odimo search --help`` (and, as the
floor of anything that needs torch, ``python -c "import torch"``) ``--repetitions`` times each,
interleaved with the order rotated every round, and writes the wall time (median, min) and the
process's CPU time (user + system, of the child: much less disturbed by other load on a shared
machine than wall time) to ``benchmarks/results/startup.json``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
from pathlib import Path
from typing import Any

import torch  # machine_info reports its version; every timed process imports its own

from _common import machine_info, time_once, write_result

#: The timed commands: name -> (argv after the interpreter or script, start-up goal in seconds or None).
COMMANDS: dict[str, tuple[list[str], float | None]] = {
    "odimo --help": (["--help"], 1.5),
    "odimo --version": (["--version"], 1.5),
    "odimo plugins": (["plugins"], 1.5),
    "odimo search --help": (["search", "--help"], None),
    "python -c 'import torch'": (["-c", "import torch"], None),
}


def odimo_script() -> str:
    """The ``odimo`` console script of the running interpreter's environment."""
    beside = Path(sys.executable).parent / "odimo"
    found = str(beside) if beside.is_file() else shutil.which("odimo")
    if found is None:
        sys.exit("no `odimo` script found: install the project (pip install -e .) in this environment")
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repetitions", type=int, default=10, help="runs of each command (default 10)")
    parser.add_argument("--output", type=Path, default=None, help="where to write the JSON result")
    args = parser.parse_args()
    script = odimo_script()
    machine = machine_info(torch.device("cpu"))
    machine["torch_threads"] = None  # each timed process starts with PyTorch's default
    argvs = {name: ([sys.executable] if name.startswith("python") else [script]) + rest
             for name, (rest, _) in COMMANDS.items()}
    names = list(COMMANDS)
    for name in names:  # one untimed run each: page cache and .pyc files warm
        time_once(argvs[name])
    samples: dict[str, dict[str, list[float]]] = {name: {"wall": [], "cpu": []} for name in names}
    for round_index in range(args.repetitions):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            wall, cpu = time_once(argvs[name])
            samples[name]["wall"].append(wall)
            samples[name]["cpu"].append(cpu)
    results: dict[str, Any] = {}
    for name in names:
        wall, cpu = samples[name]["wall"], samples[name]["cpu"]
        goal = COMMANDS[name][1]
        results[name] = {"argv": argvs[name][1:], "wall_median_s": statistics.median(wall), "wall_min_s": min(wall),
                         "cpu_median_s": statistics.median(cpu), "cpu_min_s": min(cpu), "goal_s": goal,
                         "goal_met_by_wall_median": None if goal is None else statistics.median(wall) < goal,
                         "wall_s": wall, "cpu_s": cpu}
        print(f"{name:<28} wall median {statistics.median(wall):.3f} s, min {min(wall):.3f} s; "
              f"cpu median {statistics.median(cpu):.3f} s" + (f" (goal {goal} s)" if goal else ""))
    write_result("startup", {"benchmark": "startup", "repetitions": args.repetitions, "odimo": script,
                             "environment": {"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS")},
                             "machine": machine, "commands": results}, args.output)


if __name__ == "__main__":
    main()

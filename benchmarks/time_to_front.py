"""Time to a front: wall and CPU seconds of the quickstart and of one small compare run, per phase.

Each command runs as a fresh process, as a user runs it (through ``_timed_cli.py``), from an
empty output folder (so the warmup is trained, not read from a cache):

* ``search``: ``odimo search --soc diana --model resnet8 --dataset digits --lambda 1`` (README's
  quickstart: one lambda, the default recipe, the embedded ``digits``);
* ``run``: ``odimo run`` (the packaged ``quickstart`` study: six trials, one shared warmup);
* ``compare``: ``odimo compare`` on the quickstart's setup (digits at 16x16, 500 samples per split,
  2 warmup, 3 search, 1 fine-tune epochs), one seed, one lambda, 40 one-shot evaluations.

Per command: the process's wall and CPU time (user + system); its imports (timed in the child:
every outermost ``import`` with what it pulls in, lazy ones inside functions included); the
training phases from the records every run writes (``metrics.csv`` rows ``wall_s``/``cpu_s`` per
epoch: warmup, search, train, finetune; a cached warmup's rows count once); the one-shot searches
(``result.json`` ``phase_wall_s.oneshot``; CPU: its ``cpu_time_s`` less its epochs'); the
evaluation on the test and validation splits and the export with its artifacts (timed in the
child, less their imports); and the rest (``other``: data, model construction, studies' storage,
reports and plots).

    python benchmarks/time_to_front.py              # -> benchmarks/results/time_to_front.json
    python benchmarks/time_to_front.py --commands search --device cuda
"""

from __future__ import annotations

import csv
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import _common as common

HERE = Path(__file__).resolve().parent
SMALL_SETUP = ["--soc", "diana", "--model", "resnet8", "--dataset", "digits"]
#: The timed commands: name -> ``odimo`` arguments (``--out``, ``--threads``, ``--device`` are added).
COMMANDS: dict[str, list[str]] = {
    "search": ["search", *SMALL_SETUP, "--lambda", "1", "--no-progress"],
    "run": ["run", "quickstart", "--no-progress"],
    "compare": ["compare", *SMALL_SETUP, "--image-size", "16", "--data-limit", "500", "--seeds", "0",
                "--lambdas", "1", "--set", "warmup_epochs=2", "--set", "search_epochs=3", "--set",
                "finetune_epochs=1", "--set", "evaluations=40", "--no-progress"],
}


def run_timed(argv: list[str], timings: Path) -> dict[str, Any]:
    """Run ``odimo argv`` in a child process; its wall and CPU seconds and the child's timers."""
    wall, cpu = common.time_once([sys.executable, str(HERE / "_timed_cli.py"), str(timings), *argv])
    return {"wall_s": wall, "cpu_s": cpu, "timers": json.loads(timings.read_text())}


def _rows(folder: Path) -> list[dict[str, str]]:
    with (folder / "metrics.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


def recorded_phases(out: Path) -> dict[str, dict[str, float]]:
    """Per phase, the epochs and their wall and CPU seconds from every ``metrics.csv`` under ``out``
    (a warmup shared through the cache appears in every point's rows: each distinct row counts once),
    and the one-shot searches from the points' ``result.json``."""
    phases: dict[str, dict[str, float]] = {}
    seen: set[tuple[tuple[str, str], ...]] = set()
    for metrics in sorted(out.rglob("metrics.csv")):
        for row in _rows(metrics.parent):
            key = tuple(sorted(row.items()))
            if row["phase"] == "warmup" and key in seen:
                continue
            seen.add(key)
            phase = phases.setdefault(row["phase"], {"epochs": 0, "wall_s": 0.0, "cpu_s": 0.0})
            phase["epochs"] += 1
            phase["wall_s"] += float(row["wall_s"])
            phase["cpu_s"] += float(row["cpu_s"])
    for path in sorted(out.rglob("result.json")):
        result = json.loads(path.read_text())
        wall = float(result.get("phase_wall_s", {}).get("oneshot", 0.0))
        if wall:
            trained_cpu = sum(float(r["cpu_s"]) for r in _rows(path.parent) if r["phase"] != "warmup")
            phase = phases.setdefault("oneshot", {"points": 0, "wall_s": 0.0, "cpu_s": 0.0})
            phase["points"] += 1
            phase["wall_s"] += wall
            phase["cpu_s"] += float(result["cpu_time_s"]) - trained_cpu
    return phases


def breakdown(measured: dict[str, Any], phases: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    """Wall and CPU seconds per part of the process, ``other`` being what no part accounts for."""
    timers = measured["timers"]

    def timer(name: str) -> dict[str, float]:
        return {"wall_s": timers.get(f"{name}_wall_s", 0.0), "cpu_s": timers.get(f"{name}_cpu_s", 0.0)}

    parts = {"imports": timer("imports")}
    parts.update({name: {"wall_s": p["wall_s"], "cpu_s": p["cpu_s"]} for name, p in phases.items()})
    parts.update({name: timer(name) for name in ("evaluation", "export")})
    parts["other"] = {key: measured[key] - sum(p.get(key, 0.0) for p in parts.values())
                      for key in ("wall_s", "cpu_s")}
    return parts


def time_command(name: str, scratch: Path, threads: int, device: str) -> dict[str, Any]:
    out = scratch / name
    argv = [*COMMANDS[name], "--out", str(out), "--threads", str(threads), "--device", device]
    measured = run_timed(argv, scratch / f"{name}-timers.json")
    phases = recorded_phases(out)
    parts = breakdown(measured, phases)
    summary = ", ".join(f"{part} {values['wall_s']:.1f}" for part, values in parts.items())
    print(f"odimo {name}: {measured['wall_s']:.1f} s wall, {measured['cpu_s']:.1f} s CPU ({summary} s wall)")
    return {"argv": ["odimo", *COMMANDS[name]], "wall_s": measured["wall_s"], "cpu_s": measured["cpu_s"],
            "parts": parts, "phases": phases, "child_timers": measured["timers"]}


def main() -> None:
    parser = common.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--commands", nargs="*", default=list(COMMANDS), choices=list(COMMANDS))
    args = parser.parse_args()
    device = common.setup(args)
    result: dict[str, Any] = {"benchmark": "time_to_front", "machine": common.machine_info(device),
                              "settings": {"threads": args.threads, "device": args.device},
                              "commands": {}}
    with tempfile.TemporaryDirectory(prefix="odimo-time-to-front-") as scratch:
        for name in args.commands:
            result["commands"][name] = time_command(name, Path(scratch), args.threads, args.device)
    common.write_result("time_to_front", result, args.output)


if __name__ == "__main__":
    main()

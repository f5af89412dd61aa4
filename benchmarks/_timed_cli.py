"""Child process of ``time_to_front.py``: runs one ``odimo`` command and times what the run records do not.

    python benchmarks/_timed_cli.py TIMINGS.json odimo-arguments...

Imports (every outermost ``import`` statement with what it imports in turn, the lazy ones inside
functions included), the evaluation on the test and validation splits (``Workbench.evaluate``) and
the export with its artifacts (``odimo_moo.artifacts.write_artifacts``, less the imports it runs)
are timed (wall and CPU); the command runs as ``odimo`` runs it (``odimo_moo.cli.main``) and the
accumulated seconds are written to ``TIMINGS.json``. Training epochs and one-shot searches need no
timer: every run records them itself (``metrics.csv`` rows, ``result.json``).
"""

from __future__ import annotations

import builtins
import functools
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable


def _add(totals: dict[str, float], name: str, wall: float, cpu: float) -> None:
    totals[f"{name}_wall_s"] = totals.get(f"{name}_wall_s", 0.0) + wall
    totals[f"{name}_cpu_s"] = totals.get(f"{name}_cpu_s", 0.0) + cpu


def timed(totals: dict[str, float], name: str, function: Callable[..., Any]) -> Callable[..., Any]:
    """``function`` adding its wall and CPU seconds, less the imports it runs (counted as imports),
    to ``totals[name + "_wall_s" / "_cpu_s"]``."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        wall, cpu = time.perf_counter(), time.process_time()
        imports = totals.get("imports_wall_s", 0.0), totals.get("imports_cpu_s", 0.0)
        try:
            return function(*args, **kwargs)
        finally:
            _add(totals, name, time.perf_counter() - wall - (totals.get("imports_wall_s", 0.0) - imports[0]),
                 time.process_time() - cpu - (totals.get("imports_cpu_s", 0.0) - imports[1]))

    return wrapper


def time_imports(totals: dict[str, float]) -> None:
    """Count the wall and CPU seconds of every outermost import from now on in ``totals``."""
    original, depth = builtins.__import__, [0]

    def timed_import(*args: Any, **kwargs: Any) -> Any:
        if depth[0]:
            return original(*args, **kwargs)
        depth[0] += 1
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            return original(*args, **kwargs)
        finally:
            depth[0] -= 1
            _add(totals, "imports", time.perf_counter() - wall, time.process_time() - cpu)

    builtins.__import__ = timed_import


def main() -> int:
    timings_path, argv = Path(sys.argv[1]), sys.argv[2:]
    totals: dict[str, float] = {}
    time_imports(totals)
    from odimo_moo import artifacts, cli
    from odimo_moo.workbench import Workbench

    artifacts.write_artifacts = timed(totals, "export", artifacts.write_artifacts)
    Workbench.evaluate = timed(totals, "evaluation", Workbench.evaluate)  # type: ignore[method-assign]
    try:
        return cli.main(argv)
    finally:
        timings_path.write_text(json.dumps(totals, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())

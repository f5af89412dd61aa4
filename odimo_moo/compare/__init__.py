"""Comparison of mapping methods on one setup over one or more seeds: fronts, hypervolume, iso-cost
and iso-accuracy against baseline points, compute, and which differences exceed the seed noise.

Points are :class:`~odimo_moo.front_point.FrontPoint` records (test accuracy, cost of one metric),
grouped by seed (``FrontPoint.seed``; files written before seeds were recorded form one group).
Every hypervolume, of every seed and method, uses ONE reference point. Per seed and against every
baseline point b of the same seed (e.g. each heuristic mapping), a method reports

* iso-cost: its best accuracy among points costing at most b's cost (and the gain over b);
* iso-accuracy: its lowest cost among points at least as accurate as b, and the ratio
  ``b.cost / that cost`` -- the paper's "Nx lower latency at iso-accuracy".

Over seeds each measure is given as mean, sample standard deviation, min and max, and a method is
called better than another only where the seeds' ranges separate (:data:`SEPARATION_RULE`). A
method's compute is per seed the sum over its points (strategies record each outcome's own share):
training epochs after the shared warmup, one-shot mappings scored and images forwarded, wall and CPU
seconds; the warmup is reported apart, once per seed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from ..checkpoint import atomic_write_bytes, atomic_write_json
from ..front_point import FrontPoint
from .inputs import (BUDGET_FILE, OUTCOME_FILES, RUN_FILE, SEARCH_FILE, WARMUP_FILE, find_outcomes, load_budgets,
                     load_outcomes, load_run_record, load_searches, load_warmups, unique)
from .plot import plot_report
from .report import COMPUTE_FIELDS, build_report
from .stats import MEDIAN_FRONT, SEPARATION_RULE, iso_comparison, median_attainment, seed_name, separated, spread
from .text import baseline_points, format_table, oneshot_lines, report_csv, separation_lines, spread_text

__all__ = ["BUDGET_FILE", "COMPUTE_FIELDS", "MEDIAN_FRONT", "OUTCOME_FILES", "RUN_FILE", "SEARCH_FILE",
           "SEPARATION_RULE", "WARMUP_FILE", "baseline_points", "build_report", "find_outcomes", "format_table",
           "iso_comparison", "load_budgets", "load_outcomes", "load_run_record", "load_searches", "load_warmups", "median_attainment", "oneshot_lines", "plot_report", "report_csv",
           "seed_name", "separated", "separation_lines", "spread", "spread_text", "unique", "write_report"]


def write_report(report: dict[str, Any], baselines: Sequence[FrontPoint], folder: Path) -> dict[str, Path]:
    """Write compare.json, compare.csv, compare.png and baselines.json (the baseline points, for
    ``odimo report`` to draw as markers) into ``folder``; return their paths."""
    paths = {"json": folder / "compare.json", "csv": folder / "compare.csv", "png": folder / "compare.png",
             "baselines": folder / "baselines.json"}
    atomic_write_json(paths["json"], report)
    atomic_write_bytes(paths["csv"], report_csv(report).encode())
    plot_report(report, paths["png"])
    atomic_write_json(paths["baselines"], [b.to_dict() for b in baselines])
    return paths

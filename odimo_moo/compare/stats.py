"""The measures of a comparison: spreads over seeds, the separation rule, iso-cost and
iso-accuracy against a baseline point, and the median attainment front."""

from __future__ import annotations

import math
import statistics
from typing import Any, Sequence

import numpy as np

SEPARATION_RULE = ("A is called better than B on a measure only where the seeds' min-max ranges do not "
                   "overlap: A's worst seed is better than B's best seed, with at least 2 seeds each; "
                   "otherwise the difference is within the seed-to-seed noise. For iso-accuracy cost "
                   "ratios, a seed where a method reaches no point as accurate as the baseline counts as "
                   "ratio 0, and a baseline's ratio against itself is 1 in every seed.")
MEDIAN_FRONT = ("median attainment front: at each cost, the accuracy reached (at that cost or less) by at "
                "least half of the seeds' fronts (ceil(n/2) of n seeds)")


def seed_name(seed: int | None) -> str:
    """A seed as a report key ("-" for outcomes that recorded none)."""
    return "-" if seed is None else str(seed)


def spread(values: Sequence[float]) -> dict[str, Any]:
    """Mean, sample standard deviation (0 for one value), min, max and count of ``values``;
    ``None`` statistics for no values."""
    if not values:
        return {"mean": None, "std": None, "min": None, "max": None, "n": 0}
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values), "max": max(values), "n": len(values)}


def separated(better: Sequence[float], worse: Sequence[float]) -> bool:
    """:data:`SEPARATION_RULE`: at least 2 seeds each and ``min(better) > max(worse)``."""
    return len(better) >= 2 and len(worse) >= 2 and min(better) > max(worse)


def iso_comparison(accuracy: Sequence[float], cost: Sequence[float], baseline_accuracy: float,
                   baseline_cost: float) -> dict[str, float | None]:
    """A method's points against one baseline point: best accuracy at cost <= the baseline's (and the
    gain), lowest cost at accuracy >= the baseline's (and the ratio baseline cost / that cost).
    ``None`` where no point qualifies."""
    acc = np.asarray(accuracy, dtype=float)
    cst = np.asarray(cost, dtype=float)
    cheaper = cst <= baseline_cost
    better = acc >= baseline_accuracy
    iso_cost = float(acc[cheaper].max()) if cheaper.any() else None
    iso_acc = float(cst[better].min()) if better.any() else None
    return {
        "iso_cost_accuracy": iso_cost,
        "iso_cost_accuracy_gain": None if iso_cost is None else iso_cost - baseline_accuracy,
        "iso_accuracy_cost": iso_acc,
        "iso_accuracy_cost_ratio": None if iso_acc is None else (
            math.inf if iso_acc == 0 else baseline_cost / iso_acc),
    }


def median_attainment(fronts: Sequence[Sequence[tuple[float, float]]]) -> list[tuple[float, float]]:
    """The :data:`MEDIAN_FRONT` of ``fronts`` (each a list of (cost, accuracy) points): its corners
    as (cost, accuracy), by increasing cost. One front gives its own non-dominated points."""
    fronts = [list(f) for f in fronts if f]
    if not fronts:
        return []
    needed = math.ceil(len(fronts) / 2)
    corners: list[tuple[float, float]] = []
    for cost in sorted({c for front in fronts for c, _ in front}):
        reached = sorted((max((a for c, a in front if c <= cost), default=-math.inf) for front in fronts),
                         reverse=True)
        level = reached[needed - 1]
        if level > -math.inf and (not corners or level > corners[-1][1]):
            corners.append((cost, level))
    return corners

"""PNG plots of a study report (matplotlib, Agg backend): accuracy-vs-cost fronts and the per-layer
mapping of one trial."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)

from ..front_point import COST_FIELDS, COST_METRICS, FrontPoint  # noqa: E402
from .report import StudyReport, front_of  # noqa: E402

MARKERS = ("o", "^", "s", "D", "v", "P")


def plot_front(report: StudyReport, metric: str, path: Path) -> Path:
    """Test accuracy vs ``metric``: every feasible trial dimmed, each driver's front highlighted and
    joined, infeasible trials as crosses, baselines as labelled stars."""
    fig, ax = plt.subplots(figsize=(7, 4.8))
    drivers = sorted({r.driver for r in report.feasible})
    for i, driver in enumerate(drivers):
        rows = [r for r in report.feasible if r.driver == driver]
        marker = MARKERS[i % len(MARKERS)]
        ax.scatter([r.scored.cost(metric) for r in rows], [r.scored.accuracy for r in rows], marker=marker,
                   color="0.6", alpha=0.45, label=f"{driver}: all trials")
        front = front_of(rows, metric)
        ax.step([r.scored.cost(metric) for r in front], [r.scored.accuracy for r in front], where="post",
                color=f"C{i}", linewidth=1.2, alpha=0.8)
        ax.scatter([r.scored.cost(metric) for r in front], [r.scored.accuracy for r in front], marker=marker,
                   color=f"C{i}", edgecolors="black", linewidths=0.6, s=55, zorder=3, label=f"{driver}: Pareto front")
        for r in front:
            ax.annotate(str(r.number), (r.scored.cost(metric), r.scored.accuracy), textcoords="offset points",
                        xytext=(4, 4), fontsize=7)
    if report.infeasible:
        ax.scatter([r.scored.cost(metric) for r in report.infeasible], [r.scored.accuracy for r in report.infeasible],
                   marker="x", color="0.45",
                   label=f"infeasible (needs {', '.join(c.describe() for c in report.constraints)})")
    for baseline in report.baselines:
        cost = baseline.cost(metric)
        ax.scatter([cost], [baseline.accuracy], marker="*", s=140, color="crimson", edgecolors="black",
                   linewidths=0.5, zorder=4)
        ax.annotate(baseline.name, (cost, baseline.accuracy), textcoords="offset points",
                    xytext=(5, -10), fontsize=7, color="crimson")
    if report.baselines:
        ax.scatter([], [], marker="*", s=140, color="crimson", label="baselines")
    front = report.fronts[metric]
    ax.set_title(f"{report.study_name}: test accuracy vs {metric}\nhypervolume {front.hypervolume:.4g} "
                 f"(reference {front.reference.describe(COST_FIELDS[metric])})", fontsize=9)
    ax.set_xlabel(COST_METRICS[metric].label)
    ax.set_ylabel("test accuracy")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_mapping(point: FrontPoint, name: str, path: Path) -> Path:
    """Channels per compute unit of every searched layer of one point (``name``: how the title calls
    it, e.g. "trial 3"), as stacked bars."""
    split = point.channel_split
    layers = list(split)
    units: list[str] = []
    for counts in split.values():
        units += [unit for unit in counts if unit not in units]
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(layers) + 1.6))
    left = [0] * len(layers)
    for i, unit in enumerate(units):
        counts = [split[layer].get(unit, 0) for layer in layers]
        ax.barh(layers, counts, left=left, color=f"C{i}", label=unit)
        left = [a + b for a, b in zip(left, counts)]
    ax.invert_yaxis()
    params = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in point.params.items())
    ax.set_title(f"{name} ({params}): accuracy {point.accuracy:.4f}, "
                 f"{point.latency_cycles:,.0f} cycles, {point.energy_uj:.4g} uJ", fontsize=8)
    ax.set_xlabel("output channels")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path

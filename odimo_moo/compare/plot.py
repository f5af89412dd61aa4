"""The comparison report as a PNG: every seed's front, the median attainment fronts and the baselines."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from ..checkpoint import atomic_write_bytes

def plot_report(report: dict[str, Any], path: Path) -> None:
    """Per method every seed's front (thin steps) and the median attainment front (thick), baselines
    as markers per seed, labelled once; written to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cost_field = report["cost_field"]
    figure, axes = plt.subplots(figsize=(8, 5.5))
    baseline_methods = {b["method"] for b in report["baselines"]}
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    searched = [row for row in report["methods"] if row["method"] not in baseline_methods]
    for index, row in enumerate(searched):
        color = colors[index % len(colors)]
        for seed_row in row["per_seed"].values():
            points = seed_row["all_points"]
            axes.scatter([p[cost_field] for p in points], [p["accuracy"] for p in points], s=10, alpha=0.35,
                         color=color)
            front = seed_row["front"]
            axes.step([p[cost_field] for p in front], [p["accuracy"] for p in front], where="post", lw=0.8,
                      alpha=0.45, color=color)
        median = row["median_front"]
        axes.step([p[cost_field] for p in median], [p["accuracy"] for p in median], where="post", lw=2.2,
                  marker="o", ms=4, color=color,
                  label=f"{row['method']} (HV fraction {row['hypervolume_fraction']:.3f}, {len(row['seeds'])} seeds)")
    labelled = set()
    for baseline in report["baselines"]:
        axes.scatter([baseline[cost_field]], [baseline["accuracy"]], marker="*", s=90, color="black", zorder=3)
        if baseline["name"] not in labelled:
            labelled.add(baseline["name"])
            axes.annotate(baseline["name"], (baseline[cost_field], baseline["accuracy"]), textcoords="offset points",
                          xytext=(5, 4), fontsize=8)
    axes.set_xlabel(cost_field)
    axes.set_ylabel("test accuracy")
    axes.set_title(f"accuracy vs {report['metric']}: thin = each seed's front, thick = median attainment front\n"
                   f"(HV reference: {report['reference_point']['text']})", fontsize=9)
    axes.grid(alpha=0.3)
    if searched:
        axes.legend(fontsize=8, loc="lower right")
    buffer = io.BytesIO()
    figure.tight_layout()
    figure.savefig(buffer, format="png", dpi=120)
    plt.close(figure)
    atomic_write_bytes(path, buffer.getvalue())

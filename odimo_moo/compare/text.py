"""The comparison report as CSV and as readable text."""

from __future__ import annotations

import csv
import io
import statistics
from typing import Any, Mapping

from .report import COMPUTE_FIELDS

def _number(value: float | None, digits: int = 4) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}g}"


def spread_text(mean: float | None, std: float | None, low: float | None, high: float | None, seeds: int,
                digits: int = 4, scale: float = 1.0, unit: str = "", plus: str = "±") -> str:
    """A measure over seeds as the reports write it: ``mean`` (times ``scale``, then ``unit``) and,
    over 2 or more seeds, ``plus`` std [min, max]; "-" without a mean."""
    if mean is None:
        return "-"
    text = f"{mean * scale:.{digits}g}{unit}"
    if seeds > 1 and std is not None and low is not None and high is not None:
        text += f" {plus} {std * scale:.2g} [{low * scale:.{digits}g}, {high * scale:.{digits}g}]"
    return text


def report_csv(report: dict[str, Any]) -> str:
    """One row per method (means over seeds); per baseline, the iso-cost accuracy, iso-accuracy cost
    and cost ratio (means) and the ratio's min and max over seeds."""
    baselines = list(dict.fromkeys(b["name"] for b in report["baselines"]))
    columns = ["method", "points", "front_points", "hypervolume", "hypervolume_std", "hypervolume_min",
               "hypervolume_max", "hypervolume_fraction", "best_accuracy", "lowest_cost", "wall_time_s"]
    compute = list(COMPUTE_FIELDS.values())
    per_baseline = ["iso_cost_accuracy", "iso_accuracy_cost", "iso_accuracy_cost_ratio",
                    "iso_accuracy_cost_ratio_min", "iso_accuracy_cost_ratio_max"]
    header = [*columns, "seeds", *(f"compute_{c}" for c in compute),
              *(f"{field}[{b}]" for b in baselines for field in per_baseline)]
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    for row in report["methods"]:
        extra = [row["vs_baselines"].get(b, {}).get(field) for b in baselines for field in per_baseline]
        writer.writerow([*(row[c] for c in columns), len(row["seeds"]), *(row["compute"][c] for c in compute),
                         *("" if v is None else v for v in extra)])
    return buffer.getvalue()


def separation_lines(report: dict[str, Any], digits: int) -> list[str]:
    """What the seeds tell apart, one line each (shared by the text and the markdown reports)."""
    if len(report["seeds"]) < 2:
        return ["one seed only: no difference can be told apart from the seed noise"]
    if not report["separations"]:
        return ["no difference separates from the seed noise"]
    return [f"{item['better']} better than {item['worse']} on {item['measure']}: "
            f"[{item['better_range'][0]:.{digits}g}, {item['better_range'][1]:.{digits}g}] vs "
            f"[{item['worse_range'][0]:.{digits}g}, {item['worse_range'][1]:.{digits}g}]"
            for item in report["separations"]]


def _method_lines(report: dict[str, Any]) -> list[str]:
    """The table of methods: points, hypervolume over seeds, best accuracy and compute."""
    lines = ["hypervolume: mean +- std [min, max] over seeds; compute per seed (mean): epochs after the warmup, "
             "one-shot mappings / images, wall and CPU seconds",
             f"{'method':<16} {'pts':>4} {'hypervolume':>40} {'fraction':>8} {'best acc':>8} {'epochs':>7} "
             f"{'one-shot':>8} {'images':>9} {'wall [s]':>9} {'CPU [s]':>9}"]
    for row in report["methods"]:
        compute = row["compute"]
        volume = spread_text(row["hypervolume"], row["hypervolume_std"], row["hypervolume_min"],
                             row["hypervolume_max"], len(row["seeds"]), digits=5, plus="+-")
        lines.append(f"{row['method']:<16} {row['points']:>4} {volume:>40} {row['hypervolume_fraction']:>8.4f} "
                     f"{row['best_accuracy']:>8.4f} {compute['train_epochs']:>7.0f} "
                     f"{compute['oneshot_evaluations']:>8.0f} {compute['oneshot_images']:>9.0f} "
                     f"{compute['wall_s']:>9.1f} {compute['cpu_s']:>9.1f}")
    return lines


def _iso_line(method: str, iso: dict[str, Any]) -> str:
    """One method against one baseline point: iso-cost accuracy (gain), iso-accuracy cost (ratio)."""
    gain = "" if iso["iso_cost_accuracy_gain"] is None else f" ({iso['iso_cost_accuracy_gain']:+.4f})"
    ratio = "" if iso["iso_accuracy_cost_ratio"] is None else f" ({iso['iso_accuracy_cost_ratio']:.2f}x)"
    if iso["iso_accuracy_cost_ratio"] is not None and iso["seeds"] > 1:
        ratio += (f" [{iso['iso_accuracy_cost_ratio_min']:.2f}x, {iso['iso_accuracy_cost_ratio_max']:.2f}x]"
                  + (f", none as accurate in {iso['iso_accuracy_cost_ratio_missing']} seed(s)"
                     if iso["iso_accuracy_cost_ratio_missing"] else ""))
    return (f"    {method:<16} iso-cost acc {_number(iso['iso_cost_accuracy'])}{gain:<11} "
            f"iso-acc cost {_number(iso['iso_accuracy_cost'], 6)}{ratio}")


def baseline_points(report: Mapping[str, Any]) -> dict[str, tuple[list[dict[str, Any]], float]]:
    """Per baseline name, in report order: its points over seeds and their mean accuracy."""
    names = dict.fromkeys(b["name"] for b in report["baselines"])
    grouped = {name: [b for b in report["baselines"] if b["name"] == name] for name in names}
    return {name: (points, statistics.fmean(b["accuracy"] for b in points)) for name, points in grouped.items()}


def _baseline_lines(report: dict[str, Any]) -> list[str]:
    """Per baseline point, every method's iso measures against it (nothing without baselines)."""
    baselines = baseline_points(report)
    cost_field = report["cost_field"]
    lines = ["", "against each baseline point of the same seed: iso-cost = best accuracy at cost <= baseline's "
                 "(gain); iso-accuracy = lowest cost at accuracy >= baseline's (baseline cost / that cost); "
                 "means over seeds, ratio [min, max]"] if baselines else []
    for name, (points, accuracy) in baselines.items():
        lines.append(f"  {name} ({points[0]['method']}): accuracy {accuracy:.4f} (mean of {len(points)} seed(s)), "
                     f"{cost_field} {points[0][cost_field]:.5g}")
        lines += [_iso_line(row["method"], row["vs_baselines"][name])
                  for row in report["methods"] if name in row["vs_baselines"]]
    return lines


def oneshot_lines(report: Mapping[str, Any], digits: int, targeted_only: bool = False) -> list[str]:
    """Per one-shot method and seed: its archive's final hypervolume and, where the report has a
    target method, when it reached the target's (shared by the text and the markdown reports;
    ``targeted_only``: only the traces that have a target)."""
    lines = []
    for method, per_seed in report["oneshot"].items():
        for seed, trace in per_seed.items():
            goal = trace["target_hypervolume"]
            if goal is None and targeted_only:
                continue
            final = trace["trace"][-1][2] if trace["trace"] else 0.0
            reached = trace["reached_at"]
            line = (f"one-shot {method}, seed {seed}: archive hypervolume (one-shot validation accuracy) "
                    f"{final:.{digits}g} after {trace['evaluations']} mappings / {trace['wall_s']:.1f} s")
            if goal is not None:
                line += f" against {trace['target']}'s {goal:.{digits}g} (test accuracy): " + (
                    "never reached" if reached is None else
                    f"reached after {reached['evaluations']} candidates, {reached['seconds']:.1f} s")
            lines.append(line)
    return lines


def format_table(report: dict[str, Any]) -> str:
    """The report as readable text."""
    lines = [f"metric: {report['metric']} ({report['cost_field']}); accuracy: {report['accuracy']}",
             f"seeds: {', '.join(report['seeds'])}; hypervolume reference point (all seeds and methods): "
             f"{report['reference_point']['text']} (fraction = hypervolume / area of the reference box)"]
    warmup = report["warmup"]["mean_per_seed"]
    if warmup:
        lines.append(f"warmup (shared, once per seed, not in any method's compute): {warmup['epochs']:.0f} epochs, "
                     f"{warmup['wall_s']:.1f} s wall, {warmup['cpu_s']:.1f} s CPU per seed")
    lines += ["", *_method_lines(report), *_baseline_lines(report)]
    lines += ["", f"separation: {report['separation_rule']}"]
    lines += [f"  {line}" for line in separation_lines(report, digits=5)]
    return "\n".join(lines + oneshot_lines(report, digits=5))

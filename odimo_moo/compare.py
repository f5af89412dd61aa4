"""Comparison of mapping methods on one setup: fronts, hypervolume, iso-cost and iso-accuracy
against baseline points, wall time and trainings.

Points are outcomes (test accuracy, cost of one metric). Every method's hypervolume uses the same
reference point. Against every baseline point b (e.g. each heuristic mapping), a method reports

* iso-cost: its best accuracy among points costing at most b's cost (and the gain over b);
* iso-accuracy: its lowest cost among points at least as accurate as b, and the ratio
  ``b.cost / that cost`` -- the paper's "Nx lower latency at iso-accuracy".

A method's wall time and trainings are the sums over its outcomes (strategies record each outcome's
own share, so the sum is the method's total).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from .checkpoint import atomic_write_bytes, atomic_write_json
from .errors import UsageError
from .pareto import ReferencePoint, default_reference, hypervolume, pareto_mask
from .strategy import COST_FIELDS, Outcome

#: Files read by :func:`load_outcomes`: per-run results, study results and fronts, baseline lists.
OUTCOME_FILES = ("result.json", "results.json", "pareto.json", "baselines.json")
_REQUIRED = ("strategy", "accuracy", "latency_cycles", "energy_uj")
_FIELDS = {f.name for f in dataclasses.fields(Outcome)}


# ----------------------------------------------------------------------------- reading
def _outcome(data: dict[str, Any]) -> Outcome:
    known = {k: v for k, v in data.items() if k in _FIELDS}
    known.setdefault("val_accuracy", known["accuracy"])
    known.setdefault("channel_split", {})
    return Outcome.from_dict(known)


def find_outcomes(payload: Any) -> list[Outcome]:
    """Every outcome dict (one with strategy, accuracy, latency_cycles, energy_uj) anywhere in a
    JSON document: a single outcome, a list of them, or nested under any keys."""
    if isinstance(payload, dict):
        if all(key in payload for key in _REQUIRED):
            return [_outcome(payload)]
        return [o for value in payload.values() for o in find_outcomes(value)]
    if isinstance(payload, list):
        return [o for item in payload for o in find_outcomes(item)]
    return []


def _key(outcome: Outcome) -> tuple:
    return (outcome.strategy, outcome.label, outcome.accuracy, outcome.val_accuracy, outcome.latency_cycles,
            outcome.energy_uj)


def unique(outcomes: Iterable[Outcome]) -> list[Outcome]:
    """Outcomes without repeats (the same point read from a run's result.json and a study's results)."""
    seen: dict[tuple, Outcome] = {}
    for outcome in outcomes:
        seen.setdefault(_key(outcome), outcome)
    return list(seen.values())


def load_outcomes(folder: Path) -> list[Outcome]:
    """Outcomes found under ``folder`` (recursively) in files named as in :data:`OUTCOME_FILES`."""
    if not folder.is_dir():
        raise UsageError(f"--from {folder}: no such folder")
    found = []
    for path in sorted(p for name in OUTCOME_FILES for p in folder.rglob(name)):
        try:
            found += find_outcomes(json.loads(path.read_text()))
        except (OSError, json.JSONDecodeError) as exc:
            raise UsageError(f"--from {folder}: cannot read {path} ({exc})") from exc
        except (TypeError, ValueError) as exc:
            raise UsageError(f"--from {folder}: {path} holds a malformed result ({exc})") from exc
    outcomes = unique(found)
    if not outcomes:
        raise UsageError(f"--from {folder}: no results found (looked for {', '.join(OUTCOME_FILES)} written by "
                         f"odimo search, run or compare)")
    return outcomes


# ----------------------------------------------------------------------------- analysis
def cost_of(outcome: Outcome, metric: str) -> float:
    if metric not in COST_FIELDS:
        raise UsageError(f"unknown metric {metric!r}; choose one of {', '.join(COST_FIELDS)}")
    return float(getattr(outcome, COST_FIELDS[metric]))


def baseline_name(outcome: Outcome) -> str:
    return outcome.label or outcome.strategy


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


def build_report(outcomes: Sequence[Outcome], metric: str, baseline_methods: Sequence[str],
                 reference: ReferencePoint | None = None, methods: Sequence[str] | None = None) -> dict[str, Any]:
    """The comparison of every method in ``outcomes`` (baselines last), or of ``methods`` in that order.

    Baselines are the points of ``baseline_methods``; the hypervolume reference point defaults to
    accuracy 0 and 1.1 x the largest cost of any point.
    """
    found = list(dict.fromkeys(o.strategy for o in outcomes))
    order = list(methods) if methods is not None else (
        [m for m in found if m not in baseline_methods] + [m for m in found if m in baseline_methods])
    chosen = [o for o in outcomes if o.strategy in order]
    missing = [m for m in order if not any(o.strategy == m for o in chosen)]
    if missing:
        raise UsageError(f"no results for method(s) {', '.join(missing)}; found: "
                         f"{', '.join(sorted({o.strategy for o in outcomes})) or 'none'}")
    baselines = [o for o in chosen if o.strategy in baseline_methods]
    reference = reference or default_reference([cost_of(o, metric) for o in chosen])
    box = (1.0 - reference.accuracy) * reference.cost
    rows = []
    for method in order:
        points = [o for o in chosen if o.strategy == method]
        acc = [o.accuracy for o in points]
        cst = [cost_of(o, metric) for o in points]
        front = pareto_mask(acc, cst)
        volume = hypervolume(acc, cst, reference)
        rows.append({
            "method": method,
            "points": len(points),
            "front_points": int(front.sum()),
            "hypervolume": volume,
            "hypervolume_fraction": volume / box if box > 0 else 0.0,
            "best_accuracy": max(acc),
            "lowest_cost": min(cst),
            "wall_time_s": sum(o.wall_time_s for o in points),
            "trainings": sum(o.trainings for o in points),
            "vs_baselines": {} if method in baseline_methods else {
                baseline_name(b): iso_comparison(acc, cst, b.accuracy, cost_of(b, metric)) for b in baselines},
            "front": [{"label": o.label, "accuracy": o.accuracy, COST_FIELDS[metric]: c}
                      for o, c, keep in sorted(zip(points, cst, front), key=lambda t: t[1]) if keep],
            "all_points": [{"label": o.label, "accuracy": o.accuracy, COST_FIELDS[metric]: c}
                           for o, c in sorted(zip(points, cst), key=lambda t: t[1])],
        })
    return {
        "metric": metric,
        "cost_field": COST_FIELDS[metric],
        "accuracy": "test accuracy of each fine-tuned network",
        "reference_point": {"accuracy": reference.accuracy, COST_FIELDS[metric]: reference.cost,
                            "text": reference.describe(COST_FIELDS[metric])},
        "baselines": [{"name": baseline_name(b), "method": b.strategy, "accuracy": b.accuracy,
                       COST_FIELDS[metric]: cost_of(b, metric)} for b in baselines],
        "methods": rows,
    }


# ----------------------------------------------------------------------------- output
def _number(value: float | None, digits: int = 4) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}g}"


def report_csv(report: dict[str, Any]) -> str:
    """One row per method; per baseline, the iso-cost accuracy, iso-accuracy cost and cost ratio."""
    baselines = [b["name"] for b in report["baselines"]]
    columns = ["method", "points", "front_points", "hypervolume", "hypervolume_fraction", "best_accuracy",
               "lowest_cost", "wall_time_s", "trainings"]
    per_baseline = ["iso_cost_accuracy", "iso_accuracy_cost", "iso_accuracy_cost_ratio"]
    header = columns + [f"{field}[{b}]" for b in baselines for field in per_baseline]
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    for row in report["methods"]:
        extra = [row["vs_baselines"].get(b, {}).get(field) for b in baselines for field in per_baseline]
        writer.writerow([row[c] for c in columns] + ["" if v is None else v for v in extra])
    return buffer.getvalue()


def format_table(report: dict[str, Any]) -> str:
    """The report as readable text."""
    cost_field = report["cost_field"]
    lines = [f"metric: {report['metric']} ({cost_field}); accuracy: {report['accuracy']}",
             f"hypervolume reference point: {report['reference_point']['text']} "
             f"(fraction = hypervolume / area of the reference box)", ""]
    lines.append(f"{'method':<16} {'points':>6} {'front':>5} {'hypervolume':>12} {'fraction':>8} "
                 f"{'best acc':>8} {'lowest cost':>12} {'wall [s]':>9} {'trainings':>9}")
    for row in report["methods"]:
        lines.append(f"{row['method']:<16} {row['points']:>6} {row['front_points']:>5} "
                     f"{row['hypervolume']:>12.5g} {row['hypervolume_fraction']:>8.4f} {row['best_accuracy']:>8.4f} "
                     f"{row['lowest_cost']:>12.5g} {row['wall_time_s']:>9.1f} {row['trainings']:>9}")
    if report["baselines"]:
        lines += ["", "against each baseline: iso-cost = best accuracy at cost <= baseline's (gain); "
                      "iso-accuracy = lowest cost at accuracy >= baseline's (baseline cost / that cost)"]
    for baseline in report["baselines"]:
        lines.append(f"  {baseline['name']} ({baseline['method']}): accuracy {baseline['accuracy']:.4f}, "
                     f"{cost_field} {baseline[cost_field]:.5g}")
        for row in report["methods"]:
            if baseline["name"] not in row["vs_baselines"]:
                continue
            iso = row["vs_baselines"][baseline["name"]]
            gain = "" if iso["iso_cost_accuracy_gain"] is None else f" ({iso['iso_cost_accuracy_gain']:+.4f})"
            ratio = "" if iso["iso_accuracy_cost_ratio"] is None else f" ({iso['iso_accuracy_cost_ratio']:.2f}x)"
            lines.append(f"    {row['method']:<16} iso-cost acc {_number(iso['iso_cost_accuracy'])}{gain:<11} "
                         f"iso-acc cost {_number(iso['iso_accuracy_cost'], 6)}{ratio}")
    return "\n".join(lines)


def plot_report(report: dict[str, Any], path: Path) -> None:
    """Every method's points and front (steps), baselines as labelled markers; written to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cost_field = report["cost_field"]
    figure, axes = plt.subplots(figsize=(8, 5.5))
    baseline_methods = {b["method"] for b in report["baselines"]}
    for row in report["methods"]:
        if row["method"] in baseline_methods:
            continue
        points = row["all_points"]
        scatter = axes.scatter([p[cost_field] for p in points], [p["accuracy"] for p in points], s=18, alpha=0.5)
        front = row["front"]
        axes.step([p[cost_field] for p in front], [p["accuracy"] for p in front], where="post", marker="o",
                  color=scatter.get_facecolor()[0][:3], label=f"{row['method']} (HV {row['hypervolume_fraction']:.3f})")
    for baseline in report["baselines"]:
        axes.scatter([baseline[cost_field]], [baseline["accuracy"]], marker="*", s=140, color="black", zorder=3)
        axes.annotate(baseline["name"], (baseline[cost_field], baseline["accuracy"]), textcoords="offset points",
                      xytext=(5, 4), fontsize=8)
    axes.set_xlabel(cost_field)
    axes.set_ylabel("test accuracy")
    axes.set_title(f"accuracy vs {report['metric']} (HV reference: {report['reference_point']['text']})", fontsize=9)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8, loc="lower right")
    buffer = io.BytesIO()
    figure.tight_layout()
    figure.savefig(buffer, format="png", dpi=120)
    plt.close(figure)
    atomic_write_bytes(path, buffer.getvalue())


def write_report(report: dict[str, Any], baselines: Sequence[Outcome], folder: Path) -> dict[str, Path]:
    """Write compare.json, compare.csv, compare.png and baselines.json (the baseline outcomes, for
    ``odimo report`` to draw as markers) into ``folder``; return their paths."""
    paths = {"json": folder / "compare.json", "csv": folder / "compare.csv", "png": folder / "compare.png",
             "baselines": folder / "baselines.json"}
    atomic_write_json(paths["json"], report)
    atomic_write_bytes(paths["csv"], report_csv(report).encode())
    plot_report(report, paths["png"])
    atomic_write_json(paths["baselines"], [b.to_dict() for b in baselines])
    return paths

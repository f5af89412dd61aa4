"""Comparison of mapping methods on one setup over one or more seeds: fronts, hypervolume, iso-cost
and iso-accuracy against baseline points, compute, and which differences exceed the seed noise.

Points are outcomes (test accuracy, cost of one metric), grouped by seed (``Outcome.seed``; files
written before seeds were recorded form one group). Every hypervolume, of every seed and method, uses
ONE reference point. Per seed and against every baseline point b of the same seed (e.g. each
heuristic mapping), a method reports

* iso-cost: its best accuracy among points costing at most b's cost (and the gain over b);
* iso-accuracy: its lowest cost among points at least as accurate as b, and the ratio
  ``b.cost / that cost`` -- the paper's "Nx lower latency at iso-accuracy".

Over seeds each measure is given as mean, sample standard deviation, min and max, and a method is
called better than another only where the seeds' ranges separate (:data:`SEPARATION_RULE`). A
method's compute is per seed the sum over its outcomes (strategies record each outcome's own share):
training epochs after the shared warmup, one-shot mappings scored and images forwarded, wall and CPU
seconds; the warmup is reported apart, once per seed.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import itertools
import json
import math
import statistics
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from .checkpoint import atomic_write_bytes, atomic_write_json
from .errors import UsageError
from .oneshot import Scored, hypervolume_trace
from .pareto import ReferencePoint, default_reference, hypervolume, pareto_mask
from .strategy import COST_FIELDS, Outcome

#: Files read by :func:`load_outcomes`: per-run results, study results and fronts, baseline lists.
OUTCOME_FILES = ("result.json", "results.json", "pareto.json", "baselines.json")
#: Per-seed record of the shared warmup written by ``odimo compare`` (read back by :func:`load_warmups`).
WARMUP_FILE = "warmup.json"
#: A one-shot search's record (read back by :func:`load_searches`).
SEARCH_FILE = "search.json"
_REQUIRED = ("strategy", "accuracy", "latency_cycles", "energy_uj")
_FIELDS = {f.name for f in dataclasses.fields(Outcome)}

SEPARATION_RULE = ("A is called better than B on a measure only where the seeds' min-max ranges do not "
                   "overlap: A's worst seed is better than B's best seed, with at least 2 seeds each; "
                   "otherwise the difference is within the seed-to-seed noise. For iso-accuracy cost "
                   "ratios, a seed where a method reaches no point as accurate as the baseline counts as "
                   "ratio 0, and a baseline's ratio against itself is 1 in every seed.")
MEDIAN_FRONT = ("median attainment front: at each cost, the accuracy reached (at that cost or less) by at "
                "least half of the seeds' fronts (ceil(n/2) of n seeds)")
#: The compute measures of a method, per seed: Outcome field -> report key.
COMPUTE_FIELDS = {"train_epochs": "train_epochs", "oneshot_evaluations": "oneshot_evaluations",
                  "oneshot_images": "oneshot_images", "wall_time_s": "wall_s", "cpu_time_s": "cpu_s"}


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
    return (outcome.strategy, outcome.label, outcome.seed, outcome.accuracy, outcome.val_accuracy,
            outcome.latency_cycles, outcome.energy_uj)


def unique(outcomes: Iterable[Outcome]) -> list[Outcome]:
    """Outcomes without repeats (the same point read from a run's result.json and a study's results)."""
    seen: dict[tuple, Outcome] = {}
    for outcome in outcomes:
        seen.setdefault(_key(outcome), outcome)
    return list(seen.values())


def _read_json(folder: Path, path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UsageError(f"--from {folder}: cannot read {path} ({exc})") from exc


def load_outcomes(folder: Path) -> list[Outcome]:
    """Outcomes found under ``folder`` (recursively) in files named as in :data:`OUTCOME_FILES`."""
    if not folder.is_dir():
        raise UsageError(f"--from {folder}: no such folder")
    found = []
    for path in sorted(p for name in OUTCOME_FILES for p in folder.rglob(name)):
        try:
            found += find_outcomes(_read_json(folder, path))
        except (TypeError, ValueError) as exc:
            if isinstance(exc, UsageError):
                raise
            raise UsageError(f"--from {folder}: {path} holds a malformed result ({exc})") from exc
    outcomes = unique(found)
    if not outcomes:
        raise UsageError(f"--from {folder}: no results found (looked for {', '.join(OUTCOME_FILES)} written by "
                         f"odimo search, run or compare)")
    return outcomes


def load_warmups(folder: Path) -> dict[int | None, list[dict[str, Any]]]:
    """Per seed, the warmup records (``epochs``, ``wall_s``, ``cpu_s``) of the :data:`WARMUP_FILE`
    files under ``folder`` (none in folders of other commands or older versions)."""
    found: dict[int | None, list[dict[str, Any]]] = {}
    for path in sorted(folder.rglob(WARMUP_FILE)):
        data = _read_json(folder, path)
        if isinstance(data, dict) and isinstance(data.get("warmups"), list):
            found.setdefault(data.get("seed"), []).extend(data["warmups"])
    return found


def load_searches(folder: Path) -> list[dict[str, Any]]:
    """The one-shot search records (:data:`SEARCH_FILE`, with their strategy and seed) under ``folder``."""
    found = []
    for path in sorted(folder.rglob(SEARCH_FILE)):
        data = _read_json(folder, path)
        if isinstance(data, dict) and "strategy" in data and isinstance(data.get("points"), list):
            found.append(data)
    return found


# ----------------------------------------------------------------------------- statistics
def cost_of(outcome: Outcome, metric: str) -> float:
    """The outcome's cost of ``metric`` (latency in cycles or energy in microjoules)."""
    if metric not in COST_FIELDS:
        raise UsageError(f"unknown metric {metric!r}; choose one of {', '.join(COST_FIELDS)}")
    return float(getattr(outcome, COST_FIELDS[metric]))


def baseline_name(outcome: Outcome) -> str:
    """How a baseline point is named in the report: its label, else its strategy."""
    return outcome.label or outcome.strategy


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


# ----------------------------------------------------------------------------- the report
def _seed_order(seed: int | None) -> tuple[int, int]:
    return (0, 0) if seed is None else (1, seed)


def _points(outcomes: Sequence[Outcome], metric: str) -> list[dict[str, Any]]:
    field = COST_FIELDS[metric]
    return [{"label": o.label, "accuracy": o.accuracy, field: cost_of(o, metric)}
            for o in sorted(outcomes, key=lambda o: cost_of(o, metric))]


def _seed_row(points: Sequence[Outcome], baselines: Sequence[Outcome], metric: str, reference: ReferencePoint,
              is_baseline: bool) -> dict[str, Any]:
    acc = [o.accuracy for o in points]
    cst = [cost_of(o, metric) for o in points]
    mask = pareto_mask(acc, cst)
    compute = {key: sum(float(getattr(o, name)) for o in points) for name, key in COMPUTE_FIELDS.items()}
    return {
        "points": len(points),
        "front_points": int(mask.sum()),
        "hypervolume": hypervolume(acc, cst, reference),
        "best_accuracy": max(acc),
        "lowest_cost": min(cst),
        "compute": compute,
        "vs_baselines": {} if is_baseline else {
            baseline_name(b): iso_comparison(acc, cst, b.accuracy, cost_of(b, metric)) for b in baselines},
        "front": _points([o for o, keep in zip(points, mask) if keep], metric),
        "all_points": _points(points, metric),
    }


def _vs_baseline(per_seed: Mapping[str, dict[str, Any]], name: str) -> dict[str, Any]:
    """Over seeds, one method's iso measures against the baseline point called ``name``."""
    found = {seed: row["vs_baselines"][name] for seed, row in per_seed.items() if name in row["vs_baselines"]}
    summary: dict[str, Any] = {"seeds": len(found)}
    for measure in ("iso_cost_accuracy", "iso_cost_accuracy_gain", "iso_accuracy_cost", "iso_accuracy_cost_ratio"):
        values = [iso[measure] for iso in found.values() if iso[measure] is not None]
        stats = spread(values)
        summary[measure] = stats["mean"]
        for key in ("std", "min", "max"):
            summary[f"{measure}_{key}"] = stats[key]
        summary[f"{measure}_missing"] = len(found) - len(values)
    summary["per_seed"] = found
    return summary


def _ratios(per_seed: Mapping[str, dict[str, Any]], name: str) -> list[float]:
    """Per seed, the iso-accuracy cost ratio against ``name`` (0 where no point is as accurate)."""
    values = []
    for row in per_seed.values():
        if name in row["vs_baselines"]:
            ratio = row["vs_baselines"][name]["iso_accuracy_cost_ratio"]
            values.append(0.0 if ratio is None else ratio)
    return values


def _separations(rows: Sequence[dict[str, Any]], baseline_names: Sequence[str],
                 baseline_methods: Sequence[str]) -> list[dict[str, Any]]:
    """Every pair (better, worse) whose seeds' ranges separate: on hypervolume, and per baseline point
    on the iso-accuracy cost ratio (a method against the baseline itself, ratio 1, and pairs of methods)."""
    found = []
    for a, b in itertools.permutations(rows, 2):
        mine = [s["hypervolume"] for s in a["per_seed"].values()]
        theirs = [s["hypervolume"] for s in b["per_seed"].values()]
        if separated(mine, theirs):
            found.append({"measure": "hypervolume", "better": a["method"], "worse": b["method"],
                          "better_range": [min(mine), max(mine)], "worse_range": [min(theirs), max(theirs)]})
    searched = [r for r in rows if r["method"] not in baseline_methods]
    for name in baseline_names:
        measure = f"iso_accuracy_cost_ratio[{name}]"
        ranges = {r["method"]: _ratios(r["per_seed"], name) for r in searched}
        for method, values in ranges.items():
            itself = [1.0] * len(values)
            for better, worse, left, right in ((method, name, values, itself), (name, method, itself, values)):
                if separated(left, right):
                    found.append({"measure": measure, "better": better, "worse": worse,
                                  "better_range": [min(left), max(left)], "worse_range": [min(right), max(right)]})
        for a, b in itertools.permutations(ranges, 2):
            if separated(ranges[a], ranges[b]):
                found.append({"measure": measure, "better": a, "worse": b,
                              "better_range": [min(ranges[a]), max(ranges[a])],
                              "worse_range": [min(ranges[b]), max(ranges[b])]})
    return found


def _warmup_summary(warmups: Mapping[int | None, Sequence[Mapping[str, Any]]]) -> dict[str, Any]:
    per_seed = {}
    for seed, records in sorted(warmups.items(), key=lambda item: _seed_order(item[0])):
        per_seed[seed_name(seed)] = {key: sum(float(r.get(key, 0.0)) for r in records)
                                     for key in ("epochs", "wall_s", "cpu_s")}
    mean = {key: statistics.fmean(v[key] for v in per_seed.values()) for key in ("epochs", "wall_s", "cpu_s")} \
        if per_seed else {}
    return {"per_seed": per_seed, "mean_per_seed": mean,
            "text": "shared lambda-free warmup, computed once per seed and reused by every method "
                    "(not counted in any method's compute)"}


def _oneshot_traces(searches: Sequence[Mapping[str, Any]], metric: str, reference: ReferencePoint,
                    rows: Sequence[dict[str, Any]], target: str | None) -> dict[str, dict[str, Any]]:
    """Per one-shot method and seed: its archive's hypervolume against evaluations (one-shot
    validation accuracy, the report's reference point), and the first (evaluations, seconds) at which
    it reached the target method's hypervolume of that seed."""
    field = COST_FIELDS[metric]
    target_hv = next(({seed: s["hypervolume"] for seed, s in r["per_seed"].items()}
                      for r in rows if r["method"] == target), {})
    traces: dict[str, dict[str, Any]] = {}
    for search in searches:
        if search.get("metric", metric) != metric or not all(field in p for p in search["points"]):
            continue
        points = [Scored((), float(p["val_accuracy"]), float(p[field]), int(p.get("evaluation", i + 1)),
                       float(p.get("seconds", 0.0))) for i, p in enumerate(search["points"])]
        trace = hypervolume_trace(points, reference)
        seed = seed_name(search.get("seed"))
        goal = target_hv.get(seed)
        reached = next((step for step in trace if goal is not None and step[2] >= goal), None)
        traces.setdefault(str(search["strategy"]), {})[seed] = {
            "trace": trace, "target": target, "target_hypervolume": goal,
            "reached_at": None if reached is None else {"evaluations": reached[0], "seconds": reached[1]},
            "evaluations": int(search.get("evaluated", len(points))), "wall_s": float(search.get("wall_time_s", 0.0))}
    return traces


def build_report(outcomes: Sequence[Outcome], metric: str, baseline_methods: Sequence[str],
                 reference: ReferencePoint | None = None, methods: Sequence[str] | None = None,
                 warmups: Mapping[int | None, Sequence[Mapping[str, Any]]] | None = None,
                 searches: Sequence[Mapping[str, Any]] = (), target: str = "odimo") -> dict[str, Any]:
    """The comparison of every method in ``outcomes`` (baselines last), or of ``methods`` in that order.

    Baselines are the points of ``baseline_methods``, compared per seed with the same seed's points.
    The hypervolume reference point (one for every seed and method) defaults to accuracy 0 and 1.1 x
    the largest cost of any point. ``warmups`` (per seed, see :func:`load_warmups`) are reported
    apart; ``searches`` (one-shot search records) give each one-shot method's hypervolume against
    evaluations and where it reached ``target``'s hypervolume.
    """
    found = list(dict.fromkeys(o.strategy for o in outcomes))
    order = list(methods) if methods is not None else (
        [m for m in found if m not in baseline_methods] + [m for m in found if m in baseline_methods])
    chosen = [o for o in outcomes if o.strategy in order]
    missing = [m for m in order if not any(o.strategy == m for o in chosen)]
    if missing:
        raise UsageError(f"no results for method(s) {', '.join(missing)}; found: "
                         f"{', '.join(sorted({o.strategy for o in outcomes})) or 'none'}")
    seeds = sorted({o.seed for o in chosen}, key=_seed_order)
    baselines = {seed: [o for o in chosen if o.seed == seed and o.strategy in baseline_methods] for seed in seeds}
    names = list(dict.fromkeys(baseline_name(b) for seed in seeds for b in baselines[seed]))
    reference = reference or default_reference([cost_of(o, metric) for o in chosen])
    box = (1.0 - reference.accuracy) * reference.cost
    cost_field = COST_FIELDS[metric]
    rows = []
    for method in order:
        per_seed = {}
        for seed in seeds:
            points = [o for o in chosen if o.strategy == method and o.seed == seed]
            if points:
                per_seed[seed_name(seed)] = _seed_row(points, baselines[seed], metric, reference,
                                                      method in baseline_methods)
        volumes = spread([s["hypervolume"] for s in per_seed.values()])
        compute = {key: statistics.fmean(s["compute"][key] for s in per_seed.values())
                   for key in COMPUTE_FIELDS.values()}
        median = median_attainment([[(p[cost_field], p["accuracy"]) for p in s["front"]] for s in per_seed.values()])
        rows.append({
            "method": method,
            "seeds": list(per_seed),
            "points": sum(s["points"] for s in per_seed.values()),
            "front_points": sum(s["front_points"] for s in per_seed.values()),
            "hypervolume": volumes["mean"],
            "hypervolume_std": volumes["std"],
            "hypervolume_min": volumes["min"],
            "hypervolume_max": volumes["max"],
            "hypervolume_fraction": volumes["mean"] / box if box > 0 else 0.0,
            "best_accuracy": max(s["best_accuracy"] for s in per_seed.values()),
            "lowest_cost": min(s["lowest_cost"] for s in per_seed.values()),
            "compute": compute,
            "wall_time_s": compute["wall_s"],
            "vs_baselines": {} if method in baseline_methods else {
                name: _vs_baseline(per_seed, name) for name in names},
            "median_front": [{"accuracy": a, cost_field: c} for c, a in median],
            "per_seed": per_seed,
        })
    return {
        "metric": metric,
        "cost_field": cost_field,
        "accuracy": "test accuracy of each trained network (the fine-tune epoch with the best validation accuracy)",
        "seeds": [seed_name(s) for s in seeds],
        "reference_point": {"accuracy": reference.accuracy, cost_field: reference.cost,
                            "text": reference.describe(cost_field)},
        "separation_rule": SEPARATION_RULE,
        "median_front": MEDIAN_FRONT,
        "compute": "per seed, mean over seeds: epochs trained after the shared warmup, one-shot mappings scored "
                   "and images forwarded (BatchNorm recalibration included), wall and CPU seconds",
        "warmup": _warmup_summary(warmups or {}),
        "baselines": [{"name": baseline_name(b), "method": b.strategy, "seed": seed_name(seed), "accuracy": b.accuracy,
                       cost_field: cost_of(b, metric)} for seed in seeds for b in baselines[seed]],
        "methods": rows,
        "separations": _separations(rows, names, baseline_methods),
        "oneshot": _oneshot_traces(searches, metric, reference, rows, target if target in order else None),
    }


# ----------------------------------------------------------------------------- output
def _number(value: float | None, digits: int = 4) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}g}"


def _spread_text(mean: float | None, std: float | None, low: float | None, high: float | None, n: int,
                 digits: int = 4) -> str:
    if mean is None:
        return "-"
    if n < 2:
        return _number(mean, digits)
    return f"{_number(mean, digits)} +- {_number(std, 2)} [{_number(low, digits)}, {_number(high, digits)}]"


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


def format_table(report: dict[str, Any]) -> str:
    """The report as readable text."""
    cost_field = report["cost_field"]
    seeds = report["seeds"]
    lines = [f"metric: {report['metric']} ({cost_field}); accuracy: {report['accuracy']}",
             f"seeds: {', '.join(seeds)}; hypervolume reference point (all seeds and methods): "
             f"{report['reference_point']['text']} (fraction = hypervolume / area of the reference box)"]
    warmup = report["warmup"]["mean_per_seed"]
    if warmup:
        lines.append(f"warmup (shared, once per seed, not in any method's compute): {warmup['epochs']:.0f} epochs, "
                     f"{warmup['wall_s']:.1f} s wall, {warmup['cpu_s']:.1f} s CPU per seed")
    lines += ["", "hypervolume: mean +- std [min, max] over seeds; compute per seed (mean): epochs after the warmup, "
                  "one-shot mappings / images, wall and CPU seconds",
              f"{'method':<16} {'pts':>4} {'hypervolume':>40} {'fraction':>8} {'best acc':>8} {'epochs':>7} "
              f"{'one-shot':>8} {'images':>9} {'wall [s]':>9} {'CPU [s]':>9}"]
    for row in report["methods"]:
        compute = row["compute"]
        volume = _spread_text(row["hypervolume"], row["hypervolume_std"], row["hypervolume_min"],
                              row["hypervolume_max"], len(row["seeds"]), 5)
        lines.append(f"{row['method']:<16} {row['points']:>4} {volume:>40} {row['hypervolume_fraction']:>8.4f} "
                     f"{row['best_accuracy']:>8.4f} {compute['train_epochs']:>7.0f} "
                     f"{compute['oneshot_evaluations']:>8.0f} {compute['oneshot_images']:>9.0f} "
                     f"{compute['wall_s']:>9.1f} {compute['cpu_s']:>9.1f}")
    names = list(dict.fromkeys(b["name"] for b in report["baselines"]))
    if names:
        lines += ["", "against each baseline point of the same seed: iso-cost = best accuracy at cost <= baseline's "
                      "(gain); iso-accuracy = lowest cost at accuracy >= baseline's (baseline cost / that cost); "
                      "means over seeds, ratio [min, max]"]
    for name in names:
        points = [b for b in report["baselines"] if b["name"] == name]
        accuracy = statistics.fmean(b["accuracy"] for b in points)
        lines.append(f"  {name} ({points[0]['method']}): accuracy {accuracy:.4f} (mean of {len(points)} seed(s)), "
                     f"{cost_field} {points[0][cost_field]:.5g}")
        for row in report["methods"]:
            if name not in row["vs_baselines"]:
                continue
            iso = row["vs_baselines"][name]
            gain = "" if iso["iso_cost_accuracy_gain"] is None else f" ({iso['iso_cost_accuracy_gain']:+.4f})"
            ratio = "" if iso["iso_accuracy_cost_ratio"] is None else f" ({iso['iso_accuracy_cost_ratio']:.2f}x)"
            if iso["iso_accuracy_cost_ratio"] is not None and iso["seeds"] > 1:
                ratio += (f" [{iso['iso_accuracy_cost_ratio_min']:.2f}x, {iso['iso_accuracy_cost_ratio_max']:.2f}x]"
                          + (f", none as accurate in {iso['iso_accuracy_cost_ratio_missing']} seed(s)"
                             if iso["iso_accuracy_cost_ratio_missing"] else ""))
            lines.append(f"    {row['method']:<16} iso-cost acc {_number(iso['iso_cost_accuracy'])}{gain:<11} "
                         f"iso-acc cost {_number(iso['iso_accuracy_cost'], 6)}{ratio}")
    lines += ["", f"separation: {report['separation_rule']}"]
    lines += [f"  {line}" for line in separation_lines(report, digits=5)]
    for method, per_seed in report["oneshot"].items():
        for seed, trace in per_seed.items():
            final = trace["trace"][-1] if trace["trace"] else [0, 0.0, 0.0]
            reached = trace["reached_at"]
            goal = "" if trace["target_hypervolume"] is None else (
                f"; {trace['target']}'s hypervolume ({trace['target_hypervolume']:.5g}) "
                + ("never reached" if reached is None else
                   f"reached after {reached['evaluations']} candidates, {reached['seconds']:.1f} s"))
            lines.append(f"one-shot {method} seed {seed}: archive hypervolume (validation accuracy) {final[2]:.5g} "
                         f"after {trace['evaluations']} mappings, {trace['wall_s']:.1f} s{goal}")
    return "\n".join(lines)


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

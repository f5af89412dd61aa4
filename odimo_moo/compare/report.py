"""The comparison report: per method and seed its front, hypervolume, iso measures and compute, and
over seeds their spread, the separations, the warmup and the one-shot traces."""

from __future__ import annotations

import itertools
import statistics
from typing import Any, Mapping, Sequence

from ..errors import UsageError
from ..front_point import COST_FIELDS, FrontPoint
from ..pareto import ReferencePoint, Scored, default_reference, front_indices, hypervolume_trace, points_hypervolume
from .stats import MEDIAN_FRONT, SEPARATION_RULE, iso_comparison, median_attainment, seed_name, separated, spread

#: The compute measures of a method, per seed: FrontPoint field -> report key.
COMPUTE_FIELDS = {"train_epochs": "train_epochs", "oneshot_evaluations": "oneshot_evaluations",
                  "oneshot_images": "oneshot_images", "wall_time_s": "wall_s", "cpu_time_s": "cpu_s"}


def _seed_order(seed: int | None) -> tuple[int, int]:
    return (0, 0) if seed is None else (1, seed)


def _seed_row(points: Sequence[FrontPoint], baselines: Sequence[FrontPoint], metric: str,
              reference: ReferencePoint, is_baseline: bool) -> dict[str, Any]:
    """One method's points of one seed: front, hypervolume, best accuracy and lowest cost, compute and
    (unless it is a baseline method) its iso measures against each baseline point of the seed."""
    acc = [p.accuracy for p in points]
    cst = [p.cost(metric) for p in points]
    front = [points[i] for i in front_indices(points, metric)]
    compute = {key: sum(float(getattr(p, name)) for p in points) for name, key in COMPUTE_FIELDS.items()}
    return {
        "points": len(points),
        "front_points": len(front),
        "hypervolume": points_hypervolume(points, metric, reference),
        "best_accuracy": max(acc),
        "lowest_cost": min(cst),
        "compute": compute,
        "vs_baselines": {} if is_baseline else {
            b.name: iso_comparison(acc, cst, b.accuracy, b.cost(metric)) for b in baselines},
        "front": [p.brief(metric) for p in front],
        "all_points": [p.brief(metric) for p in sorted(points, key=lambda p: p.cost(metric))],
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


def _chosen(points: Sequence[FrontPoint], baseline_methods: Sequence[str],
            methods: Sequence[str] | None) -> tuple[list[str], list[FrontPoint]]:
    """The methods in report order (``methods``, else every one found with baselines last) and their
    points; a method without results is a usage error."""
    found = list(dict.fromkeys(o.strategy for o in points))
    order = list(methods) if methods is not None else (
        [m for m in found if m not in baseline_methods] + [m for m in found if m in baseline_methods])
    chosen = [o for o in points if o.strategy in order]
    missing = [m for m in order if not any(o.strategy == m for o in chosen)]
    if missing:
        raise UsageError(f"no results for method(s) {', '.join(missing)}; found: "
                         f"{', '.join(sorted({o.strategy for o in points})) or 'none'}")
    return order, chosen


def _method_row(method: str, per_seed: dict[str, dict[str, Any]], baseline_names: Sequence[str],
                reference: ReferencePoint, cost_field: str) -> dict[str, Any]:
    """One method over seeds, from its per-seed rows (iso measures against ``baseline_names``)."""
    box = (1.0 - reference.accuracy) * reference.cost
    volumes = spread([s["hypervolume"] for s in per_seed.values()])
    compute = {key: statistics.fmean(s["compute"][key] for s in per_seed.values())
               for key in COMPUTE_FIELDS.values()}
    median = median_attainment([[(p[cost_field], p["accuracy"]) for p in s["front"]] for s in per_seed.values()])
    return {
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
        "vs_baselines": {name: _vs_baseline(per_seed, name) for name in baseline_names},
        "median_front": [{"accuracy": a, cost_field: c} for c, a in median],
        "per_seed": per_seed,
    }


def build_report(points: Sequence[FrontPoint], metric: str, baseline_methods: Sequence[str],
                 reference: ReferencePoint | None = None, methods: Sequence[str] | None = None,
                 warmups: Mapping[int | None, Sequence[Mapping[str, Any]]] | None = None,
                 searches: Sequence[Mapping[str, Any]] = (), target: str = "odimo") -> dict[str, Any]:
    """The comparison of every method in ``points`` (baselines last), or of ``methods`` in that order.

    Baselines are the points of ``baseline_methods``, compared per seed with the same seed's points.
    The hypervolume reference point (one for every seed and method) defaults to accuracy 0 and 1.1 x
    the largest cost of any point. ``warmups`` (per seed, see :func:`load_warmups`) are reported
    apart; ``searches`` (one-shot search records) give each one-shot method's hypervolume against
    evaluations and where it reached ``target``'s hypervolume.
    """
    order, chosen = _chosen(points, baseline_methods, methods)
    seeds = sorted({o.seed for o in chosen}, key=_seed_order)
    baselines = {seed: [o for o in chosen if o.seed == seed and o.strategy in baseline_methods] for seed in seeds}
    names = list(dict.fromkeys(b.name for seed in seeds for b in baselines[seed]))
    reference = reference or default_reference([o.cost(metric) for o in chosen])
    cost_field = COST_FIELDS[metric]
    rows = []
    for method in order:
        per_seed = {}
        for seed in seeds:
            mine = [o for o in chosen if o.strategy == method and o.seed == seed]
            if mine:
                per_seed[seed_name(seed)] = _seed_row(mine, baselines[seed], metric, reference,
                                                      method in baseline_methods)
        rows.append(_method_row(method, per_seed, [] if method in baseline_methods else names, reference,
                                cost_field))
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
        "baselines": [{"name": b.name, "method": b.strategy, "seed": seed_name(seed), "accuracy": b.accuracy,
                       cost_field: b.cost(metric)} for seed in seeds for b in baselines[seed]],
        "methods": rows,
        "separations": _separations(rows, names, baseline_methods),
        "oneshot": _oneshot_traces(searches, metric, reference, rows, target if target in order else None),
    }

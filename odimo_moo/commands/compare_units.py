"""Running ``odimo compare``'s units: every (seed, method, lambda) once, after the seed's shared warmups,
stored so that a killed compare resumes where it stopped."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..checkpoint import atomic_write_json, check_writable
from ..compare.inputs import BUDGET_FILE, RUN_FILE
from ..devices import resolve_device
from ..errors import UsageError
from ..phases import warmup, warmup_key
from ..recipe import Recipe
from ..registry import PluginRegistry, pick
from ..setup_settings import Setup
from ..strategy import Outcome, Strategy
from ..workbench import Workbench
from .common import build_setup
from .compare_plan import LAMBDA, Plan, preset_parameters, route_parameters

UNIT_FILE = "outcomes.json"
#: The one-shot time budget of a matched run is never below this (the search scores one candidate).
MIN_ONESHOT_SECONDS = 1e-3


def takes_lambda(strategy: Strategy) -> bool:
    """Whether a strategy runs once per lambda (its parameters include the recipe's lambda)."""
    return LAMBDA in strategy.defaults()


def method_recipe(strategy: Strategy, params: Mapping[str, Any]) -> Recipe | None:
    """The training recipe a strategy runs with ``params`` (None for one that trains nothing)."""
    values = {**strategy.defaults(), **params}
    if "warmup_epochs" not in values:
        return None
    return Recipe.from_params({k: v for k, v in values.items() if k in Recipe.kinds()})


def _normalized(payload: Any) -> Any:
    return json.loads(json.dumps(payload, sort_keys=True, default=str))


def run_unit(strategy: Strategy, bench: Workbench, params: dict[str, Any], workdir: Path, label: str) -> list[Outcome]:
    """One (seed, method, lambda) unit: its stored outcomes if ``workdir`` finished it with the same
    settings (without the cost metric for a strategy that ignores it, :attr:`Strategy.uses_metric`),
    else run it and store them atomically. Other settings there are a usage error."""
    settings = _normalized({"method": strategy.name, "setup": bench.setup.identity(cost=strategy.uses_metric),
                            "params": params})
    done = workdir / UNIT_FILE
    if done.exists():
        try:
            stored = json.loads(done.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise UsageError(f"{done} is unreadable ({exc}); delete it to run that unit again") from exc
        if stored.get("settings") != settings:
            differ = sorted(k for k in set(settings) | set(stored.get("settings", {}))
                            if settings.get(k) != stored.get("settings", {}).get(k))
            raise UsageError(f"{workdir} holds finished results of other settings ({', '.join(differ)} differ); "
                             f"choose another --out, or delete {workdir} to run it again")
        print(f"compare: {label}: finished before, reusing {done}", file=sys.stderr)
        return [Outcome.from_dict(o) for o in stored["outcomes"]]
    print(f"compare: {label} -> {workdir}", file=sys.stderr)
    check_writable(workdir)
    outcomes = strategy.run(bench, params, workdir)
    atomic_write_json(done, {"settings": settings, "outcomes": [o.to_dict() for o in outcomes]})
    return outcomes


def run_warmups(bench: Workbench, recipes: Mapping[str, Recipe | None], seed_dir: Path) -> list[dict[str, Any]]:
    """Train (or find cached) the warmup every training method of one seed starts from, once per
    distinct warmup, before any method, and record its epochs and seconds in ``warmup.json``."""
    keys: dict[str, tuple[Recipe, list[str]]] = {}
    for method, recipe in recipes.items():
        if recipe is not None:
            keys.setdefault(warmup_key(bench.setup, recipe), (recipe, []))[1].append(method)
    records = []
    for key, (recipe, methods) in keys.items():
        print(f"compare: seed {bench.setup.seed}: warmup for {', '.join(methods)}", file=sys.stderr)
        _, history = warmup(bench, recipe)
        rows = [row for row in history if row.get("phase") == "warmup"]
        records.append({"key": key, "methods": methods, "epochs": len(rows),
                        "wall_s": sum(float(r.get("wall_s", 0.0)) for r in rows),
                        "cpu_s": sum(float(r.get("cpu_s", 0.0)) for r in rows)})
    atomic_write_json(seed_dir / "warmup.json", {"seed": bench.setup.seed, "warmups": records})
    return records


def matched_budget(odimo: Sequence[Outcome], odimo_recipe: Recipe, recipe: Recipe,
                   clock: str = "wall") -> dict[str, Any]:
    """A one-shot method's budget at ODiMO's compute on one seed.

    Training: as many front points as give ODiMO's total training epochs (lambdas x (search +
    fine-tune)) at the method's own search + fine-tune epochs per point. One-shot search: ODiMO's
    seconds on ``clock`` (``cpu``: process CPU time, steady where other processes share the CPU;
    ``wall`` on a GPU) minus what training those points is expected to take (ODiMO's mean fine-tune
    epoch, the same computation as a fixed-mapping epoch; its search epoch if it fine-tunes no epoch),
    no candidate limit.
    """
    epochs = len(odimo) * (odimo_recipe.search_epochs + odimo_recipe.finetune_epochs)
    per_point = recipe.search_epochs + recipe.finetune_epochs
    points = max(1, round(epochs / per_point)) if per_point else max(1, len(odimo))
    spent = sum(o.cpu_time_s if clock == "cpu" else o.wall_time_s for o in odimo)
    phase, phase_epochs = ("finetune", odimo_recipe.finetune_epochs) if odimo_recipe.finetune_epochs else (
        "search", odimo_recipe.search_epochs)
    phase_seconds = sum((o.phase_cpu_s if clock == "cpu" else o.phase_wall_s).get(phase, 0.0) for o in odimo)
    epoch_seconds = phase_seconds / (len(odimo) * phase_epochs) if phase_epochs and odimo else 0.0
    seconds = max(spent - points * per_point * epoch_seconds, MIN_ONESHOT_SECONDS)
    return {"odimo_points": len(odimo), "odimo_train_epochs": epochs, "clock": clock, "odimo_seconds": spent,
            "fixed_epoch_seconds": epoch_seconds, "points": points, "epochs_per_point": per_point,
            "params": {"evaluations": 0, "max_seconds": seconds, "clock": clock, "finetune_top": points}}


def _oneshot(strategy: Strategy) -> bool:
    return {"evaluations", "max_seconds", "finetune_top"} <= set(strategy.defaults())


def _given_parameters(plan: Plan, strategies: dict[str, Strategy], registry: PluginRegistry) -> dict[str, Any]:
    """The preset's parameters some compared method takes (the others skipped, with a note), then
    ``--set``'s: every one of those must reach a compared method (:func:`route_parameters`)."""
    registered = {name: entry.obj for name, entry in registry.strategies().items()}
    kept = preset_parameters(plan.preset_params, strategies, registered, plan.preset)
    skipped = [key for key in plan.preset_params if key not in kept]
    if skipped:
        print(f"compare: preset parameter(s) {', '.join(skipped)} skipped: no compared method takes them",
              file=sys.stderr)
    return {**kept, **plan.set_params}


def run_record(plan: Plan, setup: Setup, methods: Sequence[str], recipes: Mapping[str, Recipe | None],
               routed: Mapping[str, Any], device: str) -> dict[str, Any]:
    """What ``compare-run.json`` records about a run."""
    from ..results import machine

    program = Path(sys.argv[0]).name if sys.argv else ""
    command = shlex.join(["odimo", *sys.argv[1:]]) if program in ("odimo", "cli.py", "__main__.py") else None
    identity = {k: v for k, v in setup.identity().items() if k != "seed"}
    return _normalized({
        "command": command, "title": plan.title, "preset": plan.preset, "setup": identity, "seeds": plan.seeds,
        "methods": list(methods), "baselines": plan.baselines, "lambdas": plan.lambdas, "budget": plan.budget,
        "params": plan.params, "routed": routed,
        "recipes": {m: r.as_dict() for m, r in recipes.items() if r is not None}, "machine": machine(device)})


def run_methods(args: argparse.Namespace, plan: Plan, methods: list[str], folder: Path) -> list[Outcome]:
    """Every method on every seed (warmup first, ODiMO before the methods whose budget it sets),
    skipping finished units; returns all outcomes."""
    seeds = plan.seeds or [build_setup(args, plan.setup_base, plan.setup_overrides).seed]
    first = build_setup(args, plan.setup_base, {**plan.setup_overrides, "seed": seeds[0]})
    registry = PluginRegistry.load(first.plugins)
    strategies: dict[str, Strategy] = {m: pick(registry.strategies(), m, "strategy") for m in methods}
    routed = route_parameters(_given_parameters(plan, strategies, registry), strategies)
    recipes = {m: method_recipe(s, routed[m]) for m, s in strategies.items()}
    matched = [m for m, s in strategies.items() if plan.budget == "matched" and _oneshot(s)]
    if plan.budget == "matched" and ("odimo" not in strategies or not matched):
        raise UsageError("--budget matched gives one-shot methods (evolutionary, random_mapping) ODiMO's compute: "
                         "compare odimo and at least one of them")
    check_writable(folder)
    plan.seeds = seeds
    device = str(resolve_device(first.device))
    atomic_write_json(folder / RUN_FILE, run_record(plan, first, methods, recipes, routed, device))
    order = sorted(methods, key=lambda m: m in matched)  # ODiMO runs before the methods matched to it
    outcomes: list[Outcome] = []
    for seed in seeds:
        setup = build_setup(args, plan.setup_base, {**plan.setup_overrides, "seed": seed})
        bench = Workbench(setup, registry=registry, cache_dir=folder / "warmup-cache", keep_checkpoints=False)
        seed_dir = folder / f"seed-{seed}"
        run_warmups(bench, recipes, seed_dir)
        done: dict[str, list[Outcome]] = {}
        budgets: dict[str, Any] = {}
        for method in order:
            strategy, params = strategies[method], dict(routed[method])
            if method in matched:
                budgets[method] = matched_budget(done["odimo"], recipes["odimo"], recipes[method],
                                                 "wall" if bench.device.type == "cuda" else "cpu")
                params.update(budgets[method]["params"])
                atomic_write_json(seed_dir / BUDGET_FILE, budgets)
            units = ([({**params, LAMBDA: value}, seed_dir / method / f"lambda-{value:g}", f"lambda={value:g}")
                      for value in plan.lambdas] if takes_lambda(strategy) else [(params, seed_dir / method, "")])
            done[method] = []
            for unit_params, workdir, label in units:
                found = run_unit(strategy, bench, unit_params, workdir, f"seed {seed} {method} {label}".rstrip())
                done[method] += found
                outcomes += found
                atomic_write_json(folder / "results.json", [o.to_dict() for o in outcomes])
    return outcomes

"""``odimo compare``: run (or read) several mapping methods on one setup over seeds and compare them.

Layout of a compare folder (``--out``)::

    compare-run.json              what ran: command, preset, setup, seeds, methods, lambdas, budget,
                                  recipes, machine
    results.json                  every outcome of every seed and method
    compare.json/.csv/.png        the report; baselines.json: the baseline outcomes
    warmup-cache/                 the shared warmups (keyed by what the warmup depends on, seed included)
    seed-<S>/warmup.json          seed S's warmup: epochs, wall and CPU seconds
    seed-<S>/budget.json          with --budget matched: how each one-shot method's budget was derived
    seed-<S>/<method>[/lambda-<L>]/outcomes.json
                                  one finished unit (seed, method, lambda): its settings and outcomes

A unit whose ``outcomes.json`` exists with the same settings is not run again, so a killed compare
resumes where it stopped (an unfinished unit resumes from its own checkpoints); a unit folder holding
the results of other settings is refused, never silently reused.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import shlex
import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..checkpoint import atomic_write_json, check_writable
from ..compare import build_report, format_table, load_outcomes, load_searches, load_warmups, unique, write_report
from ..devices import resolve_device
from ..errors import UsageError
from ..pareto import ReferencePoint
from ..recipe import DEFAULT_LAMBDAS, Recipe
from ..registry import PluginRegistry, pick
from ..strategy import Outcome, Strategy
from ..workbench import Setup, Workbench
from ..yaml_loader import InvalidYaml, parse_yaml
from .common import (add_setup_options, add_threads_option, apply_threads, build_setup, out_dir, parse_assignments,
                     setup_fields, setup_values)

DEFAULT_METHODS = ("odimo", "evolutionary", "random_mapping", "heuristic")
BUDGETS = ("fixed", "matched")
RUN_FILE = "compare-run.json"
UNIT_FILE = "outcomes.json"
BUDGET_FILE = "budget.json"
#: Keys of a preset (and of --set) that are not Setup fields or method parameters.
PLAN_KEYS = ("title", "methods", "baselines", "lambdas", "seeds", "budget", "reference", "out", "params")
#: The strategy parameter that makes a method run once per lambda (the recipe's name for lambda).
LAMBDA_PARAMETER = "cost_weight"
#: Packaged presets (``--preset NAME``) live in this folder of :mod:`odimo_moo.studies`.
PRESET_FOLDER = "compare"
#: The one-shot time budget of a matched run is never below this (the search scores one candidate).
MIN_ONESHOT_SECONDS = 1e-3


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """The ``compare`` subcommand's options."""
    parser = subparsers.add_parser(
        "compare", help="compare ODiMO with evolutionary, random and heuristic mappings on one setup",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Run every method on one setup for each seed (one shared warmup per seed), or read\n"
                    "results written before (--from), and report: per method the hypervolume (one reference\n"
                    "point for all seeds and methods; mean, std, min-max over seeds), against every heuristic\n"
                    "point of the same seed the lowest cost at iso-accuracy ('Nx lower cost') and the best\n"
                    "accuracy at iso-cost, each method's compute (epochs after the warmup, one-shot mappings\n"
                    "and images, wall and CPU seconds), the warmup apart, and which differences separate\n"
                    "from the seed noise (min-max ranges over seeds that do not overlap). compare.png draws\n"
                    "every seed's front thin and the median attainment front thick.\n\n"
                    "Every point trains the same epochs after the warmup: ODiMO search + fine-tune epochs,\n"
                    "fixed mappings (heuristic, evolutionary, random) the same number, and each keeps its\n"
                    "fine-tune epoch with the best validation accuracy. Methods that take lambda (odimo) run\n"
                    "once per --lambdas value. --budget matched gives evolutionary and random, per seed,\n"
                    "ODiMO's training epochs for their final points and the rest of ODiMO's wall time for\n"
                    "their one-shot search. A killed compare resumes: finished (seed, method, lambda) units\n"
                    "are skipped.\n\n"
                    "--set KEY=VALUE: a setup option (device, data_limit, ...) or compare key (seeds,\n"
                    "lambdas, methods, ...) overrides the preset and the options; any other KEY goes to\n"
                    "every method that has it, METHOD.KEY to one. A preset (--preset FILE or NAME) is a\n"
                    "YAML mapping of setup options, compare keys and 'params' (method parameters).",
        epilog="examples:\n"
               "  odimo compare --soc diana --model resnet8 --dataset digits --seeds 0,1,2 \\\n"
               "    --set warmup_epochs=5 --set evolutionary.evaluations=300\n"
               "  odimo compare --preset diana_resnet20_fashion_mnist_latency      # packaged preset\n"
               "  odimo compare --preset diana_resnet20_cifar10_energy --set device=cuda --set data_limit=null\n"
               "  odimo compare --from runs/compare-old --results-md docs/RESULTS.md\n"
               f"\npackaged presets: {', '.join(packaged_presets())}")
    add_setup_options(parser, defaults=False)
    parser.add_argument("--preset", default=None, metavar="FILE_OR_NAME",
                        help="YAML preset of setup options, compare keys and method params (see studies/compare/)")
    parser.add_argument("--seeds", default=None, metavar="S1,S2,...",
                        help="repeat every method per seed, each in seed-<S>/ (default: --seed)")
    parser.add_argument("--methods", default=None, metavar="A,B,...",
                        help=f"registered strategies to compare (default when running: {','.join(DEFAULT_METHODS)}; "
                             f"with --from: every method found)")
    parser.add_argument("--baselines", default=None, metavar="A,B,...",
                        help="methods whose points are the baselines of the iso comparisons (default: heuristic)")
    parser.add_argument("--lambdas", default=None, metavar="L1,L2,...",
                        help="lambda values for methods that take one (default: "
                             f"{','.join(f'{v:g}' for v in DEFAULT_LAMBDAS)}; lambda weighs "
                             f"ln(cost / cost on the default unit): 1 %% less cost is worth lambda/100 of task loss)")
    parser.add_argument("--budget", default=None, choices=BUDGETS,
                        help="fixed (default): every method's own settings; matched: evolutionary and random get "
                             "ODiMO's training epochs and the rest of its wall time, per seed")
    parser.add_argument("--set", action="append", default=[], metavar="[METHOD.]KEY=VALUE",
                        help="setup option, compare key or method parameter, e.g. --set device=cuda "
                             "--set finetune_epochs=5 --set evolutionary.evaluations=100")
    parser.add_argument("--from", dest="sources", action="append", default=[], metavar="DIR",
                        help="instead of running, read the results under DIR (repeatable): folders of odimo search, "
                             "run (its trials/*/result.json) or compare (old single-seed ones too)")
    parser.add_argument("--reference", default=None, metavar="ACCURACY,COST",
                        help="hypervolume reference point (default: accuracy 0, 1.1 x the largest cost seen)")
    parser.add_argument("--out", default=None,
                        help="output folder (default: runs/compare-<soc>-<model>-<dataset>-<metric>, or the "
                             "first --from folder)")
    parser.add_argument("--results-md", default=None, metavar="FILE",
                        help="write (or replace) this comparison's section of a markdown results file")
    parser.add_argument("--json", action="store_true", help="print compare.json instead of a table")
    add_threads_option(parser)
    parser.set_defaults(handler=run)


# ----------------------------------------------------------------------------- parsing
def split_list(text: str, option: str) -> list[str]:
    """The non-empty items of a comma-separated ``text``; empty is a usage error naming ``option``."""
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items:
        raise UsageError(f"{option} is empty")
    return items


def _names(value: Any, option: str) -> list[str]:
    if isinstance(value, (list, tuple)):
        value = ",".join(str(v) for v in value)
    return split_list(str(value), option)


def parse_lambdas(value: Any) -> list[float]:
    """Lambdas from ``"0,0.1"`` or a list of numbers; each >= 0."""
    try:
        values = [float(item) for item in _names(value, "lambdas")]
    except ValueError as exc:
        raise UsageError(f"lambdas {value!r}: expected comma-separated numbers ({exc})") from exc
    if any(v < 0 or not math.isfinite(v) for v in values):
        raise UsageError(f"lambdas {value!r}: lambda must be a number >= 0")
    return values


def parse_seeds(value: Any) -> list[int]:
    """Seeds from ``"0,1,2"``, a list, or one integer; distinct integers."""
    items = [value] if isinstance(value, int) and not isinstance(value, bool) else _names(value, "seeds")
    try:
        seeds = [int(str(item)) for item in items]
    except ValueError as exc:
        raise UsageError(f"seeds {value!r}: expected comma-separated integers, e.g. 0,1,2") from exc
    if len(set(seeds)) != len(seeds):
        raise UsageError(f"seeds {value!r}: a seed is repeated")
    return seeds


def parse_reference(value: Any) -> ReferencePoint | None:
    """The hypervolume reference point from ``"ACCURACY,COST"`` or a pair; ``None`` for the default."""
    if value is None:
        return None
    parts = value if isinstance(value, (list, tuple)) else str(value).split(",")
    try:
        accuracy, cost = (float(p) for p in parts)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"reference {value!r}: expected ACCURACY,COST, e.g. 0.5,2e6") from exc
    return ReferencePoint(accuracy=accuracy, cost=cost)


def packaged_presets() -> list[str]:
    """Names of the presets shipped in ``odimo_moo/studies/compare``."""
    folder = resources.files("odimo_moo.studies") / PRESET_FOLDER
    if not folder.is_dir():
        return []
    return sorted(entry.name[:-len(".yaml")] for entry in folder.iterdir() if entry.name.endswith(".yaml"))


def load_preset(ref: str) -> tuple[dict[str, Any], str]:
    """A preset's mapping and where it came from: ``ref`` is a YAML file or a packaged preset's name."""
    path = Path(ref).expanduser()
    if path.is_file():
        source = str(path)
        text = path.read_text()
    elif ref in packaged_presets():
        entry = resources.files("odimo_moo.studies") / PRESET_FOLDER / f"{ref}.yaml"
        source, text = f"packaged preset {ref}", entry.read_text()
    else:
        raise UsageError(f"--preset {ref}: no such file or packaged preset; packaged presets: "
                         f"{', '.join(packaged_presets()) or 'none'}")
    try:
        data = parse_yaml(text)
    except InvalidYaml as exc:
        raise UsageError(f"--preset {source}: not valid YAML{exc.detail}") from None
    if not isinstance(data, dict):
        raise UsageError(f"--preset {source}: expected a mapping of setup options and compare keys")
    known = set(setup_fields()) | set(PLAN_KEYS)
    unknown = sorted(set(data) - known)
    if unknown:
        raise UsageError(f"--preset {source}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    if not isinstance(data.get("params", {}), dict):
        raise UsageError(f"--preset {source}: params must be a mapping of method parameters")
    return data, source


@dataclass
class Plan:
    """A compare run, resolved from preset < command-line options < ``--set``."""

    setup_base: dict[str, Any]
    setup_overrides: dict[str, Any]
    seeds: list[int] | None
    methods: list[str] | None
    baselines: list[str]
    lambdas: list[float]
    budget: str
    reference: ReferencePoint | None
    out: str | None
    params: dict[str, Any]
    title: str | None = None
    preset: str | None = None


def resolve_plan(args: argparse.Namespace) -> Plan:
    """Merge the preset (``--preset``), the options given and ``--set`` into one plan."""
    preset, source = load_preset(args.preset) if args.preset else ({}, None)
    assignments = parse_assignments(args.set)
    fields = set(setup_fields())
    plan_values = {k: v for k, v in preset.items() if k in PLAN_KEYS and k != "params"}
    options = {"seeds": args.seeds, "methods": args.methods, "baselines": args.baselines, "lambdas": args.lambdas,
               "budget": args.budget, "reference": args.reference, "out": args.out}
    plan_values.update({k: v for k, v in options.items() if v is not None})
    plan_values.update({k: v for k, v in assignments.items() if k in PLAN_KEYS and k != "params"})
    params = dict(preset.get("params") or {})
    params.update({k: v for k, v in assignments.items() if k not in fields and k not in PLAN_KEYS})
    for key in params:
        if key.rpartition(".")[2] in ("lambda", LAMBDA_PARAMETER):
            raise UsageError(f"{key}: give lambdas with --lambdas (or the preset's lambdas), not as a parameter")
    if "params" in assignments:
        raise UsageError("--set params=...: give method parameters one by one, --set KEY=VALUE or METHOD.KEY=VALUE")
    budget = str(plan_values.get("budget", "fixed"))
    if budget not in BUDGETS:
        raise UsageError(f"budget {budget!r}: choose one of {', '.join(BUDGETS)}")
    if "seeds" in plan_values and (hasattr(args, "seed") or "seed" in assignments):
        raise UsageError("give either --seed or --seeds (a list of seeds), not both")
    return Plan(
        setup_base={k: v for k, v in preset.items() if k in fields},
        setup_overrides={k: v for k, v in assignments.items() if k in fields},
        seeds=parse_seeds(plan_values["seeds"]) if "seeds" in plan_values else None,
        methods=_names(plan_values["methods"], "methods") if "methods" in plan_values else None,
        baselines=_names(plan_values.get("baselines", "heuristic"), "baselines"),
        lambdas=parse_lambdas(plan_values.get("lambdas", list(DEFAULT_LAMBDAS))),
        budget=budget,
        reference=parse_reference(plan_values.get("reference")),
        out=None if plan_values.get("out") is None else str(plan_values["out"]),
        params=params,
        title=None if plan_values.get("title") is None else str(plan_values["title"]),
        preset=source,
    )


def route_parameters(assignments: dict[str, Any], strategies: dict[str, Strategy]) -> dict[str, dict[str, Any]]:
    """Per method, the ``--set`` values it takes: ``KEY`` to every method whose defaults have it,
    ``METHOD.KEY`` to that method only. A key no chosen method has is a usage error."""
    routed: dict[str, dict[str, Any]] = {name: {} for name in strategies}
    for key, value in assignments.items():
        method, dot, name = key.partition(".")
        if dot:
            if method not in strategies:
                raise UsageError(f"--set {key}: {method!r} is not one of the compared methods "
                                 f"({', '.join(strategies)})")
            if name not in strategies[method].defaults():
                raise UsageError(f"--set {key}: method {method!r} has no parameter {name!r}; it has "
                                 f"{', '.join(strategies[method].defaults())}")
            routed[method][name] = value
            continue
        takers = [m for m, strategy in strategies.items() if key in strategy.defaults()]
        if not takers:
            raise UsageError(f"--set {key}: no compared method has this parameter (nor is it a setup option "
                             f"or compare key)")
        for m in takers:
            routed[m][key] = value
    return routed


# ----------------------------------------------------------------------------- running
def takes_lambda(strategy: Strategy) -> bool:
    """Whether a strategy runs once per lambda (its parameters include the recipe's lambda)."""
    return LAMBDA_PARAMETER in strategy.defaults()


def method_recipe(strategy: Strategy, params: Mapping[str, Any]) -> Recipe | None:
    """The training recipe a strategy runs with ``params`` (None for one that trains nothing)."""
    values = {**strategy.defaults(), **params}
    if "warmup_epochs" not in values:
        return None
    names = {f.name for f in dataclasses.fields(Recipe)} | {"lambda"}
    return Recipe.from_params({k: v for k, v in values.items() if k in names})


def _normalized(payload: Any) -> Any:
    return json.loads(json.dumps(payload, sort_keys=True, default=str))


def run_unit(strategy: Strategy, bench: Workbench, params: dict[str, Any], workdir: Path, label: str) -> list[Outcome]:
    """One (seed, method, lambda) unit: its stored outcomes if ``workdir`` finished it with the same
    settings, else run it and store them atomically. Other settings there are a usage error."""
    settings = _normalized({"method": strategy.name, "setup": bench.setup.identity(), "params": params})
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
            keys.setdefault(bench.warmup_key(recipe), (recipe, []))[1].append(method)
    records = []
    for key, (recipe, methods) in keys.items():
        print(f"compare: seed {bench.setup.seed}: warmup for {', '.join(methods)}", file=sys.stderr)
        _, history = bench.warm_supernet(recipe)
        rows = [row for row in history if row.get("phase") == "warmup"]
        records.append({"key": key, "methods": methods, "epochs": len(rows),
                        "wall_s": sum(float(r.get("wall_s", 0.0)) for r in rows),
                        "cpu_s": sum(float(r.get("cpu_s", 0.0)) for r in rows)})
    atomic_write_json(seed_dir / "warmup.json", {"seed": bench.setup.seed, "warmups": records})
    return records


def matched_budget(odimo: Sequence[Outcome], odimo_recipe: Recipe, recipe: Recipe) -> dict[str, Any]:
    """A one-shot method's budget at ODiMO's compute on one seed.

    Training: as many front points as give ODiMO's total training epochs (lambdas x (search +
    fine-tune)) at the method's own search + fine-tune epochs per point. One-shot search: ODiMO's wall
    time minus what training those points is expected to take (ODiMO's mean fine-tune epoch, the same
    computation as a fixed-mapping epoch; its search epoch if it fine-tunes no epoch), no candidate limit.
    """
    epochs = len(odimo) * (odimo_recipe.search_epochs + odimo_recipe.finetune_epochs)
    per_point = recipe.search_epochs + recipe.finetune_epochs
    points = max(1, round(epochs / per_point)) if per_point else max(1, len(odimo))
    wall = sum(o.wall_time_s for o in odimo)
    phase, phase_epochs = ("finetune", odimo_recipe.finetune_epochs) if odimo_recipe.finetune_epochs else (
        "search", odimo_recipe.search_epochs)
    phase_wall = sum(o.phase_wall_s.get(phase, 0.0) for o in odimo)
    epoch_seconds = phase_wall / (len(odimo) * phase_epochs) if phase_epochs and odimo else 0.0
    seconds = max(wall - points * per_point * epoch_seconds, MIN_ONESHOT_SECONDS)
    return {"odimo_points": len(odimo), "odimo_train_epochs": epochs, "odimo_wall_s": wall,
            "fixed_epoch_wall_s": epoch_seconds, "points": points, "epochs_per_point": per_point,
            "params": {"evaluations": 0, "max_seconds": seconds, "finetune_top": points}}


def _oneshot(strategy: Strategy) -> bool:
    return {"evaluations", "max_seconds", "finetune_top"} <= set(strategy.defaults())


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
    routed = route_parameters(plan.params, strategies)
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
        bench = Workbench(setup, registry=registry, cache_dir=folder / "warmup-cache")
        seed_dir = folder / f"seed-{seed}"
        run_warmups(bench, recipes, seed_dir)
        done: dict[str, list[Outcome]] = {}
        budgets: dict[str, Any] = {}
        for method in order:
            strategy, params = strategies[method], dict(routed[method])
            if method in matched:
                budgets[method] = matched_budget(done["odimo"], recipes["odimo"], recipes[method])
                params.update(budgets[method]["params"])
                atomic_write_json(seed_dir / BUDGET_FILE, budgets)
            units = ([({**params, "lambda": value}, seed_dir / method / f"lambda-{value:g}", f"lambda={value:g}")
                      for value in plan.lambdas] if takes_lambda(strategy) else [(params, seed_dir / method, "")])
            done[method] = []
            for unit_params, workdir, label in units:
                found = run_unit(strategy, bench, unit_params, workdir, f"seed {seed} {method} {label}".rstrip())
                done[method] += found
                outcomes += found
                atomic_write_json(folder / "results.json", [o.to_dict() for o in outcomes])
    return outcomes


def _budgets(folders: Sequence[Path]) -> dict[str, Any]:
    found = {}
    for folder in folders:
        for path in sorted(folder.rglob(BUDGET_FILE)):
            seed = path.parent.name.removeprefix("seed-")
            found[seed] = json.loads(path.read_text())
    return found


def run(args: argparse.Namespace) -> int:
    """Run the methods (or read --from folders), then write and print the report."""
    apply_threads(args.threads)
    plan = resolve_plan(args)
    if args.sources:
        folders = [out_dir(s) for s in args.sources]
        folder = out_dir(plan.out or args.sources[0])
        outcomes = unique(o for source in folders for o in load_outcomes(source))
        run_info = next((json.loads((f / RUN_FILE).read_text()) for f in folders if (f / RUN_FILE).is_file()), {})
        given = {**plan.setup_base, **setup_values(args), **plan.setup_overrides}
        metric = str(given.get("metric") or run_info.get("setup", {}).get("metric") or Setup.metric)
    else:
        setup = build_setup(args, plan.setup_base, plan.setup_overrides)
        metric = setup.metric
        methods = plan.methods or list(DEFAULT_METHODS)
        folders = [out_dir(plan.out or f"runs/compare-{setup.soc}-{setup.model}-{setup.dataset}-{setup.metric}")]
        folder = folders[0]
        outcomes = run_methods(args, plan, methods, folder)
        plan.methods = methods
        run_info = json.loads((folder / RUN_FILE).read_text())
    warmups = {seed: records for source in folders for seed, records in load_warmups(source).items()}
    searches = [s for source in folders for s in load_searches(source)]
    report = build_report(outcomes, metric, plan.baselines, plan.reference, plan.methods, warmups, searches)
    report["sources"] = [str(f) for f in folders]
    report["budget"] = {"mode": run_info.get("budget", plan.budget), "per_seed": _budgets(folders)}
    baselines = [o for o in outcomes
                 if o.strategy in plan.baselines and (plan.methods is None or o.strategy in plan.methods)]
    paths = write_report(report, baselines, folder)
    if args.results_md:
        from ..results import results_section, section_key, update_results_file

        target = out_dir(args.results_md)
        update_results_file(target, section_key(run_info, report),
                            results_section(report, run_info, report["sources"]))
        paths["markdown"] = target
    if args.json:
        json.dump(report, sys.stdout, indent=2)
        print()
        return 0
    print(format_table(report))
    print(f"\nreport in {folder}: " + ", ".join(p.name for p in paths.values()))
    return 0

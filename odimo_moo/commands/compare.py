"""``odimo compare``: run (or read) several mapping methods on one setup and compare their fronts."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ..checkpoint import atomic_write_json
from ..compare import build_report, format_table, load_outcomes, unique, write_report
from ..errors import UsageError
from ..pareto import ReferencePoint
from ..registry import Registered, pick
from ..strategy import Outcome, Strategy
from .common import add_setup_options, out_dir, parse_assignments

DEFAULT_METHODS = "odimo,evolutionary,random_mapping,heuristic"
DEFAULT_LAMBDAS = "0,1e-6,1e-5,1e-4"
LAMBDA_KEY = "cost_weight"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "compare", help="compare ODiMO with evolutionary, random and heuristic mappings on one setup",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Run every method on one setup (sharing the cached warmup), or read results written\n"
                    "before (--from), and report: each method's front (compare.png), hypervolume against\n"
                    "one shared reference point, and against every baseline point (default: the heuristic\n"
                    "mappings) the best accuracy at iso-cost and the lowest cost at iso-accuracy with the\n"
                    "ratio 'Nx lower cost at iso-accuracy'; wall time and trainings per method\n"
                    "(compare.json, compare.csv). baselines.json lists the baseline outcomes.\n\n"
                    "Methods that take lambda (cost_weight; e.g. odimo) run once per --lambdas value.\n"
                    "--set KEY=VALUE goes to every method that has KEY; --set METHOD.KEY=VALUE to one.",
        epilog="examples:\n"
               "  odimo compare --soc diana --model resnet8 --dataset digits --lambdas 0,1e-5,1e-4 \\\n"
               "    --set warmup_epochs=5 --set evolutionary.evaluations=300\n"
               "  odimo compare --metric latency --from runs/study-diana --from runs/compare-old")
    add_setup_options(parser)
    parser.add_argument("--methods", default=None, metavar="A,B,...",
                        help=f"registered strategies to compare (default when running: {DEFAULT_METHODS}; "
                             f"with --from: every method found)")
    parser.add_argument("--baselines", default="heuristic", metavar="A,B,...",
                        help="methods whose points are the baselines of the iso comparisons (default: heuristic)")
    parser.add_argument("--lambdas", default=DEFAULT_LAMBDAS, metavar="L1,L2,...",
                        help=f"lambda values for methods that take one (default: {DEFAULT_LAMBDAS})")
    parser.add_argument("--set", action="append", default=[], metavar="[METHOD.]KEY=VALUE",
                        help="strategy parameter, e.g. --set finetune_epochs=5 --set evolutionary.evaluations=100")
    parser.add_argument("--from", dest="sources", action="append", default=[], metavar="DIR",
                        help="instead of running, read the results under DIR (repeatable): folders of odimo search, "
                             "run (its trials/*/result.json) or compare (result.json, results.json, pareto.json, "
                             "baselines.json files holding outcome records)")
    parser.add_argument("--reference", default=None, metavar="ACCURACY,COST",
                        help="hypervolume reference point (default: accuracy 0, 1.1 x the largest cost seen)")
    parser.add_argument("--out", default=None,
                        help="output folder (default: runs/compare-<soc>-<model>-<dataset>-<metric>, or the "
                             "first --from folder)")
    parser.add_argument("--json", action="store_true", help="print compare.json instead of a table")
    parser.set_defaults(handler=run)


def split_list(text: str, option: str) -> list[str]:
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items:
        raise UsageError(f"{option} is empty")
    return items


def parse_lambdas(text: str) -> list[float]:
    try:
        values = [float(item) for item in split_list(text, "--lambdas")]
    except ValueError as exc:
        raise UsageError(f"--lambdas {text!r}: expected comma-separated numbers ({exc})") from exc
    if any(v < 0 for v in values):
        raise UsageError(f"--lambdas {text!r}: lambda must be >= 0")
    return values


def parse_reference(text: str | None) -> ReferencePoint | None:
    if text is None:
        return None
    parts = text.split(",")
    try:
        accuracy, cost = (float(p) for p in parts)
    except ValueError as exc:
        raise UsageError(f"--reference {text!r}: expected ACCURACY,COST, e.g. 0.5,2e6") from exc
    return ReferencePoint(accuracy=accuracy, cost=cost)


def route_parameters(assignments: dict[str, Any], strategies: dict[str, Strategy]) -> dict[str, dict[str, Any]]:
    """Per method, the ``--set`` values it takes: ``KEY`` to every method whose defaults have it,
    ``METHOD.KEY`` to that method only. A key no chosen method has is a usage error."""
    routed: dict[str, dict[str, Any]] = {name: {} for name in strategies}
    for key, value in assignments.items():
        method, dot, field = key.partition(".")
        if dot:
            if method not in strategies:
                raise UsageError(f"--set {key}: {method!r} is not one of the compared methods "
                                 f"({', '.join(strategies)})")
            if field not in strategies[method].defaults():
                raise UsageError(f"--set {key}: method {method!r} has no parameter {field!r}; it has "
                                 f"{', '.join(strategies[method].defaults())}")
            routed[method][field] = value
            continue
        takers = [name for name, strategy in strategies.items() if key in strategy.defaults()]
        if not takers:
            raise UsageError(f"--set {key}: no compared method has this parameter")
        for name in takers:
            routed[name][key] = value
    return routed


def _run_methods(args: argparse.Namespace, methods: list[str], folder: Path) -> list[Outcome]:
    from ..workbench import Setup, Workbench

    setup = Setup(soc=args.soc, model=args.model, dataset=args.dataset, metric=args.metric,
                  data_root=args.data_root, download=args.download, data_limit=args.data_limit, seed=args.seed,
                  device=args.device, plugins=tuple(args.plugin), exclude=tuple(args.exclude),
                  progress=not args.no_progress)
    bench = Workbench(setup, cache_dir=folder / "warmup-cache")
    registered: dict[str, Registered] = bench.registry.strategies()  # type: ignore[union-attr]
    strategies: dict[str, Strategy] = {m: pick(registered, m, "strategy") for m in methods}
    routed = route_parameters(parse_assignments(args.set), strategies)
    lambdas = parse_lambdas(args.lambdas)
    outcomes: list[Outcome] = []
    for method, strategy in strategies.items():
        runs = ([({**routed[method], LAMBDA_KEY: value}, folder / method / f"lambda-{value:g}") for value in lambdas]
                if LAMBDA_KEY in strategy.defaults() else [(routed[method], folder / method)])
        for params, workdir in runs:
            print(f"compare: running {method} -> {workdir}", file=sys.stderr)
            outcomes += strategy.run(bench, params, workdir)
            atomic_write_json(folder / "results.json", [o.to_dict() for o in outcomes])
    return outcomes


def run(args: argparse.Namespace) -> int:
    baseline_methods = split_list(args.baselines, "--baselines")
    methods = split_list(args.methods, "--methods") if args.methods else None
    reference = parse_reference(args.reference)
    if args.sources:
        folder = out_dir(args.out or args.sources[0])
        outcomes = unique(o for source in args.sources for o in load_outcomes(out_dir(source)))
    else:
        methods = methods or split_list(DEFAULT_METHODS, "--methods")
        folder = out_dir(args.out or f"runs/compare-{args.soc}-{args.model}-{args.dataset}-{args.metric}")
        outcomes = _run_methods(args, methods, folder)
    report = build_report(outcomes, args.metric, baseline_methods, reference, methods)
    report["sources"] = [str(out_dir(s)) for s in args.sources] or [str(folder)]
    baselines = [o for o in outcomes if o.strategy in baseline_methods and (methods is None or o.strategy in methods)]
    paths = write_report(report, baselines, folder)
    if args.json:
        json.dump(report, sys.stdout, indent=2)
        print()
        return 0
    print(format_table(report))
    print(f"\nreport in {folder}: " + ", ".join(p.name for p in paths.values()))
    return 0

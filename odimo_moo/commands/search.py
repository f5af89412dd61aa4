"""``odimo search``: the three ODiMO phases for one lambda, with resume, writing one result folder."""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import sys
from pathlib import Path
from typing import Any, Iterator, Mapping

from ..errors import UsageError
from ..registry import pick
from .common import add_setup_options, add_threads_option, apply_threads, build_setup, out_dir, parse_assignments


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "search", help="run warmup, search and fine-tune for one lambda",
        description="Run the ODiMO phases (warmup, search, fine-tune) for one lambda and write accuracy, "
                    "cost, mapping and the exported network to --out. Re-running the same command resumes "
                    "from the last complete checkpoint.")
    add_setup_options(parser)
    parser.add_argument("--lambda", dest="lambda_", type=float, default=None,
                        help="cost weight lambda (>= 0, default 0) of the dimensionless cost term ln(cost / cost on "
                             "the default unit): 1 %% less cost is worth lambda/100 of task loss (useful: 0.1 to "
                             "100); only for strategies that take one (odimo)")
    parser.add_argument("--target", default=None, metavar="COST=VALUE",
                        help="search to a cost instead of a lambda, e.g. --target latency_cycles=20000 (the cost "
                             "of --metric: latency_cycles or energy_uj); lambda then adapts every step")
    parser.add_argument("--strategy", default="odimo", help="registered strategy (default: odimo)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="training parameter, e.g. --set search_epochs=10 --set parametrization=softmax")
    parser.add_argument("--out", default=None, help="output folder (default: runs/search-<soc>-<model>-<lambda>)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    add_threads_option(parser)
    parser.set_defaults(handler=run)


@contextlib.contextmanager
def folder_lock(folder: Path) -> Iterator[None]:
    """Refuse a second `odimo search` on the same output folder while one runs (their checkpoints
    would interleave). The lock dies with its process, so a killed run never leaves it behind."""
    with open(folder / ".odimo-search.lock", "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise UsageError(f"another `odimo search` is running in {folder}; wait for it, or choose "
                             f"another --out") from None
        yield


def parse_target(text: str, metric: str) -> float:
    """``COST=VALUE`` of ``--target``: the cost must be the one of ``--metric``, the value positive."""
    from ..strategy import COST_FIELDS

    field, _, value = text.partition("=")
    if field not in COST_FIELDS.values():
        raise UsageError(f"--target {text!r}: expected COST=VALUE with COST one of "
                         f"{', '.join(COST_FIELDS.values())}, e.g. --target latency_cycles=20000")
    if field != COST_FIELDS[metric]:
        wanted = next(name for name, cost in COST_FIELDS.items() if cost == field)
        raise UsageError(f"--target {field} needs --metric {wanted} (the search optimises {metric})")
    try:
        target = float(value)
    except ValueError:
        target = float("nan")
    if not (target > 0 and target < float("inf")):
        raise UsageError(f"--target {text!r}: the value must be a positive number")
    return target


def _check_cost_options(args: argparse.Namespace, defaults: Mapping[str, Any]) -> None:
    """``--lambda`` and ``--target`` steer a gradient search's cost term: a usage error for a strategy
    whose parameters lack the one given (it would ignore it)."""
    given = (("--lambda", "lambda", None if args.lambda_ is None else f"{args.lambda_:g}"),
             ("--target", "cost_target", args.target))
    for option, key, text in given:
        if text is not None and key not in defaults:
            raise UsageError(f"{option} {text}: strategy {args.strategy!r} takes no {key} (it has no cost term "
                             f"to steer); leave {option} out, or search with a strategy that takes one "
                             f"(--strategy odimo)")


def run(args: argparse.Namespace) -> int:
    params = parse_assignments(args.set)
    if "lambda" in params:
        raise UsageError("--set lambda=...: give lambda with --lambda")
    apply_threads(args.threads)

    from ..checkpoint import check_writable
    from ..recipe import Recipe
    from ..workbench import Workbench

    lambda_ = Recipe.from_params({"lambda": args.lambda_ or 0.0}).lambda_  # checked before naming the folder
    if args.target is not None:
        params["cost_target"] = parse_target(args.target, args.metric)
    setup = build_setup(args)
    folder = out_dir(args.out or f"runs/search-{args.soc}-{args.model}-{lambda_:g}")
    bench = Workbench(setup, cache_dir=folder / "warmup-cache")
    strategy = pick(bench.registry.strategies(), args.strategy, "strategy")
    _check_cost_options(args, strategy.defaults())
    if "lambda" in strategy.defaults():
        params["lambda"] = lambda_
    for writable in (folder, bench.cache_dir):  # fail now, not after hours of training
        check_writable(writable)
    with folder_lock(folder):
        outcomes = strategy.run(bench, params, folder)
    if args.json:
        json.dump([o.to_dict() for o in outcomes], sys.stdout, indent=2)
        print()
        return 0
    for outcome in outcomes:
        print(f"{outcome.strategy} {outcome.label}: test accuracy {outcome.accuracy:.4f} "
              f"(val {outcome.val_accuracy:.4f}), latency {outcome.latency_cycles:,.0f} cycles, "
              f"energy {outcome.energy_uj:.4g} uJ; {outcome.train_epochs} epochs after the warmup "
              f"(fine-tune epoch {outcome.selected_epoch} kept: best validation accuracy), "
              f"{outcome.wall_time_s:.1f} s")
        for layer, split in outcome.channel_split.items():
            print(f"  {layer:<28} " + "  ".join(f"{unit}={count}" for unit, count in split.items()))
        print(f"results in {folder} (result.json, mapping.json, metrics.csv, exported.pt"
              f"{', exported.onnx' if 'exported_onnx' in outcome.artifacts else ''})")
    return 0

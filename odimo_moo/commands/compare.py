"""``odimo compare``: run (or read) several mapping methods on one setup over seeds and compare them.

Layout of a compare folder (``--out``)::

    compare-run.json              what ran: command, preset, setup, seeds, methods, lambdas, budget,
                                  recipes, machine
    results.json                  every outcome of every seed and method
    compare.json/.csv/.png        the report; baselines.json: the baseline outcomes
    warmup-cache/                 the shared warmups (keyed by what the warmup depends on, seed included,
                                  the cost metric not: a latency and an energy run may share this folder)
    seed-<S>/warmup.json          seed S's warmup: epochs, wall and CPU seconds
    seed-<S>/budget.json          with --budget matched: how each one-shot method's budget was derived
    seed-<S>/<method>[/lambda-<L>]/outcomes.json
                                  one finished unit (seed, method, lambda): its settings and outcomes

A unit whose ``outcomes.json`` exists with the same settings is not run again, so a killed compare
resumes where it stopped (an unfinished unit resumes from its own checkpoints); a unit folder holding
the results of other settings is refused, never silently reused. The units of a strategy that ignores
the cost metric (``Strategy.uses_metric``: the heuristics) are keyed without it: copied into the folder
of a run of the other metric they are reused there, since they would train the same.
"""

from __future__ import annotations

import argparse
import json
import sys

from ..compare import (build_report, format_table, load_budgets, load_outcomes, load_run_record, load_searches,
                       load_warmups, unique, write_report)
from ..recipe import DEFAULT_LAMBDAS
from ..setup_settings import Setup
from .common import add_setup_options, add_threads_option, apply_threads, build_setup, out_dir, setup_values
from .compare_plan import BUDGETS, packaged_presets, resolve_plan

DEFAULT_METHODS = ("odimo", "evolutionary", "random_mapping", "heuristic")

DESCRIPTION = ("Run every method on one setup for each seed (one shared warmup per seed), or read\n"
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
               "ODiMO's training epochs for their final points and the rest of ODiMO's time (CPU\n"
               "seconds on a CPU, wall seconds on a GPU) for their one-shot search. A killed compare\n"
               "resumes: finished (seed, method, lambda) units are skipped; a heuristic's units copied\n"
               "from a run of the other --metric are reused (they train the same).\n\n"
               "--set KEY=VALUE: a setup option (device, data_limit, ...) or compare key (seeds,\n"
               "lambdas, methods, ...) overrides the preset and the options; any other KEY goes to\n"
               "every method that has it, METHOD.KEY to one. A preset (--preset FILE or NAME) is a\n"
               "YAML mapping of setup options, compare keys and 'params' (method parameters); its params\n"
               "that no compared method takes (compared with fewer --methods) are skipped.")


def _epilog() -> str:
    """The examples and the packaged presets (listed when the parser is built)."""
    return ("examples:\n"
            "  odimo compare --soc diana --model resnet8 --dataset digits --seeds 0,1,2 \\\n"
            "    --set warmup_epochs=5 --set evolutionary.evaluations=300\n"
            "  odimo compare --preset diana_resnet20_fashion_mnist_latency      # packaged preset\n"
            "  odimo compare --preset diana_resnet20_cifar10_energy --set device=cuda --set data_limit=null\n"
            "  odimo compare --from runs/compare-old --results-md docs/RESULTS.md\n"
            f"\npackaged presets: {', '.join(packaged_presets())}")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """The ``compare`` subcommand's options."""
    parser = subparsers.add_parser(
        "compare", help="compare ODiMO with evolutionary, random and heuristic mappings on one setup",
        formatter_class=argparse.RawDescriptionHelpFormatter, description=DESCRIPTION, epilog=_epilog())
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
                             "ODiMO's training epochs and the rest of its time (CPU seconds on a CPU, wall on a GPU), "
                             "per seed")
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


def run(args: argparse.Namespace) -> int:
    """Run the methods (or read --from folders), then write and print the report (reading results
    back needs no torch)."""
    plan = resolve_plan(args)
    if args.sources:
        folders = [out_dir(s) for s in args.sources]
        folder = out_dir(plan.out or args.sources[0])
        outcomes = unique(o for source in folders for o in load_outcomes(source))
        run_info = load_run_record(folders)
        given = {**plan.setup_base, **setup_values(args), **plan.setup_overrides}
        metric = str(given.get("metric") or run_info.get("setup", {}).get("metric") or Setup.metric)
    else:
        from .compare_units import run_methods

        apply_threads(args.threads)
        setup = build_setup(args, plan.setup_base, plan.setup_overrides)
        metric = setup.metric
        methods = plan.methods or list(DEFAULT_METHODS)
        folders = [out_dir(plan.out or f"runs/compare-{setup.soc}-{setup.model}-{setup.dataset}-{setup.metric}")]
        folder = folders[0]
        outcomes = run_methods(args, plan, methods, folder)
        plan.methods = methods
        run_info = load_run_record([folder])
    warmups = {seed: records for source in folders for seed, records in load_warmups(source).items()}
    searches = [s for source in folders for s in load_searches(source)]
    report = build_report(outcomes, metric, plan.baselines, plan.reference, plan.methods, warmups, searches)
    report["sources"] = [str(f) for f in folders]
    report["budget"] = {"mode": run_info.get("budget", plan.budget), "per_seed": load_budgets(folders)}
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

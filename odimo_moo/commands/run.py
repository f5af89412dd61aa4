"""``odimo run``: run a study (the outer Optuna or pymoo loop over lambda and hyperparameters)."""

from __future__ import annotations

import argparse
import time
from typing import Any, Callable

from ..study.config import packaged_studies


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "run", help="run a study: Optuna or pymoo over lambda and hyperparameters, then a Pareto report",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Run a study: each trial trains one ODiMO mapping (warmup shared and cached, search,\n"
                    "fine-tune) at a point of the study's search space, and records test/validation\n"
                    "accuracy, latency, energy, mapping and artifacts in an Optuna storage. The sampler\n"
                    "(TPE by default; nsga2, random, gp) maximises validation accuracy and minimises the\n"
                    "study's cost metrics; driver: pymoo runs pymoo's NSGA-II instead.\n\n"
                    "Re-running a study resumes it: finished trials are kept, an interrupted trial resumes\n"
                    "from its checkpoints, and --set trials=N extends it. Several processes given the same\n"
                    "PostgreSQL --storage share one study and its trial budget; a trial whose worker dies\n"
                    "is retried after the heartbeat grace period. At the end the report of `odimo report`\n"
                    "is written to the output folder.",
        epilog="examples:\n"
               "  odimo run                                  # packaged quickstart: DIANA, resnet8, digits\n"
               "  odimo run studies/my.yaml --set trials=3 --out runs/try\n"
               "  odimo run my.yaml --set search_space.lambda=[1.0e-7,1.0e-4] --set training.search_epochs=2\n"
               "  odimo run my.yaml --storage postgresql+psycopg2://user@db-host/odimo   # on every worker\n"
               f"\npackaged studies: {', '.join(packaged_studies())}")
    parser.add_argument("study", nargs="?", default=None, metavar="STUDY",
                        help="study YAML file, or the name of a packaged study (default: quickstart)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a study key (dotted for nested keys; the value is YAML); repeatable")
    parser.add_argument("--out", default=None, metavar="DIR", help="output folder (default: runs/<study name>)")
    parser.add_argument("--storage", default=None, metavar="URL",
                        help="Optuna storage as a SQLAlchemy URL (default: sqlite:///<out>/study.db)")
    parser.add_argument("--device", default=None, choices=("auto", "cpu", "cuda"),
                        help="device for training (default: the study's, auto)")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.add_argument("--no-report", action="store_true", help="do not write the report at the end")
    parser.set_defaults(handler=run)


def _run_optuna(config: Any, progress: bool) -> Any:
    from ..study.optuna_driver import run_optuna

    return run_optuna(config, progress)


def _run_pymoo(config: Any, progress: bool) -> Any:
    from ..study.pymoo_driver import run_pymoo

    return run_pymoo(config, progress)


# Each driver's module is imported only when a study uses it.
DRIVERS: dict[str, Callable[[Any, bool], Any]] = {"optuna": _run_optuna, "pymoo": _run_pymoo}


def run(args: argparse.Namespace) -> int:
    import yaml

    from ..checkpoint import atomic_write_bytes, check_writable
    from ..study.config import load_study
    from ..study.report import build_report, format_table, load_baselines, write_report
    from .common import parse_assignments

    started = time.time()
    overrides = parse_assignments(args.set)
    for key, value in (("out", args.out), ("storage", args.storage), ("device", args.device)):
        if value is not None:
            overrides[key] = value
    config = load_study(args.study, overrides, plugins=args.plugin)
    for folder in (config.out, config.out / "warmup-cache"):  # fail now, not after hours of training
        check_writable(folder)
    atomic_write_bytes(config.out / "study.yaml", yaml.safe_dump(config.to_dict(), sort_keys=False).encode())
    print(f"study {config.name}: {config.trials} trials of {config.strategy} on {config.soc}/{config.model}/"
          f"{config.dataset}, driver {config.driver} ({config.sampler.name}), objectives accuracy and "
          f"{' and '.join(config.metrics)}\n  storage {config.storage}\n  output  {config.out}", flush=True)
    study = DRIVERS[config.driver](config, progress=not args.no_progress)
    if args.no_report:
        return 0
    report = build_report(study, config.storage, load_baselines(config.out))
    paths = write_report(report, config.out)
    print(format_table(report))
    print(f"report in {config.out}: " + ", ".join(path.name for path in paths.values()))
    print(f"finished in {time.time() - started:.0f} s; browse the study with "
          f"`optuna-dashboard {config.storage}` or rerun to resume/extend it")
    return 0

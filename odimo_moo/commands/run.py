"""``odimo run``: run a study (the outer Optuna or pymoo loop over lambda and hyperparameters)."""

from __future__ import annotations

import argparse
import time
from typing import Any

from ..devices import DEVICES
from ..study.config import packaged_studies
from ..study.drivers import DRIVERS
from .common import run_printing_json, thread_count


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
                    "PostgreSQL --storage (or one journal file on a shared file system) share one study and\n"
                    "its trial budget; a trial whose worker dies is retried. A study's constraints (e.g.\n"
                    "constraints: {latency_cycles: {max: 20000}}) steer the sampler and keep infeasible\n"
                    "trials off the report's fronts. Each trial's files go to an Optuna artifact store\n"
                    "(<out>/artifacts) that optuna-dashboard shows. At the end the report of `odimo report`\n"
                    "is written to the output folder.",
        epilog="examples:\n"
               "  odimo run                                  # packaged quickstart: DIANA, resnet8, digits\n"
               "  odimo run studies/my.yaml --set trials=3 --out runs/try\n"
               "  odimo run my.yaml --set search_space.lambda=[1.0e-7,1.0e-4] --set training.search_epochs=2\n"
               "  odimo run my.yaml --storage postgresql+psycopg2://user@db-host/odimo   # on every worker\n"
               "  odimo run my.yaml --storage /shared/studies/my.log      # a journal file on a shared file system\n"
               "  odimo run my.yaml --set constraints.latency_cycles.max=20000 --json > summary.json\n"
               f"\npackaged studies: {', '.join(packaged_studies())}")
    parser.add_argument("study", nargs="?", default=None, metavar="STUDY",
                        help="study YAML file, or the name of a packaged study (default: quickstart)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a study key (dotted for nested keys; the value is YAML); repeatable")
    parser.add_argument("--out", default=None, metavar="DIR", help="output folder (default: runs/<study name>)")
    parser.add_argument("--storage", default=None, metavar="URL",
                        help="Optuna storage: a SQLAlchemy URL, or a journal file (PATH.log, PATH.journal or "
                             "journal:///PATH) (default: sqlite:///<out>/study.db)")
    parser.add_argument("--device", default=None, choices=DEVICES,
                        help="device for training (default: the study's, auto)")
    parser.add_argument("--threads", type=thread_count, default=None, metavar="N",
                        help="PyTorch CPU threads (default: the study's threads key; 1 in the packaged studies)")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.add_argument("--no-report", action="store_true", help="do not write the report at the end")
    parser.add_argument("--json", action="store_true",
                        help="print a JSON summary on stdout (study, trials, fronts, files); everything else "
                             "goes to stderr")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    return run_printing_json(args, _run)


def dashboard_command(config: Any) -> str:
    """The optuna-dashboard command line that shows the study and its artifacts."""
    from ..study.storage_url import for_dashboard

    artifacts = f" --artifact-dir {config.artifacts}" if config.artifacts is not None else ""
    return f"optuna-dashboard {for_dashboard(config.storage)}{artifacts}"


def _next_steps(config: Any, study_ref: str | None, finished: int, ran: int) -> str:
    """What to do next: extend a complete study that ran nothing now, browse it with optuna-dashboard."""
    import importlib.util

    lines = []
    if ran == 0 and finished >= config.trials:
        again = " ".join(["odimo run", *([study_ref] if study_ref else []), f"--set trials={2 * config.trials}"])
        lines.append(f"study {config.name} is complete: its {config.trials} trials are finished and none was "
                     f"left to run; to extend it, run `{again}` (any trials=N above {config.trials})")
    install = "" if importlib.util.find_spec("optuna_dashboard") else \
        " (install it with: pip install 'odimo-moo[dashboard]')"
    lines.append(f"browse the study with `{dashboard_command(config)}`{install}")
    return "\n".join(lines)


def _announce(config: Any) -> None:
    """Print what the study runs, its objectives and constraints, and where it is stored."""
    objectives = ", ".join(f"{name} ({'max' if i == 0 else 'min'})" for i, name in enumerate(config.objective_names()))
    constraints = ", ".join(c.describe() for c in config.constraints) or "none"
    print(f"study {config.name}: {config.trials} trials of {config.strategy} on {config.soc}/{config.model}/"
          f"{config.dataset}, driver {config.driver} ({config.sampler.name})\n  objectives  {objectives}\n"
          f"  constraints {constraints}\n  storage     {config.storage}\n  output      {config.out}", flush=True)


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The study settings given on the command line: ``--set KEY=VALUE`` and the dedicated options."""
    from .common import parse_assignments

    overrides = parse_assignments(args.set)
    for key, value in (("out", args.out), ("storage", args.storage), ("device", args.device),
                       ("threads", args.threads)):
        if value is not None:
            overrides[key] = value
    return overrides


def _run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the study; print progress and the report (stdout); return the JSON summary."""
    import yaml

    from ..checkpoint import atomic_write_bytes, check_writable
    from ..study.attempt import storage_failures
    from ..study.config import load_study
    from ..study.constraints import to_spec
    from ..study.ownership import claim_output_folder
    from ..study.ledger import Ledger
    from ..study.report import build_report, format_table, load_baselines
    from ..study.report_output import write_report

    started = time.time()
    config = load_study(args.study, _overrides(args), plugins=args.plugin)
    folders = [config.out, config.out / "warmup-cache"] + ([config.artifacts] if config.artifacts else [])
    for folder in folders:  # fail now, not after hours of training
        check_writable(folder)
    claim_output_folder(config)
    atomic_write_bytes(config.out / "study.yaml", yaml.safe_dump(config.to_dict(), sort_keys=False).encode())
    _announce(config)
    with storage_failures(config.storage, config.heartbeat.grace):
        result = DRIVERS[config.driver].run(config, not args.no_progress)
        trials = result.study.get_trials(deepcopy=False)
    finished = Ledger.of(trials, config.driver).finished
    states = [t.state.name for t in trials]
    summary: dict[str, Any] = {
        "study": config.name, "storage": config.storage, "out": str(config.out), "driver": config.driver,
        "sampler": config.sampler.name, "objectives": config.objective_names(),
        "constraints": to_spec(config.constraints),
        "artifacts": str(config.artifacts) if config.artifacts is not None else None,
        "trials": {"budget": config.trials, "finished": finished, "ran_now": result.ran,
                   "states": {state: states.count(state) for state in sorted(set(states))}},
        "complete": finished >= config.trials, "report": None, "dashboard": dashboard_command(config)}
    if not args.no_report:
        with storage_failures(config.storage, config.heartbeat.grace):
            report = build_report(result.study, config.storage, load_baselines(config.out))
        paths = write_report(report, config.out)
        print(format_table(report))
        print(f"report in {config.out}: " + ", ".join(path.name for path in paths.values()))
        summary["report"] = {**report.to_dict(), "files": {key: str(path) for key, path in paths.items()}}
    summary["wall_s"] = round(time.time() - started, 3)
    print(f"finished in {summary['wall_s']:.0f} s")
    print(_next_steps(config, args.study, finished, result.ran))
    return summary

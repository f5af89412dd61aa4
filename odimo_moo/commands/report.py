"""``odimo report``: Pareto fronts, hypervolumes, CSV/JSON tables and plots of a study."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .common import run_printing_json


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "report", help="Pareto fronts, hypervolume, CSV/JSON and plots of a study",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Read a study and write pareto.csv, pareto.json (front points with lambda,\n"
                    "hyperparameters, artifact paths, trial number and driver; hypervolume with its\n"
                    "reference point), all_trials.csv, pareto_latency.png, pareto_energy.png (fronts\n"
                    "highlighted per driver, all trials dimmed, baselines.json of the study folder as\n"
                    "stars) and mapping_trial<N>.png (channels per unit of every searched layer), then\n"
                    "print the front. Fronts show and are chosen on test accuracy, as in the paper; the\n"
                    "samplers (and optuna-dashboard's front) only see validation accuracy, so the search\n"
                    "never sees the test split. Trials that break the study's constraints are marked\n"
                    "infeasible and kept off the fronts. A front trial whose work folder is absent here is\n"
                    "read from the study's artifact store into OUT/trials/<N>/.\n\n"
                    "A study is an ordinary Optuna storage, so optuna-dashboard works on it too\n"
                    "(pip install 'odimo-moo[dashboard]'):\n"
                    "  optuna-dashboard sqlite:///runs/quickstart/study.db --artifact-dir runs/quickstart/artifacts",
        epilog="examples:\n"
               "  odimo report                       # the quickstart study in runs/quickstart\n"
               "  odimo report runs/my-study --point 4\n"
               "  odimo report --storage postgresql+psycopg2://user@db-host/odimo --study my-study --out rep\n"
               "  odimo report --storage /shared/studies/my.log --artifacts /shared/runs/my/artifacts --json")
    parser.add_argument("study", nargs="?", default=None, metavar="STUDY_OR_OUT_DIR",
                        help="study YAML file, packaged study name or output folder of `odimo run` "
                             "(default: quickstart)")
    parser.add_argument("--storage", default=None, metavar="URL", help="read this Optuna storage instead")
    parser.add_argument("--study", dest="study_name", default=None, metavar="NAME",
                        help="study name in --storage (default: its only study)")
    parser.add_argument("--out", default=None, metavar="DIR", help="where to write (default: the study's folder)")
    parser.add_argument("--point", type=int, default=None, metavar="TRIAL",
                        help="trial whose mapping to plot (default: the most accurate Pareto point)")
    parser.add_argument("--artifacts", default=None, metavar="DIR",
                        help="the study's artifact store, for front trials whose folder is absent here "
                             "(default: the study's artifacts folder)")
    parser.add_argument("--json", action="store_true",
                        help="print the report (fronts, hypervolumes, feasibility, files) as JSON on stdout; "
                             "the table goes to stderr")
    parser.set_defaults(handler=run)


def _from_config(ref: str | None) -> tuple[str, str | None, Path | None]:
    """Storage URL, study name and study folder named by a study file, packaged study or output folder
    (read without loading the study's plugins: a report reads results only)."""
    from ..errors import UsageError
    from ..study.config import study_location

    folder = Path(ref).expanduser() if ref else None
    if folder is not None and folder.is_dir():
        if not (folder / "study.yaml").is_file():
            raise UsageError(f"{folder} is not an `odimo run` output folder (no study.yaml)")
        ref = str(folder / "study.yaml")
    location = study_location(ref)
    return location.storage, location.name, location.out


def run(args: argparse.Namespace) -> int:
    return run_printing_json(args, _report)


def _storage_of(args: argparse.Namespace) -> tuple[str, str | None, Path | None]:
    """Storage URL, study name and study folder the arguments name."""
    from ..errors import UsageError
    from ..study import storage_url

    if args.storage:
        try:
            return storage_url.normalize(args.storage), args.study_name, None
        except ValueError as exc:
            raise UsageError(f"--storage {exc}") from None
    if args.study_name:
        raise UsageError("--study needs --storage (a study file or folder names its own study)")
    return _from_config(args.study)


def _artifact_folder(args: argparse.Namespace, study: Any) -> Path | None:
    """The artifact store's folder: --artifacts, else the one the study was created with."""
    from ..study.storage import CONFIG_ATTR

    if args.artifacts:
        return Path(args.artifacts).expanduser()
    stored = (study.user_attrs.get(CONFIG_ATTR) or {}).get("artifacts")
    return Path(stored) if isinstance(stored, str) else None


def _report(args: argparse.Namespace) -> dict[str, Any]:
    """Write the report; print its table (stdout); return its JSON document."""
    import optuna

    from ..errors import UsageError
    from ..study.artifact_store import open_store
    from ..study.report import build_report, fetch_absent_trials, format_table, load_baselines
    from ..study.report_output import write_report
    from ..study.storage import OUT_ATTR, open_storage, quiet_optuna
    from ..study.storage_url import local_file

    quiet_optuna()
    url, name, folder = _storage_of(args)
    file = local_file(url)
    if file is not None and not file.is_file():
        raise UsageError(f"no study database at {file}; run `odimo run` first")
    storage = open_storage(url)
    names = optuna.get_all_study_names(storage)
    if name is None and len(names) == 1:
        name = names[0]
    if name not in names:
        raise UsageError(f"no study {name or '(name one with --study)'} in {url}; studies there: "
                         f"{', '.join(names) or 'none'}")
    study = optuna.load_study(study_name=name, storage=storage)
    if folder is None and study.user_attrs.get(OUT_ATTR):
        folder = Path(study.user_attrs[OUT_ATTR])
    out = Path(args.out).expanduser() if args.out else (folder or Path("runs") / name)
    report = build_report(study, url, load_baselines(folder) if folder and folder.is_dir() else [])
    artifacts = _artifact_folder(args, study)
    if artifacts is not None and artifacts.is_dir():
        report = fetch_absent_trials(report, study, storage, open_store(artifacts), out)
    paths = write_report(report, out, args.point)
    print(format_table(report))
    print(f"report in {out}: " + ", ".join(path.name for path in paths.values()))
    return {**report.to_dict(), "out": str(out), "files": {key: str(path) for key, path in paths.items()}}

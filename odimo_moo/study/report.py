"""Study reports: trials of a study as rows, Pareto fronts and hypervolumes, CSV/JSON files, a table.

Fronts are taken on test accuracy (as in the paper) against each cost, over the trials that meet
the study's constraints; the samplers (and optuna-dashboard's front) only ever see validation
accuracy, so the test split stays unseen by the search. Every hypervolume of a report shares one
reference point, stated with it.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import optuna
from optuna.artifacts import FileSystemArtifactStore
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState

from ..checkpoint import atomic_write_bytes, atomic_write_json
from ..errors import RunFailure, UsageError
from ..pareto import ReferencePoint, default_reference, hypervolume, pareto_mask
from ..strategy import COST_FIELDS, Outcome
from .constraints import Constraint, from_spec, is_feasible, to_spec, violations
from .ledger import ERROR, FAILURE, SURPLUS, driver_of, work_number
from .storage import CONFIG_ATTR

COST_LABELS = {"latency": "latency [cycles]", "energy": "energy [uJ]"}
BASELINES_FILE = "baselines.json"
ACCURACY_NOTE = ("accuracy is test accuracy, on which the fronts are chosen (as in the paper); the samplers "
                 "and optuna-dashboard use validation accuracy (val_acc), so the search never sees the test split")


@dataclass(frozen=True)
class TrialRow:
    """One trial as the report sees it (costs and accuracies are None unless it completed)."""

    number: int
    state: str
    driver: str
    params: dict[str, Any]
    accuracy: float | None = None
    val_accuracy: float | None = None
    latency_cycles: float | None = None
    energy_uj: float | None = None
    channel_split: dict[str, dict[str, int]] = field(default_factory=dict)
    artifacts: dict[str, str] = field(default_factory=dict)
    wall_time_s: float | None = None
    work_dir: str = ""
    failure: str = ""
    retry_of: int | None = None
    constraints: dict[str, float] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        return self.state == "COMPLETE"

    @property
    def feasible(self) -> bool:
        """Whether the trial completed and meets every constraint of its study."""
        return self.complete and is_feasible(self.constraints)

    def cost(self, metric: str) -> float:
        return float(getattr(self, COST_FIELDS[metric]))

    def point(self) -> dict[str, Any]:
        """The JSON record of a front point."""
        return {"trial": self.number, "driver": self.driver, "accuracy": self.accuracy,
                "val_accuracy": self.val_accuracy, "latency_cycles": self.latency_cycles,
                "energy_uj": self.energy_uj, "lambda": self.params.get("lambda"), "params": self.params,
                "constraints": self.constraints, "artifacts": self.artifacts, "work_dir": self.work_dir,
                "channel_split": self.channel_split}


def failure_of(trial: FrozenTrial) -> str:
    """Why a trial failed, as the report says it: ``diverged``, ``error: WHAT`` (the exception that
    stopped it), ``interrupted``, or ``stopped`` (its worker vanished); '' for a trial that did not fail."""
    failure = trial.user_attrs.get(FAILURE, "" if trial.state != TrialState.FAIL else "stopped")
    if failure == ERROR:
        return f"{ERROR}: {trial.user_attrs.get('error', '')}"
    return failure


def row_of(trial: FrozenTrial, constraints: Sequence[Constraint] = ()) -> TrialRow:
    """The report's view of a trial; a complete one gets its values of ``constraints``."""
    attrs = trial.user_attrs
    params = attrs.get("params") or {**trial.params, **attrs.get("fixed", {})}
    work = work_number(trial)
    return TrialRow(
        number=trial.number, state=trial.state.name, driver=driver_of(trial), params=dict(params),
        accuracy=attrs.get("accuracy"), val_accuracy=attrs.get("val_accuracy"),
        latency_cycles=attrs.get("latency_cycles"), energy_uj=attrs.get("energy_uj"),
        channel_split=attrs.get("channel_split", {}), artifacts=attrs.get("artifacts", {}),
        wall_time_s=attrs.get("wall_time_s"), work_dir=attrs.get("work_dir", ""),
        failure=failure_of(trial),
        retry_of=None if work == trial.number else work,
        constraints=violations(constraints, attrs) if trial.state == TrialState.COMPLETE else {})


def study_rows(study: optuna.Study, constraints: Sequence[Constraint] = ()) -> list[TrialRow]:
    """Every trial of the study except surplus ones (asked for after the budget was used; they ran nothing)."""
    return [row_of(t, constraints) for t in study.get_trials(deepcopy=False)
            if t.user_attrs.get(FAILURE) != SURPLUS]


def load_baselines(folder: Path) -> list[Outcome]:
    """Outcomes of other strategies saved as ``baselines.json`` (a list of Outcome dicts) in ``folder``."""
    path = folder / BASELINES_FILE
    if not path.is_file():
        return []
    try:
        return [Outcome.from_dict(item) for item in json.loads(path.read_text())]
    except (ValueError, TypeError) as exc:
        raise UsageError(f"{path}: not a list of outcome records ({exc})") from exc


@dataclass
class FrontReport:
    """Front and hypervolumes of one cost metric."""

    metric: str
    front: list[TrialRow]
    reference: ReferencePoint
    hypervolume: float
    by_driver: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        return {"points": [row.point() for row in self.front],
                "hypervolume": self.hypervolume, "hypervolume_by_driver": self.by_driver,
                "reference_point": {"accuracy": self.reference.accuracy,
                                    COST_FIELDS[self.metric]: self.reference.cost}}


def front_of(rows: Sequence[TrialRow], metric: str) -> list[TrialRow]:
    """Non-dominated complete rows (max test accuracy, min cost), by increasing cost."""
    mask = pareto_mask([r.accuracy for r in rows], [r.cost(metric) for r in rows])
    return sorted((r for r, keep in zip(rows, mask) if keep), key=lambda r: r.cost(metric))


def front_report(rows: Sequence[TrialRow], metric: str, baselines: Sequence[Outcome],
                 box: Sequence[TrialRow] = ()) -> FrontReport:
    """Front and hypervolumes of ``rows``; the reference point bounds them, the baselines and ``box``
    (rows that must fit the box though they are not on any front)."""
    field_name = COST_FIELDS[metric]
    baseline_costs = [float(getattr(b, field_name)) for b in baselines]
    reference = default_reference([r.cost(metric) for r in [*rows, *box]] + baseline_costs)
    by_driver = {driver: hypervolume([r.accuracy for r in rows if r.driver == driver],
                                     [r.cost(metric) for r in rows if r.driver == driver], reference)
                 for driver in sorted({r.driver for r in rows})}
    if baselines:
        by_driver["baselines"] = hypervolume([b.accuracy for b in baselines], baseline_costs, reference)
    return FrontReport(metric, front_of(rows, metric), reference,
                       hypervolume([r.accuracy for r in rows], [r.cost(metric) for r in rows], reference),
                       by_driver)


@dataclass
class StudyReport:
    """Everything ``odimo report`` writes and prints about one study."""

    study_name: str
    storage: str
    metrics: tuple[str, ...]
    rows: list[TrialRow]
    fronts: dict[str, FrontReport]
    baselines: list[Outcome]
    constraints: tuple[Constraint, ...] = ()

    @property
    def complete(self) -> list[TrialRow]:
        return [r for r in self.rows if r.complete]

    @property
    def feasible(self) -> list[TrialRow]:
        """Complete trials that meet every constraint: the fronts are built from them."""
        return [r for r in self.rows if r.feasible]

    @property
    def infeasible(self) -> list[TrialRow]:
        return [r for r in self.rows if r.complete and not r.feasible]

    def param_names(self) -> list[str]:
        names: list[str] = []
        for row in self.rows:
            names += [name for name in row.params if name not in names]
        return names

    def to_dict(self) -> dict[str, Any]:
        states = [r.state for r in self.rows]
        return {"study": self.study_name, "storage": self.storage, "objectives": list(self.metrics),
                "accuracy": ACCURACY_NOTE,
                "constraints": to_spec(self.constraints),
                "trials": {state: states.count(state) for state in sorted(set(states))},
                "infeasible_trials": [r.number for r in self.infeasible],
                "fronts": {metric: front.to_dict() for metric, front in self.fronts.items()}}


def build_report(study: optuna.Study, storage: str, baselines: Sequence[Outcome] = ()) -> StudyReport:
    """Rows, fronts and hypervolumes of a study run by ``odimo run``."""
    config = study.user_attrs.get(CONFIG_ATTR)
    if config is None:
        raise UsageError(f"study {study.study_name!r} in {storage} was not created by odimo run")
    metrics = tuple(config["metrics"])
    constraints = from_spec(config.get("constraints"))
    rows = study_rows(study, constraints)
    complete = [r for r in rows if r.complete]
    if not complete:
        raise RunFailure(f"study {study.study_name!r} has no complete trial yet ({len(rows)} trial(s) in "
                         f"{storage})")
    feasible = [r for r in complete if r.feasible]
    fronts = {metric: front_report(feasible, metric, baselines, box=[] if feasible else complete)
              for metric in COST_FIELDS}
    return StudyReport(study.study_name, storage, metrics, rows, fronts, list(baselines), constraints)


def _csv(header: Sequence[str], records: Sequence[Sequence[Any]]) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(records)
    return buffer.getvalue().encode()


MEASURES = ["accuracy", "val_accuracy", *COST_FIELDS.values()]


def _measures(row: TrialRow) -> list[Any]:
    return [getattr(row, name) for name in MEASURES]


def _feasibility(report: StudyReport, row: TrialRow) -> list[Any]:
    """The ``feasible`` cell and one cell per constraint value (empty unless the trial completed)."""
    if not row.complete:
        return [""] * (1 + len(report.constraints))
    return [row.feasible, *(row.constraints[c.key] for c in report.constraints)]


def write_tables(report: StudyReport, out: Path) -> dict[str, Path]:
    """Write ``all_trials.csv`` (with each trial's feasibility and constraint values), ``pareto.csv``
    (the front of each objective metric, feasible trials only) and ``pareto.json``."""
    params = report.param_names()
    paths = {"all_trials": out / "all_trials.csv", "pareto_csv": out / "pareto.csv",
             "pareto_json": out / "pareto.json"}
    atomic_write_bytes(paths["all_trials"], _csv(
        ["trial", "state", "driver", "failure", "retry_of", *MEASURES, "feasible",
         *(c.key for c in report.constraints), *params, "wall_time_s", "work_dir"],
        [[r.number, r.state, r.driver, r.failure, "" if r.retry_of is None else r.retry_of, *_measures(r),
          *_feasibility(report, r), *(r.params.get(p, "") for p in params), r.wall_time_s, r.work_dir]
         for r in report.rows]))
    atomic_write_bytes(paths["pareto_csv"], _csv(
        ["front", "trial", "driver", *MEASURES, *params, "mapping", "exported_model", "work_dir"],
        [[metric, r.number, r.driver, *_measures(r), *(r.params.get(p, "") for p in params),
          r.artifacts.get("mapping", ""), r.artifacts.get("exported_model", ""), r.work_dir]
         for metric in report.metrics for r in report.fronts[metric].front]))
    atomic_write_json(paths["pareto_json"], report.to_dict())
    return paths


def _format(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def format_table(report: StudyReport) -> str:
    """The front of every objective metric as a text table, with its hypervolume and reference, what
    its accuracy is, and the trials left off as infeasible or failed."""
    params = report.param_names()
    lines = []
    feasible = (f"{len(report.feasible)} feasible trials, {len(report.complete)} complete"
                if report.constraints else f"{len(report.complete)} complete trials")
    for metric in report.metrics:
        front = report.fronts[metric]
        lines.append(f"Pareto front of study {report.study_name!r}: test accuracy vs {metric} "
                     f"({len(front.front)} of {feasible})")
        header = ["trial", "driver", *params, "accuracy", "val_acc", "latency [cycles]", "energy [uJ]"]
        table = [[str(r.number), r.driver, *(_format(r.params.get(p, "")) for p in params),
                  f"{r.accuracy:.4f}", f"{r.val_accuracy:.4f}", f"{r.latency_cycles:,.0f}", f"{r.energy_uj:.4g}"]
                 for r in front.front]
        widths = [max([len(h), *(len(row[i]) for row in table)]) for i, h in enumerate(header)]
        lines.append("  ".join(h.rjust(w) for h, w in zip(header, widths)))
        lines += ["  ".join(cell.rjust(w) for cell, w in zip(row, widths)) for row in table]
        drivers = ", ".join(f"{driver} {value:.4g}" for driver, value in front.by_driver.items())
        lines.append(f"hypervolume {front.hypervolume:.6g} (by driver: {drivers}); reference point "
                     f"{front.reference.describe(COST_FIELDS[metric])}")
    lines.append(ACCURACY_NOTE)
    if report.constraints:
        rules = ", ".join(c.describe() for c in report.constraints)
        infeasible = ", ".join(str(r.number) for r in report.infeasible) or "none"
        lines.append(f"constraints {rules}: infeasible trials (on no front): {infeasible}")
    failed = [r for r in report.rows if r.state == "FAIL" and r.failure]
    if failed:
        lines.append(f"{len(failed)} failed trial(s): " + ", ".join(f"{r.number} ({r.failure})" for r in failed))
    return "\n".join(lines)


def pick_point(report: StudyReport, number: int | None) -> TrialRow | None:
    """Trial ``number`` (a complete trial), or the most accurate point of the first objective's front
    (None when no trial is feasible)."""
    if number is None:
        return max(report.fronts[report.metrics[0]].front, key=lambda r: (r.accuracy, -r.cost(report.metrics[0])),
                   default=None)
    for row in report.complete:
        if row.number == number:
            return row
    raise UsageError(f"--point {number}: not a complete trial of study {report.study_name!r}; complete trials: "
                     f"{', '.join(str(r.number) for r in report.complete)}")


def write_report(report: StudyReport, out: Path, point: int | None = None) -> dict[str, Path]:
    """Tables and plots of ``report`` in ``out``; returns the paths written."""
    from .plots import plot_front, plot_mapping

    out.mkdir(parents=True, exist_ok=True)
    paths = write_tables(report, out)
    for metric in COST_FIELDS:
        paths[f"plot_{metric}"] = plot_front(report, metric, out / f"pareto_{metric}.png")
    chosen = pick_point(report, point)
    if chosen is not None:
        paths["plot_mapping"] = plot_mapping(chosen, out / f"mapping_trial{chosen.number}.png")
    return paths


def fetch_absent_trials(report: StudyReport, study: optuna.Study, storage: BaseStorage,
                        store: FileSystemArtifactStore, folder: Path) -> StudyReport:
    """``report`` with every front trial whose work folder is absent here read from the artifact
    store ``store`` (of ``study``, in ``storage``) into ``folder/trials/<number>/``: its rows point
    at those files (``odimo export`` takes such a folder). Trials the store holds nothing of keep
    their paths."""
    from dataclasses import replace

    from .artifact_store import download_trial_files

    by_number = {t.number: t for t in study.get_trials(deepcopy=False)}
    fetched: dict[int, TrialRow] = {}
    for front in report.fronts.values():
        for row in front.front:
            if row.number in fetched or not row.work_dir or Path(row.work_dir).is_dir():
                continue
            target = folder / "trials" / str(row.number)
            files = download_trial_files(store, by_number[row.number], storage, target)
            if files:
                artifacts = {key: str(files.get(Path(path).name, path)) for key, path in row.artifacts.items()}
                fetched[row.number] = replace(row, artifacts=artifacts, work_dir=str(target))
    if not fetched:
        return report
    fronts = {metric: replace(front, front=[fetched.get(r.number, r) for r in front.front])
              for metric, front in report.fronts.items()}
    return replace(report, rows=[fetched.get(r.number, r) for r in report.rows], fronts=fronts)

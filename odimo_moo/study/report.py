"""Study reports: the trials of a study as rows, their Pareto fronts and hypervolumes, the printed table
(the files are written by :mod:`.report_output`).

Fronts are taken on test accuracy (as in the paper) against each cost, over the trials that meet
the study's constraints; the samplers (and optuna-dashboard's front) only ever see validation
accuracy, so the test split stays unseen by the search. Every hypervolume of a report shares one
reference point, stated with it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

import optuna
from optuna.artifacts import FileSystemArtifactStore
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState

from ..errors import RunFailure, UsageError
from ..front_point import COST_FIELDS, COST_METRICS, REQUIRED_FIELDS, FrontPoint
from ..pareto import ReferencePoint, default_reference, front_indices, points_hypervolume
from ..strategy import Outcome
from .constraints import Constraint, from_spec, is_feasible, to_spec, violations
from .ledger import ERROR, FAILURE, SURPLUS, driver_of, work_number
from .storage import CONFIG_ATTR

BASELINES_FILE = "baselines.json"
ACCURACY_NOTE = ("accuracy is test accuracy, on which the fronts are chosen (as in the paper); the samplers "
                 "and optuna-dashboard use validation accuracy (val_acc), so the search never sees the test split")


@dataclass(frozen=True)
class TrialRow:
    """One trial as the report sees it: its state and, once it completed, its front point (whose
    ``params`` are the trial's)."""

    number: int
    state: str
    driver: str
    params: dict[str, Any]
    point: FrontPoint | None = None
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

    @property
    def scored(self) -> FrontPoint:
        """The point of a complete trial (``ValueError`` for one without)."""
        if self.point is None:
            raise ValueError(f"trial {self.number} ({self.state}) has no accuracy and cost")
        return self.point

    def record(self) -> dict[str, Any]:
        """The JSON record of the trial as a front point."""
        point = self.scored
        return {"trial": self.number, "driver": self.driver, "accuracy": point.accuracy,
                "val_accuracy": point.val_accuracy, **{name: getattr(point, name) for name in COST_FIELDS.values()},
                "lambda": self.params.get("lambda"), "params": self.params, "constraints": self.constraints,
                "artifacts": point.artifacts, "work_dir": self.work_dir, "channel_split": point.channel_split}


def failure_of(trial: FrozenTrial) -> str:
    """Why a trial failed, as the report says it: ``diverged``, ``error: WHAT`` (the exception that
    stopped it), ``interrupted``, or ``stopped`` (its worker vanished); '' for a trial that did not fail."""
    failure = trial.user_attrs.get(FAILURE, "" if trial.state != TrialState.FAIL else "stopped")
    if failure == ERROR:
        return f"{ERROR}: {trial.user_attrs.get('error', '')}"
    return failure


def point_of(attrs: Mapping[str, Any]) -> FrontPoint | None:
    """The front point of a trial's user attributes (``params``: the trial's), or None when they
    hold no accuracy and cost (a trial that did not complete)."""
    if not all(key in attrs for key in REQUIRED_FIELDS):
        return None
    return FrontPoint.from_dict(attrs)


def row_of(trial: FrozenTrial, constraints: Sequence[Constraint] = ()) -> TrialRow:
    """The report's view of a trial; a complete one gets its values of ``constraints``."""
    attrs = trial.user_attrs
    params = attrs.get("params") or {**trial.params, **attrs.get("fixed", {})}
    work = work_number(trial)
    return TrialRow(
        number=trial.number, state=trial.state.name, driver=driver_of(trial), params=dict(params),
        point=point_of({**attrs, "params": dict(params)}), work_dir=attrs.get("work_dir", ""),
        failure=failure_of(trial), retry_of=None if work == trial.number else work,
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
        items = json.loads(path.read_text())
        if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
            raise TypeError("expected a JSON list of objects")
        return [Outcome.from_dict(item) for item in items]
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
        return {"points": [row.record() for row in self.front],
                "hypervolume": self.hypervolume, "hypervolume_by_driver": self.by_driver,
                "reference_point": {"accuracy": self.reference.accuracy,
                                    COST_FIELDS[self.metric]: self.reference.cost}}


def front_of(rows: Sequence[TrialRow], metric: str) -> list[TrialRow]:
    """Non-dominated complete rows (max test accuracy, min cost), by increasing cost."""
    return [rows[i] for i in front_indices([r.scored for r in rows], metric)]


def front_report(rows: Sequence[TrialRow], metric: str, baselines: Sequence[FrontPoint],
                 box: Sequence[TrialRow] = ()) -> FrontReport:
    """Front and hypervolumes of ``rows``; the reference point bounds them, the baselines and ``box``
    (rows that must fit the box though they are not on any front)."""
    points = [r.scored for r in rows]
    reference = default_reference([p.cost(metric) for p in [*points, *(r.scored for r in box), *baselines]])
    by_driver = {driver: points_hypervolume([r.scored for r in rows if r.driver == driver], metric, reference)
                 for driver in sorted({r.driver for r in rows})}
    if baselines:
        by_driver["baselines"] = points_hypervolume(baselines, metric, reference)
    return FrontReport(metric, front_of(rows, metric), reference, points_hypervolume(points, metric, reference),
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
        header = ["trial", "driver", *params, "accuracy", "val_acc", *(m.label for m in COST_METRICS.values())]
        table = [[str(r.number), r.driver, *(_format(r.params.get(p, "")) for p in params),
                  f"{r.scored.accuracy:.4f}", f"{r.scored.val_accuracy:.4f}",
                  *(format(r.scored.cost(name), m.cell) for name, m in COST_METRICS.items())]
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
        first = report.metrics[0]
        return max(report.fronts[first].front, key=lambda r: (r.scored.accuracy, -r.scored.cost(first)),
                   default=None)
    for row in report.complete:
        if row.number == number:
            return row
    raise UsageError(f"--point {number}: not a complete trial of study {report.study_name!r}; complete trials: "
                     f"{', '.join(str(r.number) for r in report.complete)}")


def fetch_absent_trials(report: StudyReport, study: optuna.Study, storage: BaseStorage,
                        store: FileSystemArtifactStore, folder: Path) -> StudyReport:
    """``report`` with every front trial whose work folder is absent here read from the artifact
    store ``store`` (of ``study``, in ``storage``) into ``folder/trials/<number>/``: its rows point
    at those files (``odimo export`` takes such a folder). Trials the store holds nothing of keep
    their paths."""
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
                artifacts = {key: str(files.get(Path(path).name, path)) for key, path in row.scored.artifacts.items()}
                fetched[row.number] = replace(row, point=replace(row.scored, artifacts=artifacts), work_dir=str(target))
    if not fetched:
        return report
    fronts = {metric: replace(front, front=[fetched.get(r.number, r) for r in front.front])
              for metric, front in report.fronts.items()}
    return replace(report, rows=[fetched.get(r.number, r) for r in report.rows], fronts=fronts)

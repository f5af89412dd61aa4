"""Study reports: trials of a study as rows, Pareto fronts and hypervolumes, CSV/JSON files, a table.

Fronts are taken on test accuracy (as in the paper) against each cost; the samplers only ever see
validation accuracy. Every hypervolume of a report shares one reference point, stated with it.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import optuna
from optuna.trial import FrozenTrial, TrialState

from ..checkpoint import atomic_write_bytes, atomic_write_json
from ..errors import RunFailure, UsageError
from ..pareto import ReferencePoint, default_reference, hypervolume, pareto_mask
from ..strategy import Outcome
from .config import COST_FIELDS
from .ledger import FAILURE, SURPLUS, driver_of, work_number
from .storage import CONFIG_ATTR

COST_LABELS = {"latency": "latency [cycles]", "energy": "energy [uJ]"}
BASELINES_FILE = "baselines.json"


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

    @property
    def complete(self) -> bool:
        return self.state == "COMPLETE"

    def cost(self, metric: str) -> float:
        return float(getattr(self, COST_FIELDS[metric]))

    def point(self) -> dict[str, Any]:
        """The JSON record of a front point."""
        return {"trial": self.number, "driver": self.driver, "accuracy": self.accuracy,
                "val_accuracy": self.val_accuracy, "latency_cycles": self.latency_cycles,
                "energy_uj": self.energy_uj, "lambda": self.params.get("lambda"), "params": self.params,
                "artifacts": self.artifacts, "work_dir": self.work_dir, "channel_split": self.channel_split}


def row_of(trial: FrozenTrial) -> TrialRow:
    attrs = trial.user_attrs
    params = attrs.get("params") or {**trial.params, **attrs.get("fixed", {})}
    work = work_number(trial)
    return TrialRow(
        number=trial.number, state=trial.state.name, driver=driver_of(trial), params=dict(params),
        accuracy=attrs.get("accuracy"), val_accuracy=attrs.get("val_accuracy"),
        latency_cycles=attrs.get("latency_cycles"), energy_uj=attrs.get("energy_uj"),
        channel_split=attrs.get("channel_split", {}), artifacts=attrs.get("artifacts", {}),
        wall_time_s=attrs.get("wall_time_s"), work_dir=attrs.get("work_dir", ""),
        failure=attrs.get(FAILURE, "" if trial.state != TrialState.FAIL else "stopped"),
        retry_of=None if work == trial.number else work)


def study_rows(study: optuna.Study) -> list[TrialRow]:
    """Every trial of the study except surplus ones (asked for after the budget was used; they ran nothing)."""
    return [row_of(t) for t in study.get_trials(deepcopy=False) if t.user_attrs.get(FAILURE) != SURPLUS]


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


def front_report(rows: Sequence[TrialRow], metric: str, baselines: Sequence[Outcome]) -> FrontReport:
    field_name = COST_FIELDS[metric]
    baseline_costs = [float(getattr(b, field_name)) for b in baselines]
    reference = default_reference([r.cost(metric) for r in rows] + baseline_costs)
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

    @property
    def complete(self) -> list[TrialRow]:
        return [r for r in self.rows if r.complete]

    def param_names(self) -> list[str]:
        names: list[str] = []
        for row in self.rows:
            names += [name for name in row.params if name not in names]
        return names

    def to_dict(self) -> dict[str, Any]:
        states = [r.state for r in self.rows]
        return {"study": self.study_name, "storage": self.storage, "objectives": list(self.metrics),
                "accuracy": "test accuracy (the samplers optimise validation accuracy)",
                "trials": {state: states.count(state) for state in sorted(set(states))},
                "fronts": {metric: front.to_dict() for metric, front in self.fronts.items()}}


def build_report(study: optuna.Study, storage: str, baselines: Sequence[Outcome] = ()) -> StudyReport:
    """Rows, fronts and hypervolumes of a study run by ``odimo run``."""
    config = study.user_attrs.get(CONFIG_ATTR)
    if config is None:
        raise UsageError(f"study {study.study_name!r} in {storage} was not created by odimo run")
    metrics = tuple(config["metrics"])
    rows = study_rows(study)
    complete = [r for r in rows if r.complete]
    if not complete:
        raise RunFailure(f"study {study.study_name!r} has no complete trial yet ({len(rows)} trial(s) in "
                         f"{storage})")
    fronts = {metric: front_report(complete, metric, baselines) for metric in COST_FIELDS}
    return StudyReport(study.study_name, storage, metrics, rows, fronts, list(baselines))


def _csv(header: Sequence[str], records: Sequence[Sequence[Any]]) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(records)
    return buffer.getvalue().encode()


MEASURES = ["accuracy", "val_accuracy", "latency_cycles", "energy_uj"]


def _measures(row: TrialRow) -> list[Any]:
    return [getattr(row, name) for name in MEASURES]


def write_tables(report: StudyReport, out: Path) -> dict[str, Path]:
    """Write ``all_trials.csv``, ``pareto.csv`` (the front of each objective metric) and ``pareto.json``."""
    params = report.param_names()
    paths = {"all_trials": out / "all_trials.csv", "pareto_csv": out / "pareto.csv",
             "pareto_json": out / "pareto.json"}
    atomic_write_bytes(paths["all_trials"], _csv(
        ["trial", "state", "driver", "failure", "retry_of", *MEASURES, *params, "wall_time_s", "work_dir"],
        [[r.number, r.state, r.driver, r.failure, "" if r.retry_of is None else r.retry_of, *_measures(r),
          *(r.params.get(p, "") for p in params), r.wall_time_s, r.work_dir] for r in report.rows]))
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
    """The front of every objective metric as a text table, with its hypervolume and reference."""
    params = report.param_names()
    lines = []
    for metric in report.metrics:
        front = report.fronts[metric]
        lines.append(f"Pareto front of study {report.study_name!r}: test accuracy vs {metric} "
                     f"({len(front.front)} of {len(report.complete)} complete trials)")
        header = ["trial", "driver", *params, "accuracy", "val_acc", "latency [cycles]", "energy [uJ]"]
        table = [[str(r.number), r.driver, *(_format(r.params.get(p, "")) for p in params),
                  f"{r.accuracy:.4f}", f"{r.val_accuracy:.4f}", f"{r.latency_cycles:,.0f}", f"{r.energy_uj:.4g}"]
                 for r in front.front]
        widths = [max(len(h), *(len(row[i]) for row in table)) for i, h in enumerate(header)]
        lines.append("  ".join(h.rjust(w) for h, w in zip(header, widths)))
        lines += ["  ".join(cell.rjust(w) for cell, w in zip(row, widths)) for row in table]
        drivers = ", ".join(f"{driver} {value:.4g}" for driver, value in front.by_driver.items())
        lines.append(f"hypervolume {front.hypervolume:.6g} (by driver: {drivers}); reference point "
                     f"{front.reference.describe(COST_FIELDS[metric])}")
    failed = [r for r in report.rows if r.state == "FAIL" and r.failure]
    if failed:
        lines.append(f"{len(failed)} failed trial(s): " + ", ".join(f"{r.number} ({r.failure})" for r in failed))
    return "\n".join(lines)


def pick_point(report: StudyReport, number: int | None) -> TrialRow:
    """Trial ``number`` (a complete trial), or the most accurate point of the first objective's front."""
    if number is None:
        return max(report.fronts[report.metrics[0]].front, key=lambda r: (r.accuracy, -r.cost(report.metrics[0])))
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
    paths["plot_mapping"] = plot_mapping(chosen, out / f"mapping_trial{chosen.number}.png")
    return paths

"""The files of a study report: ``all_trials.csv``, ``pareto.csv``, ``pareto.json`` and the plots.

Reads a :class:`~.report.StudyReport`; the plots come from :mod:`.plots`. Neither of those imports
this module, so the report, its plots and its files depend one way.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any, Sequence

from ..checkpoint import atomic_write_bytes, atomic_write_json
from ..front_point import COST_FIELDS
from .plots import plot_front, plot_mapping
from .report import StudyReport, TrialRow, pick_point

#: The measured columns of the CSV tables: test and validation accuracy, then every cost.
MEASURES = ["accuracy", "val_accuracy", *COST_FIELDS.values()]


def _csv(header: Sequence[str], records: Sequence[Sequence[Any]]) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(records)
    return buffer.getvalue().encode()


def _measures(row: TrialRow) -> list[Any]:
    """The :data:`MEASURES` of a trial (empty cells for one that did not complete)."""
    return [None if row.point is None else getattr(row.point, name) for name in MEASURES]


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
          *_feasibility(report, r), *(r.params.get(p, "") for p in params),
          None if r.point is None else r.point.wall_time_s, r.work_dir]
         for r in report.rows]))
    atomic_write_bytes(paths["pareto_csv"], _csv(
        ["front", "trial", "driver", *MEASURES, *params, "mapping", "exported_model", "work_dir"],
        [[metric, r.number, r.driver, *_measures(r), *(r.params.get(p, "") for p in params),
          r.scored.artifacts.get("mapping", ""), r.scored.artifacts.get("exported_model", ""), r.work_dir]
         for metric in report.metrics for r in report.fronts[metric].front]))
    atomic_write_json(paths["pareto_json"], report.to_dict())
    return paths


def write_report(report: StudyReport, out: Path, point: int | None = None) -> dict[str, Path]:
    """Tables and plots of ``report`` in ``out`` (the mapping plot of trial ``point``, default the
    most accurate point of the first objective's front); returns the paths written."""
    out.mkdir(parents=True, exist_ok=True)
    paths = write_tables(report, out)
    for metric in COST_FIELDS:
        paths[f"plot_{metric}"] = plot_front(report, metric, out / f"pareto_{metric}.png")
    chosen = pick_point(report, point)
    if chosen is not None:
        paths["plot_mapping"] = plot_mapping(chosen.scored, f"trial {chosen.number}",
                                             out / f"mapping_trial{chosen.number}.png")
    return paths

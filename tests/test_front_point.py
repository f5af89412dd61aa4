"""One record for a point of a front: read from result files of every version, the same front and
hypervolume in a study report and in a comparison."""

from __future__ import annotations

import pytest

from odimo_moo.compare import build_report
from odimo_moo.errors import UsageError
from odimo_moo.front_point import COST_FIELDS, REQUIRED_FIELDS, FrontPoint
from odimo_moo.pareto import ReferencePoint
from odimo_moo.strategy import Outcome
from odimo_moo.study.report import TrialRow, front_of, front_report


def test_an_outcome_is_a_front_point_and_its_record_reads_back():
    outcome = Outcome("odimo", 0.9, 0.88, 1000.0, 2.5, {"conv1": {"digital": 16}}, params={"lambda": 1.0},
                      label="lambda=1", seed=3, train_epochs=4, phase_wall_s={"search": 2.0})
    assert isinstance(outcome, FrontPoint)
    assert Outcome.from_dict(outcome.to_dict()) == outcome
    point = FrontPoint.from_dict(outcome.to_dict())  # the training record is left out
    assert (point.name, point.seed, point.cost("latency"), point.cost("energy")) == ("lambda=1", 3, 1000.0, 2.5)
    assert "phase_wall_s" not in point.to_dict() and point.to_dict()["train_epochs"] == 4


def test_a_record_of_an_older_version_reads_with_defaults():
    old = {"strategy": "heuristic", "accuracy": 0.7, "latency_cycles": 50, "energy_uj": 1, "extra": "ignored"}
    point = FrontPoint.from_dict(old)
    assert point.val_accuracy == 0.7 and point.seed is None and point.name == "heuristic"
    assert set(REQUIRED_FIELDS) == {"strategy", "accuracy", *COST_FIELDS.values()}
    with pytest.raises(TypeError):
        FrontPoint.from_dict({"strategy": "heuristic", "accuracy": 0.7})


def test_an_unknown_metric_names_the_known_ones():
    with pytest.raises(UsageError, match="unknown metric 'power'; choose one of latency, energy"):
        FrontPoint("odimo", 0.9, 0.9, 1.0, 1.0).cost("power")


def test_study_report_and_comparison_take_the_same_front_and_hypervolume():
    points = [FrontPoint("odimo", acc, acc, cost, 1.0, label=f"p{i}", seed=0)
              for i, (acc, cost) in enumerate([(0.9, 100.0), (0.8, 50.0), (0.7, 80.0), (0.9, 120.0)])]
    rows = [TrialRow(i, "COMPLETE", "optuna", {}, point) for i, point in enumerate(points)]
    reference = ReferencePoint(0.0, 132.0)
    study = front_report(rows, "latency", [])
    compared = build_report(points, "latency", [], reference)["methods"][0]["per_seed"]["0"]
    assert study.reference == reference  # 1.1 x the largest cost, as given to the comparison
    assert [r.number for r in front_of(rows, "latency")] == [1, 0]
    assert [p["label"] for p in compared["front"]] == ["p1", "p0"]
    assert compared["hypervolume"] == pytest.approx(study.hypervolume) == pytest.approx(0.8 * 82 + 0.1 * 32)

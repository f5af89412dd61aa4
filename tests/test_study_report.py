"""Pareto extraction, hypervolume (hand-computed areas), trial-budget bookkeeping and report files,
on hand-made trials (no training)."""

from __future__ import annotations

import csv
import json

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from odimo_moo.pareto import ReferencePoint
from odimo_moo.strategy import Outcome
from odimo_moo.study.ledger import Ledger
from odimo_moo.front_point import FrontPoint
from odimo_moo.study.report import TrialRow, build_report, format_table, front_of, front_report, pick_point
from odimo_moo.study.report_output import write_report

SPLIT = {"conv1": {"digital": 10, "analog": 6}, "fc": {"digital": 10, "analog": 0}}


def _row(number, accuracy, latency, energy=1.0, driver="optuna", lam=1e-5):
    point = FrontPoint("odimo", accuracy, accuracy, latency, energy, SPLIT, params={"lambda": lam})
    return TrialRow(number=number, state="COMPLETE", driver=driver, params={"lambda": lam}, point=point)


def test_front_and_hand_computed_hypervolume():
    rows = [_row(0, 0.9, 100), _row(1, 0.8, 50), _row(2, 0.7, 80), _row(3, 0.6, 200)]
    assert [r.number for r in front_of(rows, "latency")] == [1, 0]
    report = front_report(rows, "latency", [])
    # reference: accuracy 0, 1.1 x the largest cost (200) = 220
    assert report.reference == ReferencePoint(0.0, pytest.approx(220.0))
    # (error, cost) boxes up to (1, 220): trial 1 covers 0.8 x 170 = 136, trial 0 adds 0.1 x 120 = 12
    assert report.hypervolume == pytest.approx(148.0)


def test_hypervolume_by_driver_and_baselines_share_the_reference():
    rows = [_row(0, 0.9, 100, driver="optuna"), _row(1, 0.8, 50, driver="pymoo")]
    baseline = Outcome("heuristic", accuracy=0.5, val_accuracy=0.5, latency_cycles=300.0, energy_uj=1.0,
                       channel_split={}, label="all-analog")
    report = front_report(rows, "latency", [baseline])
    assert report.reference.cost == pytest.approx(330.0)  # the baseline's cost sets the box
    assert report.by_driver["optuna"] == pytest.approx(0.9 * 230)
    assert report.by_driver["pymoo"] == pytest.approx(0.8 * 280)
    assert report.by_driver["baselines"] == pytest.approx(0.5 * 30)
    assert report.hypervolume == pytest.approx(0.8 * 280 + 0.1 * 230)


def _study(records):
    storage = "in-memory storage"
    study = optuna.create_study(study_name="hand", directions=["maximize", "minimize"])
    study.set_user_attr("config", {"metrics": ["latency"]})
    dist = {"lambda": FloatDistribution(1e-6, 1e-3, log=True)}
    for state, attrs, system in records:
        lam = attrs.get("params", {}).get("lambda", 1e-5)
        values = [attrs["val_accuracy"], attrs["latency_cycles"]] if state == TrialState.COMPLETE else None
        study.add_trial(create_trial(state=state, values=values, params={"lambda": lam}, distributions=dist,
                                     user_attrs={"driver": "optuna", **attrs}, system_attrs=system))
    return study, storage


def _done(accuracy, latency, lam, energy=2.0):
    return {"strategy": "odimo", "accuracy": accuracy, "val_accuracy": accuracy, "latency_cycles": latency,
            "energy_uj": energy, "params": {"lambda": lam}, "channel_split": SPLIT,
            "artifacts": {"mapping": f"/m/{lam}.json"}, "work_dir": f"/w/{lam}", "wall_time_s": 1.0}


def test_ledger_counts_slots_retries_and_surplus():
    study, _ = _study([
        (TrialState.COMPLETE, _done(0.9, 100, 1e-5), {}),                      # 0
        (TrialState.FAIL, {"failure": "diverged", "params": {"lambda": 1e-3}}, {}),  # 1: counts
        (TrialState.FAIL, {}, {}),                                             # 2: killed ...
        (TrialState.WAITING, {}, {"failed_trial": 2, "retry_history": [2]}),   # 3: ... and queued again
        (TrialState.FAIL, {"failure": "surplus"}, {}),                         # 4: never counts
        (TrialState.FAIL, {}, {}),                                             # 5: given up: frees its place
        (TrialState.RUNNING, {}, {}),                                          # 6
    ])
    ledger = Ledger.of(study.get_trials(), "optuna")
    assert sorted(ledger.slots) == [0, 1, 2, 5, 6]
    assert [t.number for t in ledger.slots[2]] == [2, 3]
    assert ledger.used == 4 and ledger.finished == 2
    assert ledger.in_state(TrialState.WAITING) == 1 and ledger.in_state(TrialState.RUNNING) == 1
    assert ledger.used_before(6) == 3
    assert Ledger.of(study.get_trials(), "pymoo").used == 0


def test_report_files_rows_and_mapping_plot(tmp_path):
    study, storage = _study([
        (TrialState.COMPLETE, _done(0.95, 14000, 1e-6), {}),
        (TrialState.COMPLETE, _done(0.90, 9000, 1e-4), {}),
        (TrialState.COMPLETE, _done(0.85, 12000, 1e-5), {}),   # dominated
        (TrialState.FAIL, {"failure": "diverged", "params": {"lambda": 1e-3}}, {}),
    ])
    (tmp_path / "baselines.json").write_text(json.dumps([Outcome(
        "heuristic", 0.8, 0.8, 8000.0, 1.5, SPLIT, label="all-analog").to_dict()]))
    from odimo_moo.study.report import load_baselines

    report = build_report(study, storage, load_baselines(tmp_path))
    out = tmp_path / "report"
    paths = write_report(report, out)
    for name in ("pareto.csv", "pareto.json", "all_trials.csv", "pareto_latency.png", "pareto_energy.png",
                 "mapping_trial0.png"):
        assert (out / name).stat().st_size > 0, name
    assert paths["plot_mapping"].name == "mapping_trial0.png"  # default: the most accurate point
    with open(out / "all_trials.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["trial"], r["state"], r["failure"]) for r in rows] == [
        ("0", "COMPLETE", ""), ("1", "COMPLETE", ""), ("2", "COMPLETE", ""), ("3", "FAIL", "diverged")]
    assert rows[3]["lambda"] == "0.001"
    with open(out / "pareto.csv") as handle:
        front = list(csv.DictReader(handle))
    assert [(r["front"], r["trial"], r["driver"]) for r in front] == [("latency", "1", "optuna"),
                                                                      ("latency", "0", "optuna")]
    assert front[0]["mapping"] == "/m/0.0001.json"
    document = json.loads((out / "pareto.json").read_text())
    latency = document["fronts"]["latency"]
    assert [p["trial"] for p in latency["points"]] == [1, 0]
    assert latency["points"][0]["lambda"] == 1e-4 and latency["points"][0]["driver"] == "optuna"
    assert latency["reference_point"] == {"accuracy": 0.0, "latency_cycles": pytest.approx(15400.0)}
    assert latency["hypervolume"] == pytest.approx(0.90 * 6400 + 0.05 * 1400)
    assert document["trials"] == {"COMPLETE": 3, "FAIL": 1}
    table = format_table(report)
    assert "hypervolume 5830 " in table and "reference point accuracy=0, latency_cycles=15400" in table
    assert "1 failed trial(s): 3 (diverged)" in table
    assert pick_point(report, 2).number == 2
    with pytest.raises(Exception, match="--point 3: not a complete trial"):
        pick_point(report, 3)

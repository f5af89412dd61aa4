"""Study constraints: the ``constraints:`` key (path-named errors), relative constraint values,
feasibility in reports (hand-made trials: an infeasible trial that would dominate stays off the
front), Optuna's constraint values and pymoo's G, and a constrained toy study end to end."""

from __future__ import annotations

import csv
import json

import numpy as np
import optuna
import pytest
import yaml
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from odimo_moo.study.config import validate
from odimo_moo.study.constraints import Constraint, from_spec, is_feasible, to_spec, violations
from odimo_moo.study.pymoo_driver import Evaluations, n_constraints
from odimo_moo.study.report import build_report, format_table
from odimo_moo.study.report_output import write_report
from test_study_config import BASE, _problems, _with
from test_study_drivers import odimo, toy_config, trials_of

SPLIT = {"conv1": {"digital": 10, "analog": 6}}


def test_constraints_validate_and_round_trip():
    raw = _with({"constraints": {"latency_cycles": {"max": "2e4"}, "val_accuracy": {"min": 0.5},
                                 "energy_uj": {"min": 1, "max": 3}}})
    config = validate(raw)
    assert config.constraints == (Constraint("latency_cycles", "max", 20000.0), Constraint("energy_uj", "max", 3.0),
                                  Constraint("energy_uj", "min", 1.0), Constraint("val_accuracy", "min", 0.5))
    assert config.identity()["constraints"] == to_spec(config.constraints)
    assert validate(yaml.safe_load(yaml.safe_dump(config.to_dict()))) == config
    assert "constraints" not in validate(BASE).identity()  # studies without constraints keep their identity


@pytest.mark.parametrize("constraints, expected", [
    ({"latency": {"max": 1}}, "constraints.latency: cannot be constrained (write latency_cycles: the measure with "
                              "its unit); constrain one of latency_cycles, energy_uj, val_accuracy"),
    ({"accuracy": {"min": 0.5}}, "constraints.accuracy: cannot be constrained; constrain one of"),
    ({"latency_cycles": {"below": 1}}, "constraints.latency_cycles.below: unknown bound; known: max, min"),
    ({"latency_cycles": {"max": 0}}, "constraints.latency_cycles.max: must be a number > 0, got 0"),
    ({"latency_cycles": {"max": "fast"}}, "constraints.latency_cycles.max: must be a number > 0, got 'fast'"),
    ({"latency_cycles": {"max": True}}, "constraints.latency_cycles.max: must be a number > 0"),
    ({"latency_cycles": 20000}, "constraints.latency_cycles: must be a mapping with max and/or min"),
    ({"energy_uj": {"min": 3, "max": 2}}, "constraints.energy_uj: min (3) must be < max (2)"),
    ([1, 2], "constraints: must be a mapping such as {latency_cycles: {max: 20000}}"),
])
def test_bad_constraints_name_their_key_path(constraints, expected):
    lines = _problems(_with({"constraints": constraints}))
    assert any(line.strip().startswith(expected) for line in lines), lines


def test_constraint_values_are_relative_to_their_limits():
    rules = from_spec({"latency_cycles": {"max": 20000}, "val_accuracy": {"min": 0.8}})
    values = violations(rules, {"latency_cycles": 25000, "val_accuracy": 0.9})
    assert values == {"latency_cycles_max": pytest.approx(0.25), "val_accuracy_min": pytest.approx(-0.125)}
    assert not is_feasible(values)
    assert is_feasible(violations(rules, {"latency_cycles": 20000, "val_accuracy": 0.8}))  # on the limit: met
    assert is_feasible({})


def _study(rows, constraints):
    study = optuna.create_study(study_name="hand", directions=["maximize", "minimize"])
    study.set_user_attr("config", {"metrics": ["latency"], "constraints": constraints})
    dist = {"lambda": FloatDistribution(1e-6, 1e-3, log=True)}
    for accuracy, latency, state in rows:
        attrs = {"driver": "optuna", "params": {"lambda": 1e-5}, "channel_split": SPLIT}
        if state == TrialState.COMPLETE:
            attrs.update(strategy="odimo", accuracy=accuracy, val_accuracy=accuracy, latency_cycles=latency,
                         energy_uj=latency / 1e4)
        study.add_trial(create_trial(state=state, values=[accuracy, latency] if state == TrialState.COMPLETE else None,
                                     params={"lambda": 1e-5}, distributions=dist, user_attrs=attrs))
    return study


def test_reports_mark_infeasible_trials_and_build_fronts_from_feasible_ones(tmp_path):
    study = _study([(0.95, 30000, TrialState.COMPLETE),   # best on both, but over the latency limit
                    (0.90, 15000, TrialState.COMPLETE), (0.80, 12000, TrialState.COMPLETE),
                    (0.85, 18000, TrialState.COMPLETE),   # dominated by trial 1
                    (0.0, 0.0, TrialState.FAIL)], {"latency_cycles": {"max": 20000}})
    report = build_report(study, "memory")
    assert [r.number for r in report.infeasible] == [0]
    assert [r.number for r in report.fronts["latency"].front] == [2, 1]
    # the reference point is set by feasible trials only: 1.1 x 18000
    assert report.fronts["latency"].reference.cost == pytest.approx(19800.0)
    paths = write_report(report, tmp_path)
    with open(paths["all_trials"]) as handle:
        rows = list(csv.DictReader(handle))
    assert [r["feasible"] for r in rows] == ["False", "True", "True", "True", ""]
    assert [float(r["latency_cycles_max"]) for r in rows[:4]] == pytest.approx([0.5, -0.25, -0.4, -0.1])
    assert rows[4]["latency_cycles_max"] == ""
    with open(paths["pareto_csv"]) as handle:
        assert [r["trial"] for r in csv.DictReader(handle)] == ["2", "1"]
    document = json.loads(paths["pareto_json"].read_text())
    assert document["constraints"] == {"latency_cycles": {"max": 20000}}
    assert document["infeasible_trials"] == [0]
    assert "test accuracy" in document["accuracy"] and "validation accuracy" in document["accuracy"]
    table = format_table(report)
    assert "(2 of 3 feasible trials, 4 complete)" in table
    assert "constraints latency_cycles <= 20000: infeasible trials (on no front): 0" in table
    assert paths["plot_mapping"].name == "mapping_trial1.png"  # the most accurate feasible point


def test_a_report_with_no_feasible_trial_has_empty_fronts(tmp_path):
    study = _study([(0.9, 30000, TrialState.COMPLETE), (0.8, 25000, TrialState.COMPLETE)],
                   {"latency_cycles": {"max": 20000}})
    report = build_report(study, "memory")
    assert report.fronts["latency"].front == [] and report.fronts["latency"].hypervolume == 0.0
    paths = write_report(report, tmp_path)
    assert "plot_mapping" not in paths and paths["plot_latency"].is_file()
    assert "(0 of 0 feasible trials, 2 complete)" in format_table(report)


def test_pymoo_gets_one_constraint_per_bound_after_divergence(tmp_path):
    config = validate({**BASE, "driver": "pymoo", "sampler": "nsga2", "out": str(tmp_path),
                       "constraints": {"latency_cycles": {"max": 20000}, "energy_uj": {"max": 2.0}}})
    assert n_constraints(config) == 3
    study = _study([(0.9, 25000, TrialState.COMPLETE)], {})
    diverged = create_trial(state=TrialState.FAIL, user_attrs={"failure": "diverged"})
    evaluations = Evaluations(study, config, objective=None)
    f, g = evaluations._fitness(study.trials[0])
    assert f == [-0.9, 25000] and g == pytest.approx([0.0, 0.25, 0.25])  # 25,000 cycles, 2.5 uJ
    assert evaluations._fitness(diverged) == ([0.0, 0.0], [1.0, 1.0, 1.0])


def test_a_constrained_study_stores_constraint_values_for_the_sampler(tmp_path, capsys):
    config = toy_config(tmp_path, constraints={"latency_cycles": {"max": 12000}}, trials=3,
                        sampler={"name": "nsga2", "settings": {"population_size": 2}})
    assert odimo("run", str(config)) == 0
    trials = trials_of(tmp_path)
    assert trials[0].user_attrs["params"] == {"lambda": 0.0}  # 15,000 cycles: over the limit
    assert trials[0].constraints == {"latency_cycles_max": pytest.approx(0.25)}
    assert trials[0].user_attrs["feasible"] is False
    assert all(t.user_attrs["feasible"] == (t.user_attrs["latency_cycles"] <= 12000) for t in trials)
    study = optuna.load_study(study_name="toy", storage=f"sqlite:///{tmp_path / 'out' / 'study.db'}")
    assert 0 not in {t.number for t in study.best_trials}  # Optuna's own front skips infeasible trials
    out = capsys.readouterr().out
    assert "trial 0: lambda=0: test accuracy 0.9500 (val 0.9500), latency 15,000 cycles" in out
    assert "; infeasible (needs latency_cycles <= 12000)" in out
    assert "constraints latency_cycles <= 12000: infeasible trials (on no front): 0" in out
    document = json.loads((tmp_path / "out" / "pareto.json").read_text())
    assert 0 not in [p["trial"] for p in document["fronts"]["latency"]["points"]]
    assert odimo("run", str(config), "--set", "constraints.latency_cycles.max=10000", "--no-report") == 2
    assert "different problem (constraints: study has {'latency_cycles': {'max': 12000.0}}" in capsys.readouterr().err


def test_pymoo_study_with_constraints_runs(tmp_path):
    config = toy_config(tmp_path, driver="pymoo", sampler={"name": "nsga2", "settings": {"pop_size": 2}}, trials=3,
                        constraints={"latency_cycles": {"max": 12000}})
    assert odimo("run", str(config), "--no-report") == 0
    trials = trials_of(tmp_path)
    assert [t.state.name for t in trials] == ["COMPLETE"] * 3
    assert all("latency_cycles_max" in t.constraints for t in trials)
    assert np.isclose(trials[0].constraints["latency_cycles_max"], 0.25)

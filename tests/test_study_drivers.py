"""Both study drivers end to end: resume without repeated work, diverged trials, interrupted trials,
pymoo's replay, both drivers in one report, and a real (tiny) ODiMO study.

This module is also a plugin (loaded with ``plugins: [<this file>]``): it registers the ``toy``
strategy, whose outcomes follow from lambda instantly, and an ``odimo_trial_end`` observer.
"""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Mapping

import optuna
import pytest
import yaml

from odimo_moo.hookspecs import hookimpl
from odimo_moo.strategy import Outcome, Strategy
from odimo_moo.training import Diverged

THIS = str(Path(__file__).resolve())
DIVERGE_FROM = 8e-4
TRIAL_LOG = "ODIMO_TOY_TRIAL_LOG"


class ToyStrategy(Strategy):
    """Accuracy falls and latency drops as lambda grows; diverges from lambda 8e-4. Every call is
    appended to ``<workdir>/attempts.txt``; ``interrupt_at`` raises KeyboardInterrupt on the first
    attempt at that lambda, ``stall_at`` sleeps a minute there (a trial to kill); ``sleep_s`` makes
    a trial take time."""

    name = "toy"
    description = "instant outcomes computed from lambda (tests of the study drivers)"

    def defaults(self) -> dict[str, Any]:
        return {"sleep_s": 0.0, "interrupt_at": -1.0, "stall_at": -1.0}

    def run(self, bench: Any, params: Mapping[str, Any], workdir: Path) -> list[Outcome]:
        workdir.mkdir(parents=True, exist_ok=True)
        lam = float(params.get("lambda", 0.0))
        with open(workdir / "attempts.txt", "a") as handle:
            handle.write(f"{os.getpid()} {lam!r}\n")
        attempts = len((workdir / "attempts.txt").read_text().splitlines())
        time.sleep(float(params.get("sleep_s", 0.0)))
        if lam == float(params.get("stall_at", -1.0)) and attempts == 1:
            time.sleep(60.0)
        if lam >= DIVERGE_FROM:
            raise Diverged("training diverged: loss is nan")
        if lam == float(params.get("interrupt_at", -1.0)) and attempts == 1:
            raise KeyboardInterrupt
        t = 0.0 if lam == 0 else (math.log10(lam) + 6) / 3
        accuracy = 0.95 - 0.3 * t * t
        analog = round(10 * t)
        (workdir / "result.json").write_text(json.dumps({"lambda": lam}))
        return [Outcome("toy", accuracy, accuracy, 15000 - 8000 * t, 2.0 - t,
                        {"conv1": {"digital": 16 - analog, "analog": analog}}, params=dict(params),
                        artifacts={"result": str(workdir / "result.json")}, label=f"lambda={lam:g}")]


@hookimpl
def odimo_register_strategies() -> list[Strategy]:
    return [ToyStrategy()]


@hookimpl
def odimo_trial_end(study_name: str, trial_number: int, result: Mapping[str, Any]) -> None:
    if os.environ.get(TRIAL_LOG):
        with open(os.environ[TRIAL_LOG], "a") as handle:
            handle.write(json.dumps({"study": study_name, "trial": trial_number, "state": result["state"]}) + "\n")


# ----------------------------------------------------------------------------------------------- helpers
def toy_config(tmp_path: Path, **changes: Any) -> Path:
    raw = {"name": "toy", "soc": "diana", "model": "resnet8", "dataset": "digits", "strategy": "toy",
           "plugins": [THIS], "search_space": {"lambda": [1.0e-6, 1.0e-3]}, "enqueue": [{"lambda": 0}],
           "trials": 3, "device": "cpu", "out": str(tmp_path / "out"), "heartbeat": {"interval": 1, "grace": 2}}
    raw.update(changes)
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def run_study_workers(tmp_path: Path, config: Path, count: int, timeout_s: float) -> tuple[Path, list[int]]:
    """Start ``count`` ``odimo run CONFIG`` processes at once, wait for each to exit 0, and return the
    file their toy strategy logs every trial end to, and the workers' process ids."""
    log = tmp_path / "trial_end.jsonl"
    env = {**os.environ, TRIAL_LOG: str(log), "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    env.pop("ODIMO_DEBUG", None)
    command = [sys.executable, "-m", "odimo_moo.cli", "run", str(config), "--no-progress", "--no-report"]
    logs = [tmp_path / f"worker{i}.log" for i in range(count)]
    workers = [subprocess.Popen(command, stdout=open(path, "w"), stderr=subprocess.STDOUT, env=env) for path in logs]
    try:
        for worker, path in zip(workers, logs):
            assert worker.wait(timeout=timeout_s) == 0, path.read_text()
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
    return log, [worker.pid for worker in workers]


def odimo(*args: str) -> int:
    from odimo_moo.cli import main

    return main([*args, "--no-progress"] if args[0] == "run" else list(args))


def trials_of(tmp_path: Path, name: str = "toy") -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{tmp_path / 'out' / 'study.db'}").trials


def attempts(folder: Path) -> list[str]:
    return (folder / "attempts.txt").read_text().splitlines()


# ----------------------------------------------------------------------------------------------- tests
def test_optuna_resume_runs_only_the_missing_trials(tmp_path, capsys):
    # below the toy's divergence (8e-4): the third run joins with a pid-seeded sampler, which would
    # draw a diverging lambda from [1e-6, 1e-3] in about 3 % of runs
    config = toy_config(tmp_path, search_space={"lambda": [1.0e-6, 1.0e-4]})
    assert odimo("run", str(config), "--set", "trials=2", "--no-report") == 0
    assert odimo("run", str(config), "--set", "trials=2", "--no-report") == 0   # finished: nothing new
    assert len(trials_of(tmp_path)) == 2
    assert odimo("run", str(config), "--set", "trials=3") == 0
    trials = trials_of(tmp_path)
    assert [t.state.name for t in trials] == ["COMPLETE"] * 3
    assert trials[0].user_attrs["params"] == {"lambda": 0.0}       # the enqueued point comes first
    assert "lambda" not in trials[0].params                        # 0 is outside the log range's support
    for trial in trials:
        assert len(attempts(tmp_path / "out" / "trials" / str(trial.number))) == 1
        assert trial.user_attrs["driver"] == "optuna"
        assert trial.values[0] == trial.user_attrs["val_accuracy"]
    out = capsys.readouterr().out
    assert "Pareto front of study 'toy': test accuracy vs latency" in out
    assert (tmp_path / "out" / "pareto_latency.png").is_file()
    assert (tmp_path / "out" / "study.yaml").is_file()


def test_diverged_trial_is_fail_and_the_study_goes_on(tmp_path, monkeypatch, capsys):
    log = tmp_path / "hook.jsonl"
    monkeypatch.setenv(TRIAL_LOG, str(log))
    config = toy_config(tmp_path, enqueue=[{"lambda": 0}, {"lambda": 9e-4}], trials=4)
    assert odimo("run", str(config)) == 0
    trials = trials_of(tmp_path)
    assert [t.state.name for t in trials] == ["COMPLETE", "FAIL", "COMPLETE", "COMPLETE"]
    assert trials[1].user_attrs["failure"] == "diverged" and trials[1].params == {"lambda": 9e-4}
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert [(c["trial"], c["state"]) for c in calls] == [(0, "COMPLETE"), (1, "FAIL"), (2, "COMPLETE"),
                                                         (3, "COMPLETE")]
    assert all(c["study"] == "toy" for c in calls)
    out = capsys.readouterr().out
    assert "trial 1: lambda=0.0009: training diverged: loss is nan; recorded as FAIL" in out
    with open(tmp_path / "out" / "all_trials.csv") as handle:
        assert [r["failure"] for r in csv.DictReader(handle)] == ["", "diverged", "", ""]


def test_interrupted_trial_resumes_in_its_own_folder(tmp_path):
    config = toy_config(tmp_path, enqueue=[{"lambda": 0}, {"lambda": 5e-4}],
                        training={"interrupt_at": 5e-4})
    assert odimo("run", str(config), "--no-report") == 130         # Ctrl-C during trial 1
    trials = trials_of(tmp_path)
    assert [t.state.name for t in trials] == ["COMPLETE", "FAIL", "WAITING"]
    assert odimo("run", str(config)) == 0
    trials = trials_of(tmp_path)
    assert [t.state.name for t in trials] == ["COMPLETE", "FAIL", "COMPLETE", "COMPLETE"]
    assert trials[2].user_attrs["work_dir"] == str(tmp_path / "out" / "trials" / "1")
    assert len(attempts(tmp_path / "out" / "trials" / "1")) == 2
    assert not (tmp_path / "out" / "trials" / "2").exists()
    with open(tmp_path / "out" / "all_trials.csv") as handle:
        assert [r["retry_of"] for r in csv.DictReader(handle)] == ["", "", "1", ""]


def test_pymoo_driver_records_trials_and_replays_on_resume(tmp_path):
    config = toy_config(tmp_path, driver="pymoo", sampler={"name": "nsga2", "settings": {"pop_size": 4}},
                        enqueue=[{"lambda": 0}, {"lambda": 1e-4}])
    assert odimo("run", str(config), "--no-report") == 0
    first = trials_of(tmp_path)
    assert [t.user_attrs["pymoo_key"] for t in first] == ["enqueued-0", "0-0", "0-1"]
    assert first[1].user_attrs["params"] == {"lambda": pytest.approx(1e-4)}  # enqueued into generation 0
    assert odimo("run", str(config), "--set", "trials=7", "--no-report") == 0
    trials = trials_of(tmp_path)
    assert [t.user_attrs["pymoo_key"] for t in trials] == ["enqueued-0", "0-0", "0-1", "0-2", "0-3", "1-0", "1-1"]
    assert all(t.user_attrs["driver"] == "pymoo" and t.state.name == "COMPLETE" for t in trials)
    for trial in trials:
        assert len(attempts(tmp_path / "out" / "trials" / str(trial.number))) == 1
        assert 1e-6 <= trial.user_attrs["params"]["lambda"] <= 1e-3 or trial.number == 0


def test_both_drivers_in_one_study_and_report(tmp_path, capsys):
    config = toy_config(tmp_path, trials=3)
    assert odimo("run", str(config), "--no-report") == 0
    assert odimo("run", str(config), "--set", "driver=pymoo", "--set", "sampler.settings.pop_size=2",
                 "--no-report") == 0
    drivers = [t.user_attrs["driver"] for t in trials_of(tmp_path)]
    assert drivers == ["optuna"] * 3 + ["pymoo"] * 3
    capsys.readouterr()
    assert odimo("report", str(tmp_path / "out"), "--out", str(tmp_path / "rep"), "--point", "4") == 0
    document = json.loads((tmp_path / "rep" / "pareto.json").read_text())
    assert set(document["fronts"]["latency"]["hypervolume_by_driver"]) == {"optuna", "pymoo"}
    assert (tmp_path / "rep" / "mapping_trial4.png").is_file()
    assert "by driver: optuna" in capsys.readouterr().out


@pytest.mark.parametrize("sampler, sampler_class", [("tpe", optuna.samplers.TPESampler),
                                                    ("nsga2", optuna.samplers.NSGAIISampler),
                                                    ("random", optuna.samplers.RandomSampler),
                                                    ("gp", optuna.samplers.GPSampler)])
def test_every_optuna_sampler(tmp_path, monkeypatch, sampler, sampler_class):
    config = toy_config(tmp_path, sampler=sampler, trials=3,
                        search_space={"lambda": [1.0e-6, 1.0e-3], "lr": {"low": 1e-4, "high": 1e-2},
                                      "search_epochs": [1, 3], "parametrization": {"choices": ["thermometric",
                                                                                               "softmax"]}})
    used: list[type] = []
    create_study = optuna.create_study

    def recording_create_study(*args: Any, **kwargs: Any) -> optuna.Study:
        used.append(type(kwargs["sampler"]))
        return create_study(*args, **kwargs)

    monkeypatch.setattr(optuna, "create_study", recording_create_study)
    assert odimo("run", str(config), "--no-report") == 0
    assert used == [sampler_class]
    trials = trials_of(tmp_path)
    assert [t.state.name for t in trials] == ["COMPLETE"] * 3
    assert set(trials[2].user_attrs["params"]) == {"lambda", "lr", "search_epochs", "parametrization"}


def test_changed_problem_is_refused(tmp_path, capsys):
    config = toy_config(tmp_path, trials=1)
    assert odimo("run", str(config), "--no-report") == 0
    assert odimo("run", str(config), "--set", "training.sleep_s=0.5") == 2
    assert "was created for a different problem (training: study has {}" in capsys.readouterr().err


def test_report_errors_are_usage_errors(tmp_path, capsys):
    assert odimo("report", str(tmp_path)) == 2
    assert "is not an `odimo run` output folder" in capsys.readouterr().err
    config = toy_config(tmp_path)
    assert odimo("report", str(config)) == 2
    assert "no study database at" in capsys.readouterr().err


def test_real_odimo_study_both_drivers(tmp_path, capsys):
    raw = {"name": "tiny", "soc": "diana", "model": "resnet8", "dataset": "digits", "data_limit": 64,
           "training": {"warmup_epochs": 1, "search_epochs": 1, "finetune_epochs": 1, "batch_size": 32},
           "search_space": {"lambda": [1.0e-5, 1.0e-3]}, "enqueue": [{"lambda": 0}], "trials": 2,
           "device": "cpu", "out": str(tmp_path / "out")}
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(raw))
    assert odimo("run", str(config), "--no-report") == 0
    assert odimo("run", str(config), "--set", "driver=pymoo") == 0
    trials = trials_of(tmp_path, "tiny")
    assert [(t.state.name, t.user_attrs["driver"]) for t in trials] == [
        ("COMPLETE", "optuna"), ("COMPLETE", "optuna"), ("COMPLETE", "pymoo"), ("COMPLETE", "pymoo")]
    for trial in trials:
        for artifact in ("mapping", "exported_model", "metrics_csv"):
            assert Path(trial.user_attrs["artifacts"][artifact]).is_file()
        assert set(trial.user_attrs["channel_split"]) and trial.user_attrs["latency_cycles"] > 0
    assert len(list((tmp_path / "out" / "warmup-cache").glob("warmup-*/warmup.pt"))) == 1
    out = capsys.readouterr().out
    assert "hypervolume" in out and "by driver: optuna" in out and "pymoo" in out

"""Studies on an Optuna journal file: the storage's spellings, three worker processes sharing one
file (every trial of the budget accounted for exactly once), and a worker killed mid-trial whose
trial is failed and resumed by the next worker on the same host (a journal has no heartbeat).

Trials use the instant ``toy`` strategy of tests/test_study_drivers.py (``toy-shared`` of
tests/test_study_workers.py where workers must share the study), on a search space where it does not
diverge.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from odimo_moo.study.config import validate
from odimo_moo.study.ledger import FAILURE, SURPLUS, work_number
from odimo_moo.study.storage import open_storage
from odimo_moo.study.workers import (WORKER_ATTR, RetryWithoutWorker, fail_trials_of_dead_workers, is_dead,
                                     this_worker)
from test_study_config import BASE, _problems
from test_study_drivers import odimo, run_study_workers, toy_config
from test_study_workers import NO_DIVERGENCE, shared_toy_config, worker_env

WORKERS = 3
TRIALS = 6
TIMEOUT_S = 240
GRACE_S = 60


@pytest.mark.parametrize("given, expected", [
    ("study.log", "journal:///{cwd}/study.log"),
    ("runs/x.journal", "journal:///{cwd}/runs/x.journal"),
    ("journal:///tmp/a/b.log", "journal:///tmp/a/b.log"),
    ("journal://rel/b.txt", "journal:///{cwd}/rel/b.txt"),
    ("postgresql+psycopg2://u@h/db", "postgresql+psycopg2://u@h/db"),
])
def test_storage_spellings(tmp_path, monkeypatch, given, expected):
    monkeypatch.chdir(tmp_path)
    config = validate({**BASE, "storage": given})
    assert config.storage == expected.format(cwd=tmp_path).replace("////", "///")


@pytest.mark.parametrize("given, message", [
    ("study.db", "storage: must be a SQLAlchemy URL such as sqlite:///study.db"),
    ("journal://", "storage: journal storage 'journal://' names no file"),
    (12, "storage: must be a string"),
])
def test_bad_storages_name_the_forms(given, message):
    problems = _problems({**BASE, "storage": given})
    assert any(line.strip().startswith(message) for line in problems), problems
    if given == "study.db":
        assert "journal file (a path ending in .log or .journal, or journal:///path)" in problems[0]


def test_a_journal_study_runs_resumes_and_reports(tmp_path, capsys):
    journal = tmp_path / "shared" / "toy.log"
    config = toy_config(tmp_path, storage=str(journal), trials=2, search_space=NO_DIVERGENCE)
    assert odimo("run", str(config), "--no-report") == 0
    assert journal.is_file()
    assert odimo("run", str(config), "--set", "trials=3", "--no-report") == 0
    study = optuna.load_study(study_name="toy", storage=open_storage(f"journal://{journal}"))
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 3
    assert study.metric_names == ["val_accuracy", "latency_cycles"]
    capsys.readouterr()
    assert odimo("report", "--storage", str(journal), "--out", str(tmp_path / "rep"), "--json") == 0
    document = json.loads(capsys.readouterr().out)
    assert document["storage"] == f"journal://{journal}" and document["trials"] == {"COMPLETE": 3}
    assert odimo("report", "--storage", str(tmp_path / "none.log")) == 2
    assert "no study database at" in capsys.readouterr().err


def test_three_workers_on_one_journal_account_for_every_trial_exactly_once(tmp_path, monkeypatch):
    journal = tmp_path / "study.journal"
    config = shared_toy_config(tmp_path, WORKERS, storage=f"journal://{journal}", trials=TRIALS,
                               training={"sleep_s": 0.3}, sampler={"name": "random"},
                               heartbeat={"interval": 1, "grace": 30, "max_retry": 1}, artifacts=False)
    monkeypatch.setenv("PYTHONPATH", worker_env()["PYTHONPATH"])
    log, pids_started = run_study_workers(tmp_path, config, WORKERS, TIMEOUT_S)
    trials = optuna.load_study(study_name="toy", storage=open_storage(f"journal://{journal}")).trials
    states = Counter(t.state for t in trials)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == TRIALS, states
    assert set(states) <= {TrialState.COMPLETE, TrialState.FAIL}, states
    assert all(t.user_attrs.get(FAILURE) == SURPLUS for t in trials if t.state == TrialState.FAIL)
    assert all(work_number(t) == t.number for t in complete)
    folders = [Path(t.user_attrs["work_dir"]) for t in complete]
    assert len(set(folders)) == TRIALS
    attempts = [(folder / "attempts.txt").read_text().splitlines() for folder in folders]
    assert all(len(lines) == 1 for lines in attempts), attempts
    assert sorted(p.name for p in (tmp_path / "out" / "trials").iterdir()) == sorted(str(t.number) for t in complete)
    assert sum(t.user_attrs["params"] == {"lambda": 0.0} for t in complete) == 1
    ends = Counter(json.loads(line)["trial"] for line in log.read_text().splitlines())
    assert ends == Counter({t.number: 1 for t in complete})
    pids = Counter(t.user_attrs[WORKER_ATTR]["pid"] for t in complete)
    assert set(pids) == set(pids_started), f"the workers did not share the study: {pids}"


def _journal_study(tmp_path: Path) -> optuna.Study:
    storage = open_storage(f"journal://{tmp_path / 's.log'}")
    return optuna.create_study(study_name="s", storage=storage, directions=["maximize", "minimize"])


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_trials_of_dead_local_workers_are_failed_and_queued(tmp_path):
    study = _journal_study(tmp_path)
    alive, dead, elsewhere = study.ask(), study.ask(), study.ask()
    alive.set_user_attr(WORKER_ATTR, this_worker())
    dead.set_user_attr(WORKER_ATTR, {**this_worker(), "pid": _dead_pid()})
    elsewhere.set_user_attr(WORKER_ATTR, {"host": f"not-{socket.gethostname()}", "pid": 1, "started": None})
    retried = []
    assert fail_trials_of_dead_workers(study, lambda s, t: retried.append(t.number), GRACE_S) == [dead.number]
    assert retried == [dead.number]
    states = {t.number: t.state for t in study.trials}
    assert states == {alive.number: TrialState.RUNNING, dead.number: TrialState.FAIL,
                      elsewhere.number: TrialState.RUNNING}
    assert fail_trials_of_dead_workers(study, lambda s, t: retried.append(t.number), GRACE_S) == []  # once only
    assert is_dead({**this_worker(), "started": "0"})  # our pid, but another process's start time


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")  # optuna marks the retry callback
def test_a_retry_that_a_live_worker_takes_is_not_failed_as_the_dead_workers_trial(tmp_path):
    study = _journal_study(tmp_path)
    dead = study.ask()
    dead.set_user_attr("driver", "optuna")
    dead.set_user_attr(WORKER_ATTR, {**this_worker(), "pid": _dead_pid()})
    retry = RetryWithoutWorker(max_retry=2)
    assert fail_trials_of_dead_workers(study, retry, GRACE_S) == [dead.number]
    taken = study.ask()  # a live worker takes the queued copy, and has not yet recorded itself in it
    assert fail_trials_of_dead_workers(study, retry, GRACE_S) == []
    frozen = study.trials[taken.number]
    assert frozen.state == TrialState.RUNNING and frozen.system_attrs["failed_trial"] == dead.number
    assert frozen.user_attrs == {"driver": "optuna"}


def test_a_trial_whose_worker_never_recorded_itself_is_retried_after_the_grace(tmp_path):
    study = _journal_study(tmp_path)
    alive, orphan = study.ask(), study.ask()  # orphan: its worker died between asking and starting it
    alive.set_user_attr(WORKER_ATTR, this_worker())
    retried = []
    assert fail_trials_of_dead_workers(study, lambda s, t: retried.append(t.number), GRACE_S) == []
    assert fail_trials_of_dead_workers(study, lambda s, t: retried.append(t.number), 0) == [orphan.number]
    assert retried == [orphan.number]
    assert {t.number: t.state for t in study.trials} == {alive.number: TrialState.RUNNING,
                                                         orphan.number: TrialState.FAIL}


def test_a_worker_killed_mid_trial_is_resumed_by_the_next_run(tmp_path):
    journal = tmp_path / "study.log"
    config = toy_config(tmp_path, storage=str(journal), trials=3, training={"stall_at": 0.0},
                        search_space=NO_DIVERGENCE, artifacts=False)
    victim = subprocess.Popen([sys.executable, "-m", "odimo_moo.cli", "run", str(config), "--no-progress",
                               "--no-report"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              env={**os.environ, "OMP_NUM_THREADS": "1"})
    attempts = tmp_path / "out" / "trials" / "0" / "attempts.txt"
    deadline = time.time() + TIMEOUT_S
    try:
        while not attempts.is_file():  # trial 0 (lambda 0, enqueued) stalls on its first attempt
            assert victim.poll() is None and time.time() < deadline, "the worker never started its first trial"
            time.sleep(0.1)
    finally:
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait()
    assert odimo("run", str(config), "--no-report") == 0
    trials = optuna.load_study(study_name="toy", storage=open_storage(f"journal://{journal}")).trials
    assert [t.state.name for t in trials] == ["FAIL", "COMPLETE", "COMPLETE", "COMPLETE"]
    assert trials[1].system_attrs["failed_trial"] == 0
    assert trials[1].user_attrs["work_dir"] == str(tmp_path / "out" / "trials" / "0")
    assert [line.split()[0] for line in attempts.read_text().splitlines()] == [str(victim.pid), str(os.getpid())]

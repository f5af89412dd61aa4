"""Several ``odimo run`` workers on one PostgreSQL study: they share the trial budget, and the trial of
a worker killed mid-trial is failed (its process is gone; on another host, its heartbeat stops) and
retried (in its own work folder) by the survivor, so every trial ends up COMPLETE exactly once. Both
workers hold a trial at once whatever the load (the ``toy-shared`` strategy of
tests/test_study_workers.py), and no sampled point diverges.

Needs a PostgreSQL server: ``export ODIMO_TEST_POSTGRES_URL="$(.ci/postgres.sh)"`` (CI sets it).
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from pathlib import Path

import optuna
import pytest

from test_study_workers import shared_toy_config, start_worker

URL = os.environ.get("ODIMO_TEST_POSTGRES_URL")
pytestmark = pytest.mark.skipif(not URL, reason="ODIMO_TEST_POSTGRES_URL is not set; start a throwaway server "
                                                "with: export ODIMO_TEST_POSTGRES_URL=\"$(.ci/postgres.sh)\"")
TIMEOUT_S = 300


def _trial_of(pid: int, trials_dir: Path) -> Path | None:
    """The work folder of a trial that worker ``pid`` has started and not finished."""
    for folder in trials_dir.glob("*"):
        lines = (folder / "attempts.txt").read_text().splitlines() if (folder / "attempts.txt").is_file() else []
        if lines and lines[0].startswith(f"{pid} ") and not (folder / "result.json").exists():
            return folder
    return None


def test_two_workers_share_the_study_and_a_killed_trial_is_retried(tmp_path):
    name = f"pg-{uuid.uuid4().hex[:10]}"
    config = shared_toy_config(tmp_path, 2, name=name, storage=URL, trials=4, training={"sleep_s": 2.0},
                               heartbeat={"interval": 1, "grace": 2, "max_retry": 2})
    survivor = start_worker(config, tmp_path / "a.log")
    victim = start_worker(config, tmp_path / "b.log")
    try:
        deadline = time.time() + TIMEOUT_S
        while (folder := _trial_of(victim.pid, tmp_path / "out" / "trials")) is None:
            assert victim.poll() is None, (tmp_path / "b.log").read_text()
            assert time.time() < deadline, "worker B never started a trial"
            time.sleep(0.1)
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait()
        assert survivor.wait(timeout=TIMEOUT_S) == 0, (tmp_path / "a.log").read_text()
    finally:
        for process in (survivor, victim):
            if process.poll() is None:
                process.kill()
    study = optuna.load_study(study_name=name, storage=URL)
    try:
        trials = study.get_trials()
        complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
        killed = int(folder.name)
        assert len(complete) == 4
        assert len({t.user_attrs["work_dir"] for t in complete}) == 4          # no trial twice
        assert {t.state for t in trials} <= {optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL}
        assert [t.state for t in trials if t.number == killed] == [optuna.trial.TrialState.FAIL]
        retried = [t for t in complete if t.user_attrs["work_dir"] == str(folder)]
        assert len(retried) == 1 and retried[0].system_attrs["failed_trial"] == killed
        lines = (folder / "attempts.txt").read_text().splitlines()
        assert [line.split()[0] for line in lines] == [str(victim.pid), str(survivor.pid)]
        for trial in complete:
            if trial is not retried[0]:
                assert len((Path(trial.user_attrs["work_dir"]) / "attempts.txt").read_text().splitlines()) == 1
        assert any(line.startswith(f"{survivor.pid} ") for t in complete
                   for line in (Path(t.user_attrs["work_dir"]) / "attempts.txt").read_text().splitlines())
    finally:
        optuna.delete_study(study_name=name, storage=URL)

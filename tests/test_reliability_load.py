"""Reliability, load: four ``odimo run`` workers started together on one PostgreSQL study, for a
bounded run. Every trial of the budget is accounted for exactly once: COMPLETE once, worked on once
(one attempt in its work folder, one ``odimo_trial_end`` notification), nothing left RUNNING or
WAITING, and exactly the requested number of COMPLETE trials, however the workers raced to create
the study, take the enqueued point and use the last slots of the budget.

Trials use the instant ``toy`` strategy of tests/test_study_drivers.py (with a short sleep so that
workers overlap): what is under test is the bookkeeping between processes, not training.
tests/test_postgres.py covers a worker killed mid-trial.

Needs a PostgreSQL server: ``export ODIMO_TEST_POSTGRES_URL="$(.ci/postgres.sh)"`` (.ci/run sets it).
"""

from __future__ import annotations

import json
import os
import uuid
from collections import Counter
from pathlib import Path

import optuna
import pytest

from test_study_drivers import run_study_workers
from test_study_workers import shared_toy_config, worker_env

URL = os.environ.get("ODIMO_TEST_POSTGRES_URL")
pytestmark = pytest.mark.skipif(not URL, reason="ODIMO_TEST_POSTGRES_URL is not set; start a throwaway server "
                                                "with: export ODIMO_TEST_POSTGRES_URL=\"$(.ci/postgres.sh)\"")
WORKERS = 4
TRIALS = 8
TIMEOUT_S = 400


@pytest.fixture
def fresh_database() -> str:
    """A new, empty database on the test server (so that the workers also race to create Optuna's
    tables); the server's own database where the URL's user may not create one."""
    import sqlalchemy

    name = f"odimo_load_{uuid.uuid4().hex[:10]}"
    admin = sqlalchemy.create_engine(URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(sqlalchemy.text(f"CREATE DATABASE {name}"))
    except sqlalchemy.exc.DBAPIError:
        admin.dispose()
        yield URL
        return
    yield str(sqlalchemy.engine.make_url(URL).set(database=name))
    with admin.connect() as connection:
        connection.execute(sqlalchemy.text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
    admin.dispose()


def test_four_workers_account_for_every_trial_exactly_once(tmp_path: Path, fresh_database: str, monkeypatch):
    from odimo_moo.study.ledger import FAILURE, SURPLUS, work_number

    name = f"load-{uuid.uuid4().hex[:10]}"
    url = fresh_database
    # lambda below the toy's divergence threshold (every trial must complete), and every worker holds
    # a trial at once, however unevenly the four processes start
    config = shared_toy_config(tmp_path, WORKERS, name=name, storage=url, trials=TRIALS, training={"sleep_s": 0.5},
                               sampler={"name": "random"}, heartbeat={"interval": 1, "grace": 30, "max_retry": 1})
    monkeypatch.setenv("PYTHONPATH", worker_env()["PYTHONPATH"])
    log, _ = run_study_workers(tmp_path, config, WORKERS, TIMEOUT_S)
    storage = optuna.storages.RDBStorage(url)
    study = optuna.load_study(study_name=name, storage=storage)
    try:
        trials = study.get_trials(deepcopy=False)
        states = Counter(t.state for t in trials)
        complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
        # the budget, exactly: nothing running, waiting or pruned; failures only for surplus asks
        assert len(complete) == TRIALS, states
        assert set(states) <= {optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL}, states
        for trial in trials:
            if trial.state == optuna.trial.TrialState.FAIL:
                assert trial.user_attrs.get(FAILURE) == SURPLUS, trial
        # each trial number COMPLETE once, each in its own work folder, worked on exactly once
        assert len({t.number for t in complete}) == TRIALS
        assert all(work_number(t) == t.number for t in complete), "no retries happen without a failure"
        folders = [Path(t.user_attrs["work_dir"]) for t in complete]
        assert len(set(folders)) == TRIALS
        attempts = [(folder / "attempts.txt").read_text().splitlines() for folder in folders]
        assert all(len(lines) == 1 for lines in attempts), attempts
        trial_dirs = sorted(p.name for p in (tmp_path / "out" / "trials").iterdir())
        assert trial_dirs == sorted(str(t.number) for t in complete), "a surplus trial did work"
        # the enqueued point ran once
        assert sum(t.user_attrs["params"] == {"lambda": 0.0} for t in complete) == 1
        # every completion was announced once, by the worker that ran it
        ends = [json.loads(line) for line in log.read_text().splitlines()]
        announced = Counter(e["trial"] for e in ends if e["study"] == name and e["state"] == "COMPLETE")
        assert announced == Counter({t.number: 1 for t in complete})
        # the workers really shared the study
        pids = Counter(lines[0].split()[0] for lines in attempts)
        assert len(pids) == WORKERS, f"not every worker ran a trial: {pids}"
    finally:
        optuna.delete_study(study_name=name, storage=storage)
        storage.engine.dispose()

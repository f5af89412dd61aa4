"""Stale workers and storage faults in studies (issue 16, item 1).

This module is also a plugin (``plugins: [<this file>]``): its ``stepper`` strategy writes a
progress file atomically every step (as training writes checkpoints) and its result at the end, each
naming the process, so a test can tell which worker wrote what.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Mapping

import optuna
import pytest
import sqlalchemy.exc
import yaml
from optuna.trial import TrialState

from odimo_moo.checkpoint import atomic_torch_save, atomic_write_json, load_checkpoint
from odimo_moo.cli import main
from odimo_moo.hookspecs import hookimpl
from odimo_moo.strategy import Outcome, Strategy

from test_reliability_faults import fill, small_disk  # noqa: F401 - small_disk is a fixture

THIS = str(Path(__file__).resolve())
POSTGRES = os.environ.get("ODIMO_TEST_POSTGRES_URL")
TIMEOUT_S = 120
STORAGE_FULL = "ODIMO_TEST_STORAGE_FULL"
INTERRUPT = "ODIMO_TEST_INTERRUPT"


class StepperStrategy(Strategy):
    """``steps`` steps of ``step_s`` seconds, each rewriting ``progress.json`` and a checkpoint
    ``state.pt`` atomically; a checkpoint left by an earlier attempt is loaded first. With the
    environment variable ``ODIMO_TEST_INTERRUPT`` set, the first step ends in Ctrl-C."""

    name = "stepper"
    description = "writes a progress file every step (tests of stale workers)"

    def defaults(self) -> dict[str, Any]:
        return {"steps": 4, "step_s": 0.05}

    def run(self, bench: Any, params: Mapping[str, Any], workdir: Path) -> list[Outcome]:
        params = {**self.defaults(), **params}
        if (workdir / "state.pt").exists():
            load_checkpoint(workdir / "state.pt")
        started = time.time()
        for step in range(int(params["steps"])):
            atomic_write_json(workdir / "progress.json", {"pid": os.getpid(), "step": step})
            atomic_torch_save(workdir / "state.pt", {"model": {}, "step": step})
            if os.environ.get(INTERRUPT):
                raise KeyboardInterrupt
            time.sleep(float(params["step_s"]))
        wall = time.time() - started
        atomic_write_json(workdir / "result.json", {"pid": os.getpid(), "wall_time_s": wall})
        return [Outcome("stepper", 0.9, 0.9, 1000.0, 1.0, {"conv1": {"digital": 16}}, params=dict(params),
                        artifacts={"result": str(workdir / "result.json")}, wall_time_s=wall)]


@hookimpl
def odimo_register_strategies() -> list[Strategy]:
    return [StepperStrategy()]


def _storage_full(*args: Any, **kwargs: Any) -> None:
    """What SQLite raises through Optuna when the disk under the study file is full."""
    cause = sqlite3.OperationalError("database or disk is full")
    try:
        raise sqlalchemy.exc.OperationalError("UPDATE trials", {}, cause) from cause
    except sqlalchemy.exc.OperationalError as exc:
        raise optuna.exceptions.StorageInternalError("An exception is raised during the commit.") from exc


if os.environ.get(STORAGE_FULL):  # a worker process that loads this plugin: its storage's disk is full
    optuna.storages.RDBStorage.record_heartbeat = _storage_full
    optuna.storages.RDBStorage.set_trial_state_values = _storage_full


def _config(tmp_path: Path, **changes: Any) -> Path:
    raw = {"name": "workers", "soc": "diana", "model": "resnet8", "dataset": "digits", "strategy": "stepper",
           "plugins": [THIS], "search_space": {"lambda": [1.0e-6, 1.0e-3]}, "trials": 1, "device": "cpu",
           "out": str(tmp_path / "out"), "artifacts": False, "heartbeat": {"interval": 1, "grace": 3}}
    raw.update(changes)
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def _worker(config: Path, log: Path, extra_env: Mapping[str, str] | None = None) -> subprocess.Popen:
    # the worker imports this file as a plugin, and with it its test imports
    path = os.pathsep.join(filter(None, [str(Path(THIS).parent), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "PYTHONPATH": path, **(extra_env or {})}
    env.pop("ODIMO_DEBUG", None)
    command = [sys.executable, "-m", "odimo_moo.cli", "run", str(config), "--no-progress", "--no-report"]
    return subprocess.Popen(command, stdout=open(log, "w"), stderr=subprocess.STDOUT, env=env)


def _wait_for(predicate: Any, what: str, process: subprocess.Popen, log: Path) -> None:
    deadline = time.time() + TIMEOUT_S
    while not predicate():
        assert process.poll() is None, log.read_text()
        assert time.time() < deadline, f"timed out waiting for {what}: {log.read_text()}"
        time.sleep(0.05)


def _finish(processes: list[subprocess.Popen]) -> list[int]:
    try:
        return [process.wait(timeout=TIMEOUT_S) for process in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def _pause_past_the_grace(storage: str, tmp_path: Path, name: str = "workers") -> None:
    """Worker A takes the one trial and is paused (SIGSTOP) until worker B has failed it by its
    heartbeat and retried it; then A resumes. A must not write into the trial again, nor crash."""
    config = _config(tmp_path, name=name, storage=storage, training={"steps": 40, "step_s": 0.1})
    folder = tmp_path / "out" / "trials" / "0"
    a = _worker(config, tmp_path / "a.log")
    _wait_for(lambda: (folder / "progress.json").is_file(), "worker A's first step", a, tmp_path / "a.log")
    os.kill(a.pid, signal.SIGSTOP)
    b = _worker(config, tmp_path / "b.log")
    try:
        _wait_for(lambda: (folder / "progress.json").is_file() and _read_json(folder / "progress.json")["pid"] == b.pid,
                  "worker B to resume the paused trial", b, tmp_path / "b.log")
    finally:
        os.kill(a.pid, signal.SIGCONT)
    assert _finish([a, b]) == [0, 0], (tmp_path / "a.log").read_text() + (tmp_path / "b.log").read_text()
    a_log = (tmp_path / "a.log").read_text()
    assert "this worker leaves" in a_log and str(folder) in a_log, a_log
    assert "Traceback" not in a_log and "Cannot tell" not in a_log and "internal error" not in a_log, a_log
    assert _read_json(folder / "progress.json") == {"pid": b.pid, "step": 39}
    assert _read_json(folder / "result.json")["pid"] == b.pid
    trials = optuna.load_study(study_name=name, storage=storage).trials
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE]
    assert trials[1].user_attrs["work_dir"] == str(folder)
    assert trials[1].user_attrs["wall_time_s"] == _read_json(folder / "result.json")["wall_time_s"]


def test_a_worker_paused_past_the_heartbeat_grace_leaves_its_retried_trial_alone(tmp_path):
    _pause_past_the_grace(f"sqlite:///{tmp_path / 'out' / 'study.db'}", tmp_path)


@pytest.mark.skipif(not POSTGRES, reason="ODIMO_TEST_POSTGRES_URL is not set; start a throwaway server with: "
                                         "export ODIMO_TEST_POSTGRES_URL=\"$(.ci/postgres.sh)\"")
def test_a_paused_postgres_worker_leaves_its_retried_trial_alone(tmp_path):
    _pause_past_the_grace(POSTGRES, tmp_path, f"workers-{uuid.uuid4().hex[:8]}")


def test_a_storage_that_cannot_write_is_one_line_and_the_trial_is_retried(tmp_path, capsys):
    """The disk under a SQLite study is full from the trial's start: no heartbeat and no result can
    be written. One line, exit 1, no thread traceback; the next run fails the trial its dead worker
    left RUNNING without a heartbeat, and retries it in its work folder."""
    config = _config(tmp_path)
    worker = _worker(config, tmp_path / "full.log", {STORAGE_FULL: "1"})
    assert _finish([worker]) == [1]
    log = (tmp_path / "full.log").read_text()
    error = log.splitlines()[-1]
    assert error.startswith("odimo run: error: storage sqlite:///"), log
    assert "(OperationalError: database or disk is full)" in error and "re-run when the storage works" in error
    assert "Traceback" not in log and "Exception in thread" not in log, log
    assert main(["run", str(config), "--no-progress", "--no-report"]) == 0
    trials = optuna.load_study(study_name="workers", storage=f"sqlite:///{tmp_path / 'out' / 'study.db'}").trials
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE]
    assert trials[1].user_attrs["work_dir"] == str(tmp_path / "out" / "trials" / "0")


@pytest.mark.skipif(not POSTGRES, reason="ODIMO_TEST_POSTGRES_URL is not set; start a throwaway server with: "
                                         "export ODIMO_TEST_POSTGRES_URL=\"$(.ci/postgres.sh)\"")
def test_postgres_connections_dropped_mid_trial_reconnect(tmp_path):
    """What a server restart does to a worker: every connection is closed under it, for 2 s. The
    heartbeat and the fence checks reconnect; the trial completes, no thread prints a traceback."""
    import psycopg2

    tag = f"odimo-outage-{uuid.uuid4().hex[:8]}"
    name = f"workers-{tag}"
    config = _config(tmp_path, name=name, storage=f"{POSTGRES}?application_name={tag}",
                     training={"steps": 40, "step_s": 0.1})
    folder = tmp_path / "out" / "trials" / "0"
    worker = _worker(config, tmp_path / "w.log")
    _wait_for(lambda: (folder / "progress.json").is_file(), "the first step", worker, tmp_path / "w.log")
    admin = psycopg2.connect(POSTGRES.replace("postgresql+psycopg2://", "postgresql://"))
    admin.autocommit = True
    dropped = 0
    try:
        with admin.cursor() as cursor:
            until = time.time() + 2.0
            while time.time() < until:
                cursor.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                               "WHERE application_name = %s", (tag,))
                dropped += cursor.fetchone()[0]
                time.sleep(0.1)
    finally:
        admin.close()
    assert _finish([worker]) == [0], (tmp_path / "w.log").read_text()
    log = (tmp_path / "w.log").read_text()
    assert dropped > 0 and "Traceback" not in log and "Exception in thread" not in log, log
    trials = optuna.load_study(study_name=name, storage=POSTGRES).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE]


def test_a_corrupt_checkpoint_is_reported_as_the_error_it_is(tmp_path, monkeypatch, capsys):
    """A trial whose checkpoint is corrupt fails at every re-run until its retries are used; the point
    is then given up, and the report says each attempt failed and why (not "stopped")."""
    config = _config(tmp_path, heartbeat={"interval": 1, "grace": 3, "max_retry": 2})
    command = ["run", str(config), "--no-progress"]
    monkeypatch.setenv(INTERRUPT, "1")
    assert main([*command, "--no-report"]) == 130
    monkeypatch.delenv(INTERRUPT)
    checkpoint = tmp_path / "out" / "trials" / "0" / "state.pt"
    checkpoint.write_bytes(b"\x00 not a checkpoint")
    capsys.readouterr()
    codes = [main([*command, "--no-report"]) for _ in range(3)]
    err = capsys.readouterr().err
    assert codes == [1, 1, 0], err
    assert err.count(f"checkpoint {checkpoint} is unreadable") == 2
    assert main(["report", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    failed = next(line for line in out.splitlines() if "failed trial(s)" in line)
    assert failed.startswith("3 failed trial(s): 0 (interrupted), 1 (error: RunFailure: checkpoint "), failed
    assert "stopped" not in failed and failed.count("is unreadable") == 2


def test_the_disk_under_a_sqlite_study_filling_up_mid_trial(small_disk, tmp_path):
    """The default layout (study.db and the trial folders in one output folder) on a 16 MiB tmpfs that
    another job fills during the first trial: one line, exit 1, no thread traceback; once space is
    freed the next run retries the trial in its folder and completes it."""
    out = small_disk / "out"
    config = _config(tmp_path, out=str(out), training={"steps": 40, "step_s": 0.1})
    worker = _worker(config, tmp_path / "w.log")
    _wait_for(lambda: (out / "trials" / "0" / "progress.json").is_file(), "the first step", worker,
              tmp_path / "w.log")
    filler = fill(small_disk)
    assert _finish([worker]) == [1]
    log = (tmp_path / "w.log").read_text()
    assert "Traceback" not in log and "Exception in thread" not in log and "internal error" not in log, log
    errors = [line for line in log.splitlines() if line.startswith("odimo run: error: ")]
    assert len(errors) == 1 and errors[0] == log.splitlines()[-1], log
    assert "No space left on device" in errors[0] or "database or disk is full" in errors[0], log
    filler.unlink()
    assert main(["run", str(config), "--no-progress", "--no-report"]) == 0
    trials = optuna.load_study(study_name="workers", storage=f"sqlite:///{out / 'study.db'}").trials
    assert [t.state for t in trials][-1] == TrialState.COMPLETE
    assert {t.user_attrs.get("work_dir") for t in trials if t.state == TrialState.COMPLETE} == {str(out / "trials" / "0")}

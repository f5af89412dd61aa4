"""Worker processes of one study: a worker whose budget is used waits for the trials running
elsewhere, and retries the one whose worker dies, before it exits.

This module is also a plugin (``plugins: [<this file>]``, with the ``toy`` plugin of
tests/test_study_drivers.py): its ``toy-shared`` strategy makes every worker hold a trial at once,
however unevenly loaded processes start, so that tests of workers sharing a study need no timing.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import optuna

from odimo_moo.hookspecs import hookimpl
from odimo_moo.strategy import Outcome, Strategy
from odimo_moo.study.storage import open_storage

from test_study_drivers import THIS as TOY_PLUGIN
from test_study_drivers import ToyStrategy, toy_config

THIS = str(Path(__file__).resolve())
TIMEOUT_S = 240
NO_DIVERGENCE = {"lambda": [1.0e-6, 1.0e-4]}  # the toy diverges from 8e-4: sampled trials all complete
READY = "workers-ready"


class SharedToyStrategy(ToyStrategy):
    """The toy strategy; the first trial of each process first waits (up to ``TIMEOUT_S``) until
    ``workers`` processes have each started one (a file per process in ``<out>/workers-ready``)."""

    name = "toy-shared"
    description = "the toy strategy, whose workers each hold a trial at once (tests of shared studies)"

    def defaults(self) -> dict[str, Any]:
        return {**super().defaults(), "workers": 1}

    def run(self, bench: Any, params: Mapping[str, Any], workdir: Path) -> list[Outcome]:
        ready = workdir.parent.parent / READY
        ready.mkdir(parents=True, exist_ok=True)
        (ready / str(os.getpid())).touch()
        deadline = time.monotonic() + TIMEOUT_S
        while len(list(ready.iterdir())) < int(params.get("workers", 1)) and time.monotonic() < deadline:
            time.sleep(0.05)
        return super().run(bench, params, workdir)


@hookimpl
def odimo_register_strategies() -> list[Strategy]:
    return [SharedToyStrategy()]


# ----------------------------------------------------------------------------------------------- helpers
def shared_toy_config(tmp_path: Path, workers: int, **changes: Any) -> Path:
    """A toy study whose ``workers`` worker processes each hold a trial at once (see the module);
    they need :func:`worker_env`."""
    training = {**changes.pop("training", {}), "workers": workers}
    return toy_config(tmp_path, strategy=SharedToyStrategy.name, plugins=[TOY_PLUGIN, THIS], training=training,
                      search_space=NO_DIVERGENCE, **changes)


def worker_env() -> dict[str, str]:
    """The environment of a worker process that loads this module as a plugin (and with it
    tests/test_study_drivers.py as a module)."""
    path = os.pathsep.join(filter(None, [str(Path(THIS).parent), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "PYTHONPATH": path}
    env.pop("ODIMO_DEBUG", None)
    return env


def start_worker(config: Path, log: Path) -> subprocess.Popen:
    """``odimo run CONFIG`` in a new process, its output in ``log``."""
    command = [sys.executable, "-m", "odimo_moo.cli", "run", str(config), "--no-progress", "--no-report"]
    return subprocess.Popen(command, stdout=open(log, "w"), stderr=subprocess.STDOUT, env=worker_env())


def wait_for(done: Callable[[], bool], worker: subprocess.Popen, log: Path, what: str) -> None:
    """Wait until ``done()``, failing with the worker's output if it exits first or time runs out."""
    deadline = time.monotonic() + TIMEOUT_S
    while not done():
        assert worker.poll() is None, f"the worker exited before {what}:\n{log.read_text()}"
        assert time.monotonic() < deadline, f"no {what} in {TIMEOUT_S} s:\n{log.read_text()}"
        time.sleep(0.1)


# ----------------------------------------------------------------------------------------------- tests
def test_a_worker_waits_for_a_trial_running_elsewhere_and_retries_it_when_its_worker_dies(tmp_path):
    journal = tmp_path / "study.log"
    config = toy_config(tmp_path, storage=str(journal), trials=3, training={"stall_at": 0.0},
                        search_space=NO_DIVERGENCE, artifacts=False)
    stalled = tmp_path / "out" / "trials" / "0" / "attempts.txt"
    victim = start_worker(config, tmp_path / "victim.log")
    survivor = None
    try:
        # trial 0 (lambda 0, enqueued) stalls for a minute on its first attempt
        wait_for(stalled.is_file, victim, tmp_path / "victim.log", "first trial")
        survivor = start_worker(config, tmp_path / "survivor.log")
        said = "waiting for 1 trial(s) running elsewhere"
        wait_for(lambda: said in (tmp_path / "survivor.log").read_text(), survivor, tmp_path / "survivor.log",
                 f"{said!r} once the budget is used")
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait()
        assert survivor.wait(timeout=TIMEOUT_S) == 0, (tmp_path / "survivor.log").read_text()
    finally:
        for process in (victim, survivor):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait()
    trials = optuna.load_study(study_name="toy", storage=open_storage(f"journal://{journal}")).trials
    assert [t.state.name for t in trials] == ["FAIL", "COMPLETE", "COMPLETE", "COMPLETE"]
    assert trials[3].system_attrs["failed_trial"] == 0
    assert trials[3].user_attrs["work_dir"] == str(stalled.parent)
    assert [line.split()[0] for line in stalled.read_text().splitlines()] == [str(victim.pid), str(survivor.pid)]
    assert {t.user_attrs["worker"]["pid"] for t in trials[1:]} == {survivor.pid}

"""Which process runs a trial, and what happens to the trials of workers that died.

Every trial records its worker (host, process id, process start time) as the user attribute
``worker`` as soon as it starts. RDB storages detect a dead worker by its heartbeat. A journal file
has no heartbeat, and a worker whose RDB storage failed (a full disk) may have left its trial without
one, so every worker also fails, and queues again, the running trials of workers *on its own host*
whose process is gone; such a trial whose worker died on another machine waits until a worker runs
there again (or is failed by hand). A running trial that names no worker after the heartbeat grace
(its process died, or was interrupted, between asking for it and starting it: neither its heartbeat
nor its process can tell) is failed and queued again by any worker, so that no worker waits for it
forever.
"""

from __future__ import annotations

import copy
import os
import socket
from datetime import datetime
from typing import Any, Callable, Mapping

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState

WORKER_ATTR = "worker"

Retry = Callable[[optuna.Study, FrozenTrial], None]


def _start_time(pid: int) -> str | None:
    """The start time of process ``pid`` in clock ticks since boot (Linux), telling a live process
    from a later one that reuses its id; None where ``/proc`` does not say."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields[19] if len(fields) > 19 else None


def this_worker() -> dict[str, Any]:
    """The ``worker`` attribute of a trial run by this process."""
    pid = os.getpid()
    return {"host": socket.gethostname(), "pid": pid, "started": _start_time(pid)}


def is_dead(worker: Mapping[str, Any]) -> bool:
    """Whether ``worker`` ran on this host and its process is gone (or its id now names another one)."""
    if worker.get("host") != socket.gethostname() or not isinstance(worker.get("pid"), int):
        return False
    pid = worker["pid"]
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # alive, run by another user
    started = worker.get("started")
    return started is not None and _start_time(pid) not in (None, started)


class RetryWithoutWorker(RetryHeartbeatStaleTrialCallback):
    """Optuna's retry of a failed trial (a WAITING copy with its parameters, user attributes and retry
    history, at most ``max_retry`` times), less the ``worker`` attribute of the process that ran it:
    a copy that a worker has just taken, and not yet marked as its own, must not look like a running
    trial of that dead process, which another worker on its host would fail at once."""

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        # a copy: Optuna appends to the retry history of the trial it is given, in place
        clean = copy.deepcopy(trial)
        clean.user_attrs = {key: value for key, value in trial.user_attrs.items() if key != WORKER_ATTR}
        super().__call__(study, clean)


def _abandoned(trial: FrozenTrial, grace_s: float) -> bool:
    """Whether ``trial`` names no worker ``grace_s`` seconds after it started (clocks of the workers'
    hosts agreeing within the grace): its process died before it could record itself."""
    started = trial.datetime_start
    return started is not None and (datetime.now() - started).total_seconds() > grace_s


def fail_trials_of_dead_workers(study: optuna.Study, retry: Retry, grace_s: float) -> list[int]:
    """Fail the running trials whose worker died on this host, and those that name no worker
    ``grace_s`` seconds after they started, and hand each to ``retry``; returns their numbers. A trial
    another worker failed first is left to it."""
    failed = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = trial.user_attrs.get(WORKER_ATTR)
        if not (is_dead(worker) if isinstance(worker, dict) else _abandoned(trial, grace_s)):
            continue
        try:
            study.tell(trial.number, state=TrialState.FAIL)
        except (UpdateFinishedTrialError, RuntimeError, ValueError):
            continue  # finished meanwhile (another worker got there first)
        retry(study, trial)
        failed.append(trial.number)
    return failed

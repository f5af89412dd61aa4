"""Which process runs a trial, and what happens to the trials of workers that died.

Every trial records its worker (host, process id, process start time) as the user attribute
``worker``. RDB storages detect a dead worker by its heartbeat. A journal file has no heartbeat, and
a worker whose RDB storage failed (a full disk) may have left its trial without one, so every worker
also fails, and queues again, the running trials of workers *on its own host* whose process is gone;
such a trial whose worker died on another machine waits until a worker runs there again (or is
failed by hand).
"""

from __future__ import annotations

import os
import socket
from typing import Any, Callable, Mapping

import optuna
from optuna.exceptions import UpdateFinishedTrialError
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


def fail_dead_local_trials(study: optuna.Study, retry: Retry) -> list[int]:
    """Fail the running trials whose worker died on this host and hand each to ``retry``; returns
    their numbers. A trial another worker failed first is left to it."""
    failed = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = trial.user_attrs.get(WORKER_ATTR)
        if not isinstance(worker, dict) or not is_dead(worker):
            continue
        try:
            study.tell(trial.number, state=TrialState.FAIL)
        except (UpdateFinishedTrialError, RuntimeError, ValueError):
            continue  # finished meanwhile (another worker got there first)
        retry(study, trial)
        failed.append(trial.number)
    return failed

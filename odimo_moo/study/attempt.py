"""One attempt at a trial by this process: ask, beat, run inside a fenced work folder, tell.

Optuna's ``study.optimize`` is not used: its heartbeat thread dies with a traceback on the first
storage error, and its bookkeeping after the objective turns a storage outage or a trial that another
worker has failed into ``AssertionError``, ``UnboundLocalError`` or ``Cannot tell a FAIL trial``.

*Fencing.* Every attempt writes its trial number to ``<work folder>/.attempt`` when it starts. A
worker that was paused (SIGSTOP, a swapped-out host) past the heartbeat grace finds, before every
write and before telling its result, that its trial is no longer RUNNING or that the folder names a
later attempt: it raises :class:`TrialTakenOver`, writes nothing more and goes on with the study.
"""

from __future__ import annotations

import contextlib
import threading
import warnings
from pathlib import Path
from typing import Callable, Iterator, Sequence

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import BaseStorage
from optuna.storages._heartbeat import BaseHeartbeat, is_heartbeat_enabled
from optuna.trial import TrialState

from ..checkpoint import atomic_write_bytes
from ..errors import RunFailure

FENCE_FILE = ".attempt"
Objective = Callable[[optuna.Trial], Sequence[float]]


class TrialTakenOver(RunFailure):
    """Another worker failed or retried this process's trial: this process must leave it alone."""


def storage_errors() -> tuple[type[BaseException], ...]:
    """What a storage raises when its database is unreachable or cannot write (server restart, full disk)."""
    from sqlalchemy.exc import SQLAlchemyError

    return optuna.exceptions.StorageInternalError, SQLAlchemyError


def _cause(exc: BaseException) -> str:
    """The root cause of a storage error, on one line (SQLAlchemy's own text spans several)."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"


@contextlib.contextmanager
def storage_failures(url: str, grace: int) -> Iterator[None]:
    """Turn a storage error into a one-line :class:`RunFailure` (exit 1)."""
    try:
        yield
    except storage_errors() as exc:
        raise RunFailure(f"storage {url} failed ({_cause(exc)}); a trial this worker was running is retried "
                         f"once its heartbeat is {grace} s old: re-run when the storage works again") from exc


class Fence:
    """The claim of one attempt (trial ``number``) on its work folder ``workdir``."""

    def __init__(self, study: optuna.Study, trial: optuna.Trial, workdir: Path) -> None:
        self.study = study
        self.number = trial.number
        self.trial_id = trial._trial_id  # the storage's key of the trial; Optuna has no public accessor
        self.workdir = workdir

    def claim(self) -> None:
        """Mark ``workdir`` as this attempt's: an earlier attempt still running stops at its next write."""
        atomic_write_bytes(self.workdir / FENCE_FILE, f"{self.number}\n".encode())

    def check(self, path: Path | None = None) -> None:
        """Raise :class:`TrialTakenOver` if a later attempt claimed the folder or the trial is no longer
        RUNNING (``path``: the file about to be written, as a write guard is called). A storage that
        cannot answer right now is not a reason to stop (the fence file still is)."""
        try:
            holder = (self.workdir / FENCE_FILE).read_text().strip()
        except OSError:
            holder = str(self.number)
        state = TrialState.RUNNING
        with contextlib.suppress(*storage_errors()):
            state = self.study._storage.get_trial(self.trial_id).state
        if holder != str(self.number) or state != TrialState.RUNNING:
            raise self.taken_over(holder, state)

    def taken_over(self, holder: str, state: TrialState) -> TrialTakenOver:
        later = f" and trial {holder} resumes it" if holder != str(self.number) else ""
        return TrialTakenOver(
            f"trial {self.number} is {state.name} in the storage{later}: another worker failed it after its "
            f"heartbeat was silent past the grace period (was this process paused?); this worker leaves "
            f"{self.workdir} to the retry and writes nothing more there")


class _Beat:
    """Records the trial's heartbeat every interval in a daemon thread. A storage error skips one beat
    (the next one reconnects) instead of ending the thread, as Optuna's own thread does."""

    def __init__(self, storage: BaseStorage, trial_id: int) -> None:
        self.storage = storage
        self.trial_id = trial_id
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None

    def __enter__(self) -> "_Beat":
        if is_heartbeat_enabled(self.storage):
            self.thread = threading.Thread(target=self._run, name="odimo-heartbeat", daemon=True)
            self.thread.start()
        return self

    def _run(self) -> None:
        assert isinstance(self.storage, BaseHeartbeat)
        interval = self.storage.get_heartbeat_interval() or 1
        while True:
            with contextlib.suppress(*storage_errors()):
                self.storage.record_heartbeat(self.trial_id)
            if self.stop.wait(interval):
                return

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        if self.thread is not None:
            self.thread.join()


def run_attempt(study: optuna.Study, objective: Objective, catch: tuple[type[Exception], ...],
                say: Callable[[str], None]) -> None:
    """Ask for a trial and run ``objective`` on it with a heartbeat; tell the storage how it ended.

    ``catch``: exceptions recorded as FAIL that do not stop the worker. A trial taken over by another
    worker is left as the storage has it (one line said). Any other exception fails the trial and
    is raised.
    """
    with warnings.catch_warnings():  # Optuna warns that heartbeats belong to study.optimize: see above
        warnings.filterwarnings("ignore", "Heartbeat of storage", UserWarning)
        trial = study.ask()
    with _Beat(study._storage, trial._trial_id):
        try:
            values = objective(trial)
        except TrialTakenOver as exc:
            say(str(exc))
            return
        except UpdateFinishedTrialError:  # failed by another worker between the last check and a record
            say(f"trial {trial.number} was failed by another worker while this one recorded its result; this "
                f"worker leaves it to the retry")
            return
        except catch:
            _tell(study, trial, None, TrialState.FAIL, say)
            return
        except BaseException:
            with contextlib.suppress(Exception):
                study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
            raise
    _tell(study, trial, values, None, say)


def _tell(study: optuna.Study, trial: optuna.Trial, values: Sequence[float] | None, state: TrialState | None,
          say: Callable[[str], None]) -> None:
    """Tell the outcome; a trial failed by another worker in the meantime keeps that state."""
    try:
        frozen = study.tell(trial, values, state, skip_if_finished=True)
    except UpdateFinishedTrialError:
        frozen = study._storage.get_trial(trial._trial_id)
    expected = TrialState.COMPLETE if values is not None else state
    if frozen.state != expected:
        say(f"trial {trial.number} was {frozen.state.name} when this worker finished it: another worker took "
            f"it over (see above); its result here is dropped")

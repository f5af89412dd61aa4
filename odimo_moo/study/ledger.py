"""Bookkeeping of a study's trials shared by every worker: slots, the trial budget, work folders.

A *slot* is one logical trial: the first trial that ran a point and every retry of it (a heartbeat
retry after a worker died, or the copy a worker queues when it is interrupted). All attempts of a
slot share the work folder ``trials/<first trial number>/``, so a retry resumes from the last
checkpoint. A slot uses the budget while its latest attempt is complete, diverged, running or
waiting; slots whose last attempt failed otherwise (retries used up, crash) give their place back,
and a trial asked for once the budget is used elsewhere is marked surplus and never counts.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Iterable

import optuna
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState

DRIVER = "driver"
FAILURE = "failure"
DIVERGED = "diverged"
SURPLUS = "surplus"
ERROR = "error"
INTERRUPTED = "interrupted"
DEFAULT_DRIVER = "optuna"


def driver_of(trial: FrozenTrial) -> str:
    """The driver that ran ``trial`` (trials asked for by Optuna record it once they start)."""
    return trial.user_attrs.get(DRIVER, DEFAULT_DRIVER)


def work_number(trial: FrozenTrial) -> int:
    """Number of the first trial of ``trial``'s slot: its work folder is ``trials/<that number>``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        original = RetryHeartbeatStaleTrialCallback.retried_trial_number(trial)
    return trial.number if original is None else int(original)


def holds_place(trial: FrozenTrial) -> bool:
    """Whether an attempt holds its slot's place in the budget."""
    if trial.state in (TrialState.COMPLETE, TrialState.RUNNING, TrialState.WAITING):
        return True
    return trial.state == TrialState.FAIL and trial.user_attrs.get(FAILURE) == DIVERGED


def is_final(trial: FrozenTrial) -> bool:
    """Whether an attempt is a final result (a point, or a diverged training)."""
    return trial.state == TrialState.COMPLETE or (trial.state == TrialState.FAIL
                                                  and trial.user_attrs.get(FAILURE) == DIVERGED)


@dataclass
class Ledger:
    """The slots of one driver's trials in a study, latest attempt last."""

    slots: dict[int, list[FrozenTrial]] = field(default_factory=dict)

    @classmethod
    def of(cls, trials: Iterable[FrozenTrial], driver: str) -> "Ledger":
        slots: dict[int, list[FrozenTrial]] = {}
        for trial in sorted(trials, key=lambda t: t.number):
            if driver_of(trial) != driver or trial.user_attrs.get(FAILURE) == SURPLUS:
                continue
            slots.setdefault(work_number(trial), []).append(trial)
        return cls(slots)

    def latest(self) -> list[FrozenTrial]:
        return [attempts[-1] for attempts in self.slots.values()]

    @property
    def used(self) -> int:
        return sum(holds_place(trial) for trial in self.latest())

    @property
    def finished(self) -> int:
        return sum(is_final(trial) for trial in self.latest())

    def in_state(self, state: TrialState) -> int:
        return sum(trial.state == state for trial in self.latest())

    def used_before(self, number: int) -> int:
        """Budget used by the slots that started before trial ``number``."""
        return sum(holds_place(attempts[-1]) for first, attempts in self.slots.items() if first < number)

    def find(self, attr: str, key: str) -> FrozenTrial | None:
        """Latest attempt of the newest slot whose trials carry user attribute ``attr == key``."""
        matches = [attempts[-1] for attempts in self.slots.values() if attempts[-1].user_attrs.get(attr) == key]
        return max(matches, key=lambda t: t.number, default=None)

"""The Optuna objective both drivers run: one trial = one strategy run, recorded in the storage.

A diverged training is recorded as FAIL (the study goes on); any other exception, Ctrl-C included,
first queues a copy of the trial so that the next run resumes it in the same work folder.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import optuna
from optuna.trial import FrozenTrial, TrialState

from ..training import Diverged
from .config import StudyConfig
from .ledger import DIVERGED, DRIVER, FAILURE, SURPLUS, Ledger, work_number
from .space import suggest
from .storage import retry_callback
from .trial_runner import TrialRunner

FIXED = "fixed"


class SurplusTrial(Exception):
    """The trial was asked for after other workers had used the whole budget; it runs nothing."""


def describe(params: Mapping[str, Any]) -> str:
    return ", ".join(f"{name}={value:g}" if isinstance(value, float) else f"{name}={value}"
                     for name, value in params.items())


class Objective:
    """Callable for ``study.optimize``; ``budget`` (None: the driver counts) caps the driver's slots."""

    def __init__(self, runner: TrialRunner, study: optuna.Study, config: StudyConfig, driver: str,
                 budget: int | None, say: Callable[[str], None]) -> None:
        self.runner = runner
        self.study = study
        self.config = config
        self.driver = driver
        self.budget = budget
        self.say = say

    def _frozen(self, number: int) -> FrozenTrial:
        running = self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        return next(t for t in running if t.number == number)

    def _surplus(self, trial: FrozenTrial) -> bool:
        if self.budget is None or work_number(trial) != trial.number:
            return False
        ledger = Ledger.of(self.study.get_trials(deepcopy=False), self.driver)
        return ledger.used_before(trial.number) >= self.budget

    def __call__(self, trial: optuna.Trial) -> list[float]:
        trial.set_user_attr(DRIVER, self.driver)
        frozen = self._frozen(trial.number)
        if self._surplus(frozen):
            trial.set_user_attr(FAILURE, SURPLUS)
            raise SurplusTrial(f"trial {trial.number}: the study's {self.budget} trials are already taken")
        params = suggest(trial, self.config.search_space, trial.user_attrs.get(FIXED, {}))
        work = work_number(frozen)
        resumed = "" if work == trial.number else f" (resuming trial {work})"
        try:
            record = self.runner.run(params, work)
        except Diverged as exc:
            trial.set_user_attr(FAILURE, DIVERGED)
            trial.set_user_attr("error", str(exc))
            trial.set_user_attr("params", params)
            self.runner.notify(self.study.study_name, trial.number,
                               {"state": "FAIL", FAILURE: DIVERGED, "error": str(exc), "params": params})
            self.say(f"trial {trial.number}{resumed}: {describe(params)}: {exc}; recorded as FAIL")
            raise
        except BaseException:
            retry_callback(self.config.heartbeat)(self.study, self._frozen(trial.number))
            raise
        for key, value in record.attrs.items():
            trial.set_user_attr(key, value)
        self.runner.notify(self.study.study_name, trial.number,
                           {"state": "COMPLETE", "values": record.values, **record.attrs})
        attrs = record.attrs
        self.say(f"trial {trial.number}{resumed}: {describe(params)}: accuracy {attrs['accuracy']:.4f} "
                 f"(val {attrs['val_accuracy']:.4f}), latency {attrs['latency_cycles']:,.0f} cycles, "
                 f"energy {attrs['energy_uj']:.4g} uJ, {attrs['wall_time_s']:.1f} s")
        return record.values

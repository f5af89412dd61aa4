"""The Optuna objective both drivers run: one trial = one strategy run, recorded in the storage.

A finished trial stores its outcome as user attributes, its constraint values (``set_constraint``,
and the user attributes ``constraints`` and ``feasible``) and uploads its files to the study's
artifact store. A diverged training is recorded as FAIL (the study goes on); any other exception,
Ctrl-C included, first queues a copy of the trial so that the next run resumes it in the same work
folder, then records why the trial stopped (``failure``: ``error`` or ``interrupted``, and ``error``).
Every write of the trial is fenced (:mod:`.attempt`): a worker whose trial another worker has taken
over stops writing.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import optuna
from optuna.artifacts import FileSystemArtifactStore
from optuna.trial import FrozenTrial, TrialState

from ..checkpoint import guarded_writes
from ..front_point import FrontPoint
from ..training import Diverged
from .artifact_store import MAPPING_PLOT, open_store, trial_files, upload_trial_files
from .attempt import Fence, TrialTakenOver, storage_errors
from .schema import StudyConfig
from .constraints import is_feasible, violations
from .ledger import DIVERGED, DRIVER, ERROR, FAILURE, INTERRUPTED, SURPLUS, Ledger, work_number
from .space import suggest
from .storage import retry_callback
from .trial_runner import TrialRunner
from .workers import WORKER_ATTR, this_worker

FIXED = "fixed"
CONSTRAINTS_ATTR = "constraints"
FEASIBLE_ATTR = "feasible"


@dataclass(frozen=True)
class DriverRun:
    """What a driver hands back: the study, and how many trials this process ran to their end
    (complete or diverged)."""

    study: optuna.Study
    ran: int


def artifact_store_of(config: StudyConfig) -> FileSystemArtifactStore | None:
    """The study's artifact store, None when ``artifacts: false``."""
    return None if config.artifacts is None else open_store(config.artifacts)


class SurplusTrial(Exception):
    """The trial was asked for after other workers had used the whole budget; it runs nothing."""


def describe(params: Mapping[str, Any]) -> str:
    return ", ".join(f"{name}={value:g}" if isinstance(value, float) else f"{name}={value}"
                     for name, value in params.items())


class Objective:
    """Callable for ``study.optimize``; ``budget`` (None: the driver counts) caps the driver's slots;
    ``store`` (None: none) receives each finished trial's files."""

    def __init__(self, runner: TrialRunner, study: optuna.Study, config: StudyConfig, driver: str,
                 budget: int | None, say: Callable[[str], None],
                 store: FileSystemArtifactStore | None = None) -> None:
        self.runner = runner
        self.study = study
        self.config = config
        self.driver = driver
        self.budget = budget
        self.say = say
        self.store = store
        self.ran = 0

    def _frozen(self, number: int) -> FrozenTrial:
        running = self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        return next(t for t in running if t.number == number)

    def _surplus(self, trial: FrozenTrial) -> bool:
        if self.budget is None or work_number(trial) != trial.number:
            return False
        ledger = Ledger.of(self.study.get_trials(deepcopy=False), self.driver)
        return ledger.used_before(trial.number) >= self.budget

    def _constrain(self, trial: optuna.Trial, attrs: Mapping[str, Any]) -> str:
        """Store the trial's constraint values; returns '' or what makes it infeasible."""
        if not self.config.constraints:
            return ""
        values = violations(self.config.constraints, attrs)
        for key, value in values.items():
            trial.set_constraint(key, value)
        trial.set_user_attr(CONSTRAINTS_ATTR, values)
        trial.set_user_attr(FEASIBLE_ATTR, is_feasible(values))
        broken = [c.describe() for c in self.config.constraints if values[c.key] > 0]
        return f"; infeasible (needs {', '.join(broken)})" if broken else ""

    def _upload(self, trial: optuna.Trial, attrs: Mapping[str, Any], workdir: Path) -> None:
        """Plot the trial's mapping into its work folder and upload its files to the artifact store."""
        if self.store is None:
            return
        from .plots import plot_mapping

        try:
            plot_mapping(FrontPoint.from_dict(attrs), f"trial {trial.number}", workdir / MAPPING_PLOT)
        except OSError as exc:
            self.say(f"trial {trial.number}: could not plot its mapping ({exc.strerror or exc})")
        upload_trial_files(self.store, trial, trial_files(attrs, workdir), self.say)

    def _stopped(self, trial: optuna.Trial, exc: BaseException, fence: Fence) -> None:
        """Queue a copy of a trial stopped by ``exc`` (the next run resumes it), then record why it
        stopped; nothing when the trial is no longer this worker's or the storage cannot be written."""
        with contextlib.suppress(TrialTakenOver, *storage_errors()):
            fence.check()
            frozen = self._frozen(trial.number)
            retry_callback(self.config.heartbeat)(self.study, frozen)
            trial.set_user_attr(FAILURE, INTERRUPTED if isinstance(exc, KeyboardInterrupt) else ERROR)
            lines = str(exc).strip().splitlines()
            trial.set_user_attr("error", f"{type(exc).__name__}: {lines[0] if lines else ''}")
            retries = self.config.heartbeat.max_retry
            if len(frozen.system_attrs.get("retry_history", [])) >= retries:
                self.say(f"trial {trial.number} failed and its {retries} retries are used: its point is given "
                         f"up (the report lists it with the error)")

    def __call__(self, trial: optuna.Trial) -> list[float]:
        trial.set_user_attr(DRIVER, self.driver)
        trial.set_user_attr(WORKER_ATTR, this_worker())
        frozen = self._frozen(trial.number)
        if self._surplus(frozen):
            trial.set_user_attr(FAILURE, SURPLUS)
            raise SurplusTrial(f"trial {trial.number}: the study's {self.budget} trials are already taken")
        params = suggest(trial, self.config.search_space, trial.user_attrs.get(FIXED, {}))
        work = work_number(frozen)
        resumed = "" if work == trial.number else f" (resuming trial {work})"
        fence = Fence(self.study, trial, self.runner.workdir(work))
        fence.claim()
        try:
            with guarded_writes(fence.check):
                record = self.runner.run(params, work)
        except Diverged as exc:
            fence.check()
            trial.set_user_attr(FAILURE, DIVERGED)
            trial.set_user_attr("error", str(exc))
            trial.set_user_attr("params", params)
            self.runner.notify(self.study.study_name, trial.number,
                               {"state": "FAIL", FAILURE: DIVERGED, "error": str(exc), "params": params})
            self.say(f"trial {trial.number}{resumed}: {describe(params)}: {exc}; recorded as FAIL")
            self.ran += 1
            raise
        except BaseException as exc:
            self._stopped(trial, exc, fence)
            raise
        fence.check()
        for key, value in record.attrs.items():
            trial.set_user_attr(key, value)
        infeasible = self._constrain(trial, record.attrs)
        self._upload(trial, record.attrs, Path(record.attrs["work_dir"]))
        self.runner.notify(self.study.study_name, trial.number,
                           {"state": "COMPLETE", "values": record.values, **record.attrs})
        attrs = record.attrs
        self.say(f"trial {trial.number}{resumed}: {describe(params)}: test accuracy {attrs['accuracy']:.4f} "
                 f"(val {attrs['val_accuracy']:.4f}), latency {attrs['latency_cycles']:,.0f} cycles, "
                 f"energy {attrs['energy_uj']:.4g} uJ, {attrs['wall_time_s']:.1f} s{infeasible}")
        self.ran += 1
        return record.values

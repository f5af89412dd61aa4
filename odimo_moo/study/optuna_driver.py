"""The Optuna driver: a multi-objective study over lambda and hyperparameters (TPE by default).

Any number of processes may run it on one storage: each takes the next waiting (enqueued or
retried) trial or asks the sampler for a new one until the study's trial budget is used, then
waits for trials running elsewhere, and retries those whose worker died (heartbeat).
"""

from __future__ import annotations

import sys
import time

import optuna
from optuna.trial import TrialState
from tqdm.auto import tqdm

from ..training import Diverged
from .attempt import run_attempt
from .drivers import sampler_class
from .schema import SamplerSpec, StudyConfig
from .ledger import DRIVER, Ledger
from .objective import FIXED, DriverRun, Objective, SurplusTrial, artifact_store_of
from .space import split_enqueued
from .storage_url import journal_path
from .storage import fail_stale, open_storage, open_study, quiet_optuna
from .trial_runner import TrialRunner

NAME = "optuna"
def make_sampler(spec: SamplerSpec, seed: int) -> optuna.samplers.BaseSampler:
    """The configured sampler, seeded."""
    return sampler_class(NAME, spec.name)(seed=seed, **spec.settings)


def enqueue_points(study: optuna.Study, config: StudyConfig) -> None:
    """Queue the study's known-good points; values no distribution holds (0 on a log range) travel
    as a user attribute and are used as they are."""
    for point in config.enqueue:
        inside, outside = split_enqueued(config.search_space, point)
        study.enqueue_trial(inside, user_attrs={DRIVER: NAME, FIXED: outside})


def run_optuna(config: StudyConfig, progress: bool = True) -> DriverRun:
    """Run (or join, or resume) the study until its ``trials`` are complete or diverged."""
    quiet_optuna()
    runner = TrialRunner(config, progress)
    storage = open_storage(config.storage, config.heartbeat)
    opened = open_study(config, storage, lambda seed: make_sampler(config.sampler, seed))
    study = opened.study
    if opened.created:
        enqueue_points(study, config)
    objective = Objective(runner, study, config, NAME, config.trials, tqdm.write, artifact_store_of(config))
    bar = tqdm(total=config.trials, desc=f"study {config.name}", unit="trial", disable=not progress,
               file=sys.stderr)
    waiting_said = False
    try:
        while True:
            fail_stale(study, config)
            ledger = Ledger.of(study.get_trials(deepcopy=False), NAME)
            bar.n = ledger.finished
            bar.refresh()
            if ledger.in_state(TrialState.WAITING) or ledger.used < config.trials:
                run_attempt(study, objective, (Diverged, SurplusTrial), tqdm.write)
            elif ledger.in_state(TrialState.RUNNING):
                if not waiting_said:
                    tqdm.write(f"waiting for {ledger.in_state(TrialState.RUNNING)} trial(s) running elsewhere; "
                               f"{stale_rule(config)}")
                    waiting_said = True
                time.sleep(config.heartbeat.interval)
            else:
                break
    finally:
        bar.close()
    return DriverRun(study, objective.ran)


def stale_rule(config: StudyConfig) -> str:
    """How a trial whose worker died is noticed on the study's storage."""
    if journal_path(config.storage) is not None:
        return ("one whose worker died on this host is retried here (a journal file has no heartbeat: "
                "for a worker that died on another host, run odimo run there)")
    return f"one silent for {config.heartbeat.grace} s is retried here"

"""The pymoo driver: the same study run by pymoo's NSGA-II through its ask-and-tell interface.

Decision variables are the search space (log ranges as log10, choices as indices); objectives are
-validation accuracy and the costs. Inequality constraints G: one that a diverged training breaks,
then the study's constraint values (:mod:`.constraints`; a diverged training breaks them all). Every
evaluation is an ordinary trial of the study's Optuna storage with user attributes ``driver=pymoo``
and ``pymoo_key`` (``<generation>-<index>``), so reports compare both drivers' fronts.

Resuming replays the seeded algorithm: an individual whose key already has a finished trial gets its
stored result instead of a new training, so a rerun repeats no work and continues where it stopped.
The GA is sequential: run one process per pymoo study.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState
from pymoo.algorithms.moo.nsga2 import NSGA2
from pymoo.core.problem import Problem
from pymoo.core.termination import NoTermination
from pymoo.problems.static import StaticProblem
from tqdm.auto import tqdm

from ..errors import UsageError
from ..training import Diverged
from .attempt import run_attempt
from .schema import StudyConfig
from .constraints import violations
from .ledger import DIVERGED, DRIVER, FAILURE, Ledger
from .objective import FIXED, DriverRun, Objective, artifact_store_of
from .space import bounds, decode, encode, same_params, split_enqueued
from .storage import fail_stale, open_storage, open_study, quiet_optuna
from .trial_runner import TrialRunner

NAME = "pymoo"
KEY = "pymoo_key"
DEFAULT_POP_SIZE = 8


def stored_params(trial: FrozenTrial) -> dict[str, Any]:
    return {**trial.params, **trial.user_attrs.get(FIXED, {})}


class Evaluations:
    """Fitness of individuals by key: from the storage when already known, else by running a trial."""

    def __init__(self, study: optuna.Study, config: StudyConfig, objective: Objective) -> None:
        self.study = study
        self.config = config
        self.objective = objective
        self.n_obj = 1 + len(config.metrics)
        self.n_constr = n_constraints(config)

    def _fitness(self, trial: FrozenTrial) -> tuple[list[float], list[float]]:
        if trial.state == TrialState.COMPLETE:
            values = violations(self.config.constraints, trial.user_attrs)
            return [-trial.values[0]] + list(trial.values[1:]), [0.0, *values.values()]
        return [0.0] * self.n_obj, [1.0] * self.n_constr

    def evaluate(self, key: str, params: dict[str, Any]) -> tuple[list[float], list[float]]:
        """(F, G) of the individual ``key`` at ``params``; trains only if no finished trial has it."""
        inside, outside = split_enqueued(self.config.search_space, params)
        while True:
            fail_stale(self.study, self.config)
            trial = Ledger.of(self.study.get_trials(deepcopy=False), NAME).find(KEY, key)
            if trial is not None and not same_params(self.config.search_space, stored_params(trial), params):
                raise UsageError(f"pymoo trial {trial.number} ({key}) ran at {stored_params(trial)}, but the "
                                 f"replayed algorithm proposes {params} there: the study was run with other "
                                 f"pymoo settings (seed, sampler, enqueue); use another study name")
            if trial is not None and (trial.state == TrialState.COMPLETE or
                                      trial.user_attrs.get(FAILURE) == DIVERGED):
                return self._fitness(trial)
            if trial is not None and trial.state == TrialState.RUNNING:
                time.sleep(self.config.heartbeat.interval)
                continue
            if trial is None or trial.state == TrialState.FAIL:
                self.study.enqueue_trial(inside, user_attrs={DRIVER: NAME, KEY: key, FIXED: outside})
            run_attempt(self.study, self.objective, (Diverged,), tqdm.write)


def n_constraints(config: StudyConfig) -> int:
    """Inequality constraints of the pymoo problem: divergence, then one per study constraint."""
    return 1 + len(config.constraints)


def initial_population(config: StudyConfig, pop_size: int, xl: np.ndarray,
                       xu: np.ndarray) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """First generation (enqueued points first, then seeded uniform draws) and the enqueued points no
    decision vector can hold (0 on a log range), which are evaluated on their own."""
    rng = np.random.default_rng(config.seed)
    x = rng.uniform(xl, xu, size=(pop_size, len(xl)))
    anchors, placed = [], 0
    for point in config.enqueue:
        inside, outside = split_enqueued(config.search_space, point)
        if outside:
            anchors.append(point)
        elif placed < pop_size:
            x[placed] = encode(config.search_space, inside, x[placed])
            placed += 1
    return x, anchors


def run_pymoo(config: StudyConfig, progress: bool = True) -> DriverRun:
    """Run (or resume) the study with NSGA-II until ``trials`` individuals are evaluated."""
    quiet_optuna()
    runner = TrialRunner(config, progress)
    storage = open_storage(config.storage, config.heartbeat)
    study = open_study(config, storage, lambda seed: optuna.samplers.RandomSampler(seed=seed)).study
    objective = Objective(runner, study, config, NAME, None, tqdm.write, artifact_store_of(config))
    evaluations = Evaluations(study, config, objective)
    space = config.search_space
    xl, xu = bounds(space)
    pop_size = config.sampler.settings.get("pop_size", DEFAULT_POP_SIZE)
    problem = Problem(n_var=len(space), n_obj=1 + len(config.metrics), n_ieq_constr=n_constraints(config),
                      xl=xl, xu=xu)
    first, anchors = initial_population(config, pop_size, xl, xu)
    algorithm = NSGA2(pop_size=pop_size, n_offsprings=config.sampler.settings.get("n_offsprings"),
                      sampling=first, eliminate_duplicates=True)
    algorithm.setup(problem, termination=NoTermination(), seed=config.seed, verbose=False)
    bar = tqdm(total=config.trials, desc=f"study {config.name} (pymoo)", unit="trial", disable=not progress,
               file=sys.stderr)
    done = 0

    def evaluate(key: str, params: dict[str, Any]) -> tuple[list[float], list[float]]:
        nonlocal done
        result = evaluations.evaluate(key, params)
        done += 1
        bar.update(1)
        return result

    try:
        for i, point in enumerate(anchors[:config.trials]):
            evaluate(f"enqueued-{i}", point)
        generation = 0
        while done < config.trials:
            population = algorithm.ask()
            if population is None or len(population) == 0:
                tqdm.write("pymoo proposes no new points (the search space is exhausted); stopping")
                break
            population = population[:config.trials - done]
            results = [evaluate(f"{generation}-{i}", decode(space, x)) for i, x in enumerate(population.get("X"))]
            fitness = np.array([f for f, _ in results])
            violation = np.array([g for _, g in results])
            algorithm.evaluator.eval(StaticProblem(problem, F=fitness, G=violation), population)
            algorithm.tell(infills=population)
            generation += 1
    finally:
        bar.close()
    return DriverRun(study, objective.ran)

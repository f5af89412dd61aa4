"""The drivers of a study's outer loop and the samplers each offers, with their settings: the one
list of them (validation, ``odimo run`` and the docs' settings table read it). Drivers and samplers
are named by where they are implemented (``module:attribute``), imported only when a study runs them:
this table describes them without importing them (the driver modules import the study schema, which
reads this table)."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Mapping

from .settings import Setting

_COUNT = Setting("a count", int, minimum=1)
_PROBABILITY = Setting("a probability", float, minimum=0, maximum=1)
_FLAG = Setting("a switch", bool)
_NUMBER = Setting("a number", float)


@dataclass(frozen=True)
class Sampler:
    """A sampler (Optuna) or algorithm (pymoo): the class that implements it (``module:attribute``)
    and the constructor arguments a study file may set (the study seed seeds every sampler)."""

    implementation: str
    settings: Mapping[str, Setting]


def load(implementation: str) -> Any:
    """The object an ``module:attribute`` reference names (imports its module)."""
    module, _, attribute = implementation.partition(":")
    return getattr(importlib.import_module(module), attribute)


@dataclass(frozen=True)
class Driver:
    """A driver: the function that runs a study with it (``module:attribute``, called with the study
    config and whether to show progress) and its samplers (the first is the default)."""

    implementation: str
    samplers: Mapping[str, Sampler]

    @property
    def default_sampler(self) -> str:
        """The sampler a study gets when it names none."""
        return next(iter(self.samplers))

    def run(self, config: Any, progress: bool) -> Any:
        """Run the study of ``config`` with this driver (imports its module)."""
        return load(self.implementation)(config, progress)


DRIVERS: dict[str, Driver] = {
    "optuna": Driver("odimo_moo.study.optuna_driver:run_optuna", {
        "tpe": Sampler("optuna.samplers:TPESampler", {
            "n_startup_trials": _COUNT, "n_ei_candidates": _COUNT, "multivariate": _FLAG, "group": _FLAG,
            "constant_liar": _FLAG, "consider_endpoints": _FLAG, "prior_weight": _NUMBER}),
        "nsga2": Sampler("optuna.samplers:NSGAIISampler", {
            "population_size": _COUNT, "mutation_prob": _PROBABILITY, "crossover_prob": _PROBABILITY,
            "swapping_prob": _PROBABILITY}),
        "random": Sampler("optuna.samplers:RandomSampler", {}),
        "gp": Sampler("optuna.samplers:GPSampler", {"n_startup_trials": _COUNT, "deterministic_objective": _FLAG}),
    }),
    "pymoo": Driver("odimo_moo.study.pymoo_driver:run_pymoo", {
        "nsga2": Sampler("pymoo.algorithms.moo.nsga2:NSGA2", {"pop_size": _COUNT, "n_offsprings": _COUNT}),
    }),
}


def sampler_class(driver: str, name: str) -> Any:
    """The class implementing sampler ``name`` of ``driver`` (imports its module)."""
    return load(DRIVERS[driver].samplers[name].implementation)

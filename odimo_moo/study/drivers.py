"""The drivers of a study's outer loop and the samplers each offers, with their settings: the one
list of them (validation, ``odimo run`` and the docs' settings table read it). A driver's module is
imported only when a study runs it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

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


@dataclass(frozen=True)
class Driver:
    """A driver: how to run a study with it, and its samplers (the first is the default)."""

    run: Callable[[Any, bool], Any]
    samplers: Mapping[str, Sampler]

    @property
    def default_sampler(self) -> str:
        """The sampler a study gets when it names none."""
        return next(iter(self.samplers))


def _run_optuna(config: Any, progress: bool) -> Any:
    from .optuna_driver import run_optuna

    return run_optuna(config, progress)


def _run_pymoo(config: Any, progress: bool) -> Any:
    from .pymoo_driver import run_pymoo

    return run_pymoo(config, progress)


DRIVERS: dict[str, Driver] = {
    "optuna": Driver(_run_optuna, {
        "tpe": Sampler("optuna.samplers:TPESampler", {
            "n_startup_trials": _COUNT, "n_ei_candidates": _COUNT, "multivariate": _FLAG, "group": _FLAG,
            "constant_liar": _FLAG, "consider_endpoints": _FLAG, "prior_weight": _NUMBER}),
        "nsga2": Sampler("optuna.samplers:NSGAIISampler", {
            "population_size": _COUNT, "mutation_prob": _PROBABILITY, "crossover_prob": _PROBABILITY,
            "swapping_prob": _PROBABILITY}),
        "random": Sampler("optuna.samplers:RandomSampler", {}),
        "gp": Sampler("optuna.samplers:GPSampler", {"n_startup_trials": _COUNT, "deterministic_objective": _FLAG}),
    }),
    "pymoo": Driver(_run_pymoo, {
        "nsga2": Sampler("pymoo.algorithms.moo.nsga2:NSGA2", {"pop_size": _COUNT, "n_offsprings": _COUNT}),
    }),
}


def sampler_class(driver: str, name: str) -> Any:
    """The class implementing sampler ``name`` of ``driver`` (imports its module)."""
    import importlib

    module, _, attribute = DRIVERS[driver].samplers[name].implementation.partition(":")
    return getattr(importlib.import_module(module), attribute)

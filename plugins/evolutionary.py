"""Evolutionary mapping search (pymoo NSGA-II) on the one-shot supernet, a baseline for ODiMO.

Genome: channels per SoC unit for every searched layer (:class:`~odimo_moo.mapping_search.GenomeLayout`).
Integer operators as pymoo recommends (SBX and PM on floats with ``RoundingRepair``), then
:func:`~odimo_moo.mapping_search.repair_genome` so that every layer's counts add up to its channels.
The initial population is uniform random splits per layer (the distribution ``random_mapping``
samples), so both strategies start from the same coverage of the space. Objectives: validation
error of the warmed-up supernet with the mapping forced, and the network cost of the setup's metric.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from pymoo.algorithms.moo.nsga2 import NSGA2
from pymoo.core.evaluator import Evaluator
from pymoo.core.problem import Problem
from pymoo.core.repair import Repair
from pymoo.core.termination import NoTermination
from pymoo.operators.crossover.sbx import SBX
from pymoo.operators.mutation.pm import PM
from pymoo.operators.repair.rounding import RoundingRepair
from pymoo.problems.static import StaticProblem

from odimo_moo.errors import UsageError
from odimo_moo.hookspecs import hookimpl
from odimo_moo.mapping_search import GenomeLayout, random_genomes, repair_genome
from odimo_moo.oneshot import (SEARCH_DEFAULTS, OneShotSearch, SearchBudget, finetune_front,
                              fixed_mapping_recipe_defaults)
from odimo_moo.recipe import Recipe
from odimo_moo.strategy import Outcome, Strategy
from odimo_moo.workbench import Workbench

CROSSOVER_ETA = 3.0
MUTATION_ETA = 3.0


class LayoutRepair(Repair):
    """pymoo repair making every genome a valid mapping of the layout."""

    def __init__(self, layout: GenomeLayout) -> None:
        super().__init__()
        self.layout = layout

    def _do(self, problem: Problem, X: np.ndarray, **kwargs: Any) -> np.ndarray:
        return repair_genome(X, self.layout).numpy()


def evolve(search: OneShotSearch, population: int, seed: int) -> None:
    """Run NSGA-II (ask and tell) on ``search`` until its budget is spent; the archive holds the result."""
    layout = search.layout
    upper = np.repeat(np.asarray(layout.channels), layout.num_units)
    problem = Problem(n_var=layout.size, n_obj=2, xl=np.zeros(layout.size), xu=upper, vtype=int)
    initial = random_genomes(layout, population, torch.Generator().manual_seed(seed)).numpy()
    algorithm = NSGA2(pop_size=population, sampling=initial,
                      crossover=SBX(prob=1.0, eta=CROSSOVER_ETA, vtype=float, repair=RoundingRepair()),
                      mutation=PM(prob=1.0, eta=MUTATION_ETA, vtype=float, repair=RoundingRepair()),
                      repair=LayoutRepair(layout), eliminate_duplicates=True)
    algorithm.setup(problem, termination=NoTermination(), seed=seed, verbose=False)
    while not search.exhausted:
        offspring = algorithm.ask()
        scored = search.score(offspring.get("X"))
        if not scored:
            break
        offspring = offspring[:len(scored)]
        objectives = np.array([[1.0 - s.val_accuracy, s.cost] for s in scored])
        Evaluator().eval(StaticProblem(problem, F=objectives), offspring)
        algorithm.tell(infills=offspring)


class EvolutionaryMapping(Strategy):
    name = "evolutionary"
    description = ("NSGA-II (pymoo) over per-layer channel splits, scored one-shot on the warmed-up supernet; "
                   "front points trained like every method's (search + fine-tune epochs)")

    def defaults(self) -> dict[str, Any]:
        return {**fixed_mapping_recipe_defaults(), **SEARCH_DEFAULTS, "population": 20}

    def run(self, bench: Workbench, params: Mapping[str, Any], workdir: Path) -> list[Outcome]:
        values = {**self.defaults(), **params}
        budget = SearchBudget.pop_from(values)
        population = int(values.pop("population"))
        if population < 2:
            raise UsageError(f"population must be >= 2, got {population}")
        recipe = Recipe.from_params(values)
        model, _ = bench.warm_supernet(recipe)
        search = OneShotSearch(bench, model, budget, recipe.batch_size)
        evolve(search, population, bench.setup.seed)
        return finetune_front(bench, recipe, search, workdir, self.name,
                              {**params, "population": population})


@hookimpl
def odimo_register_strategies() -> list[Strategy]:
    return [EvolutionaryMapping()]

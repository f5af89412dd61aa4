"""NSGA-II (pymoo) over integer mapping genomes, ask and tell against a one-shot search.

Integer operators as pymoo recommends (SBX and PM on floats with ``RoundingRepair``), then
:func:`~odimo_moo.genome.repair_genome` so that every layer's counts add up to its channels.
The initial population is uniform random splits per layer. Kept apart from the ``evolutionary``
strategy plugin so that loading plugins does not import pymoo.
"""

from __future__ import annotations

from typing import Any

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

from .genome import GenomeLayout, random_genomes, repair_genome
from .oneshot import OneShotSearch

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

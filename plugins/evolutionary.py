"""Evolutionary mapping search (pymoo NSGA-II) on the one-shot supernet, a baseline for ODiMO.

Genome: channels per SoC unit for every searched layer (:class:`~odimo_moo.genome.GenomeLayout`);
the evolution itself is :func:`odimo_moo.nsga2_mapping.evolve`. The initial population is uniform
random splits per layer (the distribution ``random_mapping`` samples), so both strategies start from
the same coverage of the space. Objectives: validation
error of the warmed-up supernet with the mapping forced, and the network cost of the setup's metric.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from odimo_moo.errors import UsageError
from odimo_moo.hookspecs import hookimpl
from odimo_moo.strategy import Outcome, Strategy

if TYPE_CHECKING:  # torch-heavy: imported where a strategy runs, so that `odimo plugins` lists it fast
    from odimo_moo.workbench import Workbench


class EvolutionaryMapping(Strategy):
    name = "evolutionary"
    description = ("NSGA-II (pymoo) over per-layer channel splits, scored one-shot on the warmed-up supernet; "
                   "front points trained like every method's (search + fine-tune epochs)")

    def defaults(self) -> dict[str, Any]:
        from odimo_moo.oneshot import SEARCH_DEFAULTS
        from odimo_moo.recipe import Recipe

        return {**Recipe.fixed_mapping_defaults(), **SEARCH_DEFAULTS, "population": 20}

    def run(self, bench: Workbench, params: Mapping[str, Any], workdir: Path) -> list[Outcome]:
        from odimo_moo import phases
        from odimo_moo.nsga2_mapping import evolve
        from odimo_moo.oneshot import OneShotSearch, SearchBudget, finetune_front
        from odimo_moo.recipe import Recipe

        values = {**self.defaults(), **params}
        budget = SearchBudget.pop_from(values)
        population = int(values.pop("population"))
        if population < 2:
            raise UsageError(f"population must be >= 2, got {population}")
        recipe = Recipe.from_params(values)
        model, _ = phases.warmup(bench, recipe)
        search = OneShotSearch(bench, model, budget, recipe.batch_size)
        evolve(search, population, bench.setup.seed)
        return finetune_front(bench, recipe, search, workdir, self.name,
                              {**params, "population": population})


@hookimpl
def odimo_register_strategies() -> list[Strategy]:
    return [EvolutionaryMapping()]

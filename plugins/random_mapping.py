"""Random mapping search on the one-shot supernet: the control baseline of the evolutionary search.

Same genome, scoring, budget and fine-tuning as ``evolutionary``; candidates are uniform random
splits per layer (every split 0..C equally likely for two units), drawn with the setup's seed.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from odimo_moo.hookspecs import hookimpl
from odimo_moo.strategy import Outcome, Strategy

if TYPE_CHECKING:  # torch-heavy: imported where a strategy runs, so that `odimo plugins` lists it fast
    from odimo_moo.workbench import Workbench

BATCH = 64


class RandomMapping(Strategy):
    name = "random_mapping"
    description = ("uniform random per-layer splits scored one-shot on the warmed-up supernet; front points trained "
                   "(search + fine-tune epochs)")

    def defaults(self) -> dict[str, Any]:
        from odimo_moo.oneshot import SEARCH_DEFAULTS
        from odimo_moo.recipe import Recipe

        return {**Recipe.fixed_mapping_defaults(), **SEARCH_DEFAULTS}

    def run(self, bench: Workbench, params: Mapping[str, Any], workdir: Path) -> list[Outcome]:
        import torch

        from odimo_moo import phases
        from odimo_moo.genome import random_genomes
        from odimo_moo.oneshot import OneShotSearch, SearchBudget, finetune_front
        from odimo_moo.recipe import Recipe

        values = {**self.defaults(), **params}
        budget = SearchBudget.pop_from(values)
        recipe = Recipe.from_params(values)
        model, _ = phases.warmup(bench, recipe)
        search = OneShotSearch(bench, model, budget, recipe.batch_size)
        generator = torch.Generator().manual_seed(bench.setup.seed)
        while not search.exhausted:
            search.score(random_genomes(search.layout, BATCH, generator))
        return finetune_front(bench, recipe, search, workdir, self.name, params)


@hookimpl
def odimo_register_strategies() -> list[Strategy]:
    return [RandomMapping()]

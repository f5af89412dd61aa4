"""The differentiable ODiMO search: the shared warmup, the search on task loss + lambda * cost, and
the fine-tune under the searched mapping (:mod:`odimo_moo.phases`), then the report."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from odimo_moo.hookspecs import hookimpl
from odimo_moo.strategy import Outcome, Strategy

if TYPE_CHECKING:  # torch-heavy: imported where a strategy runs, so that `odimo plugins` lists it fast
    from odimo_moo.workbench import Workbench


class ODiMOSearch(Strategy):
    name = "odimo"
    description = "gradient search of per-channel mappings (ODiMO), one network per lambda"

    def defaults(self) -> dict[str, Any]:
        from odimo_moo.recipe import Recipe

        return Recipe().as_dict()

    def run(self, bench: Workbench, params: Mapping[str, Any], workdir: Path) -> list[Outcome]:
        from odimo_moo import phases
        from odimo_moo.recipe import Recipe

        recipe = Recipe.from_params(params)
        model, history = phases.warmup(bench, recipe)
        history = phases.search(bench, model, recipe, workdir, history)
        if recipe.finetune_from == "warmup":  # the searched mapping, trained like a fixed one from the warmup
            mapping = {name: layer.unit_indices[layer.units_of_channels()].cpu()
                       for name, layer in model.split_layers()}
            model, _ = phases.warmup(bench, recipe)
            model.force_mapping(mapping)
            history, selected = phases.train_mapping(bench, model, recipe, workdir, history)
        else:
            history, selected = phases.finetune(bench, model, recipe, workdir, history)
        label = f"target={recipe.cost_target:g}" if recipe.cost_target > 0 else f"lambda={recipe.lambda_:g}"
        return [bench.report(model, workdir, self.name, params, history, label, selected_epoch=selected)]


@hookimpl
def odimo_register_strategies() -> list[Strategy]:
    return [ODiMOSearch()]

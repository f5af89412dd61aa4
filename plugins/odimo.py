"""The differentiable ODiMO search: warmup (shared, cached), search on task loss + lambda * cost,
fine-tune under the frozen mapping, export."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from odimo_moo.hookspecs import hookimpl
from odimo_moo.strategy import Outcome, Strategy

if TYPE_CHECKING:  # torch-heavy: imported where a strategy runs, so that `odimo plugins` lists it fast
    import torch

    from odimo_moo.workbench import Workbench


#: lambda at the start of a search to a cost target (unless the recipe gives one): low, so that the
#: cost comes down to the target gradually rather than overshooting it (DIANA saturates at ~1).
TARGET_START_WEIGHT = 0.01


class ODiMOSearch(Strategy):
    name = "odimo"
    description = "gradient search of per-channel mappings (ODiMO), one network per lambda"

    def defaults(self) -> dict[str, Any]:
        from odimo_moo.recipe import Recipe

        return Recipe().as_dict()

    def run(self, bench: Workbench, params: Mapping[str, Any], workdir: Path) -> list[Outcome]:
        from odimo_moo.checkpoint import atomic_write_json
        from odimo_moo.cost_target import CostTarget
        from odimo_moo.recipe import Recipe
        from odimo_moo.target_landing import land_on_target
        from odimo_moo.training import PhaseSpec, assignment_optimizer, weights_optimizer

        recipe = Recipe.from_params(params)
        model, warmup_history = bench.warm_supernet(recipe)
        runner = bench.runner(model, recipe, workdir / "checkpoints")
        runner.history = list(warmup_history)

        def optimizers() -> list[torch.optim.Optimizer]:
            return [weights_optimizer(model, recipe), assignment_optimizer(model, recipe)]

        target = None
        if recipe.cost_target > 0:
            target = CostTarget(recipe.cost_target / model.reference_cost(),
                                weight=recipe.cost_weight or TARGET_START_WEIGHT)
        runner.run(PhaseSpec("search", recipe.search_epochs, optimizers, cost_weight_at=recipe.lambda_at,
                             on_epoch_start=lambda epoch: model.set_temperature(recipe.temperature_at(epoch)),
                             lr_schedule=recipe.lr_schedule, cost_target=target))
        label = f"target={recipe.cost_target:g}" if target else f"lambda={recipe.cost_weight:g}"
        if target is not None:
            landing = land_on_target(model, recipe.cost_target)
            atomic_write_json(workdir / "target_landing.json", landing.to_dict())
        if recipe.finetune_from == "warmup":
            mapping = {name: layer.unit_indices[layer.units_of_channels()].cpu()
                       for name, layer in model.split_layers()}
            model, _ = bench.warm_supernet(recipe)
            model.force_mapping(mapping)
            return [bench.train_mapping_and_report(model, recipe, workdir, self.name, params, runner.history,
                                                   label=label)]
        return [bench.finetune_and_report(model, recipe, workdir, self.name, params, runner.history, label=label)]


@hookimpl
def odimo_register_strategies() -> list[Strategy]:
    return [ODiMOSearch()]

"""The differentiable ODiMO search: the shared warmup, the search on task loss + lambda * cost, with
``polish`` whole layers then moved onto one unit where that lowers the search's objective
(:mod:`odimo_moo.mapping_polish`, recorded in ``polish.json``), and the fine-tune under the searched
mapping (:mod:`odimo_moo.phases`), then the report."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from odimo_moo.errors import UsageError
from odimo_moo.hookspecs import hookimpl
from odimo_moo.strategy import Outcome, Strategy
from odimo_moo.study.problems import coerce

if TYPE_CHECKING:  # torch-heavy: imported where a strategy runs, so that `odimo plugins` lists it fast
    from odimo_moo.recipe import Recipe
    from odimo_moo.searchable import ODiMO
    from odimo_moo.workbench import Workbench

#: The strategy's one parameter outside the training recipe (not part of a run's identity).
POLISH = "polish"


def pop_polish(params: dict[str, Any]) -> bool:
    """Take ``polish`` (a boolean, default false) out of the strategy's params."""
    value = params.pop(POLISH, False)
    try:
        return bool(coerce(value, bool))
    except ValueError:
        raise UsageError(f"{POLISH} must be true or false, got {value!r}") from None


def polish(bench: Workbench, model: ODiMO, recipe: Recipe, workdir: Path) -> None:
    """Polish the searched mapping on fixed training batches at the recipe's lambda; write ``polish.json``."""
    from odimo_moo.batchnorm import CALIBRATION_BATCHES
    from odimo_moo.checkpoint import atomic_write_json
    from odimo_moo.mapping_polish import fixed_batches, polish_mapping

    batches = fixed_batches(bench.data.train, CALIBRATION_BATCHES, recipe.batch_size, bench.setup.seed)
    report = polish_mapping(model, batches, recipe.lambda_, bench.device)
    atomic_write_json(workdir / "polish.json", report.to_dict())


class ODiMOSearch(Strategy):
    name = "odimo"
    description = "gradient search of per-channel mappings (ODiMO), one network per lambda"

    def defaults(self) -> dict[str, Any]:
        from odimo_moo.recipe import Recipe

        return {**Recipe().as_dict(), POLISH: False}

    def run(self, bench: Workbench, params: Mapping[str, Any], workdir: Path) -> list[Outcome]:
        from odimo_moo import phases
        from odimo_moo.recipe import Recipe

        values = dict(params)
        polished = pop_polish(values)
        recipe = Recipe.from_params(values)
        if polished and recipe.cost_target > 0:
            raise UsageError(f"{POLISH}=true needs a search at a fixed lambda, not to a cost target "
                             f"(the search lands on the target itself)")
        model, history = phases.warmup(bench, recipe)
        history = phases.search(bench, model, recipe, workdir, history)
        if polished:
            polish(bench, model, recipe, workdir)
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

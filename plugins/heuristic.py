"""Heuristic mapping baselines: fixed mappings chosen without looking at accuracy, each trained.

Param ``mapping`` picks them: ``all`` (default: every one that applies to the setup) or a
comma-separated list of names:

* ``all:<unit>`` -- every channel of every searched layer on one unit (only units able to run every
  searched layer);
* the SoC's manual mappings, registered by SoC plugins with the ``odimo_register_heuristics`` hook
  (DIANA: ``first_last_digital``; Darkside's standard MobileNetV1 mapping is ``all:dwe`` in its search space);
* ``min_latency`` -- per layer, the integer split with the lowest latency;
* ``balanced`` -- per layer, the split whose units finish as close together as possible.

Heuristics giving the same mapping are trained once, labelled with all their names joined by ``=``.
Each mapping is forced onto a fresh copy of the shared warmed-up supernet and trained with the same
recipe and epochs as every strategy's points (``search_epochs + finetune_epochs`` after the warmup);
one outcome per distinct mapping.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

from odimo_moo.errors import UsageError
from odimo_moo.hookspecs import hookimpl
from odimo_moo.strategy import Outcome, Strategy

if TYPE_CHECKING:  # torch-heavy: imported where a strategy runs, so that `odimo plugins` lists it fast
    from odimo_moo.layer_splits import SplitFinder
    from odimo_moo.searchable import ODiMO
    from odimo_moo.workbench import Workbench

Counts = dict[str, list[int]]
EVERY = "all"


def per_layer_counts(model: ODiMO, finder: SplitFinder) -> Counts:
    """Counts (on each layer's own units) from a per-layer split finder applied to every searched layer."""
    return {name: list(finder(model.soc, layer.spec, layer.unit_indices.tolist()))
            for name, layer in model.split_layers()}


def single_unit_counts(model: ODiMO, unit: str) -> Counts:
    """Every channel of every searched layer on ``unit``."""
    index = model.soc.unit_index(unit)
    return {name: [layer.channels if int(u) == index else 0 for u in layer.unit_indices.tolist()]
            for name, layer in model.split_layers()}


def catalogue(bench: Workbench, model: ODiMO) -> dict[str, Callable[[], Counts]]:
    """Every heuristic that applies to the setup, by name, as a function computing its counts."""
    from odimo_moo.layer_splits import balanced_split, min_latency_split
    from odimo_moo.manual_mapping import manual_counts

    assert bench.registry is not None
    found: dict[str, Callable[[], Counts]] = {}
    for index, unit in enumerate(model.soc.unit_names):
        if all(index in layer.unit_indices.tolist() for _, layer in model.split_layers()):
            found[f"all:{unit}"] = lambda unit=unit: single_unit_counts(model, unit)
    for name, entry in bench.registry.heuristics().items():
        if entry.obj.soc == model.soc.name:
            found[name] = lambda mapping=entry.obj: manual_counts(model, mapping)
    for name, finder in (("min_latency", min_latency_split), ("balanced", balanced_split)):
        found[name] = lambda finder=finder: per_layer_counts(model, finder)
    return found


def folder_name(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+-]+", "-", label.replace("=", "+"))


class HeuristicMappings(Strategy):
    name = "heuristic"
    uses_metric = False  # its mappings (one unit, manual rules, per-layer latency splits) ignore the metric
    description = ("fixed mappings ignoring accuracy (all on one unit, the SoC's manual heuristics, per-layer "
                   "min-latency and balanced splits), each trained for search + fine-tune epochs")

    def defaults(self) -> dict[str, Any]:
        from odimo_moo.recipe import Recipe

        return {"mapping": EVERY, **Recipe.fixed_mapping_defaults()}

    def run(self, bench: Workbench, params: Mapping[str, Any], workdir: Path) -> list[Outcome]:
        from odimo_moo import phases
        from odimo_moo.recipe import Recipe

        values = {**self.defaults(), **params}
        choice = str(values.pop("mapping"))
        recipe = Recipe.from_params(values)
        known = catalogue(bench, bench.supernet(recipe))
        names = list(known) if choice == EVERY else [n.strip() for n in choice.split(",") if n.strip()]
        unknown = [n for n in names if n not in known]
        if unknown or not names:
            raise UsageError(f"heuristic mapping {', '.join(unknown) or repr(choice)} does not apply to SoC "
                             f"{bench.setup.soc!r} with model {bench.setup.model!r}; choose '{EVERY}' or among: "
                             f"{', '.join(known)}")
        groups: dict[tuple, tuple[Counts, list[str]]] = {}
        for name in names:
            counts = known[name]()
            key = tuple(tuple(c) for c in counts.values())
            groups.setdefault(key, (counts, []))[1].append(name)
        outcomes = []
        for counts, group in groups.values():
            label = "=".join(group)
            model, history = phases.warmup(bench, recipe)
            model.force_counts(counts)
            folder = workdir / folder_name(label)
            history, selected = phases.train_mapping(bench, model, recipe, folder, history)
            outcomes.append(bench.report(model, folder, self.name, {**params, "mapping": label}, history, label,
                                         selected_epoch=selected))
        return outcomes


@hookimpl
def odimo_register_strategies() -> list[Strategy]:
    return [HeuristicMappings()]

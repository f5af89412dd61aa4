"""Hand-written mappings of a SoC (e.g. its paper's heuristic baselines), registered by SoC plugins
through the ``odimo_register_heuristics`` hook and run by the ``heuristic`` strategy."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Mapping, Sequence

from .errors import UsageError
from .layer_spec import LayerSpec

if TYPE_CHECKING:
    from .searchable import ODiMO


@dataclass(frozen=True)
class SearchedLayer:
    """What a manual mapping rule sees of one searched layer."""

    name: str
    spec: LayerSpec
    units: tuple[str, ...]


ManualRule = Callable[[Sequence[SearchedLayer]], Mapping[str, Mapping[str, int]]]


@dataclass(frozen=True)
class ManualMapping:
    """A SoC's hand-written mapping (e.g. a paper's heuristic baseline), registered by SoC plugins
    through the ``odimo_register_heuristics`` hook.

    ``rule`` gets the searched layers in model order and returns, per layer name, channels per unit
    name (units left out get 0); the counts of every layer must add up to its output channels.
    """

    name: str
    soc: str
    description: str
    rule: ManualRule


def searched_layers(model: "ODiMO") -> list[SearchedLayer]:
    """The model's searched layers as manual mapping rules see them."""
    return [SearchedLayer(name, layer.spec, tuple(model.soc.units[u].name for u in layer.unit_indices.tolist()))
            for name, layer in model.split_layers()]


def manual_counts(model: "ODiMO", mapping: ManualMapping) -> dict[str, list[int]]:
    """The counts (on each layer's own units, for ``force_counts``) a manual mapping gives ``model``."""
    layers = searched_layers(model)
    chosen = mapping.rule(layers)
    counts = {}
    for layer in layers:
        per_unit = dict(chosen.get(layer.name, {}))
        unknown = set(per_unit) - set(layer.units)
        if unknown:
            raise UsageError(f"heuristic {mapping.name!r} puts channels of layer {layer.name!r} on "
                             f"{', '.join(sorted(unknown))}, which cannot run it (its units: {', '.join(layer.units)})")
        counts[layer.name] = [int(per_unit.get(unit, 0)) for unit in layer.units]
        if sum(counts[layer.name]) != layer.spec.out_channels or min(counts[layer.name]) < 0:
            raise UsageError(f"heuristic {mapping.name!r} gives layer {layer.name!r} counts {per_unit}, which do "
                             f"not add up to its {layer.spec.out_channels} channels")
    return counts

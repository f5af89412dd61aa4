"""Pure mapping utilities: exact per-layer splits, the continuous latency bound, and integer genomes.

Per layer (a :class:`LayerSpec` and the SoC units allowed to run it):

* :func:`min_latency_split` -- the integer split with the lowest hard-max latency;
* :func:`balanced_split` -- the integer split whose units finish as close together as possible;
* :func:`ideal_latency_bound` -- the continuous relaxation's finish time, a lower bound of both.

Whole networks (for evolutionary and random mapping search): a *genome* is a flat integer vector
holding, for every searched layer in model order, one gene per SoC unit: the number of that layer's
output channels the unit produces (:class:`GenomeLayout`). :func:`repair_genome` turns any vector into
a valid one, :func:`random_genomes` draws uniform random splits, :func:`genome_to_counts` gives the
counts :meth:`odimo_moo.searchable.ODiMO.force_counts` takes.

Every search runs vectorized over all candidate splits (no Python loop per channel). The cycle
formulas of a unit are assumed non-decreasing in its channel count (true of every built-in SoC).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .errors import UsageError
from .layer_spec import LayerSpec, LayerTable
from .soc import SoC

if TYPE_CHECKING:
    from .searchable import ODiMO

#: A per-layer split finder: ``(soc, spec, units) -> channels per unit``.
SplitFinder = Callable[[SoC, LayerSpec, Sequence[int]], Sequence[int]]

#: Largest number of candidate splits enumerated at once; beyond it an exact threshold search runs.
ENUMERATION_LIMIT = 1_000_000
_GRID_POINTS = 4097
_BISECTION_STEPS = 40
_RELATIVE_TOLERANCE = 1e-7


# ----------------------------------------------------------------------------- one layer
def layer_units(soc: SoC, spec: LayerSpec, units: Sequence[int] | None = None) -> tuple[int, ...]:
    """The SoC unit indices a layer may use: ``units`` checked, or every unit supporting ``spec``."""
    chosen = soc.supporting_units(spec) if units is None else tuple(int(u) for u in units)
    if not chosen:
        raise UsageError(f"SoC {soc.name!r}: no unit can run layer '{spec.describe()}'")
    for index in chosen:
        if not 0 <= index < len(soc.units):
            raise UsageError(f"SoC {soc.name!r} has no unit index {index} (it has {len(soc.units)} units)")
        if not soc.units[index].supports(spec):
            raise UsageError(f"unit {soc.units[index].name!r} of SoC {soc.name!r} cannot run '{spec.describe()}'")
    if len(set(chosen)) != len(chosen):
        raise UsageError(f"units {list(chosen)} name a unit twice")
    return chosen


def _repeat(spec: LayerSpec, count: int) -> LayerTable:
    """A table holding ``spec`` ``count`` times (one formula call evaluates ``count`` candidates)."""
    table = LayerTable.from_specs([spec])
    return LayerTable(**{f.name: getattr(table, f.name).expand(count) for f in dataclasses.fields(table)})


def unit_times(soc: SoC, spec: LayerSpec, units: Sequence[int], channels: torch.Tensor) -> torch.Tensor:
    """Cycles of each of ``units`` running ``channels[i]`` output channels alone: ``[len(units), N]``."""
    channels = channels.to(torch.float64)
    table = _repeat(spec, channels.numel())
    with torch.no_grad():
        return torch.stack([soc.units[u].cycles(table, channels) for u in units])


def compositions(total: int, parts: int) -> torch.Tensor:
    """Every way to write ``total`` as an ordered sum of ``parts`` non-negative integers, ``[N, parts]``
    with ``N = comb(total + parts - 1, parts - 1)`` (stars and bars)."""
    if parts == 1:
        return torch.tensor([[total]])
    bars = torch.combinations(torch.arange(total + parts - 1), r=parts - 1)
    if bars.dim() == 1:
        bars = bars.unsqueeze(1)
    edges = torch.cat([torch.full((bars.shape[0], 1), -1), bars,
                       torch.full((bars.shape[0], 1), total + parts - 1)], dim=1)
    return torch.diff(edges, dim=1) - 1


@dataclass(frozen=True)
class SplitCosts:
    """Costs of candidate splits of one layer: per-unit cycles ``[k, N]``, latency and energy ``[N]``."""

    unit_cycles: torch.Tensor
    latency_cycles: torch.Tensor
    energy_uj: torch.Tensor


def split_costs(soc: SoC, spec: LayerSpec, units: Sequence[int], counts: torch.Tensor) -> SplitCosts:
    """Hard-max latency and the SoC's energy of candidate splits ``counts[N, len(units)]``."""
    counts = torch.as_tensor(counts)
    times = unit_times(soc, spec, units, torch.arange(spec.out_channels + 1))
    return _costs_from_times(soc, units, times, counts.long())


def _costs_from_times(soc: SoC, units: Sequence[int], times: torch.Tensor, counts: torch.Tensor) -> SplitCosts:
    cycles = torch.gather(times, 1, counts.t())
    full = torch.zeros(len(soc.units), counts.shape[0], dtype=torch.float64)
    full[list(units)] = cycles
    costs = soc.layer_costs(full)
    return SplitCosts(cycles, costs["latency"], costs["energy"])


def _lexicographic_argmin(*keys: torch.Tensor) -> int:
    """Index of the smallest entry of ``keys[0]``, ties broken by the following keys, then by index."""
    candidates = torch.ones_like(keys[0], dtype=torch.bool)
    for key in keys:
        best = key[candidates].min()
        candidates &= key == best
    return int(torch.nonzero(candidates)[0])


def _reachable_sums(allowed: torch.Tensor) -> list[torch.Tensor]:
    """``reach[j][s]``: whether the first ``j`` units can take exactly ``s`` channels with unit ``i``
    taking a count ``n`` where ``allowed[i, n]``. Each step is one boolean convolution."""
    size = allowed.shape[1]
    reach = [torch.zeros(size, dtype=torch.float64)]
    reach[0][0] = 1.0
    for row in allowed.to(torch.float64):
        padded = F.pad(reach[-1].view(1, 1, -1), (size - 1, 0))
        summed = F.conv1d(padded, row.flip(0).view(1, 1, -1)).view(-1)
        reach.append((summed > 0.5).to(torch.float64))
    return reach


def _split_within(allowed: torch.Tensor) -> list[int] | None:
    """A split of ``allowed.shape[1] - 1`` channels with unit ``j`` taking an allowed count, or None."""
    total = allowed.shape[1] - 1
    reach = _reachable_sums(allowed)
    if reach[-1][total] < 0.5:
        return None
    counts = []
    remaining = total
    for j in range(allowed.shape[0] - 1, -1, -1):
        before = reach[j][:remaining + 1].flip(0)  # before[n] = reach[j][remaining - n]
        options = allowed[j, :remaining + 1] & (before > 0.5)
        n = int(torch.nonzero(options)[0])
        counts.append(n)
        remaining -= n
    return counts[::-1]


def _enumerable(channels: int, parts: int, limit: int) -> bool:
    return math.comb(channels + parts - 1, parts - 1) <= limit


def min_latency_split(soc: SoC, spec: LayerSpec, units: Sequence[int] | None = None, *,
                      max_candidates: int = ENUMERATION_LIMIT) -> tuple[int, ...]:
    """The integer split of ``spec``'s output channels over ``units`` with the lowest hard-max latency.

    Returns channels per unit in the order of ``units`` (default: every unit supporting the layer).
    Up to ``max_candidates`` splits (always the case for 2 units: C + 1 of them) are enumerated in
    one tensor op and ties are broken towards lower energy. Beyond that, an exact threshold search:
    binary search over the distinct unit finish times T for the smallest T such that every unit can
    take a count finishing by T and the counts add up to C (a reachability DP over channel sums).
    """
    units = layer_units(soc, spec, units)
    channels = spec.out_channels
    times = unit_times(soc, spec, units, torch.arange(channels + 1))
    if _enumerable(channels, len(units), max_candidates):
        candidates = compositions(channels, len(units))
        costs = _costs_from_times(soc, units, times, candidates)
        return tuple(candidates[_lexicographic_argmin(costs.latency_cycles, costs.energy_uj)].tolist())
    thresholds = torch.unique(times)
    low, high = 0, thresholds.numel() - 1  # the largest threshold allows every split
    while low < high:
        middle = (low + high) // 2
        if _split_within(times <= thresholds[middle]) is None:
            low = middle + 1
        else:
            high = middle
    split = _split_within(times <= thresholds[low])
    assert split is not None
    return tuple(split)


def balanced_split(soc: SoC, spec: LayerSpec, units: Sequence[int] | None = None, *,
                   max_candidates: int = ENUMERATION_LIMIT) -> tuple[int, ...]:
    """The integer split whose units finish as close together as channel granularity allows.

    Minimises ``max_k t_k - min_k t_k`` over all splits (a unit given no channels finishes at 0).
    Returns channels per unit in the order of ``units``. Up to ``max_candidates`` splits are
    enumerated, ties broken by lower latency, then lower energy. Beyond that, an exact two-pointer
    search over windows ``[lo, hi]`` of distinct finish times, each window checked by the same
    reachability DP as :func:`min_latency_split` (ties go to the window with the lowest ``lo``).
    """
    units = layer_units(soc, spec, units)
    channels = spec.out_channels
    times = unit_times(soc, spec, units, torch.arange(channels + 1))
    if _enumerable(channels, len(units), max_candidates):
        candidates = compositions(channels, len(units))
        costs = _costs_from_times(soc, units, times, candidates)
        spread = costs.latency_cycles - costs.unit_cycles.min(dim=0).values
        best = _lexicographic_argmin(spread, costs.latency_cycles, costs.energy_uj)
        return tuple(candidates[best].tolist())
    values = torch.unique(times)
    best_split: list[int] | None = None
    best_spread = math.inf
    top = 0
    for bottom in range(values.numel()):
        while top < values.numel():
            split = _split_within((times >= values[bottom]) & (times <= values[top]))
            if split is not None:
                break
            top += 1
        if top == values.numel():
            break
        spread = float(values[top] - values[bottom])
        if spread < best_spread:
            best_spread, best_split = spread, split
    assert best_split is not None
    return tuple(best_split)


def _capacities(soc: SoC, spec: LayerSpec, units: Sequence[int], deadlines: torch.Tensor) -> torch.Tensor:
    """Per unit and deadline T, the most (real-valued) channels the unit finishes by T: ``[k, B]``.

    Bisection on the channel count, vectorized over deadlines; the result errs upwards by at most
    ``C / 2**40`` so that a deadline found infeasible is certainly infeasible.
    """
    channels = float(spec.out_channels)
    table = _repeat(spec, deadlines.numel())
    rows = []
    with torch.no_grad():
        for u in units:
            unit = soc.units[u]
            low = torch.zeros_like(deadlines)
            high = torch.full_like(deadlines, channels)
            everything = unit.cycles(table, high) <= deadlines
            for _ in range(_BISECTION_STEPS):
                middle = (low + high) / 2
                fits = unit.cycles(table, middle) <= deadlines
                low = torch.where(fits, middle, low)
                high = torch.where(fits, high, middle)
            rows.append(torch.where(everything, torch.full_like(high, channels), high))
    return torch.stack(rows)


def ideal_latency_bound(soc: SoC, spec: LayerSpec, units: Sequence[int] | None = None) -> float:
    """The ideal (physical) lower bound of the layer's latency on ``units``: the continuous relaxation.

    Channel counts may be real numbers; the bound is the smallest finish time T at which the units,
    each given as many (real-valued) channels as it completes by T under its own cycle formula, can
    together produce all C output channels -- where the units finish together when the formulas are
    continuous. Found by bisection on T (vectorized over a grid of deadlines, refined until the
    bracket is within 1e-7 relative) and returned from below, so it never exceeds the latency of
    any integer split, :func:`min_latency_split`'s included.
    """
    units = layer_units(soc, spec, units)
    channels = float(spec.out_channels)

    def feasible(deadlines: torch.Tensor) -> torch.Tensor:
        return _capacities(soc, spec, units, deadlines).sum(dim=0) >= channels

    alone = unit_times(soc, spec, units, torch.tensor([channels]))[:, 0]
    low, high = 0.0, float(alone.min())
    if bool(feasible(torch.tensor([low], dtype=torch.float64))[0]):
        return low
    while high - low > _RELATIVE_TOLERANCE * high:
        grid = torch.linspace(low, high, _GRID_POINTS, dtype=torch.float64)
        first = int(torch.nonzero(feasible(grid))[0])
        low, high = float(grid[first - 1]), float(grid[first])
    return low


# ----------------------------------------------------------------------------- whole networks
@dataclass(frozen=True)
class GenomeLayout:
    """Layout of a whole-network mapping as a flat integer vector.

    For every searched layer (``names``, in model order) there are ``len(unit_names)`` genes, one per
    SoC unit: the channels of that layer the unit produces. ``allowed[l][k]`` says whether layer ``l``
    may use unit ``k``; a valid genome has zeros where it may not and each layer's genes add up to
    ``channels[l]``.
    """

    names: tuple[str, ...]
    channels: tuple[int, ...]
    allowed: tuple[tuple[bool, ...], ...]
    unit_names: tuple[str, ...]

    def __post_init__(self) -> None:
        if not (len(self.names) == len(self.channels) == len(self.allowed)):
            raise UsageError("genome layout: names, channels and allowed units must have one entry per layer")
        for name, row in zip(self.names, self.allowed):
            if len(row) != len(self.unit_names) or not any(row):
                raise UsageError(f"genome layout: layer {name!r} must allow at least one of "
                                 f"{len(self.unit_names)} units")

    @classmethod
    def from_model(cls, model: "ODiMO") -> "GenomeLayout":
        allowed = []
        for name in model.split_names:
            usable = set(model.split_layer(name).unit_indices.tolist())
            allowed.append(tuple(k in usable for k in range(len(model.soc.units))))
        return cls(tuple(model.split_names), tuple(model.split_layer(n).channels for n in model.split_names),
                   tuple(allowed), model.soc.unit_names)

    @property
    def num_layers(self) -> int:
        return len(self.names)

    @property
    def num_units(self) -> int:
        return len(self.unit_names)

    @property
    def size(self) -> int:
        return self.num_layers * self.num_units

    def allowed_tensor(self) -> torch.Tensor:
        return torch.tensor(self.allowed, dtype=torch.bool).view(self.num_layers, self.num_units)

    def channels_tensor(self) -> torch.Tensor:
        return torch.tensor(self.channels, dtype=torch.long)


def repair_genome(genome: torch.Tensor | np.ndarray | Sequence, layout: GenomeLayout) -> torch.Tensor:
    """Make genomes valid: integer, >= 0, zero on units a layer cannot use, each layer adding up to
    its channel count.

    ``genome`` has shape ``[..., layout.size]``; the result has the same shape (int64). Genes are
    rounded and clipped to ``[0, C]``, a layer with no channel left on any usable unit is split
    evenly, and the counts are rescaled to add up to C by the largest-remainder method (in exact
    integer arithmetic; ties go to the lower unit index). A valid genome is returned unchanged.
    """
    values = torch.as_tensor(np.asarray(genome, dtype=np.float64))
    if values.shape[-1:] != (layout.size,):
        raise UsageError(f"a genome of this model has {layout.size} genes ({layout.num_layers} layers x "
                         f"{layout.num_units} units), got shape {tuple(values.shape)}")
    if not bool(torch.isfinite(values).all()):
        raise UsageError("genome holds NaN or infinite genes")
    shape = values.shape
    allowed = layout.allowed_tensor()
    channels = layout.channels_tensor().view(layout.num_layers, 1)
    genes = torch.round(values).long().view(-1, layout.num_layers, layout.num_units)
    genes = torch.minimum(genes.clamp(min=0), channels) * allowed
    total = genes.sum(dim=-1, keepdim=True)
    genes = torch.where(total == 0, allowed.long().expand_as(genes), genes)
    total = genes.sum(dim=-1, keepdim=True)
    scaled = genes * channels
    repaired = scaled // total
    remainder = scaled % total
    deficit = channels.view(1, -1) - repaired.sum(dim=-1)
    order = torch.argsort(-remainder, dim=-1, stable=True)
    rank = torch.argsort(order, dim=-1, stable=True)
    repaired = repaired + (rank < deficit.unsqueeze(-1)).long()
    return repaired.view(shape)


def random_genomes(layout: GenomeLayout, count: int, generator: torch.Generator) -> torch.Tensor:
    """``count`` genomes, each layer split at uniform random cut points among its usable units
    (for two units: every split 0..C equally likely), ``[count, layout.size]``."""
    genomes = torch.zeros(count, layout.num_layers, layout.num_units, dtype=torch.long)
    allowed = layout.allowed_tensor()
    for layer, channels in enumerate(layout.channels):
        usable = torch.nonzero(allowed[layer]).flatten()
        cuts = torch.randint(0, channels + 1, (count, usable.numel() - 1), generator=generator).sort(dim=1).values
        edges = torch.cat([torch.zeros(count, 1, dtype=torch.long), cuts,
                           torch.full((count, 1), channels, dtype=torch.long)], dim=1)
        genomes[:, layer, usable] = torch.diff(edges, dim=1)
    return genomes.view(count, layout.size)


def genome_to_counts(model: "ODiMO", genome: torch.Tensor | np.ndarray | Sequence) -> dict[str, list[int]]:
    """Per searched layer, channels on each of the layer's own units in order (what
    :meth:`~odimo_moo.searchable.ODiMO.force_counts` takes) from one valid genome."""
    layout = GenomeLayout.from_model(model)
    genes = torch.as_tensor(np.asarray(genome)).long()
    if genes.shape != (layout.size,) or not torch.equal(repair_genome(genes, layout), genes):
        raise UsageError(f"not a valid genome for this model ({layout.size} non-negative integer genes, "
                         f"each layer's adding up to its channels); repair it with repair_genome first")
    per_layer = genes.view(layout.num_layers, layout.num_units)
    return {name: per_layer[l, model.split_layer(name).unit_indices.cpu()].tolist()
            for l, name in enumerate(layout.names)}


def counts_to_genome(model: "ODiMO", counts: Mapping[str, Sequence[int]]) -> torch.Tensor:
    """The genome of per-layer counts given on each layer's own units (the inverse of
    :func:`genome_to_counts`); every searched layer must be given."""
    layout = GenomeLayout.from_model(model)
    missing = set(layout.names) - set(counts)
    if missing:
        raise UsageError(f"counts miss searched layer(s) {', '.join(sorted(missing))}")
    genome = torch.zeros(layout.num_layers, layout.num_units, dtype=torch.long)
    for l, name in enumerate(layout.names):
        layer = model.split_layer(name)
        genome[l, layer.unit_indices.cpu()] = torch.tensor(list(counts[name]), dtype=torch.long)
    return genome.view(-1)


# ----------------------------------------------------------------------------- manual mappings
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

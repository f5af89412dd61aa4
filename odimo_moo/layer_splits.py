"""Exact per-layer channel splits over a SoC's units, and the continuous latency bound.

Per layer (a :class:`LayerSpec` and the SoC units allowed to run it):

* :func:`min_latency_split` -- the integer split with the lowest hard-max latency;
* :func:`balanced_split` -- the integer split whose units finish as close together as possible;
* :func:`ideal_latency_bound` -- the continuous relaxation's finish time, a lower bound of both.

Every search runs vectorized over all candidate splits (no Python loop per channel). The cycle
formulas of a unit are assumed non-decreasing in its channel count (true of every built-in SoC).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from .errors import UsageError
from .layer_spec import LayerSpec, LayerTable
from .soc import SoC

#: A per-layer split finder: ``(soc, spec, units) -> channels per unit``.
SplitFinder = Callable[[SoC, LayerSpec, Sequence[int]], Sequence[int]]

#: Largest number of candidate splits enumerated at once; beyond it an exact threshold search runs.
ENUMERATION_LIMIT = 1_000_000
_GRID_POINTS = 4097
_BISECTION_STEPS = 40
_RELATIVE_TOLERANCE = 1e-7


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


@dataclass(frozen=True)
class _Candidates:
    """A layer's units, their cycles at every channel count ``[k, C + 1]`` and, when there are at most
    ``max_candidates`` splits, every split ``[N, k]`` with its costs (else None)."""

    units: tuple[int, ...]
    times: torch.Tensor
    splits: torch.Tensor | None
    costs: SplitCosts | None


def _candidates(soc: SoC, spec: LayerSpec, units: Sequence[int] | None, max_candidates: int) -> _Candidates:
    chosen = layer_units(soc, spec, units)
    channels = spec.out_channels
    times = unit_times(soc, spec, chosen, torch.arange(channels + 1))
    if math.comb(channels + len(chosen) - 1, len(chosen) - 1) > max_candidates:
        return _Candidates(chosen, times, None, None)
    splits = compositions(channels, len(chosen))
    return _Candidates(chosen, times, splits, _costs_from_times(soc, chosen, times, splits))


def min_latency_split(soc: SoC, spec: LayerSpec, units: Sequence[int] | None = None, *,
                      max_candidates: int = ENUMERATION_LIMIT) -> tuple[int, ...]:
    """The integer split of ``spec``'s output channels over ``units`` with the lowest hard-max latency.

    Returns channels per unit in the order of ``units`` (default: every unit supporting the layer).
    Up to ``max_candidates`` splits (always the case for 2 units: C + 1 of them) are enumerated in
    one tensor op and ties are broken towards lower energy. Beyond that, an exact threshold search:
    binary search over the distinct unit finish times T for the smallest T such that every unit can
    take a count finishing by T and the counts add up to C (a reachability DP over channel sums).
    """
    found = _candidates(soc, spec, units, max_candidates)
    times = found.times
    if found.splits is not None and found.costs is not None:
        return tuple(found.splits[_lexicographic_argmin(found.costs.latency_cycles, found.costs.energy_uj)].tolist())
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
    found = _candidates(soc, spec, units, max_candidates)
    times = found.times
    if found.splits is not None and found.costs is not None:
        costs = found.costs
        spread = costs.latency_cycles - costs.unit_cycles.min(dim=0).values
        best = _lexicographic_argmin(spread, costs.latency_cycles, costs.energy_uj)
        return tuple(found.splits[best].tolist())
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

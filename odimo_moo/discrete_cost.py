"""The searched layers' cost as a function of integer channel counts, with gradients that are exact
discrete differences.

Channel counts are integers all along the search, and SoC cost formulas are staircases in them
(ceil of a PE-array width, a fixed overhead gated on the first channel, a parallel max). The
derivative of a formula there says nothing about moving a channel: an identity straight-through
ceil charges a unit 1/512 of a 512-wide pass per channel, a clamp-shaped gate is flat at every
integer, and the softmax weights of a smooth max make an empty unit look free. The search needs,
per layer, what moving channels from unit ``a`` to unit ``b`` does to the hard cost.

:class:`CostTables` holds every unit's cycles for every channel count of every searched layer
(computed once from the SoC's own formulas). :func:`pair_slopes` walks each pair direction
``n - m e_a + m e_b`` from the current counts to the first step ``m`` where the layer's hard cost
changes by more than :data:`SIGNIFICANT` of itself, and gives the secant slope ``D(m) / m``: the exact
one-channel difference wherever that one is significant (the cost of entering an empty unit
included), and where the cost is flat for a while (a unit on a plateau of its ceil), the slope to
the next change, which the one-channel difference cannot see. :func:`unit_gradients` turns the
pair slopes into one derivative per unit (``g_b - g_a`` fits every feasible pair's slope in least
squares: exactly, for two units). :func:`discrete_layer_cost` is the layer cost with that gradient.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import torch

from .layer_spec import LayerTable
from .soc import SoC

#: A change of a layer's cost smaller than this fraction of it is treated as no change (flat).
SIGNIFICANT = 1e-3
#: How many (layer, counts) terms a :class:`CostTables` remembers per metric before it starts afresh.
REMEMBERED_TERMS = 1 << 16
#: A two-unit layer's missing split brings the splits within this many channels of it (one pass).
NEIGHBOURS = 32
#: The most float64 elements of one :func:`pair_slopes` intermediate when terms are computed in bulk.
PASS_ELEMENTS = 1 << 21


class CostTables:
    """Cycles of every SoC unit for every channel count ``0..C`` of every searched layer.

    ``times[k, l, n]`` is unit ``k`` running ``n`` output channels of layer ``l``; ``inf`` where the
    unit is not one of the layer's allowed units (for ``n > 0``) and beyond the layer's channels.
    """

    def __init__(self, soc: SoC, times: torch.Tensor) -> None:
        self.soc = soc
        self.times = times
        # metric -> {(layer, counts per SoC unit): (hard cost, per-unit gradient)}; see layer_terms.
        self._terms: dict[str, dict[tuple[int, tuple[int, ...]], tuple[float, tuple[float, ...]]]] = {}
        self._runnable: list[tuple[int, ...]] | None = None  # per layer, the units that can run it

    @staticmethod
    def compute_times(soc: SoC, table: LayerTable, allowed: Sequence[Sequence[int]]) -> torch.Tensor:
        """``[K, L, C_max + 1]`` cycles from the SoC's own formulas (``allowed[l]``: layer ``l``'s units)."""
        layers = len(table)
        width = int(table.out_channels.max()) + 1 if layers else 1
        counts = torch.arange(width, dtype=torch.float64).repeat(layers)
        expanded = LayerTable(**{f.name: getattr(table, f.name).repeat_interleave(width)
                                 for f in dataclasses.fields(table)})
        with torch.no_grad():
            times = torch.stack([unit.cycles(expanded, counts) for unit in soc.units]).view(
                len(soc.units), layers, width)
        usable = torch.zeros(len(soc.units), layers, width, dtype=torch.bool)
        for column, units in enumerate(allowed):
            usable[list(units), column] = True
        usable &= torch.arange(width).view(1, 1, -1) <= table.out_channels.view(1, -1, 1).cpu()
        soc.check_cycles(expanded, counts.expand(len(soc.units), -1), times.view(len(soc.units), -1),
                         usable.view(len(soc.units), -1))
        times = torch.where(usable, times, torch.full_like(times, torch.inf))
        times[:, :, 0] = 0.0
        return times

    def unit_cycles(self, counts: torch.Tensor) -> torch.Tensor:
        """``[K, L]`` cycles of integer ``counts[k, l]``."""
        index = counts.detach().round().long().clamp(0, self.times.shape[2] - 1).unsqueeze(2)
        return self.times.gather(2, index).squeeze(2)

    def layer_terms(self, columns: Sequence[tuple[int, ...]], metric: str
                    ) -> list[tuple[float, tuple[float, ...]]]:
        """Per layer ``l``, the hard cost and the per-unit gradient (:func:`unit_gradients` of
        :func:`pair_slopes`) at the integer counts ``columns[l]`` (one per SoC unit).

        Both are pure functions of the layer and its counts, and a search revisits the same counts
        of each layer step after step: each (layer, counts) is computed once and remembered (up to
        :data:`REMEMBERED_TERMS` per metric). A layer that only two units can run has only ``C + 1``
        splits, and a search moves its boundary a few channels at a time: when one is missing, the
        splits within :data:`NEIGHBOURS` channels of it are computed in the same vectorized pass as
        the other layers' missing counts. Values equal computing the layers one set of counts at a
        time (the SoC's ``layer_costs`` treats layers independently).
        """
        memo = self._terms.setdefault(metric, {})
        keys = list(enumerate(columns))
        missing = [key for key in keys if key not in memo]
        if missing:
            states = self._states_of(missing)
            if len(memo) + len(states) > REMEMBERED_TERMS:
                memo.clear()
            per_pass = self._states_per_pass()
            for start in range(0, len(states), per_pass):
                chunk = states[start:start + per_pass]
                memo.update(zip(chunk, self._compute_terms(chunk, metric)))
        return [memo[key] for key in keys]

    def _states_of(self, missing: Sequence[tuple[int, tuple[int, ...]]]) -> list[tuple[int, tuple[int, ...]]]:
        """The (layer, counts) to compute for ``missing``: each of them, and for a layer two units run,
        every split of its channels within :data:`NEIGHBOURS` channels of the missing one."""
        if self._runnable is None:
            self._runnable = [tuple(k for k, usable in enumerate(row) if usable)
                              for row in torch.isfinite(self.times[:, :, 1]).t().tolist()]
        states: dict[tuple[int, tuple[int, ...]], None] = {}
        for layer, column in missing:
            units = self._runnable[layer]
            if len(units) != 2:
                states[(layer, column)] = None
                continue
            channels, first = sum(column), column[units[0]]
            for n in range(max(0, first - NEIGHBOURS), min(channels, first + NEIGHBOURS) + 1):
                split = [0] * len(column)
                split[units[0]], split[units[1]] = n, channels - n
                states[(layer, tuple(split))] = None
        return list(states)

    def _states_per_pass(self) -> int:
        """How many (layer, counts) one :func:`pair_slopes` pass takes: its largest intermediate is
        ``K (K - 1) x K x states x (C_max)`` float64 elements, kept under :data:`PASS_ELEMENTS`."""
        units, _, width = self.times.shape
        return max(1, PASS_ELEMENTS // max(1, units * (units - 1) * units * (width - 1)))

    def _compute_terms(self, states: Sequence[tuple[int, tuple[int, ...]]], metric: str
                       ) -> list[tuple[float, tuple[float, ...]]]:
        index = torch.tensor([layer for layer, _ in states], device=self.times.device)
        subset = CostTables(self.soc, self.times.index_select(1, index))
        counts = torch.tensor([column for _, column in states], dtype=self.times.dtype,
                              device=self.times.device).t()
        costs = self.soc.layer_costs(subset.unit_cycles(counts))[metric].tolist()
        gradients = unit_gradients(*pair_slopes(subset, counts, metric)).t().tolist()
        return [(cost, tuple(gradient)) for cost, gradient in zip(costs, gradients)]

    def unit_gradient_table(self, counts: torch.Tensor, metric: str) -> torch.Tensor:
        """``[K, L]`` per-unit gradients of the hard cost at integer ``counts[K, L]`` (remembered, see
        :meth:`layer_terms`)."""
        columns = [tuple(column) for column in counts.detach().round().long().t().tolist()]
        terms = self.layer_terms(columns, metric)
        return torch.tensor([gradient for _, gradient in terms], dtype=self.times.dtype,
                            device=counts.device).t()


def pair_slopes(tables: CostTables, counts: torch.Tensor, metric: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Secant slopes ``[K, K, L]`` of the hard cost along every pair move ``a -> b``, and which moves
    are feasible (unit ``a`` has a channel to give, unit ``b`` can run the layer).

    The slope of ``a -> b`` is ``D(m) / m`` with ``D(m) = cost(n - m e_a + m e_b) - cost(n)`` at the
    smallest ``m`` where ``|D(m)|`` exceeds :data:`SIGNIFICANT` of the layer's cost (the largest
    feasible ``m`` if none does).
    """
    times = tables.times
    units, layers, width = times.shape
    n = counts.detach().round().long()
    current = tables.unit_cycles(n)
    base = tables.soc.layer_costs(current)[metric]  # [L]
    steps = torch.arange(1, width, device=times.device)  # [M]
    # every ordered pair (a, b) at once: P pairs x L layers x M step lengths
    source, target = (index.flatten() for index in torch.meshgrid(
        torch.arange(units, device=times.device), torch.arange(units, device=times.device), indexing="ij"))
    distinct = source != target
    source, target = source[distinct], target[distinct]
    pairs = torch.arange(source.numel(), device=times.device)
    given = (n[source].unsqueeze(2) - steps).clamp_min(0)  # [P, L, M]
    taken = (n[target].unsqueeze(2) + steps).clamp_max(width - 1)
    moved = current.unsqueeze(0).unsqueeze(3).repeat(source.numel(), 1, 1, width - 1)  # [P, K, L, M]
    moved[pairs, source] = times[source].gather(2, given)
    moved[pairs, target] = times[target].gather(2, taken)
    valid = (steps <= n[source].unsqueeze(2)) & torch.isfinite(moved[pairs, target])
    change = tables.soc.layer_costs(moved.transpose(0, 1))[metric] - base.view(1, -1, 1)  # [P, L, M]
    significant = valid & (change.abs() > SIGNIFICANT * base.abs().view(1, -1, 1))
    last_valid = (valid.sum(dim=2) - 1).clamp_min(0)
    first = torch.where(significant.any(dim=2), significant.to(torch.int8).argmax(dim=2), last_valid)  # [P, L]
    step_change = change.gather(2, first.unsqueeze(2)).squeeze(2)
    possible = valid[:, :, 0]
    slopes = torch.zeros(units, units, layers, dtype=times.dtype, device=times.device)
    feasible = torch.zeros(units, units, layers, dtype=torch.bool, device=times.device)
    feasible[source, target] = possible
    slopes[source, target] = torch.where(possible, step_change / (first + 1).to(times.dtype),
                                         torch.zeros_like(step_change))
    return slopes, feasible


def unit_gradients(slopes: torch.Tensor, feasible: torch.Tensor) -> torch.Tensor:
    """Per-unit derivatives ``[K, L]`` whose differences ``g_b - g_a`` fit the feasible pairs' slopes
    in least squares (summing to 0 per layer; exact when the feasible pairs form a tree, e.g. two units:
    ``(s_ab - s_ba) / 2`` when both moves are possible, the one possible move's slope otherwise)."""
    units, _, layers = slopes.shape
    weight = feasible.to(slopes.dtype)
    if units == 2:  # the least-squares solution in closed form (no pseudo-inverse per step)
        forward, backward = weight[0, 1] * slopes[0, 1], weight[1, 0] * slopes[1, 0]
        difference = (forward - backward) / (weight[0, 1] + weight[1, 0]).clamp_min(1.0)
        return torch.stack([-difference / 2, difference / 2])
    # Normal equations of sum over feasible (a, b) of (g_b - g_a - s_ab)^2: a graph Laplacian system.
    links = weight + weight.transpose(0, 1)  # [K, K, L]
    laplacian = torch.diag_embed(links.sum(dim=1).t()) - links.permute(2, 0, 1)  # [L, K, K]
    flow = weight * slopes
    rhs = (flow.sum(dim=0) - flow.sum(dim=1)).t()  # [L, K]: into b minus out of a
    solution = torch.linalg.pinv(laplacian) @ rhs.unsqueeze(2)
    return solution.squeeze(2).t()


class _DiscreteLayerCost(torch.autograd.Function):
    """Hard per-layer cost forward; per-unit gradients from exact discrete differences backward."""

    @staticmethod
    def forward(ctx, counts: torch.Tensor, tables: CostTables, metric: str) -> torch.Tensor:  # type: ignore[override]
        ctx.tables, ctx.metric = tables, metric
        ctx.save_for_backward(counts)
        return tables.soc.layer_costs(tables.unit_cycles(counts))[metric]

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        (counts,) = ctx.saved_tensors
        gradients = ctx.tables.unit_gradient_table(counts, ctx.metric)
        return (grad.unsqueeze(0) * gradients).to(counts.dtype), None, None


def discrete_layer_cost(tables: CostTables, counts: torch.Tensor, metric: str) -> torch.Tensor:
    """Hard cost ``[L]`` of integer ``counts[K, L]`` for ``metric`` ("latency" cycles or "energy"
    microjoules), differentiable with the exact-difference gradient of :func:`unit_gradients`."""
    return _DiscreteLayerCost.apply(counts, tables, metric)


class _SearchedLayersCost(torch.autograd.Function):
    """Sum of the layers' hard costs from every layer's channels per local unit; per-layer gradients
    from :meth:`CostTables.layer_terms` (one node, no [K, L] scatter)."""

    @staticmethod
    def forward(ctx, tables: CostTables, metric: str, layer_units: tuple[tuple[int, ...], ...],  # type: ignore[override]
                *layer_counts: torch.Tensor) -> torch.Tensor:
        local = torch.cat(layer_counts).round().long().tolist()
        columns, start = [], 0
        for units in layer_units:
            column = [0] * tables.times.shape[0]
            for unit, count in zip(units, local[start:start + len(units)]):
                column[unit] = count
            columns.append(tuple(column))
            start += len(units)
        terms = tables.layer_terms(columns, metric)
        ctx.gradients = [gradient[unit] for (_, gradient), units in zip(terms, layer_units) for unit in units]
        ctx.sizes = [len(units) for units in layer_units]
        ctx.dtype, ctx.device = layer_counts[0].dtype, layer_counts[0].device
        return torch.tensor([cost for cost, _ in terms], dtype=tables.times.dtype, device=ctx.device).sum()

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        flat = torch.tensor(ctx.gradients, dtype=grad.dtype, device=ctx.device).mul_(grad)
        return (None, None, None, *flat.to(ctx.dtype).split(ctx.sizes))


def searched_layers_cost(tables: CostTables, metric: str, layer_counts: Sequence[torch.Tensor],
                         layer_units: Sequence[Sequence[int]]) -> torch.Tensor:
    """Hard cost (float64, summed over layers) of the integer channel counts ``layer_counts[l]``
    (``[K_l]``: layer ``l``'s channels on each of its SoC units ``layer_units[l]``), differentiable
    w.r.t. every layer's counts with the exact-difference gradient of :func:`unit_gradients`.

    Equals ``discrete_layer_cost`` of the counts scattered to ``[K, L]``, summed, in one autograd node.
    """
    if not layer_counts:
        return torch.zeros((), dtype=tables.times.dtype, device=tables.times.device)
    return _SearchedLayersCost.apply(tables, metric, tuple(tuple(int(u) for u in units) for units in layer_units),
                                     *layer_counts)

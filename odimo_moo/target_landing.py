"""Landing a searched mapping on a cost target: Lagrangian rounding of the final assignments.

The multiplier of :class:`odimo_moo.cost_target.CostTarget` steers the search towards the target,
but the mapping it ends with is wherever its last step left it: the hard cost moves in jumps
(a layer's channels change hands in groups, a unit's cycles in ceil steps) and the multiplier chases
it with a lag, so a search ended 0.84x to 1.23x of its target (DIANA resnet8 and Darkside tiny,
three targets each). This module rounds the search's final, continuous preferences to the discrete
mapping whose cost is the largest not above the target.

Each searched layer's parameters give every split ``n`` of its channels a log-likelihood
``score(n)`` (how strongly the search prefers it; the search's own hard mapping maximizes it). For a
multiplier ``mu`` each layer independently takes the split maximizing ``score(n) - mu * cost(n) /
reference``; the network's cost is non-increasing in ``mu``, and a bisection finds the smallest
``mu`` whose mapping meets the target. ``mu < 0`` moves the least confident channels to the
costlier unit when the search undershot. Layers that split between more than two units keep the
search's mapping (their cost enters as a constant).
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F

from .assignment import SoftmaxAssignment, ThermometricAssignment
from .searchable import ODiMO
from .split_layer import SplitLayer

#: Bisection range of the multiplier: beyond it every layer sits at its cheapest (or costliest) split.
MU_RANGE = 1e6
BISECTION_STEPS = 200


@dataclasses.dataclass(frozen=True)
class Landing:
    """What :func:`land_on_target` did: the cost before and after, the target and the multiplier."""

    target: float
    searched_cost: float
    landed_cost: float
    multiplier: float
    layers_changed: int

    def to_dict(self) -> dict[str, float]:
        return {"target": self.target, "searched_cost": self.searched_cost, "landed_cost": self.landed_cost,
                "landed_over_target": self.landed_cost / self.target, "multiplier": self.multiplier,
                "layers_changed": self.layers_changed}


@dataclasses.dataclass
class _LayerChoices:
    """One two-unit layer's options: split ``n`` puts ``n`` channels on local unit 0."""

    layer: SplitLayer
    scores: torch.Tensor  # [C + 1] log-likelihood of each split
    order: torch.Tensor  # channel order in which unit 0 takes them


def _choices(layer: SplitLayer) -> _LayerChoices | None:
    """A two-unit layer's split scores from its assignment parameters (None: not roundable here)."""
    assignment = layer.assignment
    if layer.num_units != 2:
        return None
    with torch.no_grad():
        if isinstance(assignment, ThermometricAssignment):
            # channel c is on unit 0 while theta_c > 0.5; contiguous, so unit 0 takes a prefix
            margin = torch.log(assignment.thresholds()[0].double()) - math.log(0.5)
            order = torch.arange(layer.channels)
        elif isinstance(assignment, SoftmaxAssignment):
            logits = assignment.alpha.double() / float(assignment.temperature)
            margin = logits[:, 0] - logits[:, 1]
            order = torch.argsort(margin, descending=True)
        else:
            return None
        taken = F.logsigmoid(margin[order])
        left = F.logsigmoid(-margin[order])
        zero = taken.new_zeros(1)
        scores = torch.cat([zero, taken.cumsum(0)]) + left.sum() - torch.cat([zero, left.cumsum(0)])
    return _LayerChoices(layer, scores, order.cpu())


def _split_costs(model: ODiMO, choices: list[_LayerChoices | None]) -> torch.Tensor:
    """``[L, C_max + 1]`` cost of every searched layer at every split (inf where impossible; the
    current split everywhere for a layer that is not rounded)."""
    layers = [layer for _, layer in model.split_layers()]
    current = model.unit_counts().detach().to(torch.float64)
    width = max(layer.channels for layer in layers) + 1
    costs = torch.full((len(layers), width), math.inf, dtype=torch.float64)
    for n in range(width):
        counts = current.clone()
        for column, (layer, choice) in enumerate(zip(layers, choices)):
            if choice is None or n > layer.channels:
                continue
            first, second = layer.unit_indices.tolist()
            counts[first, column], counts[second, column] = n, layer.channels - n
        with torch.no_grad():
            per_layer = model.searched_cost_of(counts)[model.metric]
        for column, choice in enumerate(choices):
            if choice is None and n == 0:
                costs[column, 0] = per_layer[column]
            elif choice is not None and n <= layers[column].channels:
                costs[column, n] = per_layer[column]
    return costs


def _fill_slack(chosen: torch.Tensor, scores: torch.Tensor, costs: torch.Tensor, feasible: torch.Tensor,
                budget: float, undershot: bool) -> torch.Tensor:
    """Spend what the Lagrangian path leaves under the budget; the path visits only the splits on
    the convex hull of each layer's (cost, score) points, this reaches the ones between them.

    Coming down from a search above the target, moves go to splits the search prefers (higher
    score) while the total stays within ``budget``; coming up from a search that undershot, moves
    raise the cost, the least disliked first, while the total stays within ``budget``.
    """
    chosen = chosen.clone()
    rows = torch.arange(chosen.numel())
    while True:
        current_cost, current_score = costs[rows, chosen], scores[rows, chosen]
        added = costs - current_cost.unsqueeze(1)
        gain = scores - current_score.unsqueeze(1)
        allowed = feasible & (added <= budget - float(current_cost.sum()))
        allowed &= (added > 0) if undershot else (gain > 0)
        if not bool(allowed.any()):
            return chosen
        best = torch.where(allowed, gain, torch.full_like(gain, -math.inf)).flatten().argmax()
        chosen[best // costs.shape[1]] = best % costs.shape[1]


def land_on_target(model: ODiMO, target: float) -> Landing:
    """Fix ``model``'s mapping (FIXED mode) to the most preferred split whose cost does not exceed
    ``target`` (in the model's metric units: cycles or microjoules): the Lagrangian path of the
    search's final preferences, then the slack it leaves filled greedily. A target below the
    cheapest reachable mapping gets that mapping."""
    model.freeze_mapping()  # the search's noise-free hard mapping: what the rounding starts from
    choices = [_choices(layer) for _, layer in model.split_layers()]
    with torch.no_grad():
        searched = float(model.cost_of())
    costs = _split_costs(model, choices)
    scores = torch.full_like(costs, -math.inf)
    for column, choice in enumerate(choices):
        if choice is None:
            scores[column, 0] = 0.0
        else:
            scores[column, : choice.scores.numel()] = choice.scores
    feasible = torch.isfinite(costs) & torch.isfinite(scores)
    relative = torch.where(feasible, costs, torch.zeros_like(costs)) / model.reference_cost()
    with torch.no_grad():
        fixed = searched - float(model.cost_of(include_fixed=False))

    def splits(mu: float) -> torch.Tensor:
        value = torch.where(feasible, scores - mu * relative, torch.full_like(scores, -math.inf))
        return value.argmax(dim=1)

    def total(mu: float) -> float:
        return fixed + float(costs.gather(1, splits(mu).unsqueeze(1)).sum())

    low, high = -MU_RANGE, MU_RANGE
    if total(low) <= target:
        high = low
    elif total(high) <= target:
        for _ in range(BISECTION_STEPS):
            middle = (low + high) / 2
            low, high = (low, middle) if total(middle) <= target else (middle, high)
    chosen = _fill_slack(splits(high), scores, costs, feasible, target - fixed, undershot=high < 0)
    changed = 0
    for column, (choice, n) in enumerate(zip(choices, chosen.tolist())):
        if choice is None:
            continue
        local = torch.ones(choice.layer.channels, dtype=torch.long)
        local[choice.order[:n]] = 0
        changed += int(not torch.equal(local.to(choice.layer.fixed_units.device),
                                       choice.layer.units_of_channels()))
        choice.layer.fix(local)
    with torch.no_grad():
        landed = float(model.cost_of())
    return Landing(target=float(target), searched_cost=searched, landed_cost=landed, multiplier=high,
                   layers_changed=changed)

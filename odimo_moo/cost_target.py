"""Searching to a cost target: lambda adapted during the search so that the cost lands on a target.

Instead of sweeping lambda and hoping one value lands near the latency a product needs, the search
treats ``cost <= target`` as a constraint with a Lagrange multiplier: after every training step the
multiplier (the step's lambda) grows while the network's cost is above the target and shrinks while
it is below, so the mapping settles where the cost meets the target and the rest of the search
spends the slack on accuracy. The update is multiplicative (lambda spans decades:
:data:`odimo_moo.recipe.DEFAULT_LAMBDAS`) and driven by ``ln(cost / target)``, the same log the loss's
cost term uses, clipped to +-1 so that one step never moves lambda by more than ``exp(rate)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from .errors import UsageError


@dataclass
class CostTarget:
    """A Lagrange multiplier for ``cost <= target``; costs are given relative to the model's reference
    cost (:meth:`odimo_moo.searchable.ODiMO.reference_cost`), as the loss's cost term sees them."""

    relative_target: float
    weight: float = 1.0
    rate: float = 0.1
    low: float = 1e-3
    high: float = 1e4

    def __post_init__(self) -> None:
        if not (self.relative_target > 0 and math.isfinite(self.relative_target)):
            raise UsageError(f"a cost target must be a positive number, got {self.relative_target}")
        if not self.low <= self.weight <= self.high:
            raise UsageError(f"the initial lambda of a cost target must be in [{self.low:g}, {self.high:g}], "
                             f"got {self.weight:g}")

    def observe(self, log_relative_cost: float) -> None:
        """Update lambda after a step whose cost term was ``ln(cost / reference)``."""
        excess = max(-1.0, min(1.0, log_relative_cost - math.log(self.relative_target)))
        self.weight = max(self.low, min(self.high, self.weight * math.exp(self.rate * excess)))

    def state_dict(self) -> dict[str, Any]:
        return {"relative_target": self.relative_target, "weight": self.weight}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["relative_target"] != self.relative_target:
            raise UsageError(f"checkpoint was searched to another cost target ({state['relative_target']:g} of the "
                             f"reference, this run asks for {self.relative_target:g})")
        self.weight = float(state["weight"])

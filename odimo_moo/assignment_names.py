"""The names of the channel-to-unit assignments (:mod:`odimo_moo.assignment`) and of their initial
splits, without torch: the recipe declares its choices with them."""

from __future__ import annotations

#: The parametrizations, in the order of :data:`odimo_moo.assignment.PARAMETRIZATIONS`.
PARAMETRIZATION_NAMES = ("thermometric", "softmax")
#: Initial splits: all on the first unit, as equal as possible, uniformly random.
INIT_STRATEGIES = ("first", "balanced", "random")

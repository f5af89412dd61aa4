"""Building blocks of SoC cost formulas.

Channel counts are tensors. Rounding is straight-through (exact forward value, identity gradient)
and fixed overheads are gated so that a unit with 0 channels costs exactly 0. These gradients are a
smooth surrogate for whoever differentiates a formula directly; the search does not use them: its
cost gradient is the exact discrete difference of the formulas' values
(:mod:`odimo_moo.discrete_cost`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # tensor methods only: a SoC plugin importing these does not import torch
    import torch


def ste_ceil(x: torch.Tensor) -> torch.Tensor:
    """``ceil(x)`` forward, identity gradient."""
    return x + (x.ceil() - x).detach()


def ste_floor(x: torch.Tensor) -> torch.Tensor:
    """``floor(x)`` forward, identity gradient."""
    return x + (x.floor() - x).detach()


def gate(n: torch.Tensor) -> torch.Tensor:
    """1 where ``n > 0`` else exactly 0; the gradient is that of ``clamp(n, 0, 1)``.

    Multiplying a fixed overhead by the gate makes an unused unit free.
    """
    hard = (n > 0).to(n.dtype)
    soft = n.clamp(0.0, 1.0)
    return soft + (hard - soft).detach()


def active_idle_energy(times: torch.Tensor, latency: torch.Tensor, active_mw: torch.Tensor,
                       idle_mw: torch.Tensor) -> torch.Tensor:
    """Energy in mW x cycles of units that run for ``times[k]`` and idle until ``latency``.

    ``times`` has the units on dimension 0; ``active_mw``/``idle_mw`` hold one power per unit.
    """
    shape = (-1,) + (1,) * (times.dim() - 1)
    active = (active_mw.view(shape) * times).sum(dim=0)
    idle = (idle_mw.view(shape) * (latency.unsqueeze(0) - times)).sum(dim=0)
    return active + idle

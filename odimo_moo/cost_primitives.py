"""Differentiable building blocks of SoC cost models.

Channel counts are tensors carrying gradient. Rounding is straight-through (exact forward value,
identity gradient), fixed overheads are gated so a unit with 0 channels costs exactly 0, and the
parallel-unit latency uses a hard max for reports and a smooth max for the loss.
"""

from __future__ import annotations

import torch


def ste_ceil(x: torch.Tensor) -> torch.Tensor:
    """``ceil(x)`` forward, identity gradient."""
    return x + (torch.ceil(x) - x).detach()


def ste_floor(x: torch.Tensor) -> torch.Tensor:
    """``floor(x)`` forward, identity gradient."""
    return x + (torch.floor(x) - x).detach()


def gate(n: torch.Tensor) -> torch.Tensor:
    """1 where ``n > 0`` else exactly 0; the gradient is that of ``clamp(n, 0, 1)``.

    Multiplying a fixed overhead by the gate makes an unused unit free while still telling the
    optimizer that removing its last channel removes the overhead.
    """
    hard = (n > 0).to(n.dtype)
    soft = n.clamp(0.0, 1.0)
    return soft + (hard - soft).detach()


def hard_max(times: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """Latency of units running in parallel: the slowest one."""
    return times.max(dim=dim).values


def smooth_max(times: torch.Tensor, dim: int = 0, relative_temperature: float = 0.02) -> torch.Tensor:
    """Log-sum-exp maximum whose temperature is a fraction of the hard maximum.

    A fixed temperature behaves like a mean when the values are large (the reference code's 1e7
    did so at CIFAR scale); scaling it to the magnitude keeps the result within
    ``relative_temperature * ln(K)`` of the true maximum for any cycle scale.
    """
    scale = hard_max(times, dim=dim).detach().clamp_min(1.0) * relative_temperature
    return scale * torch.logsumexp(times / scale.unsqueeze(dim), dim=dim)


def active_idle_energy(times: torch.Tensor, latency: torch.Tensor, active_mw: torch.Tensor,
                       idle_mw: torch.Tensor) -> torch.Tensor:
    """Energy in mW x cycles of units that run for ``times[k]`` and idle until ``latency``.

    ``times`` has the units on dimension 0; ``active_mw``/``idle_mw`` hold one power per unit.
    """
    shape = (-1,) + (1,) * (times.dim() - 1)
    active = (active_mw.view(shape) * times).sum(dim=0)
    idle = (idle_mw.view(shape) * (latency.unsqueeze(0) - times)).sum(dim=0)
    return active + idle

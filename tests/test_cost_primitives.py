"""Straight-through rounding, gating and active + idle energy."""

from __future__ import annotations

import math

import pytest
import torch

from odimo_moo.cost_primitives import active_idle_energy, gate, ste_ceil, ste_floor


def _values_and_grad(fn, values):
    x = torch.tensor(values, dtype=torch.float64, requires_grad=True)
    y = fn(x)
    y.sum().backward()
    return y.detach().tolist(), x.grad.tolist()


def test_ste_ceil_and_floor_exact_forward_identity_gradient():
    xs = [0.2, 1.0, 2.5, -1.5, 15.999, 1e6 + 0.5]
    values, grad = _values_and_grad(ste_ceil, xs)
    assert values == [math.ceil(x) for x in xs]
    assert grad == [1.0] * len(xs)
    values, grad = _values_and_grad(ste_floor, xs)
    assert values == [math.floor(x) for x in xs]
    assert grad == [1.0] * len(xs)


def test_gate_is_exactly_zero_at_zero_and_one_above():
    values, grad = _values_and_grad(gate, [0.0, 0.3, 1.0, 5.0, 64.0])
    assert values == [0.0, 1.0, 1.0, 1.0, 1.0]
    # the surrogate gradient is that of clamp(n, 0, 1): 1 inside [0, 1], 0 beyond
    assert grad[1] == 1.0 and grad[3] == 0.0 and grad[4] == 0.0


def test_active_idle_energy():
    times = torch.tensor([[100.0, 0.0], [40.0, 10.0]], dtype=torch.float64)
    latency = times.max(dim=0).values
    active = torch.tensor([10.0, 20.0], dtype=torch.float64)
    idle = torch.tensor([1.0, 2.0], dtype=torch.float64)
    energy = active_idle_energy(times, latency, active, idle).tolist()
    assert energy[0] == pytest.approx(10 * 100 + 20 * 40 + 1 * (100 - 100) + 2 * (100 - 40))
    assert energy[1] == pytest.approx(10 * 0 + 20 * 10 + 1 * (10 - 0) + 2 * (10 - 10))

"""Straight-through rounding, gating, smooth max, and gradients through channel counts."""

from __future__ import annotations

import math

import pytest
import torch

from odimo_moo.cost_primitives import active_idle_energy, gate, hard_max, smooth_max, ste_ceil, ste_floor
from odimo_moo.layer_spec import LayerSpec, LayerTable, OpKind
from odimo_moo.soc_plugins.diana import build_diana


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


def test_hard_max_per_layer():
    times = torch.tensor([[1.0, 7.0, 3.0], [4.0, 2.0, 3.0]], dtype=torch.float64)
    assert hard_max(times).tolist() == [4.0, 7.0, 3.0]


@pytest.mark.parametrize("scale", [1.0, 1e3, 1e6, 1e9])
@pytest.mark.parametrize("relative_temperature", [0.02, 0.1])
def test_smooth_max_close_to_hard_max_at_every_scale(scale, relative_temperature):
    times = torch.tensor([[10.0], [12.0], [11.5], [3.0]], dtype=torch.float64) * scale
    hard = float(hard_max(times)[0])
    smooth = float(smooth_max(times, relative_temperature=relative_temperature)[0])
    k = times.shape[0]
    # log-sum-exp with temperature T lies in [max, max + T ln K]; here T = relative_temperature * max
    assert hard <= smooth <= hard + relative_temperature * hard * math.log(k) * (1 + 1e-12)
    # scale-free: the relative gap does not depend on the cycle magnitude (a fixed temperature's does)
    assert (smooth - hard) / hard == pytest.approx(
        (float(smooth_max(times / scale, relative_temperature=relative_temperature)[0]) - 12.0) / 12.0, rel=1e-9)


def test_smooth_max_gradient_is_softmax_weights_favoring_the_max():
    times = torch.tensor([[1.0e6], [0.99e6], [0.5e6]], dtype=torch.float64, requires_grad=True)
    smooth_max(times).sum().backward()
    grad = times.grad[:, 0].tolist()
    assert sum(grad) == pytest.approx(1.0)
    assert grad[0] > grad[1] > grad[2] >= 0
    assert grad[2] < 1e-6


def test_active_idle_energy():
    times = torch.tensor([[100.0, 0.0], [40.0, 10.0]], dtype=torch.float64)
    latency = hard_max(times)
    active = torch.tensor([10.0, 20.0], dtype=torch.float64)
    idle = torch.tensor([1.0, 2.0], dtype=torch.float64)
    energy = active_idle_energy(times, latency, active, idle).tolist()
    assert energy[0] == pytest.approx(10 * 100 + 20 * 40 + 1 * (100 - 100) + 2 * (100 - 40))
    assert energy[1] == pytest.approx(10 * 0 + 20 * 10 + 1 * (10 - 0) + 2 * (10 - 10))


def test_sgd_on_channel_count_lowers_smooth_latency():
    """Split 64 channels of a DIANA layer; n_analog = 64 - n_digital; descend on n_digital."""
    soc = build_diana()
    table = LayerTable.from_specs([LayerSpec(OpKind.CONV2D, 64, 64, (3, 3), (1, 1), 1, (16, 16))])
    n_digital = torch.tensor(60.0, dtype=torch.float64, requires_grad=True)
    learning_rate = 0.01

    def latency() -> torch.Tensor:
        counts = torch.stack([n_digital, 64 - n_digital]).unsqueeze(1)
        return smooth_max(soc.unit_cycles(table, counts))[0]

    history = []
    for _ in range(6):  # plain SGD
        loss = latency()
        history.append(float(loss.detach()))
        (grad,) = torch.autograd.grad(loss, n_digital)
        assert float(grad) > 0, "the slow digital unit should give channels away"
        with torch.no_grad():
            n_digital.sub_(learning_rate * grad).clamp_(0.0, 64.0)
    final = float(latency().detach())
    assert all(later <= earlier for earlier, later in zip(history, history[1:]))
    assert final < 0.6 * history[0]
    assert 0.0 < float(n_digital.detach()) < 60.0

"""Landing a searched mapping on a cost target (odimo_moo.target_landing)."""

from __future__ import annotations

import pytest
import torch

from odimo_moo.recipe import Recipe
from odimo_moo.target_landing import land_on_target
from odimo_moo.workbench import Setup, Workbench


@pytest.fixture(scope="module")
def bench() -> Workbench:
    return Workbench(Setup(model="resnet20", image_size=32, data_limit=40, device="cpu", progress=False))


def supernet(bench: Workbench, parametrization: str, seed: int = 0):
    torch.manual_seed(seed)
    return bench.supernet(Recipe(parametrization=parametrization, init="random"))


@pytest.mark.parametrize("parametrization", ["thermometric", "softmax"])
@pytest.mark.parametrize("fraction", [0.5, 0.7, 0.9])
def test_landed_cost_is_at_most_the_target_and_close_to_it(bench, parametrization, fraction):
    model = supernet(bench, parametrization)
    target = fraction * model.reference_cost()
    landing = land_on_target(model, target)
    assert landing.landed_cost <= target
    assert landing.landed_cost >= 0.97 * target  # measured 0.990-1.000 on this model
    assert model.cost_report()["latency_cycles"] == pytest.approx(landing.landed_cost, rel=1e-12)


@pytest.mark.parametrize("parametrization", ["thermometric", "softmax"])
def test_a_search_that_meets_its_target_exactly_is_kept(bench, parametrization):
    model = supernet(bench, parametrization)
    model.freeze_mapping()
    searched = {name: layer.units_of_channels() for name, layer in model.split_layers()}
    model = supernet(bench, parametrization)
    landing = land_on_target(model, float(model.cost_of().detach()))
    assert landing.layers_changed == 0 and landing.landed_cost == landing.searched_cost
    assert all(torch.equal(layer.units_of_channels(), searched[name]) for name, layer in model.split_layers())


def test_landed_cost_grows_with_the_target(bench):
    landed = []
    for fraction in torch.linspace(0.45, 1.0, 12).tolist():
        model = supernet(bench, "softmax")
        landed.append(land_on_target(model, fraction * model.reference_cost()).landed_cost)
    assert landed == sorted(landed) and landed[0] < landed[-1]


@pytest.mark.parametrize("fraction", [0.5, 0.95])
def test_the_least_confident_channels_change_hands(bench, fraction):
    """Softmax: whatever the target, every layer's unit-0 channels are those the search prefers most
    for unit 0 (largest logit margin), so rounding never moves a confident channel before a doubtful one."""
    model = supernet(bench, "softmax")
    margins = {name: (layer.assignment.alpha[:, 0] - layer.assignment.alpha[:, 1]).detach()
               for name, layer in model.split_layers()}
    land_on_target(model, fraction * model.reference_cost())
    for name, layer in model.split_layers():
        on_first = layer.units_of_channels() == 0
        if bool(on_first.any()) and bool((~on_first).any()):
            assert margins[name][on_first].min() >= margins[name][~on_first].max()


def test_an_unreachable_target_gets_the_cheapest_mapping(bench):
    model = supernet(bench, "thermometric")
    cheapest = land_on_target(model, 1.0).landed_cost
    for fraction in (0.3, 0.6):
        other = supernet(bench, "thermometric")
        assert land_on_target(other, fraction * other.reference_cost()).landed_cost >= cheapest
    assert cheapest > 1.0

"""The search's cost gradient: exact discrete differences of the SoC's own formulas.

The derivative of the loss's cost with respect to moving one channel from unit a to unit b
(``g_b - g_a``) must have the sign of the exact difference of the hard cost for that move, checked
by enumeration over every searched layer, pair of units and several mappings.
"""

from __future__ import annotations

import pytest
import torch

from odimo_moo.discrete_cost import CostTables, pair_slopes, unit_gradients
from odimo_moo.layer_spec import LayerSpec, LayerTable, OpKind
from odimo_moo.layer_splits import min_latency_split, split_costs
from odimo_moo.models.builtin import TINY_WIDTH
from odimo_moo.models.mobilenet import mobilenetv1_darkside
from odimo_moo.models.resnet import resnet8, resnet20
from odimo_moo.recipe import Recipe
from odimo_moo.searchable import ODiMO
from odimo_moo.soc import FormulaUnit, SoC
from odimo_moo.training import assignment_optimizer

SIGNIFICANT = 0.01  # the threshold: moves changing the layer's cost by more than 1 %

CASES = {
    "diana/resnet8/8x8": ("diana", lambda: resnet8(10, 1, (8, 8)), (1, 8, 8)),
    "diana/resnet8/16x16": ("diana", lambda: resnet8(10, 1, (16, 16)), (1, 16, 16)),
    "diana/resnet20/32x32": ("diana", lambda: resnet20(10, 3, (32, 32)), (3, 32, 32)),
    "darkside/mobilenetv1_darkside/32x32": ("darkside", lambda: mobilenetv1_darkside(10, 3, (32, 32)), (3, 32, 32)),
    "darkside/mobilenetv1_darkside_tiny/32x32": (
        "darkside", lambda: mobilenetv1_darkside(10, 3, (32, 32), width=TINY_WIDTH), (3, 32, 32)),
}


def _mappings(model: ODiMO, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Channel counts ``[K, L]``: all on each unit, balanced, and three random splits."""
    units, layers = len(model.soc.units), len(model.split_names)
    result = {}
    for kind in ("first", "last", "balanced", "random0", "random1", "random2"):
        counts = torch.zeros(units, layers, dtype=torch.float64)
        for column, (_, layer) in enumerate(model.split_layers()):
            own, total = layer.unit_indices.tolist(), layer.channels
            if kind == "first":
                counts[own[0], column] = total
            elif kind == "last":
                counts[own[-1], column] = total
            elif kind == "balanced":
                counts[own[0], column], counts[own[1], column] = total // 2, total - total // 2
            else:
                cut = int(torch.randint(0, total + 1, (1,), generator=generator))
                counts[own[0], column], counts[own[1], column] = cut, total - cut
        result[kind] = counts
    return result


def _enumerate_signs(model: ODiMO, counts: torch.Tensor, metric: str) -> tuple[int, int, list[str]]:
    """(moves checked, local extrema skipped, failures) over every layer and ordered pair of its units."""
    variable = counts.clone().requires_grad_(True)
    cost = model.searched_cost_of(variable)[metric]
    cost.sum().backward()
    gradient = variable.grad
    base = model.searched_cost_of(counts)[metric].detach()

    def difference(source: int, target: int, column: int) -> float:
        moved = counts.clone()
        moved[source, column] -= 1
        moved[target, column] += 1
        return float(model.searched_cost_of(moved)[metric][column].detach() - base[column])

    checked, extrema, failures = 0, 0, []
    for column, (name, layer) in enumerate(model.split_layers()):
        threshold = SIGNIFICANT * float(base[column])
        for a in layer.unit_indices.tolist():
            for b in layer.unit_indices.tolist():
                if a == b or counts[a, column] < 1:
                    continue
                exact = difference(a, b, column)
                if abs(exact) <= threshold:
                    continue
                if counts[b, column] >= 1:
                    back = difference(b, a, column)
                    if abs(back) > threshold and (back > 0) == (exact > 0):
                        extrema += 1  # both moves raise (or both lower) the cost: no derivative can say both
                        continue
                checked += 1
                slope = float(gradient[b, column] - gradient[a, column])
                if (slope > 0) != (exact > 0):
                    failures.append(f"{name} {model.soc.units[a].name}->{model.soc.units[b].name} at "
                                    f"{counts[:, column].tolist()}: exact {exact:+.6g}, gradient {slope:+.6g}")
    return checked, extrema, failures


@pytest.mark.parametrize("metric", ["latency", "energy"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_cost_gradient_has_the_sign_of_the_exact_one_channel_difference(socs, case, metric):
    soc_name, build, shape = CASES[case]
    model = ODiMO(build(), socs[soc_name], shape, quantize=False)
    total_checked, total_extrema, failures = 0, 0, []
    for counts in _mappings(model, torch.Generator().manual_seed(0)).values():
        checked, extrema, failed = _enumerate_signs(model, counts, metric)
        total_checked, total_extrema, failures = total_checked + checked, total_extrema + extrema, failures + failed
    assert total_checked >= len(model.split_names), "too few significant moves to say anything"
    assert not failures, "\n".join(failures)
    assert total_extrema <= total_checked // 4


def test_entering_an_empty_unit_is_charged_its_fixed_overhead(socs):
    """DIANA, ResNet-8 conv1 (1 -> 16 channels, 3x3, 16x16 output): all digital
    ceil(16/16)*1*ceil(16/16)*16*9 + 16*16*(16+1)/8 = 144 + 544 = 688 cycles. One channel on the analog
    array: unroll u = 4 ((4+2)*64*3 = 1152 rows fit, u = 8 does not), weight load 8*1*3*3 = 72, plus
    16*16/4 = 64 passes of 18.2 cycles = 1164.8, i.e. 1236.8, above the 15 digital channels' 656: the
    layer rises by 548.8 (the old gradient said it saves 41)."""
    model = ODiMO(resnet8(10, 1, (16, 16)), socs["diana"], (1, 16, 16), quantize=False)
    assert model.split_names[0] == "conv1"
    counts = torch.zeros(2, len(model.split_names), dtype=torch.float64)
    for column, (_, layer) in enumerate(model.split_layers()):
        counts[0, column] = layer.channels
    variable = counts.clone().requires_grad_(True)
    latency = model.searched_cost_of(variable)["latency"]
    assert float(latency[0].detach()) == pytest.approx(688)
    latency.sum().backward()
    moved = counts.clone()
    moved[0, 0], moved[1, 0] = 15, 1
    after = float(model.searched_cost_of(moved)["latency"][0])
    assert after == pytest.approx(72 + 16 * 16 / 4 * 70 * 0.26)  # 1236.8
    # the only possible move's exact difference is the gradient: g_analog - g_digital
    assert float(variable.grad[1, 0] - variable.grad[0, 0]) == pytest.approx(after - 688)


def test_plateau_slope_looks_ahead_to_the_next_change():
    """A unit on a ceil plateau: moving one channel off changes nothing, the slope is that of the
    next step (where the cost changes)."""
    wide = FormulaUnit("wide", lambda layers, n: torch.ceil(n / 8) * 80.0, lambda spec: True, 1.0)
    slow = FormulaUnit("slow", lambda layers, n: n * 50.0, lambda spec: True, 1.0)
    soc = SoC("toy", [wide, slow], 1e6)
    table = LayerTable.from_specs([LayerSpec(OpKind.LINEAR, 4, 16, (1, 1), (1, 1), 1, (1, 1))])
    tables = CostTables(soc, CostTables.compute_times(soc, table, [[0, 1]]))
    counts = torch.tensor([[13.0], [3.0]], dtype=torch.float64)  # wide: ceil(13/8)*80 = 160, slow: 150
    slopes, feasible = pair_slopes(tables, counts, "latency")
    # wide -> slow: one move makes slow the bottleneck at 200: +40 at m = 1
    assert bool(feasible[0, 1]) and float(slopes[0, 1, 0]) == pytest.approx(40.0)
    # slow -> wide: wide stays at 160 until it needs a third pass at 17 channels (out of range): flat,
    # the slope of the last feasible move (3 channels) is 0 change -> 0
    assert float(slopes[1, 0, 0]) == pytest.approx(0.0)
    gradient = unit_gradients(slopes, feasible)
    assert float(gradient[1, 0] - gradient[0, 0]) == pytest.approx((40.0 - 0.0) / 2)
    assert float(gradient.sum()) == pytest.approx(0.0, abs=1e-9)


def test_three_unit_gradients_fit_a_tree_of_moves_exactly():
    slopes = torch.zeros(3, 3, 1, dtype=torch.float64)
    feasible = torch.zeros(3, 3, 1, dtype=torch.bool)
    # all channels on unit 0: only 0 -> 1 (+10) and 0 -> 2 (-100) are possible
    slopes[0, 1, 0], slopes[0, 2, 0] = 10.0, -100.0
    feasible[0, 1, 0] = feasible[0, 2, 0] = True
    g = unit_gradients(slopes, feasible)[:, 0]
    assert float(g[1] - g[0]) == pytest.approx(10.0)
    assert float(g[2] - g[0]) == pytest.approx(-100.0)


@pytest.mark.parametrize("parametrization", ["thermometric", "softmax"])
@pytest.mark.parametrize("init", ["first", "balanced", "random"])
def test_latency_only_descent_reaches_the_exact_integer_optimum(socs, parametrization, init):
    """DIANA ResNet-8 at 8x8: Adam on the assignment, latency alone, ends at the exact optimum."""
    soc = socs["diana"]
    model = ODiMO(resnet8(10, 1, (8, 8)), soc, (1, 8, 8), parametrization=parametrization, init=init,
                  quantize=False, metric="latency")
    optimum = sum(float(split_costs(soc, layer.spec, layer.unit_indices.tolist(), torch.tensor(
        [min_latency_split(soc, layer.spec, layer.unit_indices.tolist())])).latency_cycles[0])
        for _, layer in model.split_layers())
    optimizer = assignment_optimizer(model, Recipe())
    for _ in range(150):
        optimizer.zero_grad(set_to_none=True)
        model.cost.backward()
        optimizer.step()
    assert model.cost_report()["searched_latency_cycles"] == pytest.approx(optimum, rel=1e-9)


def test_cost_term_gradient_is_the_same_whatever_the_cycle_scale(socs):
    """lambda prices relative cost: a SoC whose every unit is 1000x slower gives the same gradient."""
    diana = socs["diana"]
    slower = SoC("diana_x1000", [
        FormulaUnit(unit.name, lambda layers, n, unit=unit: 1000.0 * unit.raw_cycles(layers, n), unit.supports,
                    unit.active_power_mw, unit.idle_power_mw, unit.data_format, unit.alternative)
        for unit in diana.units], diana.frequency_hz, default_unit=diana.default_unit)
    gradients = []
    for soc in (diana, slower):
        torch.manual_seed(0)
        model = ODiMO(resnet8(10, 1, (16, 16)), soc, (1, 16, 16), init="random", quantize=False)
        model.cost.backward()
        gradients.append(torch.cat([p.grad.flatten() for p in model.nas_parameters()]))
    assert float(gradients[0].abs().max()) > 0
    torch.testing.assert_close(gradients[0], gradients[1], rtol=1e-9, atol=0.0)


@pytest.mark.parametrize("feasible_pairs", [((0, 1), (1, 0)), ((0, 1),), ((1, 0),), ()])
def test_two_unit_closed_form_equals_the_least_squares_of_a_larger_system(feasible_pairs):
    """Two units take a closed form; embedded as units 0 and 1 of a three-unit system whose third unit
    has no feasible move, the general least-squares path gives the same differences."""
    two = torch.zeros(2, 2, 1, dtype=torch.float64)
    three = torch.zeros(3, 3, 1, dtype=torch.float64)
    two[0, 1, 0] = three[0, 1, 0] = 7.0
    two[1, 0, 0] = three[1, 0, 0] = 3.0
    feasible2 = torch.zeros(2, 2, 1, dtype=torch.bool)
    feasible3 = torch.zeros(3, 3, 1, dtype=torch.bool)
    for a, b in feasible_pairs:
        feasible2[a, b, 0] = feasible3[a, b, 0] = True
    g2, g3 = unit_gradients(two, feasible2)[:, 0], unit_gradients(three, feasible3)[:, 0]
    assert float(g2[1] - g2[0]) == pytest.approx(float(g3[1] - g3[0]), abs=1e-12)
    assert float(g2.sum()) == pytest.approx(0.0, abs=1e-12)


def _tables_of(model: ODiMO) -> CostTables:
    table = LayerTable.from_specs([layer.spec for _, layer in model.split_layers()])
    allowed = [layer.unit_indices.tolist() for _, layer in model.split_layers()]
    return CostTables(model.soc, CostTables.compute_times(model.soc, table, allowed))


def _random_counts(model: ODiMO, generator: torch.Generator) -> torch.Tensor:
    """``[K, L]`` counts: every layer's channels spread at random over its own units."""
    counts = torch.zeros(len(model.soc.units), len(model.split_names), dtype=torch.float64)
    for column, (_, layer) in enumerate(model.split_layers()):
        own = layer.unit_indices.tolist()
        units = torch.randint(0, len(own), (layer.channels,), generator=generator)
        for local, unit in enumerate(own):
            counts[unit, column] = float((units == local).sum())
    return counts


@pytest.mark.parametrize("soc_name", ["diana", "example_npu"])
@pytest.mark.parametrize("metric", ["latency", "energy"])
def test_remembered_layer_terms_equal_computing_every_layer_at_once(socs, soc_name, metric):
    """Costs and gradients handed out by CostTables.layer_terms (computed per missing layer, two-unit
    layers in bulk, then remembered) are those of pair_slopes/unit_gradients over all layers at once."""
    model = ODiMO(resnet8(10, 3, (16, 16)), socs.get(soc_name, soc_name), (3, 16, 16), quantize=False)
    assert {len(layer.unit_indices) for _, layer in model.split_layers()} >= ({2, 3} if soc_name == "example_npu"
                                                                             else {2})
    tables = _tables_of(model)
    generator = torch.Generator().manual_seed(5)
    for _ in range(4):  # misses first, then hits of the bulk-computed splits, then new misses
        counts = _random_counts(model, generator)
        terms = tables.layer_terms([tuple(c) for c in counts.long().t().tolist()], metric)
        fresh = _tables_of(model)
        expected_costs = model.soc.layer_costs(fresh.unit_cycles(counts))[metric]
        expected_gradients = unit_gradients(*pair_slopes(fresh, counts, metric))
        assert torch.equal(torch.tensor([cost for cost, _ in terms], dtype=torch.float64), expected_costs)
        assert torch.equal(torch.tensor([g for _, g in terms], dtype=torch.float64).t(), expected_gradients)
        assert torch.equal(tables.unit_gradient_table(counts, metric), expected_gradients)


def test_a_two_unit_layers_nearby_splits_come_in_one_pass_and_are_remembered(socs, monkeypatch):
    from odimo_moo import discrete_cost

    model = ODiMO(resnet8(10, 1, (8, 8)), socs["diana"], (1, 8, 8), quantize=False)
    tables = _tables_of(model)
    passes = []
    original = discrete_cost.pair_slopes
    monkeypatch.setattr(discrete_cost, "pair_slopes", lambda *args: passes.append(1) or original(*args))
    layers = [(layer.unit_indices.tolist(), layer.channels) for _, layer in model.split_layers()]
    widest = max(range(len(layers)), key=lambda index: layers[index][1])
    assert layers[widest][1] > discrete_cost.NEIGHBOURS + 1

    def ask(first: int) -> None:
        """Every layer's channels on its first unit, but ``first`` of the widest layer's."""
        columns = []
        for index, (units, channels) in enumerate(layers):
            column = [0, 0]
            column[units[0]] = first if index == widest else channels
            column[units[1]] = channels - column[units[0]]
            columns.append(tuple(column))
        tables.layer_terms(columns, "latency")

    for first in range(discrete_cost.NEIGHBOURS + 1):  # the first ask brings its neighbours
        ask(first)
    assert len(passes) == 1
    ask(discrete_cost.NEIGHBOURS + 1)  # one channel beyond them: a pass of its own, then remembered
    ask(discrete_cost.NEIGHBOURS + 1)
    ask(1)
    assert len(passes) == 2


def test_searched_layers_cost_equals_the_scattered_per_layer_costs(socs):
    """ODiMO.cost_of (one node over every layer's counts) has the value and the assignment gradient of
    the per-layer costs of the [K, L] counts (searched_cost_of(unit_counts())), summed."""
    torch.manual_seed(0)
    gradients, values = [], []
    for path in ("network", "scattered"):
        model = ODiMO(resnet8(10, 3, (16, 16)), "example_npu", (3, 16, 16), init="random", quantize=False)
        if path == "network":
            cost = model.cost_of("energy", include_fixed=False)
        else:
            cost = model.searched_cost_of(model.unit_counts())["energy"].sum()
        cost.backward()
        values.append(float(cost.detach()))
        gradients.append(torch.cat([p.grad.flatten() for p in model.nas_parameters()]))
    assert values[0] == values[1]
    assert float(gradients[0].abs().max()) > 0
    torch.testing.assert_close(gradients[0], gradients[1], rtol=1e-6, atol=0.0)

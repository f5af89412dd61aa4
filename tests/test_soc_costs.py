"""DIANA and Darkside cost formulas against values computed by hand (docs/DESIGN.md section 2.4).

Every expected value is written out as the formula instantiated with the layer's numbers, so a
reader can check the arithmetic without running anything.
"""

from __future__ import annotations

import math

import pytest
import torch

from odimo_moo.layer_spec import LayerSpec, LayerTable, OpKind
from odimo_moo.soc_plugins.darkside import build_darkside
from odimo_moo.soc_plugins.diana import build_diana

ceil = math.ceil
F_HZ = 260e6


def conv(cin: int, cout: int, k: int, out: int | tuple[int, int], groups: int = 1, stride: int = 1) -> LayerSpec:
    size = (out, out) if isinstance(out, int) else out
    return LayerSpec(OpKind.CONV2D, cin, cout, (k, k), (stride, stride), groups, size)


def linear(cin: int, cout: int) -> LayerSpec:
    return LayerSpec(OpKind.LINEAR, cin, cout)


def unit_cycles(soc, unit: str, spec: LayerSpec, n: float) -> float:
    table = LayerTable.from_specs([spec])
    return float(soc.unit(unit).cycles(table, torch.tensor([float(n)], dtype=torch.float64))[0])


@pytest.fixture(scope="module")
def diana():
    return build_diana()


@pytest.fixture(scope="module")
def darkside():
    return build_darkside()


# --- DIANA digital: ceil((n/groups)/16) * Cin * ceil(Wo/16) * Ho * kx*ky + gate(n) * Ho*Wo*(n + Cin)/8

DIANA_DIGITAL = [
    # docs/DESIGN.md reference: 16->16 at 32x32, 3x3, all digital = 13,312
    (conv(16, 16, 3, 32), 16, ceil(16 / 16) * 16 * ceil(32 / 16) * 32 * 9 + 32 * 32 * (16 + 16) / 8),
    (conv(64, 64, 3, 8), 40, ceil(40 / 16) * 64 * ceil(8 / 16) * 8 * 9 + 8 * 8 * (40 + 64) / 8),
    (conv(64, 64, 3, 8), 1, ceil(1 / 16) * 64 * ceil(8 / 16) * 8 * 9 + 8 * 8 * (1 + 64) / 8),
    (conv(32, 128, 1, (7, 20)), 100, ceil(100 / 16) * 32 * ceil(20 / 16) * 7 * 1 + 7 * 20 * (100 + 32) / 8),
    # depthwise 32 channels: n/groups per group
    (conv(32, 32, 3, 16, groups=32), 32, ceil(32 / 32 / 16) * 32 * ceil(16 / 16) * 16 * 9 + 16 * 16 * (32 + 32) / 8),
    (linear(256, 10), 10, ceil(10 / 16) * 256 * ceil(1 / 16) * 1 * 1 + 1 * 1 * (10 + 256) / 8),
]


@pytest.mark.parametrize("spec, n, expected", DIANA_DIGITAL)
def test_diana_digital(diana, spec, n, expected):
    assert unit_cycles(diana, "digital", spec, n) == pytest.approx(expected, rel=1e-12)


def test_diana_reference_numbers(diana):
    layer = conv(16, 16, 3, 32)
    assert unit_cycles(diana, "digital", layer, 16) == pytest.approx(13_312, rel=1e-12)
    assert unit_cycles(diana, "analog", layer, 16) == pytest.approx(5_811.2, rel=1e-12)


# --- DIANA analog: gate(n) * 8*Cin*kx*ky + ceil(n/512) * ceil(Cin/128) * Ho*Wo/u * 70*0.26
# u = largest of {1,2,4,8} with u*n <= 512 and (u + kx - 1) * max(64, Cin) * ky <= 1152

DIANA_ANALOG = [
    # reference: (u+2)*64*3 <= 1152 -> u <= 4; 4*16 <= 512 -> u = 4
    (conv(16, 16, 3, 32), 16, 8 * 16 * 9 + ceil(16 / 512) * ceil(16 / 128) * 32 * 32 / 4 * 70 * 0.26),
    # (u+2)*64*3 <= 1152 -> u = 4; 4*24 = 96 <= 512
    (conv(64, 64, 3, 8), 24, 8 * 64 * 9 + ceil(24 / 512) * ceil(64 / 128) * 8 * 8 / 4 * 70 * 0.26),
    # (u+2)*256*3 <= 1152 fails for every u -> u = 1
    (conv(256, 256, 3, 4), 256, 8 * 256 * 9 + ceil(256 / 512) * ceil(256 / 128) * 4 * 4 / 1 * 70 * 0.26),
    # 1x1 conv, 600 output channels: u*600 <= 512 fails -> u = 1; two column tiles
    (conv(32, 600, 1, 4), 600, 8 * 32 * 1 + ceil(600 / 512) * ceil(32 / 128) * 4 * 4 / 1 * 70 * 0.26),
    # 1x1 conv, 100 channels: 8*100 > 512, 4*100 <= 512 and (4+0)*64*1 <= 1152 -> u = 4
    (conv(32, 100, 1, 4), 100, 8 * 32 * 1 + ceil(100 / 512) * ceil(32 / 128) * 4 * 4 / 4 * 70 * 0.26),
    # linear 128 -> 64: 8*64 <= 512, (8+0)*128*1 <= 1152 -> u = 8
    (linear(128, 64), 64, 8 * 128 * 1 * 1 + ceil(64 / 512) * ceil(128 / 128) * 1 * 1 / 8 * 70 * 0.26),
]


@pytest.mark.parametrize("spec, n, expected", DIANA_ANALOG)
def test_diana_analog(diana, spec, n, expected):
    assert unit_cycles(diana, "analog", spec, n) == pytest.approx(expected, rel=1e-12)


# --- Darkside cluster: ceil(Ho/2)*ceil(Wo/8) * (2*k*k*Cin + ceil(n/4)*(14*ceil(k*k*Cin/4) + 15))

DARKSIDE_CLUSTER = [
    (conv(32, 32, 3, 16), 32, ceil(16 / 2) * ceil(16 / 8) * (2 * 9 * 32 + ceil(32 / 4) * (14 * ceil(9 * 32 / 4) + 15))),
    (conv(32, 32, 3, 16), 5, ceil(16 / 2) * ceil(16 / 8) * (2 * 9 * 32 + ceil(5 / 4) * (14 * ceil(9 * 32 / 4) + 15))),
    (conv(24, 48, 3, 7), 48, ceil(7 / 2) * ceil(7 / 8) * (2 * 9 * 24 + ceil(48 / 4) * (14 * ceil(9 * 24 / 4) + 15))),
    (conv(64, 128, 1, (8, 17)), 100,
     ceil(8 / 2) * ceil(17 / 8) * (2 * 1 * 64 + ceil(100 / 4) * (14 * ceil(1 * 64 / 4) + 15))),
    (linear(256, 10), 10, ceil(1 / 2) * ceil(1 / 8) * (2 * 1 * 256 + ceil(10 / 4) * (14 * ceil(256 / 4) + 15))),
]


@pytest.mark.parametrize("spec, n, expected", DARKSIDE_CLUSTER)
def test_darkside_cluster(darkside, spec, n, expected):
    assert unit_cycles(darkside, "cluster", spec, n) == pytest.approx(expected, rel=1e-12)


# --- Darkside DWE: ceil(n/16) * (9 + 9*Wo + 4*Ho*Wo)

DARKSIDE_DWE = [
    (conv(32, 32, 3, 16), 32, ceil(32 / 16) * (9 + 9 * 16 + 4 * 16 * 16)),
    (conv(32, 32, 3, 16), 17, ceil(17 / 16) * (9 + 9 * 16 + 4 * 16 * 16)),
    (conv(64, 64, 3, (4, 6)), 1, ceil(1 / 16) * (9 + 9 * 6 + 4 * 4 * 6)),
    (conv(128, 128, 3, 8, groups=128), 128, ceil(128 / 16) * (9 + 9 * 8 + 4 * 8 * 8)),
]


@pytest.mark.parametrize("spec, n, expected", DARKSIDE_DWE)
def test_darkside_dwe(darkside, spec, n, expected):
    assert unit_cycles(darkside, "dwe", spec, n) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("soc_name, unit", [("diana", "digital"), ("diana", "analog"),
                                            ("darkside", "cluster"), ("darkside", "dwe")])
@pytest.mark.parametrize("spec", [conv(16, 16, 3, 32), conv(64, 64, 3, 8), linear(128, 64)])
def test_zero_channels_cost_exactly_zero(diana, darkside, soc_name, unit, spec):
    soc = diana if soc_name == "diana" else darkside
    table = LayerTable.from_specs([spec])
    assert float(soc.unit(unit).cycles(table, torch.zeros(1, dtype=torch.float64))[0]) == 0.0
    # a fraction of a channel already pays the gated overheads, and its gradient says so
    n = torch.full((1,), 0.5, dtype=torch.float64, requires_grad=True)
    cycles = soc.unit(unit).cycles(table, n)
    cycles.sum().backward()
    assert float(cycles.detach()[0]) > 0 and float(n.grad[0]) > 0


def test_vectorized_table_matches_single_layers(diana, darkside):
    specs = [spec for spec, _, _ in DIANA_DIGITAL]
    counts = torch.tensor([float(n) for _, n, _ in DIANA_DIGITAL], dtype=torch.float64)
    together = diana.unit("digital").cycles(LayerTable.from_specs(specs), counts)
    for i, (spec, n, expected) in enumerate(DIANA_DIGITAL):
        assert float(together[i]) == pytest.approx(expected, rel=1e-12)
    specs = [spec for spec, _, _ in DARKSIDE_CLUSTER]
    counts = torch.tensor([float(n) for _, n, _ in DARKSIDE_CLUSTER], dtype=torch.float64)
    together = darkside.unit("cluster").cycles(LayerTable.from_specs(specs), counts)
    assert together.tolist() == pytest.approx([e for _, _, e in DARKSIDE_CLUSTER], rel=1e-12)


def _split_costs(soc, spec: LayerSpec, counts: list[float]):
    table = LayerTable.from_specs([spec])
    cycles = soc.unit_cycles(table, torch.tensor([[c] for c in counts], dtype=torch.float64))
    latency = cycles.max(dim=0).values
    return cycles[:, 0].tolist(), float(latency[0]), float(soc.energy(cycles, latency)[0])


def test_diana_split_energy_is_not_additive(diana):
    spec = conv(16, 16, 3, 32)
    (t_d, t_a), latency, energy = _split_costs(diana, spec, [8.0, 8.0])
    assert t_d == pytest.approx(ceil(8 / 16) * 16 * ceil(32 / 16) * 32 * 9 + 32 * 32 * (8 + 16) / 8)
    assert t_a == pytest.approx(8 * 16 * 9 + ceil(8 / 512) * ceil(16 / 128) * 32 * 32 / 4 * 70 * 0.26)
    assert latency == pytest.approx(max(t_d, t_a))
    m = min(t_d, t_a)
    assert energy == pytest.approx(42.39 * m + 28.74 * (t_a - m) + 24.96 * (t_d - m), rel=1e-12)
    # 42.39 * 5811.2 + 24.96 * (12288 - 5811.2) mW x cycles
    assert energy == pytest.approx(42.39 * 5811.2 + 24.96 * (12288 - 5811.2), rel=1e-12)
    assert float(diana.to_microjoules(torch.tensor(energy))) == pytest.approx(energy / F_HZ * 1e3)


@pytest.mark.parametrize("counts", [[16.0, 0.0], [0.0, 16.0], [3.0, 13.0]])
def test_diana_energy_single_unit_and_analog_longer(diana, counts):
    spec = conv(16, 16, 3, 32)
    (t_d, t_a), _, energy = _split_costs(diana, spec, counts)
    m = min(t_d, t_a)
    assert energy == pytest.approx(42.39 * m + 28.74 * (t_a - m) + 24.96 * (t_d - m), rel=1e-12)
    if counts[1] == 0:
        assert energy == pytest.approx(24.96 * 13_312)
    if counts[0] == 0:
        assert energy == pytest.approx(28.74 * 5_811.2)


def test_darkside_split_energy_active_plus_idle(darkside):
    spec = conv(32, 32, 3, 16)
    (t_c, t_d), latency, energy = _split_costs(darkside, spec, [16.0, 16.0])
    assert t_c == pytest.approx(8 * 2 * (2 * 9 * 32 + ceil(16 / 4) * (14 * ceil(9 * 32 / 4) + 15)))
    assert t_d == pytest.approx(ceil(16 / 16) * (9 + 9 * 16 + 4 * 16 * 16))
    assert latency == t_c
    expected = 168 * t_c + 118 * t_d + 1.32 * (latency - t_c) + 1.32 * (latency - t_d)
    assert energy == pytest.approx(expected, rel=1e-12)
    assert float(darkside.to_microjoules(torch.tensor(energy))) == pytest.approx(expected / 260e6 * 1e3)


def test_darkside_all_dwe_energy(darkside):
    spec = conv(64, 64, 3, 8)
    (t_c, t_d), latency, energy = _split_costs(darkside, spec, [0.0, 64.0])
    assert t_c == 0.0
    assert t_d == pytest.approx(ceil(64 / 16) * (9 + 9 * 8 + 4 * 8 * 8))
    assert energy == pytest.approx(118 * t_d + 1.32 * t_d, rel=1e-12)


def test_support_rules(diana, darkside):
    assert diana.supporting_units(conv(16, 16, 3, 8)) == (0, 1)
    assert diana.supporting_units(conv(16, 16, 3, 8, groups=16)) == (0,)
    assert diana.supporting_units(linear(64, 10)) == (0, 1)
    assert darkside.supporting_units(conv(32, 32, 3, 8)) == (0, 1)
    assert darkside.supporting_units(conv(32, 32, 3, 8, groups=32)) == (1,)
    assert darkside.supporting_units(conv(32, 64, 3, 8)) == (0,)
    assert darkside.supporting_units(conv(32, 32, 5, 8)) == (0,)
    assert darkside.supporting_units(linear(32, 32)) == (0,)
    assert darkside.units[darkside.fixed_unit(conv(32, 32, 3, 8, groups=32))].name == "dwe"
    assert darkside.units[darkside.fixed_unit(conv(32, 64, 1, 8))].name == "cluster"

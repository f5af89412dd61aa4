"""Per-layer split search (min latency, balanced, continuous bound) and whole-network genomes.

The exact searches are checked against a plain Python enumeration that calls each unit's cycle
formula one split at a time; the enumeration path and the threshold search (``max_candidates=1``)
must both agree with it.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from odimo_moo.errors import UsageError
from odimo_moo.genome import GenomeLayout, counts_to_genome, genome_to_counts, random_genomes, repair_genome
from odimo_moo.layer_spec import LayerSpec, LayerTable, OpKind
from odimo_moo.layer_splits import (balanced_split, compositions, ideal_latency_bound, layer_units, min_latency_split,
                                    split_costs)
from odimo_moo.models.resnet import resnet8
from odimo_moo.searchable import ODiMO
from odimo_moo.soc import FormulaUnit, SoC
from odimo_moo.yaml_soc import load_soc_file

EXAMPLE_NPU = Path(__file__).resolve().parents[1] / "soc_plugins" / "example_npu.yaml"


def conv(cin: int, cout: int, k: int, out: int | tuple[int, int], groups: int = 1) -> LayerSpec:
    size = (out, out) if isinstance(out, int) else out
    return LayerSpec(OpKind.CONV2D, cin, cout, (k, k), (1, 1), groups, size)


@pytest.fixture(scope="module")
def all_socs(socs):
    return {**socs, "example_npu": load_soc_file(EXAMPLE_NPU)}


# (soc, layer): DIANA and Darkside with two units, the example NPU with three.
LAYERS = [
    ("diana", conv(16, 16, 3, 32)),
    ("diana", conv(64, 64, 3, 8)),
    ("diana", conv(3, 16, 3, 32)),
    ("diana", conv(2, 32, 1, (10, 16))),
    ("diana", LayerSpec(OpKind.LINEAR, 64, 10)),
    ("darkside", conv(32, 32, 3, 16)),
    ("darkside", conv(24, 24, 3, 4, groups=24)),
    ("example_npu", conv(16, 16, 3, 8)),
    ("example_npu", conv(12, 12, 3, 4)),
]


def brute_force(soc: SoC, spec: LayerSpec) -> list[tuple[tuple[int, ...], float, float]]:
    """Every split as (counts, latency, spread), one formula call per unit and split."""
    units = soc.supporting_units(spec)
    table = LayerTable.from_specs([spec])
    rows = []
    for counts in itertools.product(range(spec.out_channels + 1), repeat=len(units)):
        if sum(counts) != spec.out_channels:
            continue
        times = [float(soc.units[u].cycles(table, torch.tensor([float(n)], dtype=torch.float64))[0])
                 for u, n in zip(units, counts)]
        rows.append((counts, max(times), max(times) - min(times)))
    return rows


def latency_of(soc: SoC, spec: LayerSpec, counts) -> float:
    return float(split_costs(soc, spec, soc.supporting_units(spec), torch.tensor([list(counts)])).latency_cycles[0])


def spread_of(soc: SoC, spec: LayerSpec, counts) -> float:
    costs = split_costs(soc, spec, soc.supporting_units(spec), torch.tensor([list(counts)]))
    return float(costs.latency_cycles[0] - costs.unit_cycles[:, 0].min())


@pytest.mark.parametrize("soc_name, spec", LAYERS)
def test_min_latency_split_matches_brute_force(all_socs, soc_name, spec):
    soc = all_socs[soc_name]
    best = min(latency for _, latency, _ in brute_force(soc, spec))
    for max_candidates in (10 ** 6, 1):  # enumeration, then the threshold search
        split = min_latency_split(soc, spec, max_candidates=max_candidates)
        assert sum(split) == spec.out_channels and min(split) >= 0
        assert latency_of(soc, spec, split) == pytest.approx(best, rel=1e-12)


@pytest.mark.parametrize("soc_name, spec", LAYERS)
def test_balanced_split_matches_brute_force(all_socs, soc_name, spec):
    soc = all_socs[soc_name]
    rows = brute_force(soc, spec)
    best_spread = min(spread for _, _, spread in rows)
    best_latency = min(latency for _, latency, spread in rows if spread == best_spread)
    split = balanced_split(soc, spec)
    assert spread_of(soc, spec, split) == pytest.approx(best_spread, abs=1e-9)
    assert latency_of(soc, spec, split) == pytest.approx(best_latency, rel=1e-12)
    searched = balanced_split(soc, spec, max_candidates=1)
    assert spread_of(soc, spec, searched) == pytest.approx(best_spread, abs=1e-9)


def test_balanced_split_finishes_exactly_together(socs):
    """DIANA, 1x1 conv 2 -> 32 channels on a 10x16 output, split 16 digital / 16 analog:

    digital(16) = ceil(16/16) * Cin * ceil(Wo/16) * Ho * kx*ky + Ho*Wo*(n + Cin)/8
                = 1 * 2 * 1 * 10 * 1 + 10*16*(16 + 2)/8 = 20 + 360 = 380
    analog(16):  u = 8 (8*16 <= 512 and (8 + 1 - 1) * max(64, 2) * 1 = 512 <= 1152)
                 = 8*Cin*kx*ky + ceil(16/512) * ceil(2/128) * Ho*Wo/u * 70 * 0.26
                 = 16 + 1 * 1 * 160/8 * 18.2 = 16 + 364 = 380
    """
    spec = conv(2, 32, 1, (10, 16))
    split = balanced_split(socs["diana"], spec)
    assert split == (16, 16)
    costs = split_costs(socs["diana"], spec, (0, 1), torch.tensor([[16, 16]]))
    assert costs.unit_cycles[:, 0].tolist() == [380.0, 380.0]


def linear_soc() -> SoC:
    """Two units whose cycles are exactly 3n and 5n (no rounding, no overhead)."""
    def rate(cycles_per_channel: float):
        return lambda layers, n: cycles_per_channel * n + 0 * layers.in_channels
    units = [FormulaUnit("three", rate(3.0), lambda spec: True, 1.0),
             FormulaUnit("five", rate(5.0), lambda spec: True, 1.0)]
    return SoC("linear", units, 1e6)


def test_bound_is_the_finish_time_of_the_continuous_split():
    """C = 7 channels at 3 and 5 cycles each: both units finish together at x = 35/8 channels on the
    first, T = 3 * 35/8 = 13.125. The best integer split (4/3 or 5/2) takes 15 cycles."""
    soc = linear_soc()
    spec = LayerSpec(OpKind.LINEAR, 4, 7)
    assert ideal_latency_bound(soc, spec) == pytest.approx(13.125, rel=1e-6)
    assert ideal_latency_bound(soc, spec) <= 13.125
    assert latency_of(soc, spec, min_latency_split(soc, spec)) == 15.0
    assert ideal_latency_bound(soc, spec, units=[1]) == pytest.approx(35.0, rel=1e-6)


@pytest.mark.parametrize("soc_name, spec", LAYERS[:2] + LAYERS[5:6] + LAYERS[7:8])
def test_bound_is_below_the_min_latency_split(all_socs, soc_name, spec):
    soc = all_socs[soc_name]
    bound = ideal_latency_bound(soc, spec)
    latency = latency_of(soc, spec, min_latency_split(soc, spec))
    assert 0 < bound <= latency
    assert bound >= 0.5 * latency


def test_compositions_count_every_split_once():
    for total, parts in [(0, 2), (5, 1), (5, 2), (6, 3), (4, 4)]:
        rows = compositions(total, parts)
        assert rows.shape == (math.comb(total + parts - 1, parts - 1), parts)
        assert bool((rows.sum(dim=1) == total).all()) and bool((rows >= 0).all())
        assert len({tuple(r) for r in rows.tolist()}) == rows.shape[0]


def test_layer_units_rejects_units_that_cannot_run_the_layer(socs):
    depthwise = conv(16, 16, 3, 8, groups=16)
    with pytest.raises(UsageError, match="cannot run"):
        min_latency_split(socs["diana"], depthwise, units=[0, 1])
    assert layer_units(socs["diana"], depthwise) == (0,)
    assert min_latency_split(socs["diana"], depthwise) == (16,)


# ----------------------------------------------------------------------------- genomes
@st.composite
def layouts_and_genomes(draw):
    layers = draw(st.integers(1, 4))
    units = draw(st.integers(2, 3))
    channels = tuple(draw(st.integers(1, 40)) for _ in range(layers))
    allowed = []
    for _ in range(layers):
        row = draw(st.lists(st.booleans(), min_size=units, max_size=units).filter(any))
        allowed.append(tuple(row))
    layout = GenomeLayout(tuple(f"l{i}" for i in range(layers)), channels, tuple(allowed),
                          tuple(f"u{k}" for k in range(units)))
    genes = draw(st.lists(st.floats(-50, 120, allow_nan=False), min_size=layout.size, max_size=layout.size))
    return layout, np.array(genes)


def _valid(layout: GenomeLayout, genome: torch.Tensor) -> bool:
    per_layer = genome.view(layout.num_layers, layout.num_units)
    sums_ok = torch.equal(per_layer.sum(dim=1), layout.channels_tensor())
    return bool(sums_ok and (per_layer >= 0).all() and (per_layer[~layout.allowed_tensor()] == 0).all())


@settings(max_examples=100, deadline=None)
@given(layouts_and_genomes())
def test_repair_makes_valid_genomes_close_to_the_proportions(case):
    layout, genes = case
    repaired = repair_genome(genes, layout)
    assert repaired.dtype == torch.long and repaired.shape == (layout.size,)
    assert _valid(layout, repaired)
    assert torch.equal(repair_genome(repaired, layout), repaired)  # idempotent: valid genomes are kept
    clipped = np.clip(np.round(genes), 0, None).reshape(layout.num_layers, layout.num_units)
    clipped = np.minimum(clipped, np.array(layout.channels)[:, None]) * np.array(layout.allowed)
    for l, channels in enumerate(layout.channels):
        if clipped[l].sum() > 0:
            share = clipped[l] * channels / clipped[l].sum()
            assert np.all(np.abs(repaired.view(layout.num_layers, -1)[l].numpy() - share) < 1)


@settings(max_examples=50, deadline=None)
@given(layouts_and_genomes(), st.integers(1, 5))
def test_repair_works_on_populations(case, count):
    layout, genes = case
    population = np.stack([genes + i for i in range(count)])
    repaired = repair_genome(population, layout)
    assert repaired.shape == (count, layout.size)
    for i in range(count):
        assert torch.equal(repaired[i], repair_genome(population[i], layout))


def test_repair_rejects_wrong_sizes_and_nan():
    layout = GenomeLayout(("a",), (4,), ((True, True),), ("x", "y"))
    with pytest.raises(UsageError, match="2 genes"):
        repair_genome([1, 2, 3], layout)
    with pytest.raises(UsageError, match="NaN"):
        repair_genome([float("nan"), 1], layout)
    assert repair_genome([0, 0], layout).tolist() == [2, 2]  # nothing left: an even split
    assert repair_genome([-3, 9], layout).tolist() == [0, 4]


def test_random_genomes_are_valid_and_reach_every_two_unit_split():
    layout = GenomeLayout(("a", "b"), (3, 5), ((True, True), (False, True)), ("x", "y"))
    genomes = random_genomes(layout, 400, torch.Generator().manual_seed(0))
    assert all(_valid(layout, g) for g in genomes)
    assert {tuple(g[:2].tolist()) for g in genomes} == {(0, 3), (1, 2), (2, 1), (3, 0)}
    again = random_genomes(layout, 400, torch.Generator().manual_seed(0))
    assert torch.equal(genomes, again)


def test_genomes_convert_to_the_counts_force_counts_takes(socs):
    model = ODiMO(resnet8(num_classes=10, in_channels=1, input_size=(8, 8)), socs["diana"], (1, 8, 8))
    layout = GenomeLayout.from_model(model)
    assert layout.names == tuple(model.split_names) and layout.unit_names == ("digital", "analog")
    genome = random_genomes(layout, 1, torch.Generator().manual_seed(3))[0]
    counts = genome_to_counts(model, genome)
    model.force_counts(counts)
    assert model.channel_split() == {name: dict(zip(("digital", "analog"), c)) for name, c in counts.items()}
    assert torch.equal(counts_to_genome(model, counts), genome)
    broken = genome.clone()
    broken[0] += 1
    with pytest.raises(UsageError, match="repair_genome"):
        genome_to_counts(model, broken)

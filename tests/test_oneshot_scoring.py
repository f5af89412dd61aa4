"""One-shot scoring: BatchNorm recalibration under the forced mapping (and the supernet's statistics
put back), which archive points are trained, and the archive's hypervolume against evaluations."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from odimo_moo.batchnorm import preserved_batchnorm, recalibrate_batchnorm
from odimo_moo.oneshot import OneShotSearch, SearchBudget, choose_points
from odimo_moo.pareto import ReferencePoint, Scored, hypervolume_trace
from odimo_moo.phases import warmup
from odimo_moo.recipe import Recipe
from odimo_moo.workbench import Setup, Workbench


@pytest.fixture(scope="module")
def warmed(tmp_path_factory):
    bench = Workbench(Setup(data_limit=300, device="cpu", progress=False),
                      cache_dir=tmp_path_factory.mktemp("warmup"))
    model, _ = warmup(bench, Recipe(warmup_epochs=2, batch_size=32))
    return bench, model


def batchnorm_state(model) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, float | None]]:
    return [(m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone(), m.momentum)
            for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]


def test_recalibration_rescues_a_mapping_whose_statistics_are_off_and_restores_them(warmed):
    bench, model = warmed
    all_digital = {name: [layer.channels, 0] for name, layer in model.split_layers()}
    with torch.no_grad():  # statistics that fit no mapping: shifted means, shrunk variances
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.add_(3.0)
                module.running_var.mul_(0.01)
    before = batchnorm_state(model)
    plain = OneShotSearch(bench, model, SearchBudget(1, 0, 1, recalibration_batches=0), batch_size=32)
    recalibrated = OneShotSearch(bench, model, SearchBudget(1, 0, 1, recalibration_batches=8), batch_size=32)
    off = plain.evaluate(all_digital)
    fixed = recalibrated.evaluate(all_digital)
    assert off < 0.2 and fixed > off + 0.3, (off, fixed)  # chance (10 classes) vs a working network
    after = batchnorm_state(model)
    for (m0, v0, n0, p0), (m1, v1, n1, p1) in zip(before, after):
        assert torch.equal(m0, m1) and torch.equal(v0, v1) and torch.equal(n0, n1) and p0 == p1
    val = len(bench.data.val)
    assert plain.images == val and recalibrated.images == 8 * 32 + val


def test_recalibration_is_the_average_over_the_batches(warmed):
    bench, model = warmed
    batches = bench.calibration_batches(3, 16)
    assert [b.shape[0] for b in batches] == [16, 16, 16]
    assert all(torch.equal(a, b) for a, b in zip(batches, bench.calibration_batches(3, 16)))  # fixed images
    stem = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    seen = []
    hook = stem.register_forward_hook(lambda module, inputs, output: seen.append(inputs[0].mean(dim=(0, 2, 3))))
    with preserved_batchnorm(model):
        assert recalibrate_batchnorm(model, batches, bench.device) == 48
        recalibrated = stem.running_mean.clone()
        assert stem.momentum is None and not stem.training
    hook.remove()
    assert torch.allclose(recalibrated, torch.stack(seen).mean(dim=0), atol=1e-6)
    assert stem.momentum == 0.1  # put back


def test_chosen_points_fill_up_from_the_next_fronts():
    # front: (0.9, 10), (0.5, 1); next rank: (0.8, 12), (0.4, 2); then (0.3, 20)
    archive = [Scored((i,), acc, cost) for i, (acc, cost) in
               enumerate([(0.9, 10), (0.5, 1), (0.8, 12), (0.4, 2), (0.3, 20)])]
    assert [(p.val_accuracy, p.cost) for p in choose_points(archive, 2)] == [(0.5, 1), (0.9, 10)]
    assert [(p.val_accuracy, p.cost) for p in choose_points(archive, 4)] == [(0.5, 1), (0.4, 2), (0.9, 10),
                                                                               (0.8, 12)]
    assert len(choose_points(archive, 9)) == 5


def test_hypervolume_trace_by_hand():
    reference = ReferencePoint(accuracy=0.0, cost=10.0)
    points = [Scored((0,), 0.5, 5.0, 1, 0.1), Scored((1,), 0.4, 6.0, 2, 0.2),  # dominated: no step
              Scored((2,), 0.8, 8.0, 3, 0.3), Scored((3,), 0.2, 9.0, 4, 0.4)]
    # 0.5 x 5 = 2.5; then + (0.8 - 0.5) x 2 = 3.1; the last point changes nothing but closes the trace
    assert hypervolume_trace(points, reference) == [[1, 0.1, 2.5], [3, 0.3, pytest.approx(3.1)], [4, 0.4,
                                                                                               pytest.approx(3.1)]]


def test_search_records_each_point_and_its_hypervolume_trace(warmed, tmp_path: Path):
    bench, model = warmed
    search = OneShotSearch(bench, model, SearchBudget(4, 0, 1, recalibration_batches=1), batch_size=32)
    from odimo_moo.genome import random_genomes

    search.score(random_genomes(search.layout, 6, torch.Generator().manual_seed(0)))
    summary = search.summary()
    assert summary["proposed"] == 4 and [p["evaluation"] for p in summary["points"]] == list(
        range(1, len(search.archive) + 1))
    trace = summary["hypervolume_trace"]["trace"]
    assert trace[-1][0] == summary["points"][-1]["evaluation"] and trace[-1][2] > 0
    assert summary["images"] == len(search.archive) * (32 + len(bench.data.val))

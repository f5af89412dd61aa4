"""BatchNorm statistics re-estimated before every validation (odimo_moo.batchnorm, PhaseRunner)."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from odimo_moo.batchnorm import precise_batchnorm
from odimo_moo.training import PhaseRunner, PhaseSpec


def network() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))


def test_validation_sees_the_statistics_of_the_weights_it_validates(tmp_path):
    model = network()
    inputs, labels = torch.randn(32, 1, 8, 8), torch.randint(0, 3, (32,))
    loader = DataLoader(TensorDataset(inputs, labels), batch_size=8)
    calibration = [torch.randn(16, 1, 8, 8) + 2.0, torch.randn(16, 1, 8, 8) - 1.0]
    seen = {}
    runner = PhaseRunner(model, loader, loader, torch.device("cpu"), tmp_path, progress=False, calibration=calibration,
                         on_epoch_end=lambda phase, epoch, metrics: seen.update(mean=model[1].running_mean.clone()))
    runner.run(PhaseSpec("train", 1, lambda: [torch.optim.SGD(model.parameters(), lr=0.5)]))
    with torch.no_grad():
        features = [model[0](batch) for batch in calibration]
    # exact statistics of the calibration images at the trained weights (BatchNorm's cumulative
    # average: the mean over all of them, the mean of the per-batch variances), not a lagging average
    assert torch.allclose(seen["mean"], torch.cat(features).mean(dim=(0, 2, 3)), atol=1e-5)
    variance = torch.stack([f.var(dim=(0, 2, 3)) for f in features]).mean(dim=0)
    assert torch.allclose(model[1].running_var, variance, rtol=1e-4)
    assert model[1].momentum == 0.1  # training goes on averaging as before


def test_without_calibration_batches_the_running_averages_stay():
    model = network()
    model.train()
    model(torch.randn(8, 1, 8, 8) * 3.0)
    before = model[1].running_mean.clone()
    assert precise_batchnorm(model, [], torch.device("cpu")) == 0
    assert torch.equal(model[1].running_mean, before)

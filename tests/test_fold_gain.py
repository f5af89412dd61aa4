"""Folding BatchNorm into a layer whose unit cannot hold the folded weight exactly (DIANA's ternary
channels: a power-of-two scale): the scale is rounded once, from the scale the network computed
with, and the folded channel keeps BatchNorm's output mean."""

from __future__ import annotations

import math

import torch
import torch.fx as fx
from torch import nn

from odimo_moo.batchnorm import recalibrate_batchnorm
from odimo_moo.data_formats import TernaryFormat
from odimo_moo.deploy import FixedQuantizedLayer, fold_batchnorm
from odimo_moo.models.resnet import resnet8
from odimo_moo.searchable import ODiMO

LOG2_LEARNED = torch.tensor([-3.4, -3.4, -2.2, -2.6, -4.0, -3.0])  # in use: 2^-3, -3, -2, -3, -4, -3
LOG2_BATCHNORM = torch.tensor([0.4, -0.4, 0.3, 1.45, -0.2, 0.0])  # BatchNorm scale gamma / sigma


def _ternary_layer_with_batchnorm() -> tuple[fx.GraphModule, torch.Tensor]:
    """A Linear in DIANA's analog format (power-of-two ternary scales ``2^round(LOG2_LEARNED)``)
    followed by a BatchNorm whose statistics are exactly those of the returned inputs, and whose
    scales are ``2^LOG2_BATCHNORM``."""
    torch.manual_seed(0)
    network = fx.symbolic_trace(nn.Sequential(nn.Linear(12, 6), nn.BatchNorm1d(6)))
    fixed = FixedQuantizedLayer(network.get_submodule("0"), 1, TernaryFormat(7, power_of_two_step=True), False)
    network.add_submodule("0", fixed)
    inputs = torch.randn(256, 12) * 0.5 + 0.3
    fixed(inputs)  # initializes the ternary scales
    with torch.no_grad():
        fixed.weight_quantizer.log_scale.copy_(LOG2_LEARNED * math.log(2.0))
        network.get_submodule("0").layer.bias.add_(0.5)
    recalibrate_batchnorm(network, [inputs], torch.device("cpu"))
    norm = network.get_submodule("1")
    with torch.no_grad():
        norm.weight.copy_(torch.exp2(LOG2_BATCHNORM) * torch.sqrt(norm.running_var + norm.eps))
        norm.bias.copy_(torch.linspace(-0.5, 0.5, 6))
    return network, inputs


def test_a_folded_ternary_scale_is_the_power_of_two_nearest_to_the_one_computed_with():
    network, _ = _ternary_layer_with_batchnorm()
    quantizer = network.get_submodule("0").weight_quantizer
    in_use = quantizer.channel_scale().detach().clone()
    assert torch.equal(in_use, torch.exp2(LOG2_LEARNED.round()))
    fold_batchnorm(network, {"0": network.get_submodule("0")})
    nearest = torch.exp2(torch.round(torch.log2(in_use) + LOG2_BATCHNORM))
    assert torch.equal(quantizer.channel_scale().detach(), nearest)
    # Rounding the learned scale times the BatchNorm scale would round channels 1 and 3 the other way:
    assert not torch.equal(nearest, torch.exp2(torch.round(LOG2_LEARNED + LOG2_BATCHNORM)))


def test_a_folded_channel_moves_only_its_gain_around_the_batchnorm_mean():
    """Folded output = beta + gain * (BatchNorm output - beta), gain the rounding of the channel's
    scale: over the data of its statistics every channel's mean stays beta."""
    network, inputs = _ternary_layer_with_batchnorm()
    network.eval()
    with torch.no_grad():
        before = network(inputs)
        beta = network.get_submodule("1").bias.detach().clone()
        fold_batchnorm(network, {"0": network.get_submodule("0")})
        after = network(inputs)
    rounding = LOG2_BATCHNORM - LOG2_BATCHNORM.round()
    gain = torch.exp2(-rounding)
    assert not torch.allclose(gain, torch.ones(6))
    torch.testing.assert_close(after, beta + gain * (before - beta), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(after.mean(0), beta, rtol=0, atol=1e-5)


def test_a_searched_layer_keeps_each_channels_batchnorm_mean(socs):
    """The same on a searched layer (DIANA's stem conv): over the images of its statistics, each
    folded analog channel's output mean is the BatchNorm output's (folding without the gain moved
    one by 0.48 here); a digital channel's moves by its 8-bit weights' new rounding only."""
    torch.manual_seed(0)
    model = ODiMO(resnet8(10, 1, (8, 8)), socs["diana"], (1, 8, 8), init="balanced", deploy_format=True)
    images = torch.randn(64, 1, 8, 8) + 0.5
    model.train()
    model(images)
    model.freeze_mapping()
    recalibrate_batchnorm(model, [images], torch.device("cpu"))
    stem = model.split_layer("conv1")
    assert set(stem.units_of_channels().tolist()) == {0, 1}
    means = []
    with torch.no_grad():
        for module in (model.model.get_submodule("bn1"), stem):
            handle = module.register_forward_hook(lambda m, args, output: means.append(output.mean((0, 2, 3))))
            model(images)
            handle.remove()
            model.fold_batchnorm(integer_bias=False)
    analog = stem.units_of_channels() == 1
    torch.testing.assert_close(means[1][analog], means[0][analog], rtol=0, atol=1e-5)
    torch.testing.assert_close(means[1][~analog], means[0][~analog], rtol=0, atol=0.05)

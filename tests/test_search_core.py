"""The differentiable search: conversion, assignments, cost in the loss, export, quantizers."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from odimo_moo.errors import UsageError
from odimo_moo.models.mobilenet import mobilenetv1_darkside
from odimo_moo.models.resnet import resnet8, resnet20
from odimo_moo.quantizers import ActivationQuantizer
from odimo_moo.weight_quantizers import IntWeightQuantizer, TernaryWeightQuantizer
from odimo_moo.searchable import ODiMO
from odimo_moo.split_layer import MaskMode


def _models():
    return {
        "resnet8": (lambda: resnet8(num_classes=10, in_channels=1, input_size=(8, 8)), (1, 8, 8)),
        "resnet20": (lambda: resnet20(num_classes=10, in_channels=3, input_size=(32, 32)), (3, 32, 32)),
        "mobilenetv1_darkside": (lambda: mobilenetv1_darkside(num_classes=10, in_channels=3, input_size=(32, 32),
                                                              width=0.25), (3, 32, 32)),
        "tv_resnet18": (lambda: torchvision.models.resnet18(num_classes=10), (3, 32, 32)),
        "tv_mobilenet_v2": (lambda: torchvision.models.mobilenet_v2(num_classes=10, width_mult=0.35), (3, 32, 32)),
    }


MODELS = _models()


def _randomize_batchnorm(model: nn.Module) -> nn.Module:
    """Non-trivial BN statistics so that equality tests are not fooled by identity BNs."""
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 1.5)
    return model.eval()


@pytest.mark.parametrize("soc_name", ["diana", "darkside"])
@pytest.mark.parametrize("model_name", list(MODELS))
def test_conversion_preserves_output(socs, soc_name, model_name):
    build, shape = MODELS[model_name]
    model = _randomize_batchnorm(build())
    searchable = ODiMO(model, socs[soc_name], shape, quantize=False, init=socs[soc_name].units[0].name).eval()
    x = torch.randn((2,) + shape)
    torch.testing.assert_close(searchable(x), model(x), rtol=1e-5, atol=1e-5)


def test_darkside_splits_exactly_the_eight_dense_blocks(socs):
    build, shape = MODELS["mobilenetv1_darkside"]
    searchable = ODiMO(build(), socs["darkside"], shape)
    assert len(searchable.split_names) == 8
    for _, layer in searchable.split_layers():
        assert layer.spec.groups == 1 and layer.spec.in_channels == layer.spec.out_channels
        assert layer.spec.kernel_size == (3, 3) and layer.spec.stride == (1, 1)


def test_diana_resnet20_matches_reference_cycle_counts(socs):
    """docs/DESIGN.md 2.4: whole ResNet-20 all-digital 257,673 cycles; all-analog 88,121; first/last digital 86,964."""
    build, shape = MODELS["resnet20"]
    model = ODiMO(build(), socs["diana"], shape)
    names = model.split_names
    all_on = lambda unit: {n: [0 if u != unit else model.split_layer(n).channels for u in (0, 1)] for n in names}
    model.force_counts(all_on(0))
    assert model.cost_report()["latency_cycles"] == pytest.approx(257_673, abs=0.5)
    analog = all_on(1)
    model.force_counts(analog)
    assert model.cost_report()["latency_cycles"] == pytest.approx(88_121, abs=1.0)
    first_last = dict(analog)
    for name in (names[0], names[-1]):
        first_last[name] = [model.split_layer(name).channels, 0]
    model.force_counts(first_last)
    assert model.cost_report()["latency_cycles"] == pytest.approx(86_964, abs=1.0)


def test_exclusion_by_name_and_type_leaves_layers_fixed(socs):
    build, shape = MODELS["resnet8"]
    model = ODiMO(build(), socs["diana"], shape, exclude=["conv1", nn.Linear])
    assert "conv1" not in model.split_names and "fc" not in model.split_names
    assert {f.name for f in model.fixed_layers} == {"conv1", "fc"}
    with pytest.raises(UsageError, match="unknown layer"):
        ODiMO(build(), socs["diana"], shape, exclude=["no_such_layer"])


@pytest.mark.parametrize("parametrization", ["thermometric", "softmax"])
def test_gradients_reach_assignment_from_task_loss_and_cost(socs, parametrization):
    build, shape = MODELS["resnet8"]
    model = ODiMO(build(), socs["diana"], shape, parametrization=parametrization, init="balanced")
    x, y = torch.randn(8, *shape), torch.randint(0, 10, (8,))
    F.cross_entropy(model(x), y).backward()
    task_grads = [p.grad.abs().sum().item() for p in model.nas_parameters()]
    assert all(g > 0 for g in task_grads)
    model.zero_grad()
    model.cost.backward()
    cost_grads = [p.grad.abs().sum().item() for p in model.nas_parameters()]
    assert sum(g > 0 for g in cost_grads) >= len(cost_grads) - 1  # the fc layer may sit on a flat step


@pytest.mark.parametrize("init", ["first", "balanced", "random"])
def test_thermometric_init_has_no_dead_gradients(socs, init):
    """Every threshold parameter of every layer gets a finite, nonzero gradient from the task loss and
    from the cost term at initialization (a parametrization with a flat spot there, such as |alpha|
    at alpha = 0, would leave that channel boundary frozen)."""
    build, shape = MODELS["resnet8"]
    model = ODiMO(build(), socs["diana"], shape, init=init, seed=3)
    generator = torch.Generator().manual_seed(0)
    x, y = torch.randn(8, *shape, generator=generator), torch.randint(0, 10, (8,), generator=generator)
    for term in (lambda: F.cross_entropy(model(x), y), lambda: model.cost):
        model.zero_grad(set_to_none=True)
        term().backward()
        for name, parameter in zip(model.split_names, model.nas_parameters()):
            assert parameter.grad is not None, name
            assert bool(torch.isfinite(parameter.grad).all()), name
            assert int((parameter.grad == 0).sum()) == 0, f"{name}: dead gradients at init {init}"


def test_thermometric_three_units_contiguous_ranges():
    from odimo_moo.assignment import ThermometricAssignment

    assignment = ThermometricAssignment(10, 3, init=[3, 4, 3])
    units = assignment.mask().argmax(1).tolist()
    assert units == [0, 0, 0, 1, 1, 1, 1, 2, 2, 2]
    assert assignment.mask().sum(0).tolist() == [3.0, 4.0, 3.0]


def _train_assignments(model: ODiMO, lambda_: float, steps: int = 25) -> None:
    optimizer = torch.optim.Adam(model.nas_parameters(), lr=0.01)
    x, y = torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,))
    for _ in range(steps):
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x), y) + lambda_ * model.cost.float()
        loss.backward()
        optimizer.step()


def test_large_lambda_moves_channels_to_the_cheaper_unit(socs):
    """At 32x32 DIANA's analog array is ~2.3x faster per layer than the digital unit."""
    build = lambda: resnet8(num_classes=10, in_channels=3, input_size=(32, 32))
    free = ODiMO(build(), socs["diana"], (3, 32, 32), init="digital")
    costly = ODiMO(build(), socs["diana"], (3, 32, 32), init="digital")
    _train_assignments(free, 0.0)
    _train_assignments(costly, 1e-3)
    analog = lambda m: sum(split["analog"] for split in m.channel_split().values())
    assert analog(costly) > analog(free) + 20
    assert costly.cost_report()["latency_cycles"] < free.cost_report()["latency_cycles"]


@pytest.mark.parametrize("soc_name", ["diana", "darkside"])
@pytest.mark.parametrize("parametrization", ["thermometric", "softmax"])
@pytest.mark.parametrize("model_name", ["resnet8", "mobilenetv1_darkside", "tv_resnet18", "tv_mobilenet_v2"])
def test_export_equals_frozen_supernet(socs, soc_name, parametrization, model_name):
    build, shape = MODELS[model_name]
    model = ODiMO(_randomize_batchnorm(build()), socs[soc_name], shape, parametrization=parametrization,
                  init="random", seed=7)
    if not model.split_names:
        pytest.skip(f"{soc_name} splits no layer of {model_name}")
    x = torch.randn((3,) + shape)
    model.train()
    model(x)  # initializes data-dependent quantizer state as training would
    model.eval()
    model.freeze_mapping()
    exported = model.export().eval()
    assert not any(isinstance(m, type(model.split_layer(model.split_names[0]))) for m in exported.modules())
    torch.testing.assert_close(exported(x), model(x), rtol=1e-5, atol=1e-5)


def test_exported_sub_layers_hold_exactly_their_channels(socs):
    build, shape = MODELS["resnet8"]
    model = ODiMO(build(), socs["diana"], shape, parametrization="softmax", init="random", seed=1).eval()
    model.freeze_mapping()
    exported = model.export()
    for name, per_unit in model.mapping().items():
        split = exported.get_submodule(name)
        counts = sorted(branch.layer.weight.shape[0] for branch in split.branches)
        assert counts == sorted(len(c) for c in per_unit.values() if c)


def test_forced_mapping_is_respected_and_validated(socs):
    build, shape = MODELS["resnet8"]
    model = ODiMO(build(), socs["diana"], shape)
    name = model.split_names[1]
    channels = model.split_layer(name).channels
    model.force_mapping({name: [1] * channels})
    assert model.channel_split()[name] == {"digital": 0, "analog": channels}
    with pytest.raises(UsageError):
        model.force_counts({name: [1, 1]})
    with pytest.raises(UsageError):
        model.force_mapping({"nope": [0]})


def test_sample_mode_draws_new_splits(socs):
    build, shape = MODELS["resnet8"]
    model = ODiMO(build(), socs["diana"], shape)
    model.set_mode(MaskMode.SAMPLE)
    layer = model.split_layer(model.split_names[3])
    masks = {tuple(layer.mask().sum(0).tolist()) for _ in range(20)}
    assert len(masks) > 3


def test_ternary_quantizer_values_and_gradient():
    weight = torch.randn(8, 4, 3, 3, requires_grad=True)
    quantizer = TernaryWeightQuantizer(8)
    out = quantizer(weight)
    scales = quantizer.log_scale.exp().view(-1, 1, 1, 1)
    levels = (out / scales).detach()
    assert set(torch.round(levels).unique().tolist()) <= {-1.0, 0.0, 1.0}
    torch.testing.assert_close(levels, torch.round(levels))
    out.sum().backward()
    assert weight.grad is not None and quantizer.log_scale.grad is not None


@pytest.mark.parametrize("bits", [4, 8])
def test_int_weight_quantizer_grid(bits):
    weight = torch.randn(16, 8, 3, 3)
    quantizer = IntWeightQuantizer(bits)
    scale = quantizer.scale(weight)
    assert float(torch.log2(scale)) == pytest.approx(round(float(torch.log2(scale))))
    steps = quantizer(weight) / scale
    torch.testing.assert_close(steps, torch.round(steps))
    assert steps.min() >= -(2 ** (bits - 1)) and steps.max() <= 2 ** (bits - 1) - 1


def test_activation_quantizer_unsigned_7_bit():
    quantizer = ActivationQuantizer(bits=7, signed=False, init_clip=2.0)
    x = torch.linspace(-1, 3, 101, requires_grad=True)
    y = quantizer(x)
    step = 2.0 / 127
    values = y.detach()
    assert float(values.min()) == 0.0 and float(values.max()) == pytest.approx(2.0)
    torch.testing.assert_close(y / step, torch.round(y / step))
    assert len(y.unique()) <= 128
    y.sum().backward()
    assert x.grad is not None and quantizer.log2_clip.grad is not None


def test_loss_cost_is_the_log_of_the_hard_cost_over_the_default_unit_reference(socs):
    build, shape = MODELS["resnet20"]
    model = ODiMO(build(), socs["diana"], shape, init="balanced")
    report = model.cost_report()
    assert float(model.cost_of().detach()) == pytest.approx(report["latency_cycles"], rel=1e-12)
    # the reference is everything on DIANA's default (digital) unit: 257,673 cycles for ResNet-20
    assert model.reference_cost("latency") == pytest.approx(257_673)
    assert report["reference_latency_cycles"] == pytest.approx(257_673)
    assert float(model.cost.detach()) == pytest.approx(math.log(report["latency_cycles"] / model.reference_cost()),
                                                       rel=1e-12)
    model.freeze_mapping()
    model.force_counts({name: [layer.channels, 0] for name, layer in model.split_layers()})
    assert float(model.cost.detach()) == pytest.approx(0.0, abs=1e-12)


def test_odimo_takes_a_soc_by_name_or_registry_entry():
    from odimo_moo.registry import PluginRegistry

    entry = PluginRegistry.load().socs()["diana"]
    by_name = ODiMO(resnet8(10, 1, (16, 16)), "diana", (1, 16, 16))
    by_entry = ODiMO(resnet8(10, 1, (16, 16)), entry, (1, 16, 16))
    assert by_name.soc.unit_names == by_entry.soc.unit_names == ("digital", "analog")
    assert by_name.split_names == by_entry.split_names and by_name.split_names
    with pytest.raises(UsageError, match="unknown SoC 'tpu9000'; registered SoCs: .*diana"):
        ODiMO(resnet8(10, 1, (16, 16)), "tpu9000", (1, 16, 16))


def test_random_softmax_init_draws_each_channel_not_a_block():
    model = ODiMO(resnet8(10, 1, (16, 16)), "diana", (1, 16, 16), parametrization="softmax",
                  init="random", seed=3)
    runs = []
    for _, layer in model.split_layers():
        units = layer.units_of_channels()
        runs.append(int((units[1:] != units[:-1]).sum()) + 1)  # contiguous blocks of one unit
    assert max(runs) > 2  # a contiguous split has at most 2 blocks with 2 units


def test_force_mapping_takes_unit_names():
    by_index = ODiMO(resnet8(10, 1, (16, 16)), "diana", (1, 16, 16))
    by_name = ODiMO(resnet8(10, 1, (16, 16)), "diana", (1, 16, 16))
    name, layer = next(by_index.split_layers())
    pattern = [c % 2 for c in range(layer.channels)]  # digital (0), analog (1), ...
    by_index.force_mapping({name: pattern})
    by_name.force_mapping({name: [("digital", "analog")[u] for u in pattern]})
    assert by_name.mapping() == by_index.mapping()
    assert by_name.mapping()[name]["analog"] == list(range(1, layer.channels, 2))
    with pytest.raises(UsageError, match="SoC 'diana' has no unit 'npu'"):
        by_name.force_mapping({name: ["npu"] * layer.channels})

"""Built-in models: shapes, fx-traceability, the ResNet-20 and Darkside layer structure, lookup errors."""

from __future__ import annotations

import importlib.metadata

import pytest
import torch
from torch import nn

from odimo_moo.errors import UsageError
from odimo_moo.models import ModelEntry, build_model
from odimo_moo.registry import PluginRegistry

# (in_channels, input_size, num_classes): digits, MNIST, CIFAR-10.
INPUTS = [(1, (8, 8), 10), (1, (28, 28), 10), (3, (32, 32), 10)]
FAST_MODELS = ["resnet8", "resnet20", "resnet18", "mobilenetv1_tiny", "mobilenetv1_darkside_tiny"]


@pytest.fixture(scope="module")
def models() -> dict:
    registry = PluginRegistry()
    registry.load_plugin("odimo_moo.models.builtin")
    return registry.models()


def _structure(models: dict, name: str, num_classes: int, in_channels: int,
               input_size: tuple[int, int]) -> nn.Module:
    """A model built on the meta device: its layers without the cost of allocating weights."""
    with torch.device("meta"):
        return build_model(models, name, num_classes, in_channels, input_size)


def _convs(model: nn.Module) -> list[nn.Conv2d]:
    return [m for m in model.modules() if isinstance(m, nn.Conv2d)]


def test_builtin_models_declared_as_entry_point() -> None:
    eps = {ep.name: ep.value for ep in importlib.metadata.entry_points(group="odimo_moo")}
    assert eps.get("models") == "odimo_moo.models.builtin"


def test_registry_lists_every_builtin(models: dict) -> None:
    assert {"resnet8", "resnet20", "resnet18", "mobilenetv1", "mobilenetv1_darkside",
            "mobilenetv1_darkside_tiny"} <= set(models)
    assert all(isinstance(r.obj, ModelEntry) and r.obj.description for r in models.values())


CASES = [(name, *shape) for name in FAST_MODELS for shape in INPUTS
         if not (name == "resnet18" and shape[1] == (28, 28))]  # the slowest; 1-channel covered by 8x8


@pytest.mark.parametrize("name,in_channels,input_size,num_classes", CASES)
def test_forward_and_fx_trace(models: dict, name: str, in_channels: int, input_size: tuple[int, int],
                              num_classes: int) -> None:
    torch.manual_seed(0)
    model = build_model(models, name, num_classes, in_channels, input_size).eval()
    x = torch.randn(2, in_channels, *input_size)
    with torch.no_grad():
        out = model(x)
        traced = torch.fx.symbolic_trace(model)
        assert torch.equal(traced(x), out)
    assert out.shape == (2, num_classes)
    assert _convs(model)[0].in_channels == in_channels


def test_large_inputs_keep_imagenet_stems(models: dict) -> None:
    resnet = _structure(models, "resnet18", 1000, 3, (224, 224))
    assert resnet.conv1.kernel_size == (7, 7) and resnet.conv1.stride == (2, 2)
    assert isinstance(resnet.maxpool, nn.MaxPool2d)
    small = _structure(models, "resnet18", 10, 3, (32, 32))
    assert small.conv1.kernel_size == (3, 3) and small.conv1.stride == (1, 1)
    assert isinstance(small.maxpool, nn.Identity)
    mobilenet = build_model(models, "mobilenetv1_tiny", 1000, 3, (64, 64)).eval()
    assert _convs(mobilenet)[0].stride == (2, 2)
    with torch.no_grad():
        assert mobilenet(torch.randn(1, 3, 64, 64)).shape == (1, 1000)


def _layer_table(model: nn.Module, input_size: tuple[int, int]) -> list[tuple]:
    """(in, out, kernel, stride, output H, W) of every Conv2d/Linear in execution order."""
    rows: list[tuple] = []

    def record(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        if isinstance(module, nn.Conv2d):
            rows.append((module.in_channels, module.out_channels, module.kernel_size[0], module.stride[0],
                         tuple(output.shape[2:])))
        else:
            rows.append((module.in_features, module.out_features, 1, 1, (1, 1)))

    handles = [m.register_forward_hook(record) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        model.eval()(torch.randn(1, 3, *input_size))
    for handle in handles:
        handle.remove()
    return rows


def test_resnet20_layer_list(models: dict) -> None:
    rows = _layer_table(build_model(models, "resnet20", 10, 3, (32, 32)), (32, 32))
    expected = [(3, 16, 3, 1, (32, 32))]
    expected += [(16, 16, 3, 1, (32, 32))] * 6
    expected += [(16, 32, 3, 2, (16, 16)), (32, 32, 3, 1, (16, 16)), (16, 32, 1, 2, (16, 16))]
    expected += [(32, 32, 3, 1, (16, 16))] * 4
    expected += [(32, 64, 3, 2, (8, 8)), (64, 64, 3, 1, (8, 8)), (32, 64, 1, 2, (8, 8))]
    expected += [(64, 64, 3, 1, (8, 8))] * 4
    expected += [(64, 10, 1, 1, (1, 1))]
    assert rows == expected
    assert sum(1 for r in rows if r[2] == 3) == 19
    assert sum(1 for r in rows if r[2] == 1 and r[4] != (1, 1)) == 2


def test_resnet8_has_one_block_per_stage(models: dict) -> None:
    rows = _layer_table(build_model(models, "resnet8", 10, 3, (32, 32)), (32, 32))
    assert len(rows) == 1 + 3 * 2 + 2 + 1


@pytest.mark.parametrize("name,width", [("mobilenetv1_darkside", 1.0), ("mobilenetv1_darkside_tiny", 0.25)])
def test_darkside_has_eight_dense_3x3_convs(models: dict, name: str, width: float) -> None:
    model = _structure(models, name, 10, 3, (32, 32))
    convs = _convs(model)
    dense = [c for c in convs if c.kernel_size == (3, 3) and c.stride == (1, 1) and c.groups == 1
             and c.in_channels == c.out_channels]
    assert [c.out_channels for c in dense] == [int(c * width) for c in [128, 256] + [512] * 5 + [1024]]
    assert model.fc.in_features == int(1024 * width)
    depthwise = [c for c in convs if c.groups > 1]
    assert len(depthwise) == 13 - 8
    assert all(c.groups == c.in_channels == c.out_channels for c in depthwise)


def test_standard_mobilenet_has_13_depthwise_blocks(models: dict) -> None:
    model = _structure(models, "mobilenetv1", 10, 3, (32, 32))
    convs = _convs(model)
    depthwise = [c for c in convs if c.groups > 1]
    assert [(c.in_channels, c.stride[0]) for c in depthwise] == [
        (32, 1), (64, 2), (128, 1), (128, 2), (256, 1), (256, 2), (512, 1), (512, 1), (512, 1),
        (512, 1), (512, 1), (512, 2), (1024, 1)]
    assert len(convs) == 1 + 13 * 2 and model.fc.in_features == 1024


def test_unknown_model_lists_known_names(models: dict) -> None:
    with pytest.raises(UsageError, match="resnet20"):
        build_model(models, "resnet21", 10, 3, (32, 32))


def test_build_model_accepts_plain_entries() -> None:
    entry = ModelEntry("linear", lambda num_classes, in_channels, input_size: nn.Linear(in_channels, num_classes),
                       "a linear layer")
    assert build_model({"linear": entry}, "linear", 4, 2, (1, 1)).out_features == 4
    with pytest.raises(UsageError, match="linear"):
        build_model({"linear": entry}, "mlp", 4, 2, (1, 1))

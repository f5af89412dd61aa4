"""Built-in models: shapes, fx-traceability, the ResNet-20 and Darkside layer structure, the Darkside
search space's split layers, stem-stride option and cycle counts, lookup errors."""

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
            "mobilenetv1_darkside_tiny", "mobilenetv1_darkside_stem1", "mobilenetv1_darkside_pw"} <= set(models)
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


def _conv_table(model: nn.Module, input_size: tuple[int, int]) -> list[tuple]:
    """(name, in, out, kernel, stride, groups, output H, W) of every Conv2d, and ("fc", ...) for the
    classifier, in execution order; run on the meta device when the model is there."""
    rows: list[tuple] = []
    names = {module: name for name, module in model.named_modules()}

    def record(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        if isinstance(module, nn.Conv2d):
            rows.append((names[module], module.in_channels, module.out_channels, module.kernel_size[0],
                         module.stride[0], module.groups, tuple(output.shape[2:])))
        else:
            rows.append((names[module], module.in_features, module.out_features, 1, 1, 1, (1, 1)))

    handles = [m.register_forward_hook(record) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    device = next(model.parameters()).device
    with torch.no_grad():
        model.eval()(torch.zeros(2, 3, *input_size, device=device))
    for handle in handles:
        handle.remove()
    return rows


# The paper's search space at 32x32 with stem stride 2 (docs/DESIGN.md 2.4): (name, in, out, k, stride, groups, HxW).
# Searched: the 8 dense 3x3 convs blocks.{2,4,6..10,12}.conv; 5 dw + pw blocks, stem and fc fixed.
DARKSIDE_32 = [
    ("stem.0", 3, 32, 3, 2, 1, (16, 16)),
    ("blocks.0.spatial", 32, 32, 3, 1, 32, (16, 16)), ("blocks.0.pointwise", 32, 64, 1, 1, 1, (16, 16)),
    ("blocks.1.spatial", 64, 64, 3, 2, 64, (8, 8)), ("blocks.1.pointwise", 64, 128, 1, 1, 1, (8, 8)),
    ("blocks.2.conv", 128, 128, 3, 1, 1, (8, 8)),
    ("blocks.3.spatial", 128, 128, 3, 2, 128, (4, 4)), ("blocks.3.pointwise", 128, 256, 1, 1, 1, (4, 4)),
    ("blocks.4.conv", 256, 256, 3, 1, 1, (4, 4)),
    ("blocks.5.spatial", 256, 256, 3, 2, 256, (2, 2)), ("blocks.5.pointwise", 256, 512, 1, 1, 1, (2, 2)),
    *[(f"blocks.{i}.conv", 512, 512, 3, 1, 1, (2, 2)) for i in range(6, 11)],
    ("blocks.11.spatial", 512, 512, 3, 2, 512, (1, 1)), ("blocks.11.pointwise", 512, 1024, 1, 1, 1, (1, 1)),
    ("blocks.12.conv", 1024, 1024, 3, 1, 1, (1, 1)),
    ("fc", 1024, 10, 1, 1, 1, (1, 1)),
]
SEARCHED = ["blocks.2.conv", "blocks.4.conv"] + [f"blocks.{i}.conv" for i in range(6, 11)] + ["blocks.12.conv"]


def test_darkside_layer_list_at_32x32(models: dict) -> None:
    """The paper's MobileNetV1 (F = 32): each stride-1 Cin == Cout block is ONE dense 3x3 conv."""
    assert _conv_table(_structure(models, "mobilenetv1_darkside", 10, 3, (32, 32)), (32, 32)) == DARKSIDE_32


@pytest.mark.parametrize("name,width", [("mobilenetv1_darkside", 1.0), ("mobilenetv1_darkside_tiny", 0.25)])
def test_darkside_splits_exactly_the_eight_dense_convs(models: dict, socs: dict, name: str, width: float) -> None:
    from odimo_moo.searchable import ODiMO

    model = ODiMO(build_model(models, name, 10, 3, (32, 32)), socs["darkside"], (3, 32, 32))
    assert model.split_names == SEARCHED
    channels = [int(c * width) for c in [128, 256] + [512] * 5 + [1024]]
    sizes = [8, 4, 2, 2, 2, 2, 2, 1]
    for (_, layer), c, size in zip(model.split_layers(), channels, sizes):
        spec = layer.spec
        assert (spec.in_channels, spec.out_channels, spec.groups) == (c, c, 1)
        assert spec.kernel_size == (3, 3) and spec.stride == (1, 1)
        assert tuple(spec.output_size) == (size, size)
        assert [model.soc.units[int(u)].name for u in layer.unit_indices] == ["cluster", "dwe"]
    fixed = {f.name: model.soc.units[f.unit].name for f in model.fixed_layers}
    assert set(fixed) == {row[0] for row in DARKSIDE_32} - set(SEARCHED)
    assert all(unit == ("dwe" if name.endswith("spatial") else "cluster") for name, unit in fixed.items())


@pytest.mark.parametrize("name", ["mobilenetv1_darkside", "mobilenetv1_darkside_tiny", "mobilenetv1_darkside_stem1"])
def test_no_pointwise_after_a_searched_layer(models: dict, name: str) -> None:
    """A searched conv is followed (after its BN + ReLU) by the next block's 3x3 conv, or the classifier."""
    model = _structure(models, name, 10, 3, (32, 32))
    rows = _conv_table(model, (32, 32))
    names = [row[0] for row in rows]
    for searched in SEARCHED:
        following = rows[names.index(searched) + 1]
        assert following[3] == 3 or following[0] == "fc", (searched, following)
        block = model.get_submodule(searched.rsplit(".", 1)[0])
        assert [type(m) for m in block.children()] == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU]
    assert sum(1 for row in rows if row[3] == 1 and row[0] != "fc") == 5


def test_darkside_pw_variant_keeps_the_pointwise_and_stem_stride_1(models: dict) -> None:
    rows = _conv_table(_structure(models, "mobilenetv1_darkside_pw", 10, 3, (32, 32)), (32, 32))
    assert rows[0] == ("stem.0", 3, 32, 3, 1, 1, (32, 32))
    dense = [i for i, row in enumerate(rows) if row[3] == 3 and row[4] == 1 and row[5] == 1 and i > 0]
    assert [rows[i][6][0] for i in dense] == [16, 8, 4, 4, 4, 4, 4, 2]
    assert all(rows[i + 1][3] == 1 and rows[i + 1][0].endswith("pointwise") for i in dense)
    assert _convs(_structure(models, "mobilenetv1_darkside_pw", 10, 3, (224, 224)))[0].stride == (2, 2)


def _searched_sizes(model: nn.Module, input_size: tuple[int, int]) -> list[int]:
    rows = _conv_table(model, input_size)
    return [row[6][0] for row in rows if row[0] in SEARCHED]


def test_darkside_stem_stride_option(models: dict) -> None:
    """Stride 2 by default (the paper's CIFAR-10 32x32 and ImageNet 224x224 setups), 1 on request (CIFAR-100)."""
    from odimo_moo.models.mobilenet import mobilenetv1, mobilenetv1_darkside

    with torch.device("meta"):
        default = mobilenetv1_darkside(100, 3, (32, 32))
        stride1 = mobilenetv1_darkside(100, 3, (32, 32), stem_stride=1)
        imagenet = mobilenetv1_darkside(1000, 3, (224, 224))
    assert default.stem[0].stride == (2, 2) and stride1.stem[0].stride == (1, 1)
    assert _searched_sizes(default, (32, 32)) == [8, 4, 2, 2, 2, 2, 2, 1]
    assert _searched_sizes(stride1, (32, 32)) == [16, 8, 4, 4, 4, 4, 4, 2]
    assert _searched_sizes(imagenet, (224, 224)) == [56, 28, 14, 14, 14, 14, 14, 7]
    registered = _structure(models, "mobilenetv1_darkside_stem1", 100, 3, (32, 32))
    assert _conv_table(registered, (32, 32)) == _conv_table(stride1, (32, 32))
    with torch.device("meta"):
        optioned = build_model(models, "mobilenetv1_darkside", 100, 3, (32, 32), options={"stem_stride": 1})
        tiny = build_model(models, "mobilenetv1_darkside_tiny", 10, 3, (32, 32), options={"stem_stride": 1})
        standard = build_model(models, "mobilenetv1", 10, 3, (32, 32), options={"stem_stride": 2})
    assert optioned.stem[0].stride == tiny.stem[0].stride == (1, 1)
    assert standard.stem[0].stride == (2, 2)
    assert _structure(models, "mobilenetv1", 10, 3, (32, 32)).stem[0].stride == (1, 1)
    with pytest.raises(UsageError, match="stem_stride"):
        mobilenetv1_darkside(10, 3, (32, 32), stem_stride=0)
    with pytest.raises(UsageError, match="does not take option"):
        build_model(models, "resnet20", 10, 3, (32, 32), options={"stem_stride": 1})
    with pytest.raises(UsageError, match="num_classes"):
        build_model(models, "mobilenetv1", 10, 3, (32, 32), options={"num_classes": 5})
    assert isinstance(mobilenetv1(10, 3, (32, 32), stem_stride=2), nn.Module)


@pytest.mark.parametrize("stem_stride,input_size", [(2, (32, 32)), (1, (32, 32)), (2, (224, 224))])
def test_darkside_output_shape(stem_stride: int, input_size: tuple[int, int]) -> None:
    from odimo_moo.models.mobilenet import mobilenetv1_darkside

    torch.manual_seed(0)
    model = mobilenetv1_darkside(100, 3, input_size, width=0.25, stem_stride=stem_stride).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, *input_size)).shape == (2, 100)


@pytest.mark.parametrize("name", ["mobilenetv1_darkside_tiny", "mobilenetv1_darkside_stem1"])
def test_darkside_all_cluster_float_equals_plain_model(models: dict, socs: dict, name: str) -> None:
    """All channels on the cluster (the dense conv) with float formats: ODiMO computes the plain model."""
    from odimo_moo.searchable import ODiMO

    torch.manual_seed(0)
    model = build_model(models, name, 10, 3, (32, 32)).eval()
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 1.5)
    searchable = ODiMO(model, socs["darkside"], (3, 32, 32), quantize=False, init="cluster").eval()
    assert len(searchable.split_names) == 8
    assert all(split == {"cluster": layer.channels, "dwe": 0}
               for (_, layer), split in zip(searchable.split_layers(), searchable.channel_split().values()))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(searchable(x), model(x), rtol=1e-5, atol=1e-5)


def test_darkside_cycles_of_the_first_searched_layer(socs: dict) -> None:
    """blocks.2.conv: 128 -> 128, 3x3, output 8x8 (32x32 input, stem stride 2). docs/DESIGN.md 2.4:

    cluster, n channels: ceil(8/2)*ceil(8/8) * (2*9*128 + ceil(n/4)*(14*ceil(9*128/4) + 15))
        = 4 * (2304 + ceil(n/4)*(14*288 + 15)) = 4 * (2304 + ceil(n/4)*4047)
        n = 128: 4 * (2304 + 32*4047) = 4 * 131,808 = 527,232;  n = 64: 4 * (2304 + 16*4047) = 268,224
    dwe, n channels: ceil(n/16) * (9 + 9*8 + 4*8*8) = ceil(n/16) * 337
        n = 128: 8 * 337 = 2,696;  n = 64: 4 * 337 = 1,348
    Whole searched part all on the dwe: 2,696 + 16*(9+36+64) + 5*32*(9+18+16) + 64*(9+9+4)
        = 2,696 + 1,744 + 6,880 + 1,408 = 12,728.
    """
    from odimo_moo.models.mobilenet import mobilenetv1_darkside
    from odimo_moo.searchable import ODiMO

    model = ODiMO(mobilenetv1_darkside(10, 3, (32, 32)), socs["darkside"], (3, 32, 32))
    all_on = {n: [0, model.split_layer(n).channels] for n in model.split_names}
    for split, cluster, dwe in [((128, 0), 527_232, 0), ((0, 128), 0, 2_696), ((64, 64), 268_224, 1_348)]:
        model.force_counts({**all_on, "blocks.2.conv": list(split)})
        report = model.cost_report()
        layer = report["layers"]["blocks.2.conv"]
        assert layer["unit_cycles"] == {"cluster": cluster, "dwe": dwe}
        assert layer["latency_cycles"] == max(cluster, dwe)
    model.force_counts(all_on)
    assert model.cost_report()["searched_latency_cycles"] == 12_728


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

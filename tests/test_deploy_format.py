"""Training as deployed: power-of-two activation steps (bit-exact integer requantization), fixed layers
in their unit's format, BatchNorm folded for the fine-tune, and a run's reported accuracy equal to
its integer (QDQ) export's (DIANA and Darkside)."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from odimo_moo import quantizers
from odimo_moo.alternatives import run_dense, run_dense_quantized
from odimo_moo.cli import main
from odimo_moo.data import load_dataset
from odimo_moo.deploy import FixedQuantizedLayer, split_accumulator_scales
from odimo_moo.errors import UsageError
from odimo_moo.export_formats import onnx_session, run_onnx
from odimo_moo.integer_reference import compare_with_onnx
from odimo_moo.integer_requantization import compare_requantization
from odimo_moo.models.mobilenet import mobilenetv1_darkside
from odimo_moo.models.resnet import resnet8
from odimo_moo.split_layer import exported_branches
from odimo_moo.quantizers import PowerOfTwoActivationQuantizer
from odimo_moo.recipe import Recipe
from odimo_moo.searchable import ODiMO

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")


@pytest.mark.parametrize("host", [True, False], ids=["constant-bounds", "tensor-bounds"])
@pytest.mark.parametrize("signed", [False, True])
def test_power_of_two_quantizer_steps_by_powers_of_two(monkeypatch, host, signed):
    """Steps ``2^k``, codes ``[0 or -levels, levels]``; the fused node, the fused quantize-then-conv and
    the op-by-op reference agree on values and gradients, and the frozen grid on values."""
    monkeypatch.setattr(quantizers, "host_bounds", lambda x: host)
    torch.manual_seed(0)
    quantizer = PowerOfTwoActivationQuantizer(7, signed, init_clip=2.0).double()
    x = torch.randn(2, 6, 9, 9, dtype=torch.float64) * 2
    x = x if signed else x.relu()
    frozen = quantizer.frozen()
    assert frozen.step == 2.0 / (64 if signed else 128) and frozen.levels == (63 if signed else 127)
    results = []
    for forward in (quantizer.forward, quantizer.reference_forward):
        x_in = x.clone().requires_grad_()
        y = forward(x_in)
        results.append((y, torch.autograd.grad((y * torch.cos(x)).sum(), (x_in, quantizer.log2_clip))))
    (y, grads), (y_ref, grads_ref) = results
    assert torch.equal(y, y_ref) and torch.equal(frozen(x), y)
    assert float(y.detach().max()) == frozen.high < 2.0
    off_bounds = (x != 0) & (x.abs() != frozen.high)
    torch.testing.assert_close(grads[0][off_bounds], grads_ref[0][off_bounds], rtol=1e-15, atol=0)
    torch.testing.assert_close(grads[1], grads_ref[1], rtol=1e-9, atol=1e-12)
    conv = nn.Conv2d(6, 5, 3, stride=2, padding=1).double()
    fused = []
    for run in (run_dense_quantized, lambda s, v, q, w, b: run_dense(s, q(v), w, b)):
        x_in = x.clone().requires_grad_()
        out = run(conv, x_in, quantizer, conv.weight, conv.bias)
        fused.append((out, torch.autograd.grad(out.square().sum(), (x_in, quantizer.log2_clip, conv.weight))))
    assert torch.equal(fused[0][0], fused[1][0])
    for a, b in zip(fused[0][1], fused[1][1]):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def test_folding_batchnorm_keeps_the_function(socs):
    """Float everywhere, BatchNorm folded with its running statistics: the same function in eval mode,
    no BatchNorm left, in the searched and the fixed layers alike (Darkside's depthwise engine too)."""
    torch.manual_seed(0)
    model = ODiMO(mobilenetv1_darkside(10, 1, (8, 8), width=0.25), socs["darkside"], (1, 8, 8), init="balanced",
                  quantize=False)
    inputs = torch.randn(32, 1, 8, 8)
    model.train()
    for _ in range(3):
        model(inputs)
    model.eval()
    model.freeze_mapping()
    with torch.no_grad():
        before = model(inputs)
        folded = model.fold_batchnorm()
        after = model(inputs)
    assert len(folded) == len(model.split_names) + len(model.fixed_layers) - 1  # every conv but the classifier
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-5)
    assert model.fold_batchnorm() == []


def test_fixed_layers_run_and_export_in_their_units_format(socs):
    """With ``deploy_format`` every fixed layer quantizes its input and weight as its unit does and
    exports as that unit's tagged integer sub-layer; without it the fixed layers stay float."""
    soc = socs["darkside"]
    network = mobilenetv1_darkside(10, 1, (8, 8), width=0.25)
    model = ODiMO(network, soc, (1, 8, 8), init="balanced", deploy_format=True)
    fixed = {f.name: f.unit for f in model.fixed_layers}
    assert model.quantized_fixed_names == list(fixed)
    for name, unit in fixed.items():
        layer = model.model.get_submodule(name)
        assert isinstance(layer, FixedQuantizedLayer) and layer.unit_index == unit
    assert model.model.get_submodule("stem.0").input_quantizer.signed  # reads the image
    assert not model.model.get_submodule("fc").input_quantizer.signed  # reads pooled ReLU outputs
    inputs = torch.randn(16, 1, 8, 8)
    model.train()
    model(inputs)
    model.eval()
    model.freeze_mapping()
    model.fold_batchnorm()
    exported = model.export().eval()
    with torch.no_grad():
        assert torch.equal(exported(inputs), model(inputs))
    branches = {layer: branch for layer, _, branch in exported_branches(exported)}
    assert set(fixed) <= set(branches)
    for name, unit in fixed.items():
        assert branches[name].unit_index == unit and branches[name].weight_format == "int"
        assert parametrize.is_parametrized(model.model.get_submodule(name).layer, "bias")  # integer bias
    assert not any(parametrize.is_parametrized(m) for m in exported.modules())
    with torch.no_grad():  # exporting left the model's integer biases in place
        assert torch.equal(model.export().eval()(inputs), model(inputs))
    plain = ODiMO(network, soc, (1, 8, 8), init="balanced", deploy_format=False)
    assert plain.quantized_fixed_names == []
    assert not any(isinstance(m, FixedQuantizedLayer) for m in plain.modules())


@pytest.mark.parametrize("soc", ["diana", "darkside"])
def test_biases_train_on_the_accumulator_grid_of_power_of_two_units(socs, soc):
    """Power-of-two steps (DIANA, Darkside): after folding, every searched layer's bias is an integer
    number of its channel's accumulator units (input step x weight scale, a power of two on every unit,
    DIANA's ternary one included), in training and in the export, so the QDQ model's int32 bias is the
    trained one."""
    torch.manual_seed(0)
    network = resnet8(10, 1, (8, 8)) if soc == "diana" else mobilenetv1_darkside(10, 1, (8, 8), width=0.25)
    model = ODiMO(network, socs[soc], (1, 8, 8), init="balanced", deploy_format=True)
    inputs = torch.randn(32, 1, 8, 8)
    model.train()
    model(inputs)
    model.eval()
    model.freeze_mapping()
    model.fold_batchnorm()
    for name, split in model.split_layers():
        scales = split_accumulator_scales(split)
        assert bool(torch.isfinite(scales).all()), name
        levels = (split.layer.bias / scales).detach()
        assert torch.equal(levels, torch.round(levels)), name
    exported = model.export().eval()
    with torch.no_grad():
        assert torch.equal(exported(inputs), model(inputs))
    assert not any(parametrize.is_parametrized(m) for m in exported.modules())


def test_deploy_format_is_a_validated_recipe_setting():
    assert Recipe().deploy_format is True
    assert Recipe.from_params({"deploy_format": "false"}).deploy_format is False
    with pytest.raises(UsageError, match="deploy_format"):
        Recipe.from_params({"deploy_format": "sometimes"})
    assert Recipe(deploy_format=False).warmup_key() != Recipe().warmup_key()


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", seed=0)


@pytest.fixture(scope="module", params=["diana", "darkside"])
def deployed_run(request, digits, tmp_path_factory):
    """A short search trained as deployed (the default), as `odimo search` writes it."""
    models = {"diana": "resnet8", "darkside": "mobilenetv1_darkside_tiny"}
    out = tmp_path_factory.mktemp(f"deployed-{request.param}") / "run"
    assert main(["search", "--soc", request.param, "--model", models[request.param], "--dataset", "digits",
                 "--data-limit", "500", "--device", "cpu", "--no-progress", "--lambda", "1", "--out", str(out),
                 "--set", "warmup_epochs=1", "--set", "search_epochs=1", "--set", "finetune_epochs=1",
                 "--set", "batch_size=32", "--set", "lr=0.003"]) == 0
    return request.param, out


def _images_and_labels(split) -> tuple[torch.Tensor, torch.Tensor]:
    return (torch.stack([split[i][0] for i in range(len(split))]),
            torch.tensor([int(split[i][1]) for i in range(len(split))]))


def test_reported_accuracy_is_the_integer_exports(deployed_run, digits):
    """The QDQ model run by onnxruntime: its test accuracy is the one the run reports (within 0.2 %),
    and its predictions equal the trained network's on >= 99.5 % of all 1797 digits images (measured:
    all, on both SoCs). Every scale is a power of two (DIANA's ternary ones too), so the logits are equal. Every
    Conv/Gemm of the network is a tagged integer sub-layer, no BatchNorm is left."""
    soc, out = deployed_run
    reported = json.loads((out / "result.json").read_text())["accuracy"]
    session = onnx_session(out / "exported_qdq.onnx")
    exported = torch.load(out / "exported.pt", weights_only=False).eval()
    splits = [_images_and_labels(s) for s in (digits.test, digits.train, digits.val)]
    images, labels = torch.cat([s[0] for s in splits]), torch.cat([s[1] for s in splits])
    assert len(images) == 1797
    with torch.no_grad():
        trained_logits = exported(images)
    deployed_logits = run_onnx(session, images)
    trained, deployed = trained_logits.argmax(1), deployed_logits.argmax(1)
    test = len(splits[0][0])
    assert float((trained[:test] == labels[:test]).double().mean()) == pytest.approx(reported, abs=1e-9)
    assert abs(float((deployed[:test] == labels[:test]).double().mean()) - reported) <= 0.002
    assert float((deployed == trained).double().mean()) >= 0.995
    assert torch.equal(deployed_logits, trained_logits)
    model = onnx.load(str(out / "exported_qdq.onnx"))
    ops = [node for node in model.graph.node if node.op_type in ("Conv", "Gemm", "BatchNormalization")]
    assert ops and all(node.op_type != "BatchNormalization" for node in ops)
    for node in ops:
        tags = {p.key: p.value for p in node.metadata_props}
        assert tags.get("odimo.weight_format") in ("int", "ternary"), node.name


#: Per SoC: the first layer (it reads the image) and an op on the path between layers each run has.
PATHS = {"diana": ("conv1", "Add"), "darkside": ("stem.0", "Relu")}


def test_integer_reference_equals_the_qdq_model_bit_for_bit(deployed_run, digits):
    """Power-of-two steps and weight scales (DIANA's ternary unit too: per channel): every unit's
    accumulator is exactly the QDQ model's float output over its scale, and the integer path to the
    next layer's input (ReLU, concatenation, channel selection, residual add, global average pooling,
    then a per-channel requantization shift) gives exactly the codes onnxruntime computes, for every
    sub-layer but the first (it reads the image)."""
    soc, out = deployed_run
    model = onnx.load(str(out / "exported_qdq.onnx"))
    images = _images_and_labels(digits.test)[0][:128]
    accumulators = compare_with_onnx(model, images)
    for key, numbers in accumulators.items():
        assert numbers["equal"] == 1.0 and numbers["max_distance"] == 0.0, key
    report = compare_requantization(model, images)
    first, op = PATHS[soc]
    assert any(op in numbers["path"].split("<") for numbers in report.values())
    assert any(layer == "fc" and "GlobalAveragePool" in numbers["path"] for (layer, _), numbers in report.items())
    assert set(report) == {key for key in accumulators if key[0] != first}
    if soc == "diana":
        assert any(unit == "analog" for _, unit in report)
    for key, numbers in report.items():
        assert numbers["elements"] > 0 and numbers["equal"] == 1.0, key

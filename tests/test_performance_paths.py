"""The fast paths of the searchable layers compute what the straightforward code computes.

Not timing: each fused or cached path is checked against the op-by-op (or recomputed) path it
replaces -- values and gradients -- for DIANA (same conv, 8-bit vs ternary weights, 7-bit inputs)
and Darkside (dense conv + a depthwise alternative folded onto the diagonal, 8-bit inputs), and the
YAML example SoC (an int8 CPU and an int8 NPU sharing one weight term, plus a depthwise unit).
"""

from __future__ import annotations

import copy
import pickle

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import odimo_moo.quantizers as quantizers
from odimo_moo.alternatives import run_dense, run_dense_quantized
from odimo_moo.weight_mix import WeightTerm, mix_weights
from odimo_moo.assignment import ThermometricAssignment
from odimo_moo.models.mobilenet import mobilenetv1_darkside
from odimo_moo.models.resnet import resnet8
from odimo_moo.quantizers import ActivationQuantizer
from odimo_moo.weight_quantizers import IntWeightQuantizer, TernaryWeightQuantizer
from odimo_moo.searchable import ODiMO
from odimo_moo.split_layer import MaskMode

CASES = {
    "diana": (lambda: resnet8(num_classes=10, in_channels=3, input_size=(16, 16)), (3, 16, 16)),
    "darkside": (lambda: mobilenetv1_darkside(num_classes=10, in_channels=3, input_size=(16, 16), width=0.25),
                 (3, 16, 16)),
    "example_npu": (lambda: resnet8(num_classes=10, in_channels=3, input_size=(16, 16)), (3, 16, 16)),
}


def _pair(socs, soc_name: str, dtype=torch.float64, **options):
    """A folded and a per-branch searchable model with equal parameters (the per-branch one has one
    input quantizer per unit; all of them get the folded layer's clip)."""
    build, shape = CASES[soc_name]
    base = build()
    soc = socs.get(soc_name, soc_name)
    folded = ODiMO(base, soc, shape, init="random", seed=3, **options).to(dtype)
    branches = ODiMO(base, soc, shape, init="random", seed=3, fold=False, **options).to(dtype)
    x = torch.randn((3,) + shape, dtype=dtype)
    folded.train()
    folded(x)  # data-dependent quantizer init, as training does
    branches.load_state_dict(folded.state_dict(), strict=False)
    for (_, a), (_, b) in zip(folded.split_layers(), branches.split_layers()):
        assert a.fold and not b.fold
        for quantizer in b.input_quantizers:
            quantizer.load_state_dict(a.input_quantizers[0].state_dict())
    branches.train()
    return folded, branches, x


def _branch_grad(branches: ODiMO, name: str) -> torch.Tensor:
    """The per-branch model's gradient of parameter ``name`` of the folded model (the folded input
    quantizer stands for all of the per-branch ones)."""
    parameters = dict(branches.named_parameters())
    if "input_quantizers.0." in name:
        layer = branches.get_submodule(name.split(".input_quantizers")[0])
        return sum(parameters[name.replace("input_quantizers.0.", f"input_quantizers.{k}.")].grad
                   for k in range(len(layer.input_quantizers)))
    return parameters[name].grad


@pytest.mark.parametrize("soc_name", ["diana", "darkside", "example_npu"])
def test_folded_forward_equals_per_branch_forward(socs, soc_name):
    folded, branches, x = _pair(socs, soc_name, dtype=torch.float32)
    torch.testing.assert_close(folded(x), branches(x), rtol=0, atol=1e-6)


@pytest.mark.parametrize("soc_name", ["diana", "darkside", "example_npu"])
def test_folded_gradients_equal_per_branch_gradients(socs, soc_name):
    folded, branches, x = _pair(socs, soc_name)
    y = torch.randint(0, 10, (x.shape[0],))
    for model in (folded, branches):
        (F.cross_entropy(model(x), y) + 1e-4 * model.cost).backward()
    checked = 0
    for name, parameter in folded.named_parameters():
        expected = _branch_grad(branches, name)
        assert (parameter.grad is None) == (expected is None), name
        if parameter.grad is not None:
            torch.testing.assert_close(parameter.grad, expected, rtol=1e-7, atol=1e-10, msg=name)
            checked += 1
    assert checked > 3 * len(folded.split_names)
    assert all(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in folded.nas_parameters())


def test_units_in_one_weight_format_share_one_weight_term(socs):
    """The folded layer quantizes the weight once for the int8 CPU and the int8 NPU (the NPU's
    quantizer never runs); the task loss cannot tell the two apart, the cost term still moves their
    channels."""
    folded, _, x = _pair(socs, "example_npu")
    calls = []
    npu = folded.soc.unit_index("npu")
    shared = [layer for _, layer in folded.split_layers() if npu in layer.unit_indices.tolist()
              and folded.soc.unit_index("cpu") in layer.unit_indices.tolist()]
    assert shared
    for layer in shared:
        position = layer.unit_indices.tolist().index(npu)
        layer.alternatives[position].weight_quantizer.register_forward_hook(lambda *args: calls.append(1))
    (folded(x).sum() + folded.cost).backward()
    assert not calls
    for layer in shared:
        assert layer.assignment.alpha.grad is not None and bool(layer.assignment.alpha.grad.abs().sum() > 0)


@pytest.mark.parametrize("soc_name", ["diana", "darkside"])
def test_fused_quantized_input_op_equals_quantize_then_op(socs, soc_name):
    """``run_dense_quantized`` (integer-coded saved input) against ``run_dense(quantizer(x))``."""
    folded, _, x = _pair(socs, soc_name)
    captured = {}
    hooks = [layer.register_forward_pre_hook(lambda module, args, name=name: captured.__setitem__(name, args[0]))
             for name, layer in folded.split_layers()]
    folded(x)
    for hook in hooks:
        hook.remove()
    for name, layer in folded.split_layers():
        source, quantizer = layer.layer, layer.input_quantizers[0]
        inputs = captured[name].detach().clone()
        weight = torch.randn_like(source.weight, requires_grad=True)
        bias = torch.randn(weight.shape[0], dtype=weight.dtype, requires_grad=True)
        results = []
        for fused in (True, False):
            x_in = inputs.clone().requires_grad_()
            quantizer.zero_grad()
            run = run_dense_quantized if fused else (lambda s, v, q, w, b: run_dense(s, q(v), w, b))
            out = run(source, x_in, quantizer, weight, bias)
            grads = torch.autograd.grad((out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)).sum(),
                                        (x_in, quantizer.log2_clip, weight, bias))
            results.append((out.detach(), grads))
        (out_fused, grads_fused), (out_plain, grads_plain) = results
        assert torch.equal(out_fused, out_plain), name
        for a, b in zip(grads_fused, grads_plain):
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12, msg=name)


@pytest.mark.parametrize("host", [True, False], ids=["constant-bounds", "tensor-bounds"])
@pytest.mark.parametrize("signed,bits", [(False, 7), (True, 7), (False, 8), (True, 8)])
def test_fused_conv_and_linear_with_bias_stride_and_codes(monkeypatch, host, signed, bits):
    monkeypatch.setattr(quantizers, "host_bounds", lambda x: host)
    torch.manual_seed(1)
    quantizer = ActivationQuantizer(bits, signed, init_clip=2.0).double()
    conv = nn.Conv2d(6, 5, 3, stride=2, padding=1, bias=True).double()
    depthwise = nn.Conv2d(6, 6, 3, padding=2, dilation=2, groups=6, bias=False).double()
    linear = nn.Linear(7, 4).double()
    for source, shape in ((conv, (2, 6, 9, 9)), (depthwise, (2, 6, 7, 7)), (linear, (2, 3, 7)), (linear, (5, 7))):
        x = torch.randn(shape, dtype=torch.float64) * 2
        x = x if signed else x.relu()
        outs, grads = [], []
        for fused in (True, False):
            x_in = x.clone().requires_grad_()
            out = (run_dense_quantized(source, x_in, quantizer, source.weight, source.bias) if fused
                   else run_dense(source, quantizer(x_in), source.weight, source.bias))
            inputs = [x_in, quantizer.log2_clip, source.weight] + ([source.bias] if source.bias is not None else [])
            g = torch.autograd.grad(out.square().sum(), inputs)
            outs.append(out)
            grads.append(g)
        assert torch.equal(outs[0], outs[1])
        for a, b in zip(*grads):
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def test_level_codes_hold_the_levels_exactly():
    for levels in (63, 127, 255, 2047):
        values = torch.arange(-levels, levels + 1, dtype=torch.float32)
        code = values.to(quantizers.level_code_dtype(levels))
        assert code.element_size() <= 2
        assert torch.equal(code.to(torch.float32), values)


@pytest.mark.parametrize("host", [True, False], ids=["constant-bounds", "tensor-bounds"])
@pytest.mark.parametrize("signed", [False, True])
def test_activation_quantizer_matches_op_by_op_reference(monkeypatch, host, signed):
    """The fused quantizer node vs the min/max/round composition it replaces, on both code paths
    (the tensor-bound path is the one accelerators take)."""
    monkeypatch.setattr(quantizers, "host_bounds", lambda x: host)
    quantizer = ActivationQuantizer(7, signed, init_clip=2.0).double()
    x = torch.randn(4, 8, 6, 6, dtype=torch.float64) * 2
    x = x if signed else x.relu()
    upstream = torch.randn_like(x)
    results = []
    for forward in (quantizer.forward, quantizer.reference_forward):
        x_in = x.clone().requires_grad_()
        y = forward(x_in)
        results.append((y, torch.autograd.grad((y * upstream).sum(), (x_in, quantizer.log2_clip))))
    (y_fast, (gx_fast, gc_fast)), (y_ref, (gx_ref, gc_ref)) = results
    assert torch.equal(y_fast, y_ref)
    off_bounds = x != 0  # exactly on a bound the op-by-op min/max splits the gradient in halves
    # (the reference's gradient is (g * step) / step: equal up to its rounding)
    torch.testing.assert_close(gx_fast[off_bounds], gx_ref[off_bounds], rtol=1e-15, atol=0)
    torch.testing.assert_close(gc_fast, gc_ref, rtol=1e-9, atol=1e-12)


def test_int_weight_quantizer_matches_reference():
    torch.manual_seed(2)
    quantizer = IntWeightQuantizer(8)
    weight = torch.randn(16, 8, 3, 3)
    upstream = torch.randn_like(weight)
    w_fast, w_ref = weight.clone().requires_grad_(), weight.clone().requires_grad_()
    y_fast, y_ref = quantizer(w_fast), quantizer.reference_forward(w_ref)
    assert torch.equal(y_fast, y_ref)
    (y_fast * upstream).sum().backward()
    (y_ref * upstream).sum().backward()
    assert torch.equal(w_fast.grad, upstream)  # straight-through: the clamp never bites
    top = (weight / quantizer.scale(weight)).abs().round() >= 127
    assert torch.equal(w_fast.grad[~top], w_ref.grad[~top])


def test_ternary_weight_quantizer_matches_reference():
    torch.manual_seed(3)
    quantizer = TernaryWeightQuantizer(16)
    weight = torch.randn(16, 8, 3, 3)
    upstream = torch.randn_like(weight)
    results = []
    for forward in (quantizer.forward, quantizer.reference_forward):
        w = weight.clone().requires_grad_()
        y = forward(w)
        results.append((y, torch.autograd.grad((y * upstream).sum(), (w, quantizer.log_scale))))
    (y_fast, g_fast), (y_ref, g_ref) = results
    torch.testing.assert_close(y_fast, y_ref, rtol=1e-6, atol=0)
    scales = quantizer.log_scale.exp().view(-1, 1, 1, 1)
    assert set((y_fast / scales).detach().round().unique().tolist()) <= {-1.0, 0.0, 1.0}
    for a, b in zip(g_fast, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("units, init", [(2, "first"), (2, "balanced"), (2, "random"), (2, [5, 32]),
                                         (3, "balanced"), (3, "random"), (3, [0, 30, 7]), (4, "random"),
                                         (4, [10, 0, 0, 27])])
def test_thermometric_mask_matches_reference(units, init):
    assignment = ThermometricAssignment(37, units, init=init, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        assignment.alpha.add_(torch.randn(assignment.alpha.shape, generator=torch.Generator().manual_seed(1)) * 0.3)
    upstream = torch.randn(37, units)
    results = []
    for mask in (assignment.mask, assignment.reference_mask):
        m = mask()
        results.append((m, torch.autograd.grad((m * upstream).sum(), assignment.alpha)[0]))
    assert torch.equal(results[0][0], results[1][0])
    assert set(results[0][0].unique().tolist()) <= {0.0, 1.0}
    if units <= 3:
        assert torch.equal(results[0][1], results[1][1])
    else:  # sums of up to three terms, added in another order
        torch.testing.assert_close(results[0][1], results[1][1], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("kinds", [("dense", "dense"), ("dense", "diagonal"), ("diagonal", "dense"),
                                   ("dense", "dense", "diagonal")])
def test_mix_weights_equals_stacked_dense_mixture(kinds):
    torch.manual_seed(5)
    channels, shape = 6, (6, 6, 3, 3)
    mask = torch.softmax(torch.randn(channels, len(kinds), dtype=torch.float64), 1).requires_grad_()
    tensors = [torch.randn(shape if kind == "dense" else (channels, 3, 3), dtype=torch.float64,
                           requires_grad=True) for kind in kinds]

    def dense(kind, tensor):
        if kind == "dense":
            return tensor
        full = tensor.new_zeros(shape)
        index = torch.arange(channels)
        full[index, index] = tensor
        return full

    upstream = torch.randn(shape, dtype=torch.float64)
    fast = mix_weights(mask, [WeightTerm(k, t) for k, t in zip(kinds, tensors)], torch.Size(shape))
    stacked = torch.stack([dense(k, t) for k, t in zip(kinds, tensors)], dim=1)
    reference = (mask.view(channels, len(kinds), 1, 1, 1) * stacked).sum(dim=1)
    torch.testing.assert_close(fast, reference, rtol=1e-12, atol=1e-12)
    grads_fast = torch.autograd.grad((fast * upstream).sum(), [mask] + tensors)
    grads_ref = torch.autograd.grad((reference * upstream).sum(), [mask] + tensors)
    for a, b in zip(grads_fast, grads_ref):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def _searchable(socs, soc_name: str = "diana") -> ODiMO:
    build, shape = CASES[soc_name]
    return ODiMO(build(), socs[soc_name], shape, init="balanced", seed=1)


def _unit_counts_reference(model: ODiMO) -> torch.Tensor:
    """Every layer's mask evaluated afresh and scattered one layer at a time."""
    columns = []
    for _, layer in model.split_layers():
        counts = layer.assignment.mask().sum(0) if layer.mode is MaskMode.SEARCH else torch.bincount(
            layer.units_of_channels(), minlength=layer.num_units).float()
        columns.append(counts.new_zeros(len(model.soc.units)).index_add(0, layer.unit_indices, counts))
    return torch.stack(columns, dim=1)


@pytest.mark.parametrize("soc_name", ["diana", "darkside"])
def test_cost_from_forward_masks_equals_recomputed_cost(socs, soc_name):
    model = _searchable(socs, soc_name)
    twin = copy.deepcopy(model)
    x = torch.randn((2,) + CASES[soc_name][1])
    model(x)  # leaves the counts of its masks behind
    cost = model.cost
    recomputed = twin.cost  # no forward: every mask evaluated again
    assert torch.equal(cost.detach(), recomputed.detach())
    cost.backward()
    recomputed.backward()
    for a, b in zip(model.nas_parameters(), twin.nas_parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(model.unit_counts(), _unit_counts_reference(model))


def test_cached_counts_are_never_stale(socs):
    model = _searchable(socs)
    x, y = torch.randn(2, 3, 16, 16), torch.randint(0, 10, (2,))
    optimizer = torch.optim.SGD(model.nas_parameters(), lr=5.0)
    # A training step: forward, task loss + cost, backward, the assignment moves.
    model(x)
    (F.cross_entropy(model(x), y) + 1e-3 * model.cost).backward()
    optimizer.step()
    assert torch.equal(model.unit_counts(), _unit_counts_reference(model))
    # A backward through the forward's graph (task loss only) before asking for the cost.
    model.zero_grad()
    F.cross_entropy(model(x), y).backward()
    model.cost.backward()  # must not reuse the freed graph of the forward's masks
    # Several costs after one forward, each with its own backward.
    model(x)
    first, second = model.cost, model.cost_of("energy")
    first.backward()
    second.backward()
    # A forward without gradient (evaluation) leaves counts that cannot serve a differentiable cost.
    with torch.no_grad():
        model(x)
    model.zero_grad()
    model.cost.backward()
    assert all(p.grad is not None for p in model.nas_parameters())
    # Mode changes and forced mappings drop the cache.
    model(x)
    model.force_counts({name: [model.split_layer(name).channels, 0] for name in model.split_names})
    assert torch.equal(model.unit_counts()[1], torch.zeros(len(model.split_names)))


@pytest.mark.parametrize("soc_name", ["diana", "darkside", "example_npu"])
@pytest.mark.parametrize("kernels", [True, False])
def test_masks_in_one_node_equal_each_layers_own(socs, soc_name, kernels, monkeypatch):
    """``ODiMO.forward`` computes every search-mode layer's mask and counts in one node; running the
    traced network directly (each layer its own mask and sum nodes) gives the same loss and every
    gradient bit for bit, with the cost term, on 2- and 3-unit layers (example_npu), kernels on or off."""
    monkeypatch.setenv("ODIMO_NATIVE_KERNELS", "1" if kernels else "0")
    build, shape = CASES[soc_name]
    model = ODiMO(build(), socs.get(soc_name, soc_name), shape, init="random", seed=5)
    model.train()
    x, y = torch.randn((4,) + shape), torch.randint(0, 10, (4,))
    model(x)  # data-dependent quantizer init
    twin = copy.deepcopy(model)
    results = []
    for network, run in ((model, model), (twin, twin.model)):
        loss = F.cross_entropy(run(x), y) + 1e-2 * network.cost
        loss.backward()
        results.append((loss.detach(), {name: p.grad for name, p in network.named_parameters() if p.grad is not None}))
    (loss, grads), (loss_own, grads_own) = results
    assert torch.equal(loss, loss_own)
    assert grads.keys() == grads_own.keys() and any(".assignment." in name for name in grads)
    for name in grads:
        assert torch.equal(grads[name], grads_own[name]), name


def test_masks_of_a_failed_forward_are_not_kept(socs):
    model = _searchable(socs)
    with pytest.raises(RuntimeError):
        model(torch.randn(2, 5, 16, 16))  # wrong channel count: the first layer raises
    assert all(layer.take_given_mask() is None for _, layer in model.split_layers())
    x = torch.randn(2, 3, 16, 16)
    F.cross_entropy(model(x), torch.randint(0, 10, (2,))).backward()
    model.cost.backward()  # counts of the failed forward's node are not reused either


def test_model_with_cached_counts_copies_and_pickles(socs):
    model = _searchable(socs)
    model(torch.randn(2, 3, 16, 16))
    clone = copy.deepcopy(model)
    pickle.loads(pickle.dumps(model))
    model.freeze_mapping()
    model.export()
    assert torch.equal(clone.unit_counts(), _unit_counts_reference(clone))


@pytest.mark.parametrize("host", [True, False], ids=["constant-bounds", "tensor-bounds"])
@pytest.mark.parametrize("signed", [False, True])
def test_clip_gradient_without_input_gradient_equals_quantize_then_op(monkeypatch, host, signed):
    """The network's first layer: only the clip needs the input's gradient, which the fused op gets
    from the op's weight gradient over the clip direction (adjoint identity) instead of the transposed
    op (strided conv, depthwise conv, linear)."""
    monkeypatch.setattr(quantizers, "host_bounds", lambda x: host)
    torch.manual_seed(4)
    quantizer = ActivationQuantizer(7, signed, init_clip=1.0).double()
    conv = nn.Conv2d(3, 5, 3, stride=2, padding=1, bias=True).double()
    depthwise = nn.Conv2d(4, 4, 3, padding=1, groups=4, bias=False).double()
    linear = nn.Linear(7, 4).double()
    for source, shape in ((conv, (2, 3, 9, 9)), (depthwise, (2, 4, 6, 6)), (linear, (5, 7))):
        x = torch.randn(shape, dtype=torch.float64) * 2
        x = x if signed else x.relu()
        grads = []
        for fused in (True, False):
            out = (run_dense_quantized(source, x, quantizer, source.weight, source.bias) if fused
                   else run_dense(source, quantizer(x), source.weight, source.bias))
            inputs = [quantizer.log2_clip, source.weight] + ([source.bias] if source.bias is not None else [])
            grads.append(torch.autograd.grad(out.square().sum(), inputs))
        assert grads[0][0].abs() > 0
        for a, b in zip(*grads):
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name", ["adam", "sgd"])
def test_make_optimizer_uses_fused_kernels_with_the_same_updates(name):
    from odimo_moo.training import make_optimizer

    torch.manual_seed(5)
    start = [torch.randn(4, 3), torch.randn(5)]
    fast = [nn.Parameter(t.clone()) for t in start]
    slow = [nn.Parameter(t.clone()) for t in start]
    optimizer = make_optimizer(name, fast, lr=0.01, weight_decay=1e-3)
    assert optimizer.defaults["fused"] is True
    reference = (torch.optim.Adam(slow, lr=0.01, weight_decay=1e-3, foreach=False) if name == "adam" else
                 torch.optim.SGD(slow, lr=0.01, momentum=0.9, weight_decay=1e-3, foreach=False))
    for _ in range(5):
        grads = [torch.randn_like(t) for t in start]
        for params, opt in ((fast, optimizer), (slow, reference)):
            for p, g in zip(params, grads):
                p.grad = g.clone()
            opt.step()
    for a, b in zip(fast, slow):
        assert not torch.equal(a, torch.zeros_like(a))
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_make_optimizer_falls_back_where_torch_has_no_fused_kernels():
    from odimo_moo.training import make_optimizer

    optimizer = make_optimizer("adam", [nn.Parameter(torch.zeros(3, device="meta"))], lr=0.01, weight_decay=0.0)
    assert not optimizer.defaults["fused"]


def test_folded_weight_is_what_the_folded_forward_runs(socs):
    folded, branches, x = _pair(socs, "diana", dtype=torch.float32)
    name, layer = next(iter(folded.split_layers()))
    captured = {}
    handle = layer.register_forward_pre_hook(lambda module, args: captured.setdefault("input", args[0]))
    folded(x)
    handle.remove()
    quantized = layer.input_quantizers[0](captured["input"])
    torch.testing.assert_close(run_dense(layer.layer, quantized, layer.folded_weight(layer.mask()), layer.layer.bias),
                               layer(captured["input"]), rtol=0, atol=0)
    with pytest.raises(ValueError, match="no folded weight"):
        branches.split_layer(name).folded_weight(layer.mask())

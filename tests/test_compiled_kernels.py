"""The compiled CPU kernels (:mod:`odimo_moo.native_kernels`) compute what the eager ops compute.

Values, codes, input and weight gradients bit for bit; the sums the kernels accumulate in another
order (the clip gradient, the mask gradient) to float rounding. The kernels compile in well under a
second; where no C compiler works every test here but the fallback one is skipped.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from odimo_moo import native_kernels
from odimo_moo.alternatives import SameOpAlternative, run_dense_quantized
from odimo_moo.assignment import ThermometricAssignment
from odimo_moo.weight_mix import WeightTerm, encoded_term, mix_weights, mixed_weight, weight_mixture
from odimo_moo.models.mobilenet import mobilenetv1_darkside
from odimo_moo.models.resnet import resnet8
from odimo_moo.quantizers import ActivationQuantizer, PowerOfTwoActivationQuantizer, coded_levels
from odimo_moo.searchable import ODiMO
from odimo_moo.weight_quantizers import IntWeightQuantizer, TernaryWeightQuantizer

needs_kernels = pytest.mark.skipif(native_kernels.library() is None,
                                   reason=f"compiled kernels unavailable: {native_kernels.load_error()}")


@pytest.fixture(autouse=True)
def _default_switch():
    yield
    native_kernels.set_enabled(None)


def _both(run):
    """``run()`` with the kernels on, then off."""
    results = []
    for enabled in (True, False):
        native_kernels.set_enabled(enabled)
        results.append(run())
    return results


def _inputs(shape: tuple[int, ...], signed: bool, clip: float, step: float) -> torch.Tensor:
    """Random inputs beyond the clip range on both sides, with values exactly on the bounds, on
    half-steps (ties of the rounding) and at zero."""
    x = torch.randn(shape, generator=torch.Generator().manual_seed(7)) * clip * 0.8
    flat = x.view(-1)
    specials = torch.tensor([clip, -clip, 0.0, 0.5 * step, 1.5 * step, -2.5 * step, clip * 2, -clip * 2])
    flat[: specials.numel()] = specials
    return x if signed else x.relu()


@needs_kernels
@pytest.mark.parametrize("quantizer_type", [ActivationQuantizer, PowerOfTwoActivationQuantizer])
@pytest.mark.parametrize("bits,signed", [(7, False), (7, True), (8, False), (8, True), (4, False)])
def test_quantized_input_layer_kernels_equal_eager(quantizer_type, bits, signed):
    torch.manual_seed(1)
    quantizer = quantizer_type(bits, signed, init_clip=2.0)
    clip, step = (float(v) for v in quantizer.grid(quantizer.log2_clip.detach(), quantizer.levels))
    conv = nn.Conv2d(6, 5, 3, stride=2, padding=1, bias=True)
    linear = nn.Linear(7, 4)
    for source, shape in ((conv, (3, 6, 9, 9)), (linear, (5, 7))):
        x = _inputs(shape, signed, clip, step)

        def run():
            x_in = x.clone().requires_grad_()
            out = run_dense_quantized(source, x_in, quantizer, source.weight, source.bias)
            weights = torch.linspace(-1, 1, out.numel()).view_as(out)
            return out, torch.autograd.grad((out * weights).sum(),
                                            (x_in, quantizer.log2_clip, source.weight, source.bias))

        (out_native, grads_native), (out_eager, grads_eager) = _both(run)
        assert torch.equal(out_native, out_eager)
        for index in (0, 2, 3):  # input, weight, bias
            assert torch.equal(grads_native[index], grads_eager[index])
        torch.testing.assert_close(grads_native[1], grads_eager[1], rtol=1e-5, atol=1e-6)


@needs_kernels
@pytest.mark.parametrize("levels,signed", [(127, False), (63, True), (127, True), (255, False)])
def test_codes_hold_the_eager_levels(levels, signed):
    clip, step = torch.tensor(4.0), torch.tensor(4.0 / levels)
    x = _inputs((4, 3, 5, 5), signed, 4.0, float(step))
    (q_native, code_native), (q_eager, code_eager) = _both(lambda: coded_levels(x, clip, step, levels, signed))
    assert code_native.element_size() == 1
    assert torch.equal(q_native, q_eager)
    assert torch.equal(code_native.to(torch.float32), code_eager.to(torch.float32))


@needs_kernels
def test_int_weight_kernel_equals_eager():
    quantizer = IntWeightQuantizer(8)
    weight = torch.randn(16, 8, 3, 3, generator=torch.Generator().manual_seed(2)).clamp(-0.9, 0.9)
    # max |w| 1: the scale is 2^-6; ties of the rounding (half-steps) round to even.
    weight.view(-1)[:5] = torch.tensor([1.0, 0.5, -2.5, 1.5, 126.5]) / 64
    native, eager = _both(lambda: quantizer(weight))
    assert torch.equal(native, eager)


@needs_kernels
@pytest.mark.parametrize("top, scale", [
    (127 * 2.0 ** -7, 2.0 ** -7),  # max |w| / 127 exactly a power of two: that power
    (float(torch.nextafter(torch.tensor(127 * 2.0 ** -7), torch.tensor(1.0))), 2.0 ** -6),  # a hair above: the next
    (0.0, 2.0 ** -46),  # all zeros: max |w| taken as 1e-12; 2^-47 < 1e-12 / 127 <= 2^-46
])
def test_int_weight_scale_is_the_next_power_of_two_exactly(top, scale):
    quantizer = IntWeightQuantizer(8)
    weight = torch.zeros(4, 3, 3, 3)
    weight[1, 2, 0, 1] = -top
    native, eager = _both(lambda: quantizer(weight))
    assert torch.equal(native, eager)
    assert float(quantizer.scale(weight)) == scale
    assert float(native[1, 2, 0, 1]) == -round(top / scale) * scale


@needs_kernels
@pytest.mark.parametrize("power_of_two", [False, True])
def test_ternary_kernel_equals_eager(power_of_two):
    """Values to the sign of zero, the weight's gradient bit for bit, the scale's to float rounding;
    rows longer and shorter than one vector, exact zeros (signed) and a channel of zeros."""
    generator = torch.Generator().manual_seed(3)
    quantizer = TernaryWeightQuantizer(12, power_of_two=power_of_two)
    weight = torch.randn(12, 5, 3, 3, generator=generator)
    weight[0] = 0.0
    weight[1, 0, 0, :2] = torch.tensor([0.0, -0.0])
    upstream = torch.randn(weight.shape, generator=generator)
    for w in (weight, weight[:, :1]):
        def run():
            leaf = w.clone().requires_grad_()
            y = quantizer(leaf)
            return y, torch.autograd.grad((y * upstream[:, : w.shape[1]]).sum(), (leaf, quantizer.log_scale))

        (y_native, grads_native), (y_eager, grads_eager) = _both(run)
        assert torch.equal(y_native, y_eager) and torch.equal(y_native.signbit(), y_eager.signbit())
        assert torch.equal(grads_native[0], grads_eager[0])
        torch.testing.assert_close(grads_native[1], grads_eager[1], rtol=1e-5, atol=1e-6)


@needs_kernels
@pytest.mark.parametrize("kinds", [("dense", "dense"), ("dense", "diagonal"), ("dense", "dense", "diagonal")])
def test_mix_backward_kernel_equals_eager(kinds):
    generator = torch.Generator().manual_seed(5)
    channels, shape = 6, (6, 6, 3, 3)
    # A transposed [K, C] mask, as the thermometric assignment hands it over (not contiguous).
    mask = torch.softmax(torch.randn(len(kinds), channels, generator=generator), 0).t()
    tensors = [torch.randn(shape if kind == "dense" else (channels, 3, 3), generator=generator) for kind in kinds]
    upstream = torch.randn(shape, generator=generator)

    def run():
        leaves = [mask.clone().requires_grad_()] + [t.clone().requires_grad_() for t in tensors]
        mixed = mix_weights(leaves[0].t().contiguous().t(), [WeightTerm(k, t) for k, t in zip(kinds, leaves[1:])],
                            torch.Size(shape))
        return mixed, torch.autograd.grad((mixed * upstream).sum(), leaves)

    (mixed_native, grads_native), (mixed_eager, grads_eager) = _both(run)
    assert torch.equal(mixed_native, mixed_eager)
    torch.testing.assert_close(grads_native[0], grads_eager[0], rtol=1e-5, atol=1e-5)
    for a, b in zip(grads_native[1:], grads_eager[1:]):
        assert torch.equal(a, b)


@needs_kernels
@pytest.mark.parametrize("hard", [True, False])
@pytest.mark.parametrize("second", ["ternary", "depthwise int8"])
def test_encoded_terms_equal_quantizing_then_mixing(hard, second):
    """An int8 term and a ternary term (DIANA), or a depthwise int8 term on the diagonal (Darkside),
    quantized inside the mix (1-byte levels and scales) give the values and gradients of the
    quantizers' outputs mixed as plain terms; the mask's and the scale's gradients are sums."""
    generator = torch.Generator().manual_seed(11)
    channels, shape = 8, (8, 8, 3, 3)
    weight = torch.randn(shape, generator=generator)
    weight.view(-1)[:3] = torch.tensor([0.0, 2.5, -2.5]) * weight.abs().max() / 127  # ties of the rounding
    kernels = torch.randn(channels, 1, 3, 3, generator=generator)
    if hard:
        mask = F.one_hot(torch.randint(0, 2, (channels,), generator=generator), 2).float()
    else:
        mask = torch.softmax(torch.randn(2, channels, generator=generator), 0).t()
    integer, ternary = IntWeightQuantizer(8), TernaryWeightQuantizer(channels, power_of_two=True)
    ternary.ensure_initialized(weight)
    upstream = torch.randn(shape, generator=generator)

    def run(encoded: bool):
        w, d, m = weight.clone().requires_grad_(), kernels.clone().requires_grad_(), mask.clone().requires_grad_()
        if second == "ternary":
            terms = ([WeightTerm("int", w, None, (8,)), WeightTerm("ternary", w, ternary.log_scale, (0.7, True))]
                     if encoded else [WeightTerm("dense", integer(w)), WeightTerm("dense", ternary(w))])
        else:
            terms = ([WeightTerm("int", w, None, (8,)), WeightTerm("int", d, None, (8,), diagonal=True)]
                     if encoded else [WeightTerm("dense", integer(w)), WeightTerm("diagonal", integer(d)[:, 0])])
        mixed = mix_weights(m, terms, torch.Size(shape))
        return mixed, torch.autograd.grad((mixed * upstream).sum(), (w, d, m, ternary.log_scale), allow_unused=True)

    (mixed, grads), (mixed_plain, grads_plain) = run(True), run(False)
    assert torch.equal(mixed, mixed_plain)
    assert torch.equal(grads[0], grads_plain[0])
    if second == "ternary":
        assert torch.equal(grads[2], grads_plain[2])  # the same dot products, summed in the same order
        torch.testing.assert_close(grads[3], grads_plain[3], rtol=1e-6, atol=1e-7)
    else:
        assert torch.equal(grads[1], grads_plain[1])
        torch.testing.assert_close(grads[2], grads_plain[2], rtol=1e-5, atol=1e-6)  # the diagonal's: torch's order
    native_kernels.set_enabled(False)
    assert encoded_term(integer, weight) is None and encoded_term(ternary, weight) is None


@needs_kernels
def test_an_int_term_after_another_adds_as_the_plain_term_does():
    """An int term encoded and mixed in one pass into a weight another term began gives what mixing
    the quantizer's output as a plain term gives (a fused multiply-add, as torch's ``addcmul_``)."""
    generator = torch.Generator().manual_seed(17)
    weight, other = torch.randn(6, 5, 3, 3, generator=generator), torch.randn(6, 5, 3, 3, generator=generator)
    mask = torch.softmax(torch.randn(6, 2, generator=generator), 1)
    encoded = mix_weights(mask, [WeightTerm("dense", other), WeightTerm("int", weight, None, (8,))], weight.shape)
    plain = mix_weights(mask, [WeightTerm("dense", other), WeightTerm("dense", IntWeightQuantizer(8)(weight))],
                        weight.shape)
    assert torch.equal(encoded, plain)


@needs_kernels
@pytest.mark.parametrize("terms", ["int + depthwise int8", "int + ternary", "int + dense", "dense + diagonal"])
@pytest.mark.parametrize("need_mask", [True, False])
@pytest.mark.parametrize("first_layer", [False, True])
def test_mixing_inside_the_quantized_layer_equals_mixing_first(terms, need_mask, first_layer):
    """A split layer's folded forward mixes its weight inside the quantized layer's node, whose backward
    scales the op's weight gradient inside the mix's kernels and writes the last term's weight gradient
    over it: output and every gradient equal mixing in a node of its own first, bit for bit (also where
    a non-encoded term sends it back to scaling first, and where the input needs no gradient)."""
    generator = torch.Generator().manual_seed(13)
    channels, shape = 8, (8, 8, 3, 3)
    weight = torch.randn(shape, generator=generator)
    kernels = torch.randn(channels, 1, 3, 3, generator=generator)
    mask = F.one_hot(torch.randint(0, 2, (channels,), generator=generator), 2).float()
    ternary = TernaryWeightQuantizer(channels, power_of_two=True)
    ternary.ensure_initialized(weight)
    conv = nn.Conv2d(8, 8, 3, padding=1, bias=True)
    quantizer = ActivationQuantizer(8, False, init_clip=2.0)
    x = torch.randn(3, 8, 6, 6, generator=generator).relu()
    upstream = torch.randn(3, 8, 6, 6, generator=generator)

    def run(inside: bool):
        w, d = weight.clone().requires_grad_(), kernels.clone().requires_grad_()
        m, x_in = mask.clone().requires_grad_(need_mask), x.clone().requires_grad_(not first_layer)
        chosen = {"int + depthwise int8": [WeightTerm("int", w, None, (8,)), WeightTerm("int", d, None, (8,), True)],
                  "int + ternary": [WeightTerm("int", w, None, (8,)),
                                    WeightTerm("ternary", w, ternary.log_scale, (0.7, True))],
                  "int + dense": [WeightTerm("int", w, None, (8,)), WeightTerm("dense", w * 0.5)],
                  "dense + diagonal": [WeightTerm("dense", w), WeightTerm("diagonal", d[:, 0])]}[terms]
        mixture = weight_mixture(m, chosen, torch.Size(shape))
        out = run_dense_quantized(conv, x_in, quantizer, mixture if inside else mixed_weight(mixture), conv.bias)
        leaves = [x_in, quantizer.log2_clip, m, w, d, ternary.log_scale, conv.bias]
        wanted = [leaf for leaf in leaves if leaf.requires_grad]
        return out, torch.autograd.grad((out * upstream).sum(), wanted, allow_unused=True)

    (out, grads), (out_first, grads_first) = run(True), run(False)
    assert torch.equal(out, out_first)
    assert len(grads) == len(grads_first)
    for inside, first in zip(grads, grads_first):
        assert (inside is None) == (first is None)
        if inside is not None:
            assert torch.equal(inside, first)


@needs_kernels
def test_encoded_terms_take_a_non_contiguous_gradient():
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(8, 8, 3, 3, generator=generator)
    mask = torch.softmax(torch.randn(8, 2, generator=generator), 1)
    upstream = torch.randn(8, 3, 3, 8, generator=generator).permute(0, 3, 1, 2)  # channels-last-like strides
    assert not upstream.is_contiguous()
    results = []
    for encoded in (True, False):
        w, m = weight.clone().requires_grad_(), mask.clone().requires_grad_()
        first = WeightTerm("int", w, None, (8,)) if encoded else WeightTerm("dense", IntWeightQuantizer(8)(w))
        mixed = mix_weights(m, [first, WeightTerm("dense", w * 0.5)], w.shape)
        results.append(torch.autograd.grad(mixed, (w, m), upstream))
    assert torch.equal(results[0][0], results[1][0])
    torch.testing.assert_close(results[0][1], results[1][1], rtol=1e-5, atol=1e-6)


@needs_kernels
def test_an_alternative_with_its_own_dense_weight_is_not_encoded():
    """A plugin's SameOp subclass that changes the dense weight keeps it on the compiled path too."""

    class Halved(SameOpAlternative):
        def dense_weight(self, shared_weight: torch.Tensor) -> torch.Tensor:
            return super().dense_weight(shared_weight) * 0.5

    weight = torch.randn(4, 3, 3, 3, generator=torch.Generator().manual_seed(3))
    assert SameOpAlternative(IntWeightQuantizer(8)).weight_term(weight).kind == "int"
    term = Halved(IntWeightQuantizer(8)).weight_term(weight)
    assert term.kind == "dense" and torch.equal(term.tensor, IntWeightQuantizer(8)(weight) * 0.5)


@needs_kernels
@pytest.mark.parametrize("units", [2, 3, 4])
@pytest.mark.parametrize("channels", [1, 37, 256])
def test_thermometric_mask_kernel_equals_eager(units, channels):
    """Mask and alpha gradient bit for bit (the cumulative sums in a double, as torch's), boundaries
    anywhere (alphas spread around the threshold), under a non-contiguous upstream gradient."""
    assignment = ThermometricAssignment(channels, units, init="balanced")
    with torch.no_grad():
        assignment.alpha.add_(0.1 * torch.randn(assignment.alpha.shape, generator=torch.Generator().manual_seed(3)))
    upstream = torch.randn(units, channels, generator=torch.Generator().manual_seed(4)).t()

    def run():
        mask = assignment.mask()
        return mask, torch.autograd.grad(mask, assignment.alpha, upstream)[0]

    (mask, grad), (eager_mask, eager_grad) = _both(run)
    assert torch.equal(mask, eager_mask)
    assert torch.equal(grad, eager_grad)
    assert channels == 1 or len(set(mask.argmax(dim=1).tolist())) >= 2  # a real split, not all on one unit


@needs_kernels
@pytest.mark.parametrize("soc_name", ["diana", "darkside"])
def test_search_step_with_kernels_equals_eager(socs, soc_name):
    """A whole searchable model: equal loss, and every gradient bit for bit but the clips', the
    ternary scales' and the assignment's (sums in another order)."""
    torch.manual_seed(0)
    base = (resnet8(num_classes=10, in_channels=3, input_size=(16, 16)) if soc_name == "diana" else
            mobilenetv1_darkside(num_classes=10, in_channels=3, input_size=(16, 16), width=0.25))
    model = ODiMO(base, socs[soc_name], (3, 16, 16), init="random", seed=3)
    model.train()
    x, y = torch.randn(4, 3, 16, 16), torch.randint(0, 10, (4,))
    model(x)  # data-dependent quantizer init, as training does

    def run():
        model.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y) + 1e-3 * model.cost
        loss.backward()
        return loss.detach(), {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}

    (loss_native, grads_native), (loss_eager, grads_eager) = _both(run)
    assert torch.equal(loss_native, loss_eager)
    assert grads_native.keys() == grads_eager.keys()
    summed = [name for name in grads_native
              if name.endswith(("log2_clip", "log_scale")) or ".assignment." in name]
    assert summed and len(summed) < len(grads_native)
    for name in grads_native:
        if name in summed:
            torch.testing.assert_close(grads_native[name], grads_eager[name], rtol=1e-4, atol=1e-6, msg=name)
        else:
            assert torch.equal(grads_native[name], grads_eager[name]), name


@needs_kernels
def test_switch_and_tensor_rules():
    x = torch.ones(2, 3)
    native_kernels.set_enabled(False)
    assert not native_kernels.active() and not native_kernels.applies(x)
    native_kernels.set_enabled(True)
    assert native_kernels.applies(x)
    assert not native_kernels.applies(x.double()) and not native_kernels.applies(x.t())
    torch.set_num_threads(2)
    try:
        assert not native_kernels.applies(x)
    finally:
        torch.set_num_threads(1)


def test_without_a_compiler_the_eager_ops_run(tmp_path):
    """No compiler (and no compiled library cached): the kernels are off, the quantized layer still
    runs, and the reason is reported."""
    script = (
        "import torch\n"
        "from odimo_moo import native_kernels\n"
        "from odimo_moo.alternatives import SameOpAlternative, run_dense_quantized\n"
        "from odimo_moo.quantizers import ActivationQuantizer\n"
        "conv = torch.nn.Conv2d(2, 3, 3)\n"
        "out = run_dense_quantized(conv, torch.rand(1, 2, 5, 5), ActivationQuantizer(7, False), conv.weight, None)\n"
        "assert out.shape == (1, 3, 3, 3)\n"
        "assert not native_kernels.active()\n"
        "print(native_kernels.load_error())\n")
    environment = dict(os.environ, CC=str(tmp_path / "no-such-compiler"), XDG_CACHE_HOME=str(tmp_path),
                       ODIMO_NATIVE_KERNELS="1")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=environment,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert "no-such-compiler" in result.stdout

"""The input quantizer's elementwise work in eager torch vs one ``torch.compile``'d kernel each way.

What the fused quantized layer (``odimo_moo.alternatives._QuantizedInputLayer``) does around its
convolution, on one activation-sized tensor (default ``64x16x32x32``: ResNet-20's first stage at
batch 64, DIANA's unsigned 7-bit power-of-two grid):

* ``eager``: the project's helpers as the layer calls them -- forward ``activation_levels``, the
  1-byte code, the rescale; backward the code back to float and ``activation_gradients`` (the
  input's gradient over the convolution's input gradient, and the clip's);
* ``compiled``: the same formulas as two ``torch.compile`` functions (inductor's C++ backend): one
  pass forward (quantized input and code), one backward (the code to float for the convolution's
  backward, the input's gradient and the clip gradient's sum);
* ``native``: what the layer runs by default on CPU, :mod:`odimo_moo.native_kernels` (C compiled once
  with the system compiler): one pass forward, and backward the code to float (torch) then one pass
  for the input's gradient and the clip gradient's sum.

Reports CPU milliseconds per call (median of interleaved rounds), the first-call compile seconds
(inductor's cache in a fresh temporary folder: what a new machine pays; a warm cache pays the
import of the compiler stack, several seconds), and whether the outputs are identical. Needs a C++
compiler for the compiled side (reported as unavailable otherwise).

    python benchmarks/quantizer_kernels.py     # -> benchmarks/results/quantizer_kernels.json
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from typing import Any, Callable

import torch

import _common as common
from odimo_moo import native_kernels
from odimo_moo.quantizers import activation_gradients, activation_levels, level_code_dtype, power_of_two_grid

LEVELS = 127  # 7-bit unsigned (DIANA's analog unit)


def eager_forward(x: torch.Tensor, clip: torch.Tensor, step: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    integers = activation_levels(x, clip, step, LEVELS, False)
    code = integers.to(level_code_dtype(LEVELS))
    return integers.mul_(step), code


def eager_backward(grad: torch.Tensor, x: torch.Tensor, code: torch.Tensor, clip: torch.Tensor,
                   step: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``grad`` (the convolution's input gradient) becomes the input's gradient in place, as in the layer."""
    integers = code.to(grad.dtype)  # the convolution's backward reads it
    grad_x, grad_clip = activation_gradients(grad, x, integers, step, clip, False, True, True,
                                             grad_is_scratch=True)
    return integers, grad_x, grad_clip


def native_forward(x: torch.Tensor, high: float, step: float) -> tuple[torch.Tensor, torch.Tensor]:
    return native_kernels.quantize_activation(x, step, 0.0, LEVELS, torch.int8)


def native_backward(grad: torch.Tensor, x: torch.Tensor, code: torch.Tensor, high: float,
                    step: float) -> tuple[torch.Tensor, torch.Tensor, float]:
    """As :func:`eager_backward`, ``grad`` overwritten with the input's gradient."""
    integers = code.to(grad.dtype)
    total = native_kernels.activation_backward(grad, x, code, step, 0.0, high)
    return integers, grad, -math.log(2.0) * total


def fused_forward(x: torch.Tensor, high: float, step: float) -> tuple[torch.Tensor, torch.Tensor]:
    integers = torch.clamp(x / step, 0.0, float(LEVELS)).round()
    return integers * step, integers.to(torch.int8)


def fused_backward(grad: torch.Tensor, x: torch.Tensor, code: torch.Tensor, high: float,
                   step: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    integers = code.to(grad.dtype)
    inside = (x > 0.0) & (x < high)
    direction = torch.where(inside, x, 0.0) - integers * step
    clip_grad = -math.log(2.0) * (grad * direction).sum()
    return integers, torch.where(inside, grad, 0.0), clip_grad


def median_cpu_ms(functions: dict[str, Callable[[], Any]], rounds: int) -> dict[str, float]:
    timings = common.interleaved(functions, rounds, torch.device("cpu"))
    return {name: 1e3 * sorted(t.cpu)[len(t.cpu) // 2] for name, t in timings.items()}


def compiled_pair(x: torch.Tensor, grad: torch.Tensor, high: float, step: float) -> dict[str, Any]:
    """Compile both fused functions (cold inductor cache); their callables and compile seconds."""
    forward = torch.compile(fused_forward, fullgraph=True, dynamic=False)
    backward = torch.compile(fused_backward, fullgraph=True, dynamic=False)
    started = time.perf_counter()
    _, code = forward(x, high, step)
    backward(grad, x, code, high, step)
    return {"forward": forward, "backward": backward, "compile_s": time.perf_counter() - started}


def identical(compiled: dict[str, Any], x: torch.Tensor, grad: torch.Tensor, y: torch.Tensor, code: torch.Tensor,
              high: float, step: float, high_t: torch.Tensor, step_t: torch.Tensor) -> dict[str, Any]:
    """Whether the compiled (or native) pair reproduces the eager one: outputs and input gradient bit
    for bit, the clip gradient (a sum: its order differs) as a relative difference."""
    fy, fcode = compiled["forward"](x, high, step)
    _, eager_grad_x, eager_clip = eager_backward(grad.clone(), x, code, high_t, step_t)
    _, fused_grad_x, fused_clip = compiled["backward"](grad.clone(), x, code, high, step)
    return {"output": bool(torch.equal(fy, y)), "code": bool(torch.equal(fcode, code)),
            "grad_x": bool(torch.equal(fused_grad_x, eager_grad_x)),
            "clip_grad_relative_difference": abs(float(fused_clip) - float(eager_clip)) / abs(float(eager_clip))}


def main() -> None:
    parser = common.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=4, default=[64, 16, 32, 32])
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    device = common.setup(args)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(args.shape, generator=generator).relu_()
    grad = torch.randn(args.shape, generator=generator)
    high_t, step_t = power_of_two_grid(torch.tensor(2.0), LEVELS)
    high, step = float(high_t), float(step_t)
    y, code = eager_forward(x, high_t, step_t)
    scratch = grad.clone()
    result: dict[str, Any] = {"benchmark": "quantizer_kernels", "machine": common.machine_info(device),
                              "settings": {"shape": args.shape, "levels": LEVELS, "rounds": args.rounds}}
    functions: dict[str, Callable[[], Any]] = {
        "eager_forward": lambda: eager_forward(x, high_t, step_t),
        "eager_backward": lambda: eager_backward(scratch, x, code, high_t, step_t)}
    with tempfile.TemporaryDirectory(prefix="odimo-inductor-") as cache:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache
        try:
            compiled = compiled_pair(x, grad, high, step)
        except Exception as error:  # no C++ compiler, unsupported platform: report, time eager alone
            result["compiled_unavailable"] = f"{type(error).__name__}: {error}"[:500]
            compiled = None
        if compiled is not None:
            functions["compiled_forward"] = lambda: compiled["forward"](x, high, step)
            functions["compiled_backward"] = lambda: compiled["backward"](grad, x, code, high, step)
            result["compile_s_cold_cache"] = compiled["compile_s"]
            result["identical"] = identical(compiled, x, grad, y, code, high, step, high_t, step_t)
        if native_kernels.library() is not None:
            native_scratch = grad.clone()
            functions["native_forward"] = lambda: native_forward(x, high, step)
            functions["native_backward"] = lambda: native_backward(native_scratch, x, code, high, step)
            native = {"forward": native_forward, "backward": native_backward}
            result["native_identical"] = identical(native, x, grad, y, code, high, step, high_t, step_t)
        result["cpu_ms"] = median_cpu_ms(functions, args.rounds)
    print(f"per call, CPU ms: {result['cpu_ms']}; compile {result.get('compile_s_cold_cache', 'n/a')} s")
    common.write_result("quantizer_kernels", result, args.output)


if __name__ == "__main__":
    main()

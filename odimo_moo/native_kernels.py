"""Compiled CPU kernels for the quantized layers' elementwise work, with the eager torch ops as fallback.

The fake quantizers' forward and backward and the weight mix are a handful of elementwise passes
each in eager torch (divide, clamp, round, code, rescale; mask, direction, dot, mask): on CPU every
pass streams the whole tensor through memory. The kernels here do each in ONE pass, computing the
same values -- bit for bit, except the sums, which they accumulate in another order (equal up to
float rounding):

* :func:`quantize_activation` / :func:`activation_backward`: the fused quantized layer's input
  (quantized values and 1-byte codes) and, backward, the input's gradient (in place) with the clip
  gradient's sum;
* :func:`quantize_int_weight`, :func:`quantize_ternary` / :func:`levels_backward`: the weight
  quantizers (the ternary scale's gradient is a sum);
* :func:`mix_dense_forward` / :func:`mix_dense_backward`: a dense term of the weight mix (the mask
  gradient is a sum);
* :func:`mix_int_forward`, :func:`mix_levels_forward` / :func:`levels_backward`: an encoded term of
  the weight mix (:mod:`odimo_moo.weight_mix`), mixed from 1-byte levels; one backward pass gives the
  mask column, the shared weight's gradient and the scale's (sums).
* :func:`thermometric_mask` / :func:`thermometric_mask_backward`: a thermometric assignment's mask
  from its increments and, backward, its parameter's gradient (cumulative sums in a double, as torch's).

The C source is compiled once per machine with the system's C compiler (``cc``, or ``$CC``) into
a per-user cache folder, in under a second, and loaded with :mod:`ctypes` (no torch headers, no
Python extension build). Where no compiler works, :func:`active` is false and every caller runs its
eager ops. The kernels are used automatically for contiguous float32 CPU tensors when torch runs on
one thread (:func:`applies`); ``ODIMO_NATIVE_KERNELS=0`` in the environment, or :func:`set_enabled`,
turns them off.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shlex
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import torch

from .native_kernel_source import SOURCE as _SOURCE

#: The environment variable that turns the kernels off (``0``) for a process.
ENVIRONMENT_SWITCH = "ODIMO_NATIVE_KERNELS"

#: Flags: IEEE arithmetic kept exactly (no fused multiply-add contraction, no fast-math), vectorized.
_FLAGS = ("-O3", "-march=native", "-ffp-contract=off", "-fno-math-errno", "-fPIC", "-shared")

_POINTER = ctypes.c_void_p
_SIGNATURES: dict[str, tuple[object, tuple[object, ...]]] = {
    **{f"quantize_{code}": (None, (_POINTER, _POINTER, _POINTER, ctypes.c_int64) + (ctypes.c_float,) * 3)
       for code in ("int8", "uint8")},
    **{f"backward_{code}": (ctypes.c_double, (_POINTER, _POINTER, _POINTER, ctypes.c_int64) + (ctypes.c_float,) * 3)
       for code in ("int8", "uint8")},
    "quantize_int_weight": (ctypes.c_float, (_POINTER, _POINTER, ctypes.c_int64) + (ctypes.c_float,) * 2),
    "quantize_ternary": (None, (_POINTER,) * 6 + (ctypes.c_int64, ctypes.c_int64)),
    "mix_dense_forward": (None, (_POINTER, _POINTER, ctypes.c_int64, _POINTER, ctypes.c_int, ctypes.c_int64,
                                 ctypes.c_int64)),
    "mix_dense_backward": (None, (_POINTER, _POINTER, _POINTER, ctypes.c_int64, _POINTER, _POINTER,
                                  ctypes.c_int64, ctypes.c_int64, ctypes.c_int64)),
    "mix_levels_forward": (None, (_POINTER, _POINTER, ctypes.c_int64, _POINTER, ctypes.c_int64, _POINTER,
                                  ctypes.c_int) + (ctypes.c_int64,) * 3),
    "mix_int_forward": (None, (_POINTER, _POINTER, _POINTER, ctypes.c_float, ctypes.c_float, _POINTER, ctypes.c_int64,
                               _POINTER, ctypes.c_int) + (ctypes.c_int64,) * 3),
    "levels_backward": (None, (_POINTER, ctypes.c_int64, ctypes.c_float, _POINTER, _POINTER, ctypes.c_int64, _POINTER,
                               _POINTER, ctypes.c_int64, _POINTER, _POINTER, _POINTER, ctypes.c_int64, _POINTER,
                               ctypes.c_int64, ctypes.c_int64)),
    "thermometric_mask": (None, (_POINTER, ctypes.c_int64, ctypes.c_int64, _POINTER, _POINTER)),
    "thermometric_mask_backward": (None, (_POINTER, ctypes.c_int64, ctypes.c_int64, _POINTER, _POINTER,
                                          ctypes.c_int64, ctypes.c_int64, _POINTER)),
}
#: The 1-byte code dtypes the activation kernels write, by kernel name suffix.
_CODE_SUFFIX = {torch.int8: "int8", torch.uint8: "uint8"}

_lock = threading.Lock()
_state: dict[str, object] = {"loaded": False, "library": None, "error": None, "enabled": None}


def _machine_key() -> str:
    """What the compiled library depends on: the source, the flags and the CPU (``-march=native``)."""
    cpu = ""
    try:
        cpu = next((line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")), "")
    except OSError:
        pass
    text = "\n".join((_SOURCE, " ".join(_FLAGS), platform.machine(), cpu))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _cache_folder() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    folder = Path(base) / "odimo-moo"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        return folder
    except OSError:
        return Path(tempfile.gettempdir())


def _compile(target: Path) -> None:
    """Compile the source into ``target`` (written under a temporary name, then renamed: concurrent
    processes never load a half-written library)."""
    found = shutil.which("cc") or shutil.which("gcc")
    compiler = shlex.split(os.environ["CC"]) if os.environ.get("CC") else [found] if found else None
    if not compiler:
        raise OSError("no C compiler found (cc, gcc or $CC)")
    with tempfile.TemporaryDirectory(prefix="odimo-kernels-") as folder:
        source = Path(folder) / "kernels.c"
        source.write_text(_SOURCE)
        built = Path(folder) / "kernels.so"
        run = subprocess.run([*compiler, *_FLAGS, str(source), "-o", str(built), "-lm"], capture_output=True,
                             text=True, timeout=120)
        if run.returncode != 0:
            raise OSError(f"{' '.join(compiler)} failed: {run.stderr.strip()[-500:]}")
        partial = target.with_name(f"{target.name}.{os.getpid()}.partial")
        shutil.copyfile(built, partial)
        os.replace(partial, target)


def _load() -> ctypes.CDLL:
    target = _cache_folder() / f"kernels-{_machine_key()}.so"
    if not target.exists():
        _compile(target)
    library = ctypes.CDLL(str(target))
    for name, (result, arguments) in _SIGNATURES.items():
        function = getattr(library, name)
        function.restype, function.argtypes = result, arguments
    return library


def library() -> ctypes.CDLL | None:
    """The compiled kernels (compiled at the first call on a machine), or None where compiling or
    loading failed (:func:`load_error` says why)."""
    if not _state["loaded"]:
        with _lock:
            if not _state["loaded"]:
                try:
                    _state["library"] = _load()
                except (OSError, subprocess.SubprocessError) as error:
                    _state["error"] = f"{type(error).__name__}: {error}"
                _state["loaded"] = True
    return _state["library"]  # type: ignore[return-value]


def _kernels() -> ctypes.CDLL:
    """The loaded library; callers check :func:`applies` first."""
    loaded = library()
    if loaded is None:
        raise RuntimeError(f"compiled kernels unavailable: {load_error()}")
    return loaded


def load_error() -> str | None:
    """Why the kernels are unavailable (None when they loaded or were not tried yet)."""
    return _state["error"]  # type: ignore[return-value]


def set_enabled(enabled: bool | None) -> None:
    """Use the kernels (True, where they compile), never (False), or as the environment says (None:
    on unless ``ODIMO_NATIVE_KERNELS=0``)."""
    _state["enabled"] = enabled


def active() -> bool:
    """Whether the kernels are switched on and loaded."""
    enabled = _state["enabled"]
    if enabled is None:
        enabled = os.environ.get(ENVIRONMENT_SWITCH, "1") != "0"
    return bool(enabled) and library() is not None


def applies(*tensors: torch.Tensor) -> bool:
    """Whether the kernels take these tensors: contiguous float32 on the CPU, kernels active, and torch
    on one CPU thread (the training commands' default; the kernels are single-threaded, and with more
    threads torch's own elementwise ops run in parallel)."""
    if torch.get_num_threads() != 1 or not active():
        return False
    for tensor in tensors:  # a plain loop: this runs several times per layer and step
        if tensor.dtype is not torch.float32 or tensor.device.type != "cpu" or not tensor.is_contiguous():
            return False
    return True


def activation_code_dtype(levels: int, signed: bool) -> torch.dtype | None:
    """The 1-byte code the activation kernels write for integer levels ``[-levels or 0, levels]``,
    or None when none holds them."""
    if levels <= 127:
        return torch.int8
    return None if signed or levels > 255 else torch.uint8


def takes_code(code: torch.Tensor) -> bool:
    """Whether :func:`activation_backward` reads codes of ``code``'s dtype."""
    return code.dtype in _CODE_SUFFIX


#: A tensor's address (the method itself: no Python frame per argument of every kernel call).
_pointer = torch.Tensor.data_ptr


def quantize_activation(x: torch.Tensor, step: float, low: float, high: float,
                        code_dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """``(round(clamp(x / step, low, high)) * step, the rounded levels as code_dtype)`` in one pass."""
    out = torch.empty_like(x)
    code = torch.empty(x.shape, dtype=code_dtype)
    kernel = getattr(_kernels(), f"quantize_{_CODE_SUFFIX[code_dtype]}")
    kernel(_pointer(x), _pointer(out), _pointer(code), x.numel(), step, low, high)
    return out, code


def activation_backward(grad: torch.Tensor, x: torch.Tensor, code: torch.Tensor, step: float, low: float,
                        high: float) -> float:
    """Overwrite ``grad`` with ``grad * [low < x < high]`` (the input's gradient) and return
    ``sum(grad * (x * [low < x < high] - code * step))`` (the clip descent direction's dot product,
    :func:`odimo_moo.quantizers.clip_descent_direction`), both in one pass. ``low``/``high``: the clip range."""
    kernel = getattr(_kernels(), f"backward_{_CODE_SUFFIX[code.dtype]}")
    return kernel(_pointer(grad), _pointer(x), _pointer(code), x.numel(), step, low, high)


def quantize_int_weight(weight: torch.Tensor, low: int, high: int) -> torch.Tensor:
    """``clamp(round(weight / scale), low, high) * scale`` with ``scale`` the smallest power of two
    >= ``max(max |weight|, 1e-12) / high`` (:func:`odimo_moo.weight_quantizers.int_weight_scale`), in
    two passes (the maximum, then the levels) and no temporary."""
    out = torch.empty_like(weight)
    _kernels().quantize_int_weight(_pointer(weight), _pointer(out), weight.numel(), low, high)
    return out


def quantize_ternary(weight: torch.Tensor, delta: torch.Tensor, scale: torch.Tensor,
                     values: bool = True) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor]:
    """Per output channel ``c`` of ``weight`` ``[C, n]``: ``h = sign(w) * [|w| > delta[c]]``; returns
    ``(h * scale[c] (None unless values), h as int8, max(max |w|, 1e-12) as [C, 1])`` in one pass
    (``delta``, ``scale``: ``C`` contiguous floats each)."""
    channels, size = weight.shape
    out = torch.empty_like(weight) if values else None
    hard = torch.empty(weight.shape, dtype=torch.int8)
    largest = torch.empty(channels, 1, dtype=torch.float32)
    _kernels().quantize_ternary(_pointer(weight), _pointer(delta), _pointer(scale),
                                None if out is None else _pointer(out), _pointer(hard), _pointer(largest), channels,
                                size)
    return out, hard, largest


def _column(matrix: torch.Tensor, column: int) -> int:
    """The address of ``matrix[0, column]``."""
    return _pointer(matrix) + matrix.element_size() * column * matrix.stride(1)


def mix_dense_forward(term: torch.Tensor, mask: torch.Tensor, column: int, mixed: torch.Tensor | None) -> torch.Tensor:
    """``mixed + term * mask[:, column]`` per output channel, in place (``term * mask[:, column]``
    into a new tensor when ``mixed`` is None). ``term``/``mixed``: contiguous float32 in the layer's
    weight shape; ``mask``: ``[C, K]`` float32, any strides."""
    out = torch.empty_like(term) if mixed is None else mixed
    _kernels().mix_dense_forward(_pointer(term), _column(mask, column), mask.stride(0), _pointer(out),
                                 int(mixed is not None), term.shape[0], term.numel() // term.shape[0])
    return out


def mix_dense_backward(grad: torch.Tensor, term: torch.Tensor, mask: torch.Tensor, column: int, need_term: bool,
                       grad_mask: torch.Tensor | None) -> torch.Tensor | None:
    """A dense weight term's share of the mix's backward: returns ``grad * mask[:, column]`` per
    output channel (None unless ``need_term``) and writes ``grad_mask[:, column]`` (the per-channel
    dot product of ``grad`` and ``term``) when ``grad_mask`` is given. ``grad``/``term``: contiguous
    float32 in the layer's weight shape; ``mask``/``grad_mask``: ``[C, K]`` float32, any strides."""
    channels = term.shape[0]
    grad_term = torch.empty_like(term) if need_term else None
    _kernels().mix_dense_backward(
        _pointer(grad), _pointer(term), _column(mask, column), mask.stride(0),
        None if grad_term is None else _pointer(grad_term), None if grad_mask is None else _column(grad_mask, column),
        0 if grad_mask is None else grad_mask.stride(0), channels, term.numel() // channels)
    return grad_term


def _row_stride(term: torch.Tensor, diagonal: bool) -> int:
    """How far apart in the mixed weight the rows of an encoded term ``[C, ...]`` are: a row of the
    weight, or with ``diagonal`` a row plus one kernel (the kernels sit at ``[c, c]``)."""
    size = term.numel() // term.shape[0]
    return (term.shape[0] + 1) * size if diagonal else size


def _mix_target(mixed: torch.Tensor | None, term: torch.Tensor, shape: torch.Size,
                diagonal: bool) -> tuple[torch.Tensor, int, int]:
    """The float32 weight an encoded term ``term`` (``[C, ...]``) is mixed into -- ``mixed``, or a new one
    of ``shape``: zeros under a diagonal term, which adds -- whether the kernel adds into it, and its
    :func:`_row_stride`."""
    row_stride = _row_stride(term, diagonal)
    if mixed is not None:
        return mixed, 1, row_stride
    if diagonal:
        return torch.zeros(shape, dtype=torch.float32), 1, row_stride
    return torch.empty_like(term, dtype=torch.float32), 0, row_stride


def mix_levels_forward(levels: torch.Tensor, scale: torch.Tensor, mask: torch.Tensor, column: int,
                       mixed: torch.Tensor | None, shape: torch.Size, diagonal: bool) -> torch.Tensor:
    """:func:`mix_dense_forward` of the term ``levels * scale`` (``levels``: int8 ``[C, ...]``; ``scale``:
    ``[C]`` or one float32 value) into a weight of ``shape``, without decoding the term first: levels in
    ``shape``, or with ``diagonal`` a depthwise term's ``[C, kh, kw]`` kernels on the diagonal of a
    ``[C, C, kh, kw]`` shape (added as the eager diagonal term adds)."""
    mixed, accumulate, row_stride = _mix_target(mixed, levels, shape, diagonal)
    channels = levels.shape[0]
    _kernels().mix_levels_forward(_pointer(levels), _pointer(scale), int(scale.numel() > 1), _column(mask, column),
                                  mask.stride(0), _pointer(mixed), accumulate, row_stride, channels,
                                  levels.numel() // channels)
    return mixed


def mix_int_forward(weight: torch.Tensor, low: int, high: int, mask: torch.Tensor, column: int,
                    mixed: torch.Tensor | None, shape: torch.Size,
                    diagonal: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`mix_levels_forward` of :func:`quantize_int_weight`'s term (``-128 <= low``, ``high <= 127``),
    encoding and mixing in one pass: returns ``(mixed, levels, scale)``, the levels as int8 in the
    weight's shape and the scale as a one-element float32 tensor (``diagonal``: ``weight`` is a
    depthwise term's ``[C, 1, kh, kw]`` kernels)."""
    mixed, accumulate, row_stride = _mix_target(mixed, weight, shape, diagonal)
    channels = weight.shape[0]
    levels, scale = torch.empty_like(weight, dtype=torch.int8), torch.empty(1)
    _kernels().mix_int_forward(_pointer(weight), _pointer(levels), _pointer(scale), low, high, _column(mask, column),
                               mask.stride(0), _pointer(mixed), accumulate, row_stride, channels,
                               weight.numel() // channels)
    return mixed, levels, scale


def levels_backward(grad: torch.Tensor, levels: torch.Tensor, scale: torch.Tensor, largest: torch.Tensor | None,
                    mask: torch.Tensor, column: int, diagonal: bool, need_weight: bool, grad_mask: torch.Tensor | None,
                    need_scale: bool, added: torch.Tensor | None = None, out: torch.Tensor | None = None,
                    factor: float = 1.0) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """The backward of :func:`mix_levels_forward` and of the quantizer that encoded the term, in one
    pass over the mixed weight's gradient ``factor * grad`` (its diagonal for a ``diagonal`` term):
    writes ``grad_mask[:, column]`` (when given) and returns the encoded weight's gradient in the
    levels' shape (when ``need_weight``: ``added`` plus the term's share, written into ``out``, a new
    tensor when None; ``out`` may be ``added`` or, for a term in the weight's shape, ``grad`` itself) and
    the per-channel scale's ``[C]`` (when ``need_scale``). ``largest`` None: the int quantizer's
    identity gradient; else the ternary one's."""
    channels, size = levels.shape[0], levels.numel() // levels.shape[0]
    if need_weight and out is None:
        out = torch.empty_like(levels, dtype=torch.float32)
    grad_scale = torch.empty(channels, dtype=torch.float32) if need_scale else None
    _kernels().levels_backward(
        _pointer(grad), _row_stride(levels, diagonal), factor, _pointer(levels), _pointer(scale),
        int(scale.numel() > 1), None if largest is None else _pointer(largest), _column(mask, column), mask.stride(0),
        _pointer(out) if need_weight else None, _pointer(added) if need_weight and added is not None else None,
        None if grad_mask is None else _column(grad_mask, column), 0 if grad_mask is None else grad_mask.stride(0),
        None if grad_scale is None else _pointer(grad_scale), channels, size)
    return (out if need_weight else None), grad_scale


def thermometric_mask(increments: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``[C, K]`` mask of a thermometric assignment with increments ``exp(alpha)`` ``[K - 1, C]``
    (contiguous float32), and its ``[K - 1, C]`` open flags (``theta <= 0.5`` as 1.0/0.0), as
    :class:`odimo_moo.assignment.ThermometricAssignment` defines them."""
    boundaries, channels = increments.shape
    open_ = torch.empty(boundaries, channels, dtype=torch.float32)
    mask = torch.empty(channels, boundaries + 1, dtype=torch.float32)
    _kernels().thermometric_mask(_pointer(increments), boundaries, channels, _pointer(open_), _pointer(mask))
    return mask, open_


def thermometric_mask_backward(grad: torch.Tensor, increments: torch.Tensor, open_: torch.Tensor) -> torch.Tensor:
    """The gradient of ``alpha`` ``[K - 1, C]`` from the mask's ``grad`` ``[C, K]`` (float32, any strides),
    with :func:`thermometric_mask`'s increments and open flags."""
    boundaries, channels = increments.shape
    grad_alpha = torch.empty(boundaries, channels, dtype=torch.float32)
    _kernels().thermometric_mask_backward(_pointer(grad), grad.stride(0), grad.stride(1), _pointer(increments),
                                          _pointer(open_), boundaries, channels, _pointer(grad_alpha))
    return grad_alpha

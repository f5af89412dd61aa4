"""The expression language of cycle formulas (a YAML SoC unit's ``cycles:``).

A formula may use only:

- numbers;
- the variables ``n`` (output channels on this unit, a real number during the search),
  ``in_channels``, ``cin`` (``in_channels / groups``), ``out_channels`` (of the whole layer), ``kh``,
  ``kw``, ``k`` (``= kh``), ``sh``, ``sw`` (strides), ``groups``, ``ho``, ``wo`` (output size);
  a Linear layer is a 1x1 conv on a 1x1 output;
- the operators ``+ - * / // % **`` and unary ``-``, where ``a // b`` is ``floor(a / b)`` and
  ``a % b`` is ``a - b * floor(a / b)``;
- the functions ``ceil(x)``, ``floor(x)`` (straight-through gradients), ``gate(x)`` (1 if x > 0
  else 0: put fixed overheads behind ``gate(n)``), ``max(a, b, ...)``, ``min(a, b, ...)``, ``abs(x)``.

Formulas are parsed with :mod:`ast` and checked node by node; anything else is a
:class:`~odimo_moo.errors.UsageError` at load time. The checked tree is compiled into torch
closures over a :class:`~odimo_moo.layer_spec.LayerTable`, so a formula is vectorized over layers
and differentiable in ``n``; compiling one does not import torch (evaluating it does). Nothing is
ever passed to ``eval``/``exec``. A unit's cycles are 0 when ``n == 0`` whatever its formula says
(see :meth:`odimo_moo.soc.ComputeUnit.cycles`).
"""

from __future__ import annotations

import ast
import operator
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from .cost_primitives import gate, ste_ceil, ste_floor
from .errors import UsageError
from .layer_spec import LayerTable
from .soc import CycleFormula

if TYPE_CHECKING:
    import torch

VARIABLES = ("n", "in_channels", "cin", "out_channels", "kh", "kw", "k", "sh", "sw", "groups", "ho", "wo")


def _maximum(*args: torch.Tensor) -> torch.Tensor:
    result = args[0]
    for arg in args[1:]:
        result = result.maximum(arg)
    return result


def _minimum(*args: torch.Tensor) -> torch.Tensor:
    result = args[0]
    for arg in args[1:]:
        result = result.minimum(arg)
    return result


@dataclass(frozen=True)
class _Function:
    impl: Callable[..., torch.Tensor]
    min_args: int
    max_args: int | None  # None: no upper bound


FUNCTIONS: dict[str, _Function] = {
    "ceil": _Function(ste_ceil, 1, 1),
    "floor": _Function(ste_floor, 1, 1),
    "gate": _Function(gate, 1, 1),
    "max": _Function(_maximum, 2, None),
    "min": _Function(_minimum, 2, None),
    "abs": _Function(operator.abs, 1, 1),
}


def _floor_div(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return ste_floor(a / b)


def _mod(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return a - b * ste_floor(a / b)


_BINARY: dict[type, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: _floor_div,
    ast.Mod: _mod,
    ast.Pow: operator.pow,
}

_UNARY: dict[type, Callable[[torch.Tensor], torch.Tensor]] = {
    ast.USub: operator.neg,
    ast.UAdd: lambda x: x,
}

_OP_SYMBOLS: dict[type, str] = {
    ast.MatMult: "@", ast.BitAnd: "&", ast.BitOr: "|", ast.BitXor: "^", ast.LShift: "<<",
    ast.RShift: ">>", ast.Invert: "~", ast.Not: "not",
}

VOCABULARY = (
    f"numbers; variables {', '.join(VARIABLES)}; operators + - * / // % ** and unary -; "
    f"functions {', '.join(f'{name}()' for name in FUNCTIONS)}"
)

_CONSTRUCTS: dict[type, str] = {
    ast.Attribute: "attribute access",
    ast.Subscript: "subscript",
    ast.Lambda: "lambda",
    ast.ListComp: "list comprehension",
    ast.SetComp: "set comprehension",
    ast.DictComp: "dict comprehension",
    ast.GeneratorExp: "generator expression",
    ast.Compare: "comparison",
    ast.BoolOp: "boolean operator",
    ast.IfExp: "conditional expression",
    ast.List: "list",
    ast.Tuple: "tuple",
    ast.Set: "set",
    ast.Dict: "dict",
    ast.JoinedStr: "f-string",
    ast.NamedExpr: "assignment expression",
    ast.Starred: "starred argument",
    ast.Await: "await",
    ast.Yield: "yield",
    ast.YieldFrom: "yield",
}


class _Env:
    """The values a formula's variables take for one evaluation."""

    def __init__(self, layers: LayerTable, n: torch.Tensor) -> None:
        self.device = n.device
        self.values = {
            "n": n,
            "in_channels": layers.in_channels,
            "cin": layers.in_channels / layers.groups,
            "out_channels": layers.out_channels,
            "kh": layers.kh,
            "kw": layers.kw,
            "k": layers.kh,
            "sh": layers.sh,
            "sw": layers.sw,
            "groups": layers.groups,
            "ho": layers.ho,
            "wo": layers.wo,
        }

    def constant(self, value: float) -> torch.Tensor:
        """A number of the formula, as a float64 scalar on the device of ``n``."""
        import torch

        return torch.full((), value, dtype=torch.float64, device=self.device)


_Node = Callable[[_Env], "torch.Tensor"]


class FormulaError(UsageError):
    """A cycle formula uses something outside the expression language."""


def _reject(node: ast.AST, what: str) -> FormulaError:
    return FormulaError(f"{what} `{ast.unparse(node)}` is not allowed; allowed: {VOCABULARY}")


def _compile_node(node: ast.AST) -> _Node:
    if isinstance(node, ast.Constant):
        if isinstance(node.value, bool) or not isinstance(node.value, (int, float)):
            raise _reject(node, f"{type(node.value).__name__} constant")
        try:
            value = float(node.value)
        except OverflowError:  # an int literal beyond float range
            raise _reject(node, "number too large") from None
        return lambda env: env.constant(value)
    if isinstance(node, ast.Name):
        if node.id not in VARIABLES:
            what = "function name used as a value" if node.id in FUNCTIONS else "unknown name"
            raise _reject(node, what)
        name = node.id
        return lambda env: env.values[name]
    if isinstance(node, ast.UnaryOp):
        unary = _UNARY.get(type(node.op))
        if unary is None:
            raise _reject(node, f"operator {_OP_SYMBOLS.get(type(node.op), type(node.op).__name__)!r} in")
        operand = _compile_node(node.operand)
        return lambda env: unary(operand(env))
    if isinstance(node, ast.BinOp):
        binary = _BINARY.get(type(node.op))
        if binary is None:
            raise _reject(node, f"operator {_OP_SYMBOLS.get(type(node.op), type(node.op).__name__)!r} in")
        left, right = _compile_node(node.left), _compile_node(node.right)
        return lambda env: binary(left(env), right(env))
    if isinstance(node, ast.Call):
        return _compile_call(node)
    raise _reject(node, _CONSTRUCTS.get(type(node), type(node).__name__))


def _compile_call(node: ast.Call) -> _Node:
    if not isinstance(node.func, ast.Name):
        raise _reject(node, "call of an expression")
    function = FUNCTIONS.get(node.func.id)
    if function is None:
        raise _reject(node, f"call of unknown function {node.func.id!r}")
    if node.keywords:
        raise _reject(node, "keyword argument in")
    count = len(node.args)
    if count < function.min_args or (function.max_args is not None and count > function.max_args):
        expected = (str(function.min_args) if function.max_args == function.min_args
                    else f"{function.min_args} or more")
        raise FormulaError(f"`{ast.unparse(node)}`: {node.func.id}() takes {expected} argument(s), "
                           f"got {count}")
    args = [_compile_node(arg) for arg in node.args]
    impl = function.impl
    return lambda env: impl(*(arg(env) for arg in args))


MAX_DEPTH = 100


def _check_depth(root: ast.AST) -> None:
    """Reject trees nested deeper than :data:`MAX_DEPTH` (their evaluation would recurse as deep)."""
    stack = [(root, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise FormulaError(f"the formula is nested more than {MAX_DEPTH} levels deep; simplify it")
        stack.extend((child, depth + 1) for child in ast.iter_child_nodes(node))


def compile_formula(text: str) -> CycleFormula:
    """Compile a cycle formula into ``f(layers, n) -> cycles`` (a tensor of shape ``[L]``).

    Raises :class:`FormulaError` (a :class:`UsageError`) naming the first construct outside the
    language, or the syntax problem.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", SyntaxWarning)  # e.g. "2n": an error, not a stray stderr line
            tree = ast.parse(text.strip(), mode="eval")
        _check_depth(tree.body)
        root = _compile_node(tree.body)
    except SyntaxError as exc:
        column = f" (column {exc.offset})" if exc.offset else ""
        raise FormulaError(f"{text!r} is not a valid expression: {exc.msg}{column}; "
                           f"allowed: {VOCABULARY}") from None
    except ValueError as exc:  # e.g. a NUL character, which the parser refuses outright
        raise FormulaError(f"{text!r} is not a valid expression: {exc}") from None
    except (RecursionError, MemoryError):  # the parser's own limit on nesting
        raise FormulaError(f"the formula is nested more than {MAX_DEPTH} levels deep; simplify it") from None

    def formula(layers: LayerTable, n: torch.Tensor) -> torch.Tensor:
        return root(_Env(layers, n)).expand(n.shape)

    return formula


def roofline_formula(macs_per_cycle: float, overhead_cycles: float) -> CycleFormula:
    """``ceil(n * cin * kh * kw * ho * wo / macs_per_cycle) + gate(n) * overhead_cycles``."""

    def formula(layers: LayerTable, n: torch.Tensor) -> torch.Tensor:
        macs = n * (layers.in_channels / layers.groups) * layers.kh * layers.kw * layers.ho * layers.wo
        return ste_ceil(macs / macs_per_cycle) + gate(n) * overhead_cycles

    return formula

"""SoCs described by YAML files, with cycle formulas in a small, safe expression language.

A YAML SoC names its clock, its default unit and its compute units. Each unit gives its powers, its
data format, the layers it supports, the op it runs for a searched layer, and its latency either as
a ``cycles:`` formula or as a ``roofline:`` (MACs per cycle plus a fixed overhead)::

    name: example_npu
    frequency_mhz: 200
    default_unit: cpu
    units:
      cpu:
        active_power_mw: 30
        idle_power_mw: 1.5
        format: int8
        cycles: "ceil(n / 4) * cin * kh * kw * ho * wo / 2 + gate(n) * 500"
      npu:
        active_power_mw: 90
        format: {weight: int, weight_bits: 4, activation_bits: 8}
        supports: {ops: [conv2d, linear], groups: 1}
        roofline: {macs_per_cycle: 256, overhead_cycles: 2000}

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
and differentiable in ``n``. Nothing is ever passed to ``eval``/``exec``. A unit's cycles are 0 when
``n == 0`` whatever its formula says (see :meth:`odimo_moo.soc.ComputeUnit.cycles`).
"""

from __future__ import annotations

import ast
import math
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
import yaml

from .alternatives import AlternativeFactory, Depthwise, SameOp
from .cost_primitives import gate, ste_ceil, ste_floor
from .errors import UsageError
from .hookspecs import hookimpl
from .layer_spec import LayerSpec, LayerTable, OpKind
from .quantizers import FLOAT, DataFormat, IntFormat, TernaryFormat
from .soc import CycleFormula, FormulaUnit, SoC

VARIABLES = ("n", "in_channels", "cin", "out_channels", "kh", "kw", "k", "sh", "sw", "groups", "ho", "wo")


def _maximum(*args: torch.Tensor) -> torch.Tensor:
    result = args[0]
    for arg in args[1:]:
        result = torch.maximum(result, arg)
    return result


def _minimum(*args: torch.Tensor) -> torch.Tensor:
    result = args[0]
    for arg in args[1:]:
        result = torch.minimum(result, arg)
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
    "abs": _Function(torch.abs, 1, 1),
}


def _floor_div(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return ste_floor(a / b)


def _mod(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return a - b * ste_floor(a / b)


_BINARY: dict[type, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    ast.Add: torch.add,
    ast.Sub: torch.sub,
    ast.Mult: torch.mul,
    ast.Div: torch.div,
    ast.FloorDiv: _floor_div,
    ast.Mod: _mod,
    ast.Pow: torch.pow,
}

_UNARY: dict[type, Callable[[torch.Tensor], torch.Tensor]] = {
    ast.USub: torch.neg,
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


_Node = Callable[[_Env], torch.Tensor]


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
        return lambda env: torch.full((), value, dtype=torch.float64, device=env.device)
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


# --------------------------------------------------------------------------------------------------
# Schema

_TOP_KEYS = {"name", "description", "frequency_hz", "frequency_mhz", "default_unit", "energy", "units"}
_UNIT_KEYS = {"active_power_mw", "idle_power_mw", "format", "supports", "alternative", "cycles", "roofline"}
_FORMAT_KEYS = {"weight", "weight_bits", "activation_bits"}
_SUPPORT_KEYS = {"ops", "kernel_sizes", "groups", "same_in_out"}
_ROOFLINE_KEYS = {"macs_per_cycle", "overhead_cycles"}
ENERGY_MODELS = ("active_idle",)
_GROUPS = ("any", "1", "depthwise")
_ALTERNATIVES = ("same", "depthwise")
_SAMPLE_LAYER = LayerSpec(OpKind.CONV2D, 64, 64, (3, 3), (1, 1), 1, (16, 16))
_SAMPLE_CHANNELS = 32.0


class _Checker:
    """Validates values of one YAML document, naming the file and key path in every error."""

    def __init__(self, source: str) -> None:
        self.source = source

    def error(self, path: str, problem: str) -> UsageError:
        shown = path if path.isprintable() else repr(path)  # keep the message on one line
        where = f"{shown}: " if path else ""
        return UsageError(f"SoC file {self.source}: {where}{problem}")

    def mapping(self, value: Any, path: str, allowed: set[str], required: set[str]) -> Mapping[str, Any]:
        if not isinstance(value, dict):
            raise self.error(path, f"expected a mapping, got {_kind(value)}")
        unknown = sorted(str(k) for k in value if k not in allowed)
        if unknown:
            prefix = f"{path}." if path else ""
            raise self.error(f"{prefix}{unknown[0]}", f"unknown key; allowed keys: {', '.join(sorted(allowed))}")
        missing = sorted(required - set(value))
        if missing:
            prefix = f"{path}." if path else ""
            raise self.error(f"{prefix}{missing[0]}", "missing required key")
        return value

    def number(self, value: Any, path: str, positive: bool = False) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise self.error(path, f"expected a number, got {_kind(value)}")
        if positive and value <= 0:
            raise self.error(path, f"must be positive, got {value}")
        if value < 0:
            raise self.error(path, f"must not be negative, got {value}")
        return float(value)

    def integer(self, value: Any, path: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise self.error(path, f"expected a positive integer, got {_kind(value)}")
        return value

    def string(self, value: Any, path: str) -> str:
        if not isinstance(value, str) or not value.strip():
            raise self.error(path, f"expected a non-empty string, got {_kind(value)}")
        return value

    def choice(self, value: Any, path: str, choices: tuple[str, ...]) -> str:
        text = str(value) if isinstance(value, int) and not isinstance(value, bool) else value
        if text not in choices:
            raise self.error(path, f"expected one of {', '.join(choices)}, got {_kind(value)}")
        return text


def _kind(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, (dict, list)):
        return f"a {type(value).__name__}"
    return f"{type(value).__name__} {value!r}"


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that rejects a key given twice in one mapping (plain YAML keeps the last one)."""


def _construct_unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        try:
            hash(key)
        except TypeError:
            continue  # construct_mapping reports the unhashable key
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"key {key!r} given twice", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping)
# YAML 1.1 reads 260e6 (no dot) as a string; read it as the number a user means, as YAML 1.2 does.
_UniqueKeyLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"))


@dataclass(frozen=True)
class _Condition:
    """One set of conditions under which a unit runs a layer (all must hold)."""

    ops: frozenset[OpKind]
    kernel_sizes: frozenset[tuple[int, int]] | None
    groups: str
    same_in_out: bool

    def holds(self, spec: LayerSpec) -> bool:
        if spec.op not in self.ops:
            return False
        if self.kernel_sizes is not None and spec.kernel_size not in self.kernel_sizes:
            return False
        if self.groups == "1" and spec.groups != 1:
            return False
        if self.groups == "depthwise" and not spec.is_depthwise:
            return False
        return not self.same_in_out or spec.in_channels == spec.out_channels


@dataclass(frozen=True)
class _Support:
    """A unit supports a layer when any of its condition sets holds."""

    conditions: tuple[_Condition, ...]

    def __call__(self, spec: LayerSpec) -> bool:
        return any(condition.holds(spec) for condition in self.conditions)


def _depthwise_alternative(spec: LayerSpec) -> AlternativeFactory:
    return SameOp() if spec.is_depthwise else Depthwise()


def _same_alternative(spec: LayerSpec) -> AlternativeFactory:
    return SameOp()


def _parse_condition(check: _Checker, raw: Any, path: str) -> _Condition:
    raw = check.mapping(raw, path, _SUPPORT_KEYS, set())
    ops_raw = raw.get("ops", [op.value for op in OpKind])
    if not isinstance(ops_raw, list) or not ops_raw:
        raise check.error(f"{path}.ops", f"expected a non-empty list of {', '.join(o.value for o in OpKind)}, "
                                         f"got {_kind(ops_raw)}")
    op_names = tuple(op.value for op in OpKind)
    ops = frozenset(OpKind(check.choice(op, f"{path}.ops[{i}]", op_names)) for i, op in enumerate(ops_raw))
    kernel_sizes = None
    if "kernel_sizes" in raw:
        sizes = raw["kernel_sizes"]
        if not isinstance(sizes, list) or not sizes:
            raise check.error(f"{path}.kernel_sizes", f"expected a non-empty list like [[3, 3], 1], "
                                                      f"got {_kind(sizes)}")
        kernel_sizes = frozenset(_parse_kernel(check, size, f"{path}.kernel_sizes[{i}]")
                                 for i, size in enumerate(sizes))
    groups = check.choice(raw.get("groups", "any"), f"{path}.groups", _GROUPS)
    same_in_out = raw.get("same_in_out", False)
    if not isinstance(same_in_out, bool):
        raise check.error(f"{path}.same_in_out", f"expected true or false, got {_kind(same_in_out)}")
    return _Condition(ops, kernel_sizes, groups, same_in_out)


def _parse_kernel(check: _Checker, raw: Any, path: str) -> tuple[int, int]:
    if isinstance(raw, list) and len(raw) == 2:
        return (check.integer(raw[0], f"{path}[0]"), check.integer(raw[1], f"{path}[1]"))
    if isinstance(raw, int) and not isinstance(raw, bool):
        size = check.integer(raw, path)
        return (size, size)
    raise check.error(path, f"expected a kernel size like [3, 3] or 3, got {_kind(raw)}")


def _parse_support(check: _Checker, raw: Any, path: str) -> _Support:
    if raw is None:
        raw = {}
    if isinstance(raw, list):
        if not raw:
            raise check.error(path, "expected a mapping of conditions or a non-empty list of them, got an "
                                    "empty list")
        return _Support(tuple(_parse_condition(check, item, f"{path}[{i}]") for i, item in enumerate(raw)))
    return _Support((_parse_condition(check, raw, path),))


def _parse_format(check: _Checker, raw: Any, path: str) -> DataFormat:
    if raw == "float":
        return FLOAT
    if raw == "int8":
        return IntFormat(8, 8)
    if not isinstance(raw, dict):
        raise check.error(path, f"expected float, int8 or a mapping {{weight: int|ternary|float, weight_bits, "
                                f"activation_bits}}, got {_kind(raw)}")
    raw = check.mapping(raw, path, _FORMAT_KEYS, {"weight"})
    weight = check.choice(raw["weight"], f"{path}.weight", ("int", "ternary", "float"))
    bits = {key: check.integer(raw[key], f"{path}.{key}") for key in ("weight_bits", "activation_bits")
            if key in raw}
    if weight == "float":
        if bits:
            raise check.error(f"{path}.{next(iter(bits))}", "a float format takes no bit widths")
        return FLOAT
    if weight == "ternary":
        if "weight_bits" in bits:
            raise check.error(f"{path}.weight_bits", "ternary weights have no bit width; give only "
                                                     "activation_bits")
        return TernaryFormat(**bits)
    return IntFormat(**bits)


def _parse_cycles(check: _Checker, raw: Mapping[str, Any], path: str, unit: str) -> CycleFormula:
    if ("cycles" in raw) == ("roofline" in raw):
        raise check.error(path, "give exactly one of `cycles` (a formula) or `roofline` "
                                "({macs_per_cycle, overhead_cycles})")
    if "roofline" in raw:
        roof = check.mapping(raw["roofline"], f"{path}.roofline", _ROOFLINE_KEYS, {"macs_per_cycle"})
        return roofline_formula(check.number(roof["macs_per_cycle"], f"{path}.roofline.macs_per_cycle",
                                             positive=True),
                                check.number(roof.get("overhead_cycles", 0), f"{path}.roofline.overhead_cycles"))
    text = raw["cycles"]
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        text = repr(text)
    text = check.string(text, f"{path}.cycles")
    try:
        formula = compile_formula(text)
    except FormulaError as exc:
        raise check.error(f"{path}.cycles", f"unit {unit!r}: {exc}") from None
    sample = formula(LayerTable.from_specs([_SAMPLE_LAYER]), torch.tensor([_SAMPLE_CHANNELS], dtype=torch.float64))
    value = float(sample[0])
    if not math.isfinite(value) or value < 0:
        raise check.error(f"{path}.cycles", f"unit {unit!r}: formula gives {value} cycles for "
                                            f"n={_SAMPLE_CHANNELS:g} on the sample layer "
                                            f"'{_SAMPLE_LAYER.describe()}'; cycles must be finite and >= 0")
    return formula


def _parse_unit(check: _Checker, name: Any, raw: Any) -> FormulaUnit:
    if not isinstance(name, str) or not name:
        raise check.error(f"units.{name}", "unit names must be non-empty strings")
    path = f"units.{name}"
    raw = check.mapping(raw, path, _UNIT_KEYS, {"active_power_mw"})
    active = check.number(raw["active_power_mw"], f"{path}.active_power_mw")
    idle = check.number(raw.get("idle_power_mw", 0), f"{path}.idle_power_mw")
    data_format = _parse_format(check, raw.get("format", "float"), f"{path}.format")
    support = _parse_support(check, raw.get("supports"), f"{path}.supports")
    alternative = check.choice(raw.get("alternative", "same"), f"{path}.alternative", _ALTERNATIVES)
    if alternative == "depthwise":
        for condition in support.conditions:
            if condition.ops != {OpKind.CONV2D} or not (condition.same_in_out or condition.groups == "depthwise"):
                raise check.error(f"{path}.supports", "a unit with `alternative: depthwise` can only run conv2d "
                                                      "layers with in_channels == out_channels: give `ops: "
                                                      "[conv2d]` and `same_in_out: true` (or `groups: "
                                                      "depthwise`) in every condition set")
    formula = _parse_cycles(check, raw, path, name)
    return FormulaUnit(name, formula, support, active, idle, data_format,
                       alternative_for=_depthwise_alternative if alternative == "depthwise" else _same_alternative)


def parse_soc(text: str, source: str) -> SoC:
    """Build a :class:`SoC` from YAML ``text``; ``source`` names the file in error messages."""
    check = _Checker(source)
    try:
        raw = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise check.error("", f"invalid YAML{where}: {exc.problem or exc.context}") from None
    except yaml.YAMLError as exc:
        raise check.error("", f"invalid YAML: {' '.join(str(exc).split())}") from None
    raw = check.mapping(raw, "", _TOP_KEYS, {"name", "default_unit", "units"})
    name = check.string(raw["name"], "name")
    description = check.string(raw["description"], "description") if "description" in raw else ""
    if ("frequency_hz" in raw) == ("frequency_mhz" in raw):
        raise check.error("frequency_hz", "give exactly one of frequency_hz or frequency_mhz")
    if "frequency_hz" in raw:
        frequency = check.number(raw["frequency_hz"], "frequency_hz", positive=True)
    else:
        frequency = check.number(raw["frequency_mhz"], "frequency_mhz", positive=True) * 1e6
    check.choice(raw.get("energy", ENERGY_MODELS[0]), "energy", ENERGY_MODELS)
    units_raw = raw["units"]
    if not isinstance(units_raw, dict) or not units_raw:
        raise check.error("units", f"expected a non-empty mapping of unit name to unit, got {_kind(units_raw)}")
    units = [_parse_unit(check, unit_name, unit_raw) for unit_name, unit_raw in units_raw.items()]
    default_unit = check.string(raw["default_unit"], "default_unit")
    if default_unit not in units_raw:
        raise check.error("default_unit", f"{default_unit!r} is not one of the units "
                                          f"({', '.join(map(str, units_raw))})")
    return SoC(name, units, frequency, default_unit=default_unit, description=description)


def load_soc_file(path: str | Path) -> SoC:
    """Read and parse a YAML SoC file (see the module docstring for the schema)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"SoC file {path}: cannot be read ({exc.strerror or exc})") from None
    except UnicodeDecodeError as exc:
        raise UsageError(f"SoC file {path}: cannot be read (not UTF-8 text: {exc.reason} at byte "
                         f"{exc.start})") from None
    return parse_soc(text, str(path))


class YamlSocPlugin:
    """A pluggy plugin registering the SoC of one YAML file (what ``--plugin soc.yaml`` loads)."""

    def __init__(self, soc: SoC) -> None:
        self.soc = soc

    @hookimpl
    def odimo_register_socs(self) -> list[SoC]:
        return [self.soc]

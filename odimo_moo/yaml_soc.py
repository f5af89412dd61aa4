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

Cycle formulas are in the expression language of :mod:`odimo_moo.cycle_formulas`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from .alternative_factories import AlternativeFactory, Depthwise, SameOp
from .cycle_formulas import FormulaError, compile_formula, roofline_formula
from .errors import UsageError
from .hookspecs import hookimpl
from .data_formats import FLOAT, DataFormat, IntFormat, TernaryFormat
from .layer_spec import LayerSpec, LayerTable, OpKind
from .soc import CycleFormula, FormulaUnit, SoC
from .yaml_loader import InvalidYaml, parse_yaml

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

    def __init__(self, source: str, sample_formulas: bool = True) -> None:
        self.source = source
        self.sample_formulas = sample_formulas

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
    if check.sample_formulas:
        _check_sample(check, formula, path, unit)
    return formula


def _check_sample(check: _Checker, formula: CycleFormula, path: str, unit: str) -> None:
    """Refuse a formula whose cycles on the sample layer are not finite and >= 0."""
    import torch

    sample = formula(LayerTable.from_specs([_SAMPLE_LAYER]), torch.tensor([_SAMPLE_CHANNELS], dtype=torch.float64))
    value = float(sample[0])
    if not math.isfinite(value) or value < 0:
        raise check.error(f"{path}.cycles", f"unit {unit!r}: formula gives {value} cycles for "
                                            f"n={_SAMPLE_CHANNELS:g} on the sample layer "
                                            f"'{_SAMPLE_LAYER.describe()}'; cycles must be finite and >= 0")


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


def parse_soc(text: str, source: str, sample_formulas: bool = True) -> SoC:
    """Build a :class:`SoC` from YAML ``text``; ``source`` names the file in error messages.

    ``sample_formulas``: evaluate each ``cycles:`` formula on a sample layer and refuse one that gives
    a negative or infinite count. That imports torch (seconds); the files shipped with the package
    skip it, the test suite checks them.
    """
    check = _Checker(source, sample_formulas)
    try:
        raw = parse_yaml(text)
    except InvalidYaml as exc:
        raise check.error("", f"invalid YAML{exc.detail}") from None
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

"""YAML-described SoCs: the shipped example, the formula language, and precise schema errors."""

from __future__ import annotations

import copy
import importlib.resources
import math

import pytest
import torch
import yaml
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from odimo_moo.alternative_factories import Depthwise, SameOp
from odimo_moo.cycle_formulas import FormulaError, compile_formula
from odimo_moo.errors import UsageError
from odimo_moo.layer_spec import LayerSpec, LayerTable, OpKind, parse_layer_spec
from odimo_moo.data_formats import FLOAT, IntFormat, TernaryFormat
from odimo_moo.soc_plugins import yaml_socs
from odimo_moo.yaml_soc import load_soc_file, parse_soc

ceil = math.ceil


def conv(cin, cout, k, out, groups=1, stride=1):
    return LayerSpec(OpKind.CONV2D, cin, cout, (k, k), (stride, stride), groups, (out, out))


def cycles(soc, unit, spec, n):
    return float(soc.unit(unit).cycles(LayerTable.from_specs([spec]), torch.tensor([float(n)], dtype=torch.float64))[0])


@pytest.fixture(scope="module")
def example():
    (soc,) = yaml_socs.odimo_register_socs()
    return soc


# --- the shipped example --------------------------------------------------------------------------

def test_example_soc_shape(example):
    assert example.name == "example_npu"
    assert example.unit_names == ("cpu", "npu", "dwu")
    assert example.frequency_hz == 400e6
    assert example.default_unit == "cpu"
    assert [(u.active_power_mw, u.idle_power_mw) for u in example.units] == [(45, 2), (120, 4), (20, 1)]
    assert [u.data_format for u in example.units] == [IntFormat(8, 8)] * 3


def test_shipped_files_pass_the_formula_sample_check_the_plugin_skips():
    """The yaml_socs plugin registers its files without sampling their formulas (that would import
    torch during `odimo plugins`): the sample check runs here instead."""
    folder = importlib.resources.files("odimo_moo.soc_plugins")
    shipped = sorted(item.name for item in folder.iterdir() if item.name.endswith((".yaml", ".yml")))
    assert shipped == [soc.name + ".yaml" for soc in yaml_socs.odimo_register_socs()]
    for name in shipped:
        parse_soc(folder.joinpath(name).read_text(encoding="utf-8"), name)  # raises on a bad formula
    negative = yaml.safe_dump({"name": "s", "default_unit": "u", "frequency_hz": 1,
                               "units": {"u": {"active_power_mw": 1, "cycles": "n - 1000"}}})
    with pytest.raises(UsageError, match="formula gives -968.0 cycles"):
        parse_soc(negative, "negative.yaml")
    assert parse_soc(negative, "negative.yaml", sample_formulas=False).unit_names == ("u",)


def test_example_formula_values(example):
    layer = conv(64, 64, 3, 16)
    # cpu: ceil(n / 4) * ceil(cin * kh * kw / 4) * ho * wo + gate(n) * 200
    assert cycles(example, "cpu", layer, 10) == ceil(10 / 4) * ceil(64 * 3 * 3 / 4) * 16 * 16 + 200
    # npu roofline: ceil(n * cin * kh * kw * ho * wo / 512) + gate(n) * 3000
    assert cycles(example, "npu", layer, 32) == ceil(32 * 64 * 9 * 256 / 512) + 3000
    assert cycles(example, "npu", layer, 1) == ceil(1 * 64 * 9 * 256 / 512) + 3000
    # dwu: ceil(n / 8) * (ho * ceil(wo / 2) * 3 + 9) + gate(n) * 64
    assert cycles(example, "dwu", layer, 20) == ceil(20 / 8) * (16 * ceil(16 / 2) * 3 + 9) + 64
    odd = conv(32, 32, 3, 7)
    assert cycles(example, "dwu", odd, 32) == ceil(32 / 8) * (7 * ceil(7 / 2) * 3 + 9) + 64
    linear = LayerSpec(OpKind.LINEAR, 100, 10)
    assert cycles(example, "npu", linear, 10) == ceil(10 * 100 * 1 * 1 * 1 * 1 / 512) + 3000
    for unit in example.unit_names:
        assert cycles(example, unit, layer, 0) == 0.0


def test_example_support_and_alternatives(example):
    dense = conv(32, 32, 3, 8)
    depthwise = conv(32, 32, 3, 8, groups=32)
    assert example.supporting_units(dense) == (0, 1, 2)
    assert example.supporting_units(depthwise) == (0, 2)
    assert example.supporting_units(conv(32, 64, 3, 8)) == (0, 1)
    assert example.supporting_units(conv(32, 32, 5, 8)) == (0, 1)
    assert example.supporting_units(LayerSpec(OpKind.LINEAR, 32, 32)) == (0, 1)
    dwu = example.unit("dwu")
    assert isinstance(dwu.alternative(dense), Depthwise)
    assert isinstance(dwu.alternative(depthwise), SameOp)
    assert isinstance(example.unit("npu").alternative(dense), SameOp)


# --- a minimal valid document, mutated by the error tests --------------------------------------------

BASE = {
    "name": "tiny",
    "frequency_hz": 100e6,
    "default_unit": "cpu",
    "units": {
        "cpu": {"active_power_mw": 10, "cycles": "n * cin * kh * kw * ho * wo"},
        "acc": {"active_power_mw": 50, "idle_power_mw": 1, "roofline": {"macs_per_cycle": 64}},
    },
}


def document(**changes) -> dict:
    """BASE with dotted-path changes; the value ``DELETE`` removes a key."""
    doc = copy.deepcopy(BASE)
    for dotted, value in changes.items():
        *parents, last = dotted.split("__")
        target = doc
        for key in parents:
            target = target[key]
        if value is DELETE:
            del target[last]
        else:
            target[last] = value
    return doc


DELETE = object()


def parse(doc) -> object:
    return parse_soc(yaml.safe_dump(doc, sort_keys=False) if isinstance(doc, dict) else doc, "my_soc.yaml")


def test_minimal_document_and_formats():
    soc = parse(document(units__cpu__format={"weight": "ternary", "activation_bits": 6},
                         units__acc__format={"weight": "int", "weight_bits": 4, "activation_bits": 8}))
    assert soc.unit("cpu").data_format == TernaryFormat(activation_bits=6)
    assert soc.unit("acc").data_format == IntFormat(4, 8)
    assert parse(document()).unit("cpu").data_format == FLOAT
    assert parse(document(units__cpu__format={"weight": "float"})).unit("cpu").data_format == FLOAT
    layer = conv(16, 32, 3, 4)
    assert cycles(soc, "cpu", layer, 5) == 5 * 16 * 3 * 3 * 4 * 4
    assert cycles(soc, "acc", layer, 5) == ceil(5 * 16 * 9 * 16 / 64)


def test_frequency_in_mhz_and_energy_model():
    soc = parse(document(frequency_hz=DELETE, frequency_mhz=250, energy="active_idle"))
    assert soc.frequency_hz == 250e6


def test_exponent_numbers_without_a_dot_are_numbers():
    # plain YAML 1.1 would read 260e6 as the string '260e6'
    soc = parse("name: x\nfrequency_hz: 260e6\ndefault_unit: a\nunits:\n  a: {active_power_mw: 2e1, cycles: n}\n")
    assert soc.frequency_hz == 260e6 and soc.unit("a").active_power_mw == 20.0


SCHEMA_ERRORS = [
    (document(name=DELETE), "name: missing required key"),
    (document(colour="red"), "colour: unknown key; allowed keys: default_unit, description, energy"),
    (document(name=5), "name: expected a non-empty string, got int 5"),
    (document(frequency_hz=DELETE), "frequency_hz: give exactly one of frequency_hz or frequency_mhz"),
    (document(frequency_mhz=100), "frequency_hz: give exactly one of frequency_hz or frequency_mhz"),
    (document(frequency_hz=0), "frequency_hz: must be positive, got 0"),
    (document(frequency_hz="fast"), "frequency_hz: expected a number, got str 'fast'"),
    (document(energy="dvfs"), "energy: expected one of active_idle, got str 'dvfs'"),
    (document(default_unit="gpu"), "default_unit: 'gpu' is not one of the units (cpu, acc)"),
    (document(units={}), "units: expected a non-empty mapping of unit name to unit"),
    (document(units=["cpu"]), "units: expected a non-empty mapping of unit name to unit, got a list"),
    (document(units__cpu=None), "units.cpu: expected a mapping, got nothing (null)"),
    (document(units__cpu__active_power_mw=DELETE), "units.cpu.active_power_mw: missing required key"),
    (document(units__cpu__active_power_mw=-3), "units.cpu.active_power_mw: must not be negative, got -3"),
    (document(units__cpu__active_power_mw="high"), "units.cpu.active_power_mw: expected a number, got str"),
    (document(units__acc__idle_power_mw=True), "units.acc.idle_power_mw: expected a number, got bool True"),
    (document(units__acc__idle_power_mw=-0.5), "units.acc.idle_power_mw: must not be negative, got -0.5"),
    (document(units__cpu__colour="red"), "units.cpu.colour: unknown key; allowed keys: active_power_mw"),
    (document(units__cpu__roofline={"macs_per_cycle": 8}),
     "units.cpu: give exactly one of `cycles` (a formula) or `roofline`"),
    (document(units__cpu__cycles=DELETE), "units.cpu: give exactly one of `cycles` (a formula) or `roofline`"),
    (document(units__cpu__cycles=["n"]), "units.cpu.cycles: expected a non-empty string, got a list"),
    (document(units__acc__roofline={}), "units.acc.roofline.macs_per_cycle: missing required key"),
    (document(units__acc__roofline={"macs_per_cycle": 0}), "units.acc.roofline.macs_per_cycle: must be positive"),
    (document(units__acc__roofline={"macs_per_cycle": 8, "overhead_cycles": -1}),
     "units.acc.roofline.overhead_cycles: must not be negative"),
    (document(units__acc__roofline={"macs_per_cycle": 8, "latency": 3}),
     "units.acc.roofline.latency: unknown key; allowed keys: macs_per_cycle, overhead_cycles"),
    (document(units__cpu__format="int4"), "units.cpu.format: expected float, int8 or a mapping"),
    (document(units__cpu__format={"weight": "binary"}),
     "units.cpu.format.weight: expected one of int, ternary, float, got str 'binary'"),
    (document(units__cpu__format={"weight_bits": 4}), "units.cpu.format.weight: missing required key"),
    (document(units__cpu__format={"weight": "int", "weight_bits": 0}),
     "units.cpu.format.weight_bits: expected a positive integer, got int 0"),
    (document(units__cpu__format={"weight": "ternary", "weight_bits": 2}),
     "units.cpu.format.weight_bits: ternary weights have no bit width"),
    (document(units__cpu__format={"weight": "float", "activation_bits": 8}),
     "units.cpu.format.activation_bits: a float format takes no bit widths"),
    (document(units__cpu__supports={"ops": ["conv3d"]}),
     "units.cpu.supports.ops[0]: expected one of conv2d, linear, got str 'conv3d'"),
    (document(units__cpu__supports={"ops": []}), "units.cpu.supports.ops: expected a non-empty list"),
    (document(units__cpu__supports={"groups": 2}),
     "units.cpu.supports.groups: expected one of any, 1, depthwise, got int 2"),
    (document(units__cpu__supports={"same_in_out": "yes please"}),
     "units.cpu.supports.same_in_out: expected true or false"),
    (document(units__cpu__supports={"kernel_sizes": [[3]]}),
     "units.cpu.supports.kernel_sizes[0]: expected a kernel size like [3, 3] or 3, got a list"),
    (document(units__cpu__supports={"kernel": 3}), "units.cpu.supports.kernel: unknown key"),
    (document(units__cpu__supports=[{"ops": ["linear"]}, {"groups": "two"}]),
     "units.cpu.supports[1].groups: expected one of any, 1, depthwise"),
    (document(units__cpu__alternative="sideways"),
     "units.cpu.alternative: expected one of same, depthwise, got str 'sideways'"),
    (document(units__cpu__alternative="depthwise"),
     "units.cpu.supports: a unit with `alternative: depthwise` can only run conv2d layers with "
     "in_channels == out_channels"),
    ("name: tiny\nunits: {cpu: {active_power_mw: 1, cycles: n}\n", "invalid YAML"),
    ("name: [unclosed\n", "invalid YAML"),
    ("name: a\nname: b\ndefault_unit: cpu\n", "invalid YAML at line 2, column 1: key 'name' given twice"),
    ("units:\n  cpu: {active_power_mw: 1, cycles: n}\n  cpu: {active_power_mw: 2, cycles: n}\n",
     "invalid YAML at line 3, column 3: key 'cpu' given twice"),
    ("- just\n- a list\n", "expected a mapping, got a list"),
    ("", "expected a mapping, got nothing (null)"),
]


@pytest.mark.parametrize("doc, message", SCHEMA_ERRORS, ids=range(len(SCHEMA_ERRORS)))
def test_schema_errors_name_file_and_key(doc, message):
    with pytest.raises(UsageError) as info:
        parse(doc)
    text = str(info.value)
    assert text.startswith("SoC file my_soc.yaml: "), text
    assert message in text, text
    assert "\n" not in text


UNSAFE_FORMULAS = [
    ("__import__('os')", "call of unknown function '__import__' `__import__('os')`"),
    ("__import__('os').system('true')", "call of an expression"),
    ("n.__class__", "attribute access `n.__class__`"),
    ("(n).real * 2", "attribute access `n.real`"),
    ("[x for x in ()]", "list comprehension `[x for x in ()]`"),
    ("sum(x for x in (1, 2))", "call of unknown function 'sum'"),
    ("open", "unknown name `open`"),
    ("open('/etc/passwd')", "call of unknown function 'open'"),
    ("'abc'", "str constant `'abc'`"),
    ("n * m", "unknown name `m`"),
    ("ceil", "function name used as a value `ceil`"),
    ("n[0]", "subscript `n[0]`"),
    ("lambda: 1", "lambda"),
    ("n if n else 1", "conditional expression"),
    ("n > 1", "comparison `n > 1`"),
    ("n and 1", "boolean operator"),
    ("not n", "operator 'not' in `not n`"),
    ("~n", "operator '~' in `~n`"),
    ("n @ n", "operator '@' in `n @ n`"),
    ("n << 2", "operator '<<' in"),
    ("True * n", "bool constant `True`"),
    ("1j * n", "complex constant `1j`"),
    ("(x := 3)", "assignment expression"),
    ("f'{n}'", "f-string"),
    ("(1, 2)", "tuple"),
    ("max(n)", "max() takes 2 or more argument(s), got 1"),
    ("ceil(n, 2)", "ceil() takes 1 argument(s), got 2"),
    ("ceil(x=n)", "keyword argument in `ceil(x=n)`"),
    ("n +", "is not a valid expression"),
    ("(n", "is not a valid expression"),
    ("n / (kh - 3)", "formula gives inf cycles for n=32 on the sample layer"),
    ("-n", "formula gives -32.0 cycles"),
    ("-" * 200 + "n", "nested more than 100 levels deep"),
]


@pytest.mark.parametrize("formula, message", UNSAFE_FORMULAS, ids=[f for f, _ in UNSAFE_FORMULAS])
def test_unsafe_or_broken_formulas_are_rejected(formula, message):
    with pytest.raises(UsageError) as info:
        parse(document(units__cpu__cycles=formula))
    text = str(info.value)
    assert text.startswith("SoC file my_soc.yaml: units.cpu.cycles: unit 'cpu': "), text
    assert message in text, text
    if not any(word in message for word in ("formula gives", "argument(s)", "nested")):
        assert "allowed: numbers; variables n, in_channels, cin" in text, text
        assert "functions ceil(), floor(), gate(), max(), min(), abs()" in text, text


def test_load_soc_file_names_the_path(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(document(units__acc__active_power_mw=-1)))
    with pytest.raises(UsageError, match=rf"SoC file {path}: units.acc.active_power_mw: must not be negative"):
        load_soc_file(path)
    with pytest.raises(UsageError, match="cannot be read"):
        load_soc_file(tmp_path / "missing.yaml")
    path.write_text(yaml.safe_dump(BASE))
    assert load_soc_file(path).name == "tiny"


# --- the expression language ------------------------------------------------------------------------

FORMULA_CASES = [
    ("k * kh * kw", lambda s, n: s.kernel_size[0] * s.kernel_size[0] * s.kernel_size[1]),
    ("cin * groups + in_channels", lambda s, n: s.in_channels / s.groups * s.groups + s.in_channels),
    ("out_channels - n + sh * sw", lambda s, n: s.out_channels - n + s.stride[0] * s.stride[1]),
    ("n // 3 + n % 3 * 10", lambda s, n: math.floor(n / 3) + (n - 3 * math.floor(n / 3)) * 10),
    ("ceil(n / 7) + floor(n / 7)", lambda s, n: ceil(n / 7) + math.floor(n / 7)),
    ("max(n, 10, ho * wo) - min(n, 2)", lambda s, n: max(n, 10, s.output_size[0] * s.output_size[1]) - min(n, 2)),
    ("abs(n - 20) + gate(n - 5) * 1000", lambda s, n: abs(n - 20) + (1000 if n - 5 > 0 else 0)),
    ("2 ** 3 + n ** 2 - -1.5", lambda s, n: 2 ** 3 + n ** 2 + 1.5),
    ("123", lambda s, n: 123),
]


@pytest.mark.parametrize("formula, expected", FORMULA_CASES, ids=[f for f, _ in FORMULA_CASES])
def test_formula_values(formula, expected):
    specs = [conv(64, 64, 3, 8), conv(32, 32, 5, 7, groups=32, stride=2), LayerSpec(OpKind.LINEAR, 100, 30)]
    ns = [16.0, 3.0, 30.0]
    compiled = compile_formula(formula)
    values = compiled(LayerTable.from_specs(specs), torch.tensor(ns, dtype=torch.float64))
    assert values.shape == (3,)
    assert values.tolist() == pytest.approx([expected(s, n) for s, n in zip(specs, ns)], rel=1e-12)


def test_formula_gradient_flows_through_n():
    n = torch.tensor([5.0, 17.0], dtype=torch.float64, requires_grad=True)
    table = LayerTable.from_specs([conv(16, 16, 3, 8), conv(16, 32, 3, 8)])
    compile_formula("ceil(n / 4) * 100 + max(n, 10) + n // 2").__call__(table, n).sum().backward()
    # d/dn: 100/4 (straight-through ceil) + [n > 10] + 1/2 (straight-through floor)
    assert n.grad.tolist() == [25 + 0 + 0.5, 25 + 1 + 0.5]


# --- property tests ---------------------------------------------------------------------------------

VARIABLE_VALUES = {
    "n": lambda s, n: n, "in_channels": lambda s, n: s.in_channels, "cin": lambda s, n: s.in_channels / s.groups,
    "out_channels": lambda s, n: s.out_channels, "kh": lambda s, n: s.kernel_size[0],
    "kw": lambda s, n: s.kernel_size[1], "k": lambda s, n: s.kernel_size[0], "sh": lambda s, n: s.stride[0],
    "sw": lambda s, n: s.stride[1], "groups": lambda s, n: s.groups, "ho": lambda s, n: s.output_size[0],
    "wo": lambda s, n: s.output_size[1],
}


def _number(value: float):
    return (repr(value), lambda env: value)


def _variable(name: str):
    return (name, lambda env: float(env[name]))


def _binary(symbol, fn):
    def build(pair):
        (lt, lf), (rt, rf) = pair
        return (f"({lt} {symbol} {rt})", lambda env: fn(lf(env), rf(env)))
    return build


def _call(name, fn):
    def build(args):
        return (f"{name}({', '.join(t for t, _ in args)})", lambda env: fn(*(f(env) for _, f in args)))
    return build


def _floor_div(a, b):
    return float(math.floor(a / b))


def _mod(a, b):
    return a - b * math.floor(a / b)


LEAVES = st.one_of(
    st.integers(0, 50).map(_number),
    st.sampled_from([0.5, 2.5, 0.26, 70.0]).map(_number),
    st.sampled_from(sorted(VARIABLE_VALUES)).map(_variable),
)


def _extend(children):
    two = st.tuples(children, children)
    return st.one_of(
        two.map(_binary("+", lambda a, b: a + b)),
        two.map(_binary("-", lambda a, b: a - b)),
        two.map(_binary("*", lambda a, b: a * b)),
        two.map(_binary("/", lambda a, b: a / b)),
        two.map(_binary("//", _floor_div)),
        two.map(_binary("%", _mod)),
        st.tuples(children, st.integers(0, 2).map(_number)).map(_binary("**", lambda a, b: a ** b)),
        children.map(lambda c: (f"(-{c[0]})", lambda env: -c[1](env))),
        st.lists(children, min_size=1, max_size=1).map(_call("ceil", lambda a: float(math.ceil(a)))),
        st.lists(children, min_size=1, max_size=1).map(_call("floor", lambda a: float(math.floor(a)))),
        st.lists(children, min_size=1, max_size=1).map(_call("gate", lambda a: 1.0 if a > 0 else 0.0)),
        st.lists(children, min_size=1, max_size=1).map(_call("abs", abs)),
        st.lists(children, min_size=2, max_size=3).map(_call("max", max)),
        st.lists(children, min_size=2, max_size=3).map(_call("min", min)),
    )


EXPRESSIONS = st.recursive(LEAVES, _extend, max_leaves=10)


@st.composite
def layer_specs(draw):
    if draw(st.booleans()):
        return LayerSpec(OpKind.LINEAR, draw(st.integers(1, 4096)), draw(st.integers(1, 4096)))
    groups = draw(st.sampled_from([1, 1, 2, 4, 32]))
    return LayerSpec(
        OpKind.CONV2D,
        groups * draw(st.integers(1, 64)),
        groups * draw(st.integers(1, 64)),
        (draw(st.integers(1, 7)), draw(st.integers(1, 7))),
        (draw(st.integers(1, 3)), draw(st.integers(1, 3))),
        groups,
        (draw(st.integers(1, 64)), draw(st.integers(1, 64))),
    )


@settings(max_examples=150, deadline=None)
@given(expression=EXPRESSIONS, spec=layer_specs(), fraction=st.floats(0, 1))
def test_compiled_formula_matches_python_math(expression, spec, fraction):
    text, reference = expression
    n = round(fraction * spec.out_channels, 3)
    env = {name: value(spec, n) for name, value in VARIABLE_VALUES.items()}
    try:
        expected = reference(env)
    except (ZeroDivisionError, OverflowError, ValueError):
        assume(False)
    assume(isinstance(expected, float) and math.isfinite(expected) or isinstance(expected, int))
    got = compile_formula(text)(LayerTable.from_specs([spec]), torch.tensor([n], dtype=torch.float64))
    assert got.shape == (1,)
    assert float(got[0]) == pytest.approx(float(expected), rel=1e-9, abs=1e-9), text


@settings(max_examples=100, deadline=None)
@given(text=st.text(max_size=40))
def test_any_text_compiles_or_raises_formula_error(text):
    try:
        compile_formula(text)
    except FormulaError:
        pass


@settings(max_examples=100, deadline=None)
@given(spec=layer_specs())
def test_layer_spec_describe_round_trips(spec):
    assert parse_layer_spec(spec.describe()) == spec

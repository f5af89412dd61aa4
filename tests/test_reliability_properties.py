"""Reliability, property-based: the parsers of user text never fail with anything but a UsageError,
accept every valid spelling, and the YAML SoC expression language never evaluates anything outside
its vocabulary.

Complements tests/test_yaml_soc.py (formula values against Python math, any text compiles or
raises FormulaError, ``describe()`` round trips) with random spellings, random garbage built from
the parsers' own tokens, random syntax trees mixing allowed and forbidden constructs, and random
YAML documents.
"""

from __future__ import annotations

import ast
import copy
import math

import pytest
import torch
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from odimo_moo.commands.cost import layer_cost, parse_split
from odimo_moo.cycle_formulas import FUNCTIONS, VARIABLES, FormulaError, compile_formula
from odimo_moo.errors import UsageError
from odimo_moo.layer_spec import LayerSpec, LayerTable, OpKind, parse_layer_spec
from odimo_moo.study.config import validate
from odimo_moo.yaml_soc import parse_soc

FAST = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# -- layer specs ----------------------------------------------------------------------------------

@st.composite
def specs(draw) -> LayerSpec:
    if draw(st.booleans()):
        return LayerSpec(OpKind.LINEAR, draw(st.integers(1, 10 ** 6)), draw(st.integers(1, 10 ** 6)))
    groups = draw(st.integers(1, 8))
    return LayerSpec(OpKind.CONV2D, groups * draw(st.integers(1, 512)), groups * draw(st.integers(1, 512)),
                     (draw(st.integers(1, 11)), draw(st.integers(1, 11))),
                     (draw(st.integers(1, 4)), draw(st.integers(1, 4))), groups,
                     (draw(st.integers(1, 512)), draw(st.integers(1, 512))))


def _pair_text(draw, pair: tuple[int, int]) -> str:
    if pair[0] == pair[1] and draw(st.booleans()):
        return str(pair[0])
    return f"{pair[0]}x{pair[1]}"


@st.composite
def spellings(draw) -> tuple[str, LayerSpec]:
    """A spec and one of the many ways to write it: any key order, optional defaults, ``3`` for
    ``3x3``, any case of the op name, any whitespace between words."""
    spec = draw(specs())
    if spec.op is OpKind.LINEAR:
        items = [f"in_features={spec.in_channels}", f"out_features={spec.out_channels}"]
    else:
        items = [f"in_channels={spec.in_channels}", f"out_channels={spec.out_channels}",
                 f"kernel_size={_pair_text(draw, spec.kernel_size)}",
                 f"output_size={_pair_text(draw, spec.output_size)}"]
        if spec.stride != (1, 1) or draw(st.booleans()):
            items.append(f"stride={_pair_text(draw, spec.stride)}")
        if spec.groups != 1 or draw(st.booleans()):
            items.append(f"groups={spec.groups}")
    items = draw(st.permutations(items))
    op = "".join(c.upper() if draw(st.booleans()) else c for c in spec.op.value)
    gaps = draw(st.lists(st.sampled_from([" ", "  ", "\t", " \n "]), min_size=len(items) + 2,
                         max_size=len(items) + 2))
    text = gaps[0] + op + "".join(gap + item for gap, item in zip(gaps[1:], items)) + gaps[-1]
    return text, spec


@FAST
@given(spelling=spellings())
def test_every_spelling_of_a_valid_spec_parses_to_it(spelling):
    text, spec = spelling
    assert parse_layer_spec(text) == spec
    assert parse_layer_spec(spec.describe()) == spec


SPEC_TOKENS = st.sampled_from([
    "conv2d", "linear", "CONV2D", "conv3d", " ", " ", "=", "==", "x", "X", "xx", "-", "+", "0", "1", "3", "16",
    "007", "1e3", "3.5", "٣", "²", "in_channels", "out_channels", "kernel_size", "output_size", "stride", "groups",
    "in_features", "out_features", "bias", "\t", "\n", "\x00", "🙂", "9" * 30, "9" * 400,
])


GOOD_NUMBER = st.integers(1, 64).map(str)
GOOD_PAIR = st.one_of(st.integers(1, 16).map(str),
                      st.tuples(st.integers(1, 16), st.integers(1, 16)).map(lambda pair: f"{pair[0]}x{pair[1]}"))
BAD_NUMBER = st.sampled_from(["0", "-1", "1e3", "3.5", "٣", "9" * 30, "x", "3x", "2x2x2", "0x3", ""])
SPEC_KEYS = {"conv2d": ("in_channels", "out_channels", "kernel_size", "output_size", "stride", "groups"),
             "linear": ("in_features", "out_features")}
PAIR_KEYS = ("kernel_size", "output_size", "stride")


def _spec_value(draw, key: str) -> str:
    """Usually a valid value for ``key`` (groups mostly 1), one time in five a bad one."""
    if draw(st.integers(0, 4)) == 0:
        return draw(BAD_NUMBER | GOOD_PAIR | GOOD_NUMBER)
    if key == "groups":
        return draw(st.sampled_from(["1", "1", "2", "4", "3"]))
    return draw(GOOD_PAIR if key in PAIR_KEYS else GOOD_NUMBER)


@st.composite
def near_specs(draw) -> str:
    """Layer-spec text close to valid: a known op (mostly), each required key usually present with a
    usually valid value, sometimes an unknown or repeated key or a word without ``=``; so that the
    parser's later checks (missing keys, bad numbers, groups, sizes) are reached, not only the first."""
    op = draw(st.sampled_from(["conv2d", "conv2d", "linear", "Linear", "CONV2D", "conv3d"]))
    keys = SPEC_KEYS.get(op.lower(), SPEC_KEYS["conv2d"])
    items = [f"{key}={_spec_value(draw, key)}" for key in keys
             if (draw(st.integers(0, 2)) == 0 if key in ("stride", "groups") else draw(st.integers(0, 9)) > 0)]
    if draw(st.integers(0, 4)) == 0:
        items.append(draw(st.sampled_from(["bias=1", "groups=2", "in_channels=8", "stride", "=3"]) | SPEC_TOKENS))
    return " ".join([op, *draw(st.permutations(items))])


@FAST
@given(text=st.one_of(st.text(max_size=60), st.lists(SPEC_TOKENS, max_size=25).map("".join), near_specs()))
def test_garbage_layer_specs_raise_only_usage_errors(text):
    try:
        spec = parse_layer_spec(text)
    except UsageError as exc:
        assert str(exc) and "\n" not in str(exc)
        return
    assert parse_layer_spec(spec.describe()) == spec


# -- `odimo cost --split` -------------------------------------------------------------------------

CONV = LayerSpec(OpKind.CONV2D, 32, 32, (3, 3), (1, 1), 1, (8, 8))


@st.composite
def splits(draw, soc, spec: LayerSpec) -> tuple[str, dict[str, int]]:
    """A valid ``UNIT=N,...`` text for ``spec`` on ``soc`` (units that cannot run it get 0), in any
    order, with units at 0 sometimes left out and spaces around the separators."""
    able = [soc.units[i].name for i in soc.supporting_units(spec)]
    cuts = sorted(draw(st.lists(st.integers(0, spec.out_channels), min_size=len(able) - 1,
                                max_size=len(able) - 1)))
    bounds = [0, *cuts, spec.out_channels]
    counts = dict.fromkeys(soc.unit_names, 0)
    counts.update({unit: bounds[i + 1] - bounds[i] for i, unit in enumerate(able)})
    named = [unit for unit in soc.unit_names if counts[unit] or draw(st.booleans())]
    assume(named)
    pad = st.sampled_from(["", " ", "  "])
    items = [f"{draw(pad)}{unit}{draw(pad)}={draw(pad)}{counts[unit]}{draw(pad)}" for unit in named]
    return ",".join(draw(st.permutations(items))), counts


@pytest.fixture(scope="module", params=["diana", "darkside"])
def soc(request, socs):
    return socs[request.param]


@FAST
@given(data=st.data())
def test_every_valid_split_parses(soc, data):
    text, counts = data.draw(splits(soc, CONV))
    assert parse_split(text, soc, CONV) == counts
    cost = layer_cost(soc, CONV, counts)
    assert math.isfinite(cost.latency_cycles) and cost.latency_cycles >= 0


SPLIT_TOKENS = st.sampled_from(["digital", "analog", "cluster", "dwe", "npu", "=", ",", " ", "0", "8", "16", "32",
                                "-1", "1e1", "0x10", "٣", "+", "9" * 25, "\n", "DIGITAL"])


@st.composite
def near_splits(draw, soc, spec: LayerSpec) -> str:
    """A valid split of ``spec`` with up to two mistakes (a count off by a few, a negative or
    non-number count, an unknown or repeated unit, a missing ``=``), so that parse_split's later
    checks (unknown unit, unit that cannot run the layer, counts that do not add up) are reached."""
    items = draw(splits(soc, spec))[0].split(",")
    original = list(items)
    for _ in range(draw(st.integers(0, 2))):
        index = draw(st.integers(0, len(items) - 1))
        unit, _, count = original[index].partition("=")
        items[index] = draw(st.sampled_from([
            f"{unit}={int(count) + draw(st.integers(-3, 3))}", f"{unit}=-{count.strip()}", f"{unit}=x",
            f"npu={count}", f"{unit}{count}", f"{unit}={count},{unit}={count}", f"{unit.upper()}={count}"]))
    return ",".join(items)


@FAST
@given(data=st.data())
def test_garbage_splits_raise_only_usage_errors(soc, data):
    text = data.draw(st.one_of(st.text(max_size=40), st.lists(SPLIT_TOKENS, max_size=20).map("".join),
                               near_splits(soc, CONV)))
    try:
        counts = parse_split(text, soc, CONV)
    except UsageError as exc:
        assert str(exc).startswith("--split: ") and "\n" not in str(exc)
        return
    assert sum(counts.values()) == CONV.out_channels
    layer_cost(soc, CONV, counts)


@FAST
@given(data=st.data())
def test_cost_pipeline_on_garbage_raises_only_usage_errors(soc, data):
    """What `odimo cost` does with its two text options, end to end: the split is drawn for the layer
    when the layer parses and some unit can run it, so that the cost itself is reached."""
    layer = data.draw(st.one_of(st.text(max_size=50), st.lists(SPEC_TOKENS, max_size=25).map("".join),
                                near_specs(), near_specs()))
    garbage = st.lists(SPLIT_TOKENS, max_size=12).map("".join)
    try:
        spec = parse_layer_spec(layer)
    except UsageError:
        spec = None
    fitting = spec is not None and spec.out_channels <= 4096 and soc.supporting_units(spec)
    split = data.draw(st.one_of(garbage, near_splits(soc, spec)) if fitting else garbage)
    try:
        if spec is None:
            raise UsageError("layer refused")
        cost = layer_cost(soc, spec, parse_split(split, soc, spec))
    except UsageError:
        return
    assert cost.latency_cycles >= 0


HUGE = st.one_of(st.integers(1, 64), st.integers(1, 10 ** 400))


@FAST
@given(cin=HUGE, cout=HUGE, kernel=HUGE, size=HUGE, digital=st.floats(0, 1))
def test_extreme_sizes_raise_only_usage_errors(soc, cin, cout, kernel, size, digital):
    """Numbers as large as a user can type: a UsageError, or costs computed without an exception."""
    layer = f"conv2d in_channels={cin} out_channels={cout} kernel_size={kernel} output_size={size}x{size}"
    try:
        spec = parse_layer_spec(layer)
        able = [soc.units[i].name for i in soc.supporting_units(spec)]
        first = int(digital * spec.out_channels)
        split = ",".join(f"{unit}={count}" for unit, count in zip(able, [first, spec.out_channels - first]))
        cost = layer_cost(soc, spec, parse_split(split, soc, spec))
    except UsageError:
        return
    assert cost.latency_cycles >= 0


# -- the YAML SoC expression language ------------------------------------------------------------

MARKER = "odimo_formula_was_evaluated"

ALLOWED_LEAVES = st.one_of(
    st.integers(0, 10 ** 6).map(lambda v: ast.Constant(v)),
    st.floats(0, 1e6, allow_nan=False).map(lambda v: ast.Constant(v)),
    st.sampled_from(VARIABLES).map(lambda name: ast.Name(name, ast.Load())),
)
# Each forbidden construct would do something observable (or at least non-numeric) if it ever ran.
FORBIDDEN_LEAVES = st.sampled_from([
    f"__import__('pathlib').Path('{MARKER}').touch()",
    f"open('{MARKER}', 'w')",
    "__builtins__",
    "n.__class__",
    "globals()",
    "eval('1')",
    "exec('x = 1')",
    "(lambda: 1)()",
    "[1][0]",
    "'text'",
    "b'bytes'",
    "None",
    "True",
    "1j",
    "...",
    "n if n else 1",
    "n < 1",
    "n and 1",
    "not n",
    "~n",
    "n @ n",
    "n << 1",
    "n | 1",
    "(x := 1)",
    "[x for x in (1,)]",
    "{1: 2}",
    "(1, 2)",
    "f'{n}'",
    "print",
    "ceil",
    "sum(n, n)",
    "ceil(x=n)",
    "max(*n)",
    "ceil(n, n)",
    "floor()",
    "10 ** 400 * 1" + "0" * 400,
]).map(lambda text: ast.parse(text, mode="eval").body)


def _binop(children):
    ops = st.sampled_from([ast.Add(), ast.Sub(), ast.Mult(), ast.Div(), ast.FloorDiv(), ast.Mod(), ast.Pow()])
    return st.builds(lambda left, op, right: ast.BinOp(left, op, right), children, ops, children)


def _call(children):
    one = st.sampled_from(["ceil", "floor", "gate", "abs"])
    many = st.sampled_from(["max", "min"])
    return st.one_of(
        st.builds(lambda f, a: ast.Call(ast.Name(f, ast.Load()), [a], []), one, children),
        st.builds(lambda f, args: ast.Call(ast.Name(f, ast.Load()), args, []), many,
                  st.lists(children, min_size=2, max_size=3)),
    )


def _tree(leaves):
    return st.recursive(leaves, lambda children: st.one_of(
        _binop(children), _call(children),
        st.builds(lambda op, v: ast.UnaryOp(op, v), st.sampled_from([ast.USub(), ast.UAdd()]), children)),
        max_leaves=12)


ALLOWED_TREES = _tree(ALLOWED_LEAVES)
MIXED_TREES = _tree(st.one_of(ALLOWED_LEAVES, ALLOWED_LEAVES, FORBIDDEN_LEAVES))


def in_vocabulary(tree: ast.AST) -> bool:
    """An independent statement of the language: numbers, the variables, + - * / // % ** and unary
    +/-, and calls of the functions by name with positional arguments in number."""
    if isinstance(tree, ast.Constant):
        if isinstance(tree.value, bool) or not isinstance(tree.value, (int, float)):
            return False
        try:
            float(tree.value)
        except OverflowError:
            return False
        return True
    if isinstance(tree, ast.Name):
        return tree.id in VARIABLES
    if isinstance(tree, ast.UnaryOp):
        return isinstance(tree.op, (ast.USub, ast.UAdd)) and in_vocabulary(tree.operand)
    if isinstance(tree, ast.BinOp):
        return (isinstance(tree.op, (ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv, ast.Mod, ast.Pow))
                and in_vocabulary(tree.left) and in_vocabulary(tree.right))
    if isinstance(tree, ast.Call):
        if not isinstance(tree.func, ast.Name) or tree.func.id not in FUNCTIONS or tree.keywords:
            return False
        function = FUNCTIONS[tree.func.id]
        count = len(tree.args)
        if count < function.min_args or (function.max_args is not None and count > function.max_args):
            return False
        return all(not isinstance(arg, ast.Starred) and in_vocabulary(arg) for arg in tree.args)
    return False


def _layer_and_n(spec: LayerSpec, fraction: float) -> tuple[LayerTable, torch.Tensor]:
    return LayerTable.from_specs([spec]), torch.tensor([fraction * spec.out_channels], dtype=torch.float64)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(tree=MIXED_TREES, spec=specs(), fraction=st.floats(0, 1))
def test_formulas_compile_exactly_when_in_vocabulary(tree, spec, fraction, tmp_path, monkeypatch):
    folder = tmp_path
    monkeypatch.chdir(folder)  # where the forbidden constructs would leave their MARKER file
    text = ast.unparse(ast.fix_missing_locations(ast.Expression(tree)))
    try:
        formula = compile_formula(text)
    except FormulaError as exc:
        assert not in_vocabulary(tree) or "nested more than" in str(exc), text
        assert "\n" not in str(exc)
    else:
        assert in_vocabulary(ast.parse(text, mode="eval").body), text
        with torch.no_grad():
            value = formula(*_layer_and_n(spec, fraction))
        assert value.shape == (1,) and value.dtype == torch.float64
    assert not (folder / MARKER).exists(), text


@FAST
@given(tree=ALLOWED_TREES, spec=specs(), fraction=st.floats(0, 1))
def test_formulas_in_vocabulary_evaluate_to_numbers_with_gradients(tree, spec, fraction):
    text = ast.unparse(ast.fix_missing_locations(ast.Expression(tree)))
    try:
        formula = compile_formula(text)
    except FormulaError as exc:  # only depth can stop a tree made of allowed constructs
        assert "nested more than" in str(exc)
        return
    layers, n = _layer_and_n(spec, fraction)
    n.requires_grad_(True)
    value = formula(layers, n)
    assert value.shape == (1,) and value.dtype == torch.float64
    if value.requires_grad:
        value.sum().backward()  # never raises; nan/inf gradients are the cost model's business


# -- random YAML documents as SoC files and study files -----------------------------------------

SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-10 ** 20, 10 ** 20), st.floats(allow_nan=True),
                    st.text(max_size=12), st.sampled_from(["n", "cpu", "conv2d", "int8", "1e9", "ternary",
                                                           "depthwise", "same", "-1", "nan", ".inf"]))
VALUES = st.recursive(SCALARS, lambda children: st.one_of(
    st.lists(children, max_size=4), st.dictionaries(st.one_of(st.text(max_size=8), st.integers()), children,
                                                    max_size=4)), max_leaves=12)

SOC_BASE = {"name": "fuzz", "frequency_mhz": 100, "default_unit": "cpu",
            "units": {"cpu": {"active_power_mw": 1, "cycles": "n * cin"},
                      "acc": {"active_power_mw": 2, "roofline": {"macs_per_cycle": 16}}}}
SOC_PATHS = [(), ("name",), ("frequency_mhz",), ("default_unit",), ("energy",), ("units",), ("units", "cpu"),
             ("units", "cpu", "cycles"), ("units", "cpu", "format"), ("units", "cpu", "supports"),
             ("units", "cpu", "alternative"), ("units", "acc", "roofline"), ("units", "acc", "idle_power_mw"),
             ("units", "acc", "supports", "kernel_sizes"), ("units", "new")]


def _replace(document: dict, path: tuple[str, ...], value):
    """``document`` with the value at ``path`` replaced (missing or non-mapping parents become mappings)."""
    if not path:
        return value
    result = copy.deepcopy(document)
    node = result
    for key in path[:-1]:
        if not isinstance(node.get(key), dict):
            node[key] = {}
        node = node[key]
    node[path[-1]] = value
    return result


@FAST
@given(path=st.sampled_from(SOC_PATHS), value=VALUES)
def test_random_soc_documents_load_or_raise_usage_errors(path, value):
    text = yaml.safe_dump(_replace(SOC_BASE, path, value), allow_unicode=True)
    try:
        soc = parse_soc(text, "fuzz.yaml")
    except UsageError as exc:
        assert str(exc).startswith("SoC file fuzz.yaml: ") and "\n" not in str(exc), str(exc)
        return
    layer = LayerTable.from_specs([CONV])
    cycles = soc.unit_cycles(layer, torch.full((len(soc.units), 1), 16.0, dtype=torch.float64))
    assert cycles.shape == (len(soc.units), 1)


SOC_TEXT_VALUES = st.sampled_from(["", "0", "-1", "1e9", "nan", ".inf", "[1, 2]", "{a: 1}", "ceil(n", "n * cin",
                                   "2n", "int8", "ternary", "depthwise", "true", "'x'", "!!python/name:os.system",
                                   "&a 1", "*a", "{weight: int, weight_bits: 0}", "\t1"])


@st.composite
def mutated_soc_texts(draw) -> str:
    """The text of a valid SoC file with one to three line edits (a line deleted, repeated, or its value
    replaced): mostly still YAML, so that the schema's checks are reached, not only the YAML parser."""
    lines = yaml.safe_dump(SOC_BASE, sort_keys=False).splitlines()
    for _ in range(draw(st.integers(1, 3))):
        index = draw(st.integers(0, len(lines) - 1))
        action = draw(st.sampled_from(["delete", "repeat", "value", "value"]))
        if action == "delete" and len(lines) > 1:
            lines.pop(index)
        elif action == "repeat":
            lines.insert(index, lines[index])
        else:
            key, colon, _ = lines[index].partition(":")
            lines[index] = f"{key}{colon or ':'} {draw(SOC_TEXT_VALUES)}"
    return "\n".join(lines) + "\n"


@FAST
@given(text=st.one_of(st.text(max_size=80), st.binary(max_size=40).map(lambda b: b.decode("latin-1")),
                      mutated_soc_texts(), mutated_soc_texts()))
def test_random_soc_text_raises_only_usage_errors(text):
    try:
        parse_soc(text, "fuzz.yaml")
    except UsageError:
        pass


STUDY_BASE = {"name": "fuzz", "soc": "diana", "model": "resnet8", "dataset": "digits",
              "training": {"warmup_epochs": 1}, "search_space": {"lambda": [1.0e-6, 1.0e-3]},
              "enqueue": [{"lambda": 0}], "trials": 2}
STUDY_PATHS = [("soc",), ("dataset",), ("metrics",), ("training",), ("training", "lr"),
               ("training", "search_epochs"), ("search_space",), ("search_space", "lambda"),
               ("search_space", "lr"), ("search_space", "lambda", "low"), ("enqueue",), ("trials",), ("sampler",),
               ("sampler", "settings"), ("heartbeat",), ("heartbeat", "grace"), ("storage",), ("data_limit",),
               ("val_fraction",), ("exclude",), ("name",), ("seed",), ("driver",), ("unknown",)]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(path=st.sampled_from(STUDY_PATHS), value=VALUES)
def test_random_study_documents_validate_or_raise_usage_errors(path, value, tmp_path):
    raw = _replace(STUDY_BASE, path, value)
    raw["out"] = str(tmp_path / "out")
    try:
        config = validate(raw, "fuzz.yaml")
    except UsageError as exc:
        assert str(exc).startswith("fuzz.yaml: ")
        return
    assert config.trials >= 1 and config.search_space
